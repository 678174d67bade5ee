// net::AcceptLoop: the cap, reaping, stop() with clients connected, and a
// stress of connects and disconnects racing stop() (run under
// ThreadSanitizer by make test-tsan). Then the control server on the loop:
// its cap and its stop().
#include "net/accept_loop.h"

#include <dirent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "daemon/server.h"
#include "net/listener.h"
#include "net/unix_socket.h"
#include "rawdax/region.h"
#include "test_util.h"

namespace rawdax::net {
namespace {

using ::rawdax::testing::eventually;
using ::rawdax::testing::ScratchDir;

// Threads of this process now.
size_t process_threads();

// Threads of this process before a test starts its own. A thread is started
// and joined first: a sanitizer runtime starts its helper thread with the
// process's first thread, and that one must be in the baseline.
size_t baseline_threads() {
  std::thread([] {}).join();
  return process_threads();
}

size_t process_threads() {
  size_t n = 0;
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr) return 0;
  while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.' ? 1 : 0;
  ::closedir(d);
  return n;
}

// What the test connections did, across all of them.
struct Tally {
  std::atomic<int> made{0}, destroyed{0}, running{0}, refused{0}, cut_off{0};
};

// A test connection: greets with "hello\n", echoes until the client closes
// (or stop() shuts the socket), then shuts its socket down. With
// `return_at_once`, it says "bye\n" and returns. With `ignore_stop`, it waits
// for cut_off() instead of request_stop().
class TestConnection : public Connection {
 public:
  struct Mode {
    bool return_at_once = false;
    bool ignore_stop = false;
  };
  TestConnection(internal::UniqueFd socket, Tally& tally, Mode mode)
      : socket_(std::move(socket)), tally_(tally), mode_(mode) {
    tally_.made.fetch_add(1);
  }
  ~TestConnection() override { tally_.destroyed.fetch_add(1); }

  void run() override {
    tally_.running.fetch_add(1);
    if (mode_.return_at_once) {
      (void)::send(socket_.get(), "bye\n", 4, MSG_NOSIGNAL);
    } else {
      (void)::send(socket_.get(), "hello\n", 6, MSG_NOSIGNAL);
      char buf[256];
      for (;;) {
        ssize_t n = ::recv(socket_.get(), buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (::send(socket_.get(), buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) break;
      }
    }
    ::shutdown(socket_.get(), SHUT_RDWR);
    tally_.running.fetch_sub(1);
  }
  void request_stop() override {
    if (!mode_.ignore_stop) ::shutdown(socket_.get(), SHUT_RDWR);
  }
  void cut_off() override {
    tally_.cut_off.fetch_add(1);
    ::shutdown(socket_.get(), SHUT_RDWR);
  }
  void refuse(size_t) override {
    tally_.refused.fetch_add(1);
    (void)::send(socket_.get(), "full\n", 5, MSG_NOSIGNAL);
  }

 private:
  internal::UniqueFd socket_;
  Tally& tally_;
  Mode mode_;
};

// A unix listener in a scratch directory and a loop serving TestConnections.
class AcceptLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto l = Listener::open("unix:" + path(), "test");
    ASSERT_TRUE(l) << l.error().message();
    listener_ = std::make_unique<Listener>(std::move(*l));
  }

  void start(size_t max_connections, TestConnection::Mode mode = {}) {
    auto loop = AcceptLoop::start(
        *listener_, {.what = "test",
                     .max_connections = max_connections,
                     .admit = [this, mode](internal::UniqueFd socket) -> std::unique_ptr<Connection> {
                       return std::make_unique<TestConnection>(std::move(socket), tally_, mode);
                     }});
    ASSERT_TRUE(loop) << loop.error().message();
    loop_ = std::move(*loop);
  }

  std::string path() const { return dir_.path() + "/loop.sock"; }

  // A client; reads never wait longer than 10 s (a hang guard only).
  internal::UniqueFd connect() {
    auto fd = connect_unix(path());
    EXPECT_TRUE(fd) << fd.error().message();
    if (!fd) return internal::UniqueFd();
    timeval tv{10, 0};
    ::setsockopt(fd->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return std::move(*fd);
  }
  // Everything the server sends until it closes (or `limit` bytes).
  static std::string read_some(int fd, size_t limit) {
    std::string out;
    char buf[64];
    while (out.size() < limit) {
      ssize_t n = ::recv(fd, buf, std::min(sizeof buf, limit - out.size()), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  static bool sees_eof(int fd) {
    char c;
    ssize_t n;
    while ((n = ::recv(fd, &c, 1, 0)) < 0 && errno == EINTR) {
    }
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }
  static std::string echo(int fd, const std::string& text) {
    if (::send(fd, text.data(), text.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(text.size())) {
      return "";
    }
    return read_some(fd, text.size());
  }

  ScratchDir dir_{::rawdax::testing::tmpfs_parent()};
  Tally tally_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<AcceptLoop> loop_;
};

TEST_F(AcceptLoopTest, TheConnectionOverTheCapIsRefusedAndTheOthersGoOn) {
  start(/*max_connections=*/2);
  internal::UniqueFd a = connect(), b = connect();
  ASSERT_EQ(read_some(a.get(), 6), "hello\n");
  ASSERT_EQ(read_some(b.get(), 6), "hello\n");
  internal::UniqueFd over = connect();
  EXPECT_EQ(read_some(over.get(), 64), "full\n");  // then closed
  EXPECT_EQ(tally_.refused.load(), 1);
  EXPECT_EQ(loop_->served(), 2u);
  EXPECT_EQ(echo(a.get(), "ping"), "ping");
  EXPECT_EQ(echo(b.get(), "pong"), "pong");
  // Once one has left, a new client is served again.
  a.reset();
  ASSERT_TRUE(eventually([&] { return loop_->active() == 1; }));
  internal::UniqueFd next = connect();
  EXPECT_EQ(read_some(next.get(), 6), "hello\n");
  EXPECT_EQ(echo(next.get(), "again"), "again");
  EXPECT_EQ(loop_->served(), 3u);
  EXPECT_EQ(echo(b.get(), "still"), "still");
}

TEST_F(AcceptLoopTest, StopJoinsEveryThreadWhileClientsAreConnectedAndIdle) {
  const size_t threads_before = baseline_threads();
  start(/*max_connections=*/16);
  std::vector<internal::UniqueFd> clients;
  for (int i = 0; i < 8; ++i) {
    clients.push_back(connect());
    ASSERT_EQ(read_some(clients.back().get(), 6), "hello\n");
  }
  EXPECT_EQ(loop_->active(), 8u);
  EXPECT_EQ(tally_.running.load(), 8);
  EXPECT_GE(process_threads(), threads_before + 9);  // the acceptor and 8 connections
  loop_->stop();  // the clients stay connected and say nothing
  EXPECT_EQ(tally_.running.load(), 0);
  EXPECT_EQ(tally_.destroyed.load(), tally_.made.load());
  EXPECT_EQ(loop_->threads(), 0u);
  EXPECT_EQ(loop_->active(), 0u);
  for (auto& c : clients) EXPECT_TRUE(sees_eof(c.get()));
  // Joined threads leave /proc once the kernel has reaped them.
  EXPECT_TRUE(eventually([&] { return process_threads() == threads_before; }))
      << process_threads() << " threads, " << threads_before << " before";
  loop_->stop();  // idempotent
}

TEST_F(AcceptLoopTest, AConnectionThatIgnoresTheStopRequestIsCutOffAfterTheGrace) {
  start(/*max_connections=*/4, {.ignore_stop = true});
  internal::UniqueFd a = connect();
  ASSERT_EQ(read_some(a.get(), 6), "hello\n");
  loop_->stop(std::chrono::milliseconds(20));
  EXPECT_EQ(tally_.cut_off.load(), 1);
  EXPECT_EQ(tally_.running.load(), 0);
  EXPECT_EQ(tally_.destroyed.load(), tally_.made.load());
  EXPECT_TRUE(sees_eof(a.get()));
}

TEST_F(AcceptLoopTest, HandlersThatReturnAtOnceAreReaped) {
  const size_t threads_before = baseline_threads();
  start(/*max_connections=*/4, {.return_at_once = true});
  for (int i = 0; i < 100; ++i) {
    internal::UniqueFd c = connect();
    ASSERT_EQ(read_some(c.get(), 64), "bye\n");
    // The previous connection had ended before this one came, so its
    // admission joined it: only this one's thread can be left.
    EXPECT_LE(loop_->threads(), 1u) << "after " << i << " connections";
    ASSERT_TRUE(eventually([&] { return loop_->active() == 0; }));
  }
  EXPECT_EQ(loop_->served(), 100u);
  // The last is joined by the idle reaping too: nothing but the acceptor stays.
  EXPECT_TRUE(eventually([&] { return loop_->threads() == 0; }));
  EXPECT_EQ(tally_.destroyed.load(), 100);
  EXPECT_TRUE(eventually([&] { return process_threads() == threads_before + 1; }))
      << process_threads() << " threads, " << threads_before << " before";
}

TEST_F(AcceptLoopTest, AnAdmissionThatRefusesClosesTheSocketUnserved) {
  std::atomic<int> asked{0};
  auto loop = AcceptLoop::start(
      *listener_, {.what = "test",
                   .max_connections = 4,
                   .admit = [&](internal::UniqueFd socket) -> std::unique_ptr<Connection> {
                     // Every other connection is refused.
                     if (asked.fetch_add(1) % 2 == 0) return nullptr;
                     return std::make_unique<TestConnection>(std::move(socket), tally_,
                                                             TestConnection::Mode{});
                   }});
  ASSERT_TRUE(loop) << loop.error().message();
  internal::UniqueFd refused = connect();
  EXPECT_EQ(read_some(refused.get(), 64), "");
  internal::UniqueFd admitted = connect();
  EXPECT_EQ(read_some(admitted.get(), 6), "hello\n");
  EXPECT_EQ((*loop)->served(), 1u);
  EXPECT_EQ(tally_.refused.load(), 0);
  (*loop)->stop();
  EXPECT_TRUE(sees_eof(admitted.get()));
}

TEST(AcceptLoopStartTest, AdmissionIsRequired) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  auto l = Listener::open("unix:" + dir.path() + "/s.sock", "test");
  ASSERT_TRUE(l) << l.error().message();
  auto loop = AcceptLoop::start(*l, {.what = "test"});
  ASSERT_FALSE(loop);
  EXPECT_EQ(loop.error().code(), std::errc::invalid_argument);
}

// Many clients connect, talk and disconnect while stop() races them (from
// two threads at once) and another thread reads the counters. Whatever the
// interleaving, stop() returns with every connection thread joined and every
// Connection destroyed, and no client is left hanging on an open socket.
TEST_F(AcceptLoopTest, StressConnectsAndDisconnectsWhileStopRaces) {
  constexpr int kRounds = 12;
  constexpr int kClients = 6;
  std::mt19937 rng(7);
  for (int round = 0; round < kRounds; ++round) {
    if (round > 0) {
      listener_.reset();
      auto l = Listener::open("unix:" + path(), "test");
      ASSERT_TRUE(l) << l.error().message();
      listener_ = std::make_unique<Listener>(std::move(*l));
    }
    start(/*max_connections=*/4);
    std::atomic<bool> quit{false};
    std::atomic<int> hung{0};
    std::atomic<int> talked{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c] {
        for (int i = 0; !quit.load(); ++i) {
          auto fd = connect_unix(path());
          if (!fd) continue;  // the listener is gone: refused
          timeval tv{10, 0};  // a hang guard: only a socket nobody closes waits it out
          ::setsockopt(fd->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
          char buf[8];
          ssize_t n = ::recv(fd->get(), buf, sizeof buf, 0);
          if (n < 0 && errno == EAGAIN) hung.fetch_add(1);
          if (n == 6 && (i + c) % 2 == 0) {
            // Served: one echo, then close; odd ones close at once.
            if (::send(fd->get(), "x", 1, MSG_NOSIGNAL) == 1 && ::recv(fd->get(), buf, 1, 0) < 0 &&
                errno == EAGAIN) {
              hung.fetch_add(1);
            }
            talked.fetch_add(1);
          }
        }
      });
    }
    std::thread observer([&] {
      while (!quit.load()) {
        (void)loop_->active();
        (void)loop_->served();
        (void)loop_->threads();
        std::this_thread::yield();
      }
    });
    // Let some connections through, then stop while the clients go on.
    ASSERT_TRUE(eventually([&] { return loop_->served() >= 8; }));
    const auto grace = std::chrono::milliseconds(rng() % 3);
    std::thread second_stop([&] { loop_->stop(grace); });
    loop_->stop(grace);
    second_stop.join();
    EXPECT_EQ(loop_->threads(), 0u) << "round " << round;
    EXPECT_EQ(tally_.running.load(), 0) << "round " << round;
    EXPECT_EQ(tally_.destroyed.load(), tally_.made.load()) << "round " << round;
    // Connections still in the listen queue see it close.
    listener_->close();
    quit.store(true);
    for (auto& t : clients) t.join();
    observer.join();
    EXPECT_EQ(hung.load(), 0) << "round " << round;
    loop_.reset();
  }
  EXPECT_GT(tally_.made.load(), 0);
}

// The control server on the loop: over its cap a client gets a GenericError
// line and is closed, the others go on; stop() with idle clients connected
// ends them all and removes the socket.
TEST(AcceptLoopServersTest, ControlCapAndStopWithIdleClients) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  auto region = Region::open("memfd:", {.create = true});
  ASSERT_TRUE(region) << region.error().message();
  std::mutex log_mu;
  std::vector<std::string> log;
  const std::string path = dir.path() + "/control.sock";
  control::Dispatcher dispatcher(**region, {});
  auto server = control::ControlServer::start(
      dispatcher, {.socket_path = path,
                 .log =
                     [&](const std::string& line) {
                       std::lock_guard<std::mutex> lock(log_mu);
                       log.push_back(line);
                     },
                 .max_connections = 2});
  ASSERT_TRUE(server) << server.error().message();
  auto read_line = [](int fd) {
    std::string line;
    char c;
    while (::recv(fd, &c, 1, 0) == 1 && c != '\n') line += c;
    return line;
  };
  auto client = [&] {
    auto fd = connect_unix(path);
    EXPECT_TRUE(fd) << fd.error().message();
    timeval tv{10, 0};
    if (fd) ::setsockopt(fd->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd ? std::move(*fd) : internal::UniqueFd();
  };
  internal::UniqueFd a = client(), b = client();
  EXPECT_NE(read_line(a.get()).find("\"rawdax\""), std::string::npos);
  EXPECT_NE(read_line(b.get()).find("\"rawdax\""), std::string::npos);
  internal::UniqueFd over = client();
  std::string refusal = read_line(over.get());
  EXPECT_NE(refusal.find("GenericError"), std::string::npos) << refusal;
  EXPECT_NE(refusal.find("too many control connections (2)"), std::string::npos) << refusal;
  EXPECT_EQ(read_line(over.get()), "");  // closed
  const std::string query = "{\"execute\":\"query-namespaces\"}\n";
  ASSERT_EQ(::send(a.get(), query.data(), query.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(query.size()));
  EXPECT_NE(read_line(a.get()).find("\"return\""), std::string::npos);

  (*server)->stop();  // a and b are connected and idle
  char c;
  EXPECT_EQ(::recv(a.get(), &c, 1, 0), 0);
  EXPECT_EQ(::recv(b.get(), &c, 1, 0), 0);
  struct stat st;
  EXPECT_NE(::lstat(path.c_str(), &st), 0);
  std::lock_guard<std::mutex> lock(log_mu);
  auto logged = [&](const std::string& needle) {
    for (const auto& line : log) {
      if (line.find(needle) != std::string::npos) return true;
    }
    return false;
  };
  EXPECT_TRUE(logged("refused control connection from pid " + std::to_string(::getpid()) +
                     ": too many connections"));
  EXPECT_TRUE(logged("control socket " + path + " closed"));
}

}  // namespace
}  // namespace rawdax::net

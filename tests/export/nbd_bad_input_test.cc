// The NBD server against clients that misbehave on purpose: handshakes that
// never finish or trickle in, requests cut short or declared with a 1 GiB
// payload that never comes, too many connections, and a burst of all of them
// against `rawdax serve` whose memory must stay bounded. Each bad client is
// closed and logged with what it did; nothing it sent changes the namespace;
// the good client beside it is served.
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <gtest/gtest.h>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "client/protocol.h"
#include "export/nbd_fixture.h"
#include "export/nbd_wire.h"
#include "serve_child.h"

namespace rawdax {
namespace {

using namespace ::rawdax::nbd;        // NOLINT: protocol constants read better bare in tests
using namespace ::rawdax::nbd::wire;  // NOLINT: the byte-level helpers
using ::rawdax::testing::NbdFixture;
using ::rawdax::testing::RawClient;
using ::rawdax::testing::ServeChild;
using ::rawdax::testing::ScratchDir;
using Clock = std::chrono::steady_clock;

constexpr auto kTimeout = std::chrono::milliseconds(3000);

// ASan and TSan replace malloc: freed memory waits in a quarantine (ASan) and
// every page has shadow, so the daemon's RSS there says nothing about its own
// buffers. The memory bounds are checked in the plain build (make test and
// the soak); descriptors, threads, logs and service everywhere.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define RAWDAX_SANITIZER_ALLOCATOR 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RAWDAX_SANITIZER_ALLOCATOR 1
#endif
#ifdef RAWDAX_SANITIZER_ALLOCATOR
constexpr bool kCheckRss = false;
#else
constexpr bool kCheckRss = true;
#endif

// Nothing to read and no EOF yet: the server still holds the connection.
bool still_open(int fd) {
  pollfd p = {fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

// Sends `bytes` one per 100 ms from a thread until done or the server closes.
class Trickler {
 public:
  Trickler(std::shared_ptr<RawClient> client, std::string bytes)
      : client_(std::move(client)), thread_([this, bytes] {
          for (char c : bytes) {
            if (stop_.load() || !client_->send(std::string(1, c))) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
          }
        }) {}
  ~Trickler() {
    stop_.store(true);
    thread_.join();
  }

 private:
  std::shared_ptr<RawClient> client_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class NbdBadInputTest : public NbdFixture {
 protected:
  void start(size_t max_connections = 256) {
    NbdServerOptions options;
    options.handshake_timeout = kTimeout;
    options.message_timeout = kTimeout;
    options.max_connections = max_connections;
    start_server_with(std::move(options));
  }

  // A well-behaved client writes a pattern and reads it back.
  void serve_good_client(uint64_t offset, char fill) {
    RawClient good(socket_path());
    ASSERT_NO_FATAL_FAILURE(go(good, "default", /*structured=*/false));
    ASSERT_TRUE(good.send(request(kCmdWrite, 1, offset, 4096) + std::string(4096, fill)));
    Reply w = read_reply(good);
    ASSERT_TRUE(w.ok);
    EXPECT_EQ(w.error, 0u);
    ASSERT_TRUE(good.send(request(kCmdRead, 2, offset, 4096)));
    Reply r = read_reply(good);
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.error, 0u);
    EXPECT_EQ(good.recv(4096), std::string(4096, fill));
  }

  // The namespace's bytes at [offset, offset + n).
  std::string bytes_at(uint64_t offset, size_t n) {
    auto dev = open_device();
    std::string out(n, '?');
    if (dev) {
      EXPECT_TRUE(dev->read(offset, std::as_writable_bytes(std::span(out.data(), n))));
    }
    return out;
  }
};

TEST_P(NbdBadInputTest, HandshakesThatNeverFinishAreClosedAndOthersAreServed) {
  start();
  auto started = Clock::now();
  // Connects and never answers the greeting.
  RawClient silent(socket_path());
  ASSERT_EQ(silent.recv(18).size(), 18u);
  // Answers, then trickles an option header a byte per 100 ms: it always
  // makes progress, but never finishes within the handshake's time.
  auto trickling = std::make_shared<RawClient>(socket_path());
  ASSERT_EQ(trickling->recv(18).size(), 18u);
  Trickler trickle(trickling, be32(kClientFixedNewstyle) +
                                  option(kOptGo, info_payload(std::string(100, 'n'), {})));
  // Declares 1 GiB of option data and sends none.
  RawClient huge_option(socket_path());
  ASSERT_NO_FATAL_FAILURE(greet(huge_option));
  ASSERT_TRUE(huge_option.send(be64(kOptMagic) + be32(kOptGo) + be32(1u << 30)));

  ASSERT_NO_FATAL_FAILURE(serve_good_client(0, 'g'));
  // Served while the three were still being waited for.
  EXPECT_TRUE(still_open(silent.fd()));
  EXPECT_TRUE(still_open(huge_option.fd()));

  EXPECT_TRUE(silent.closed_by_server());
  EXPECT_TRUE(huge_option.closed_by_server());
  EXPECT_TRUE(trickling->closed_by_server());
  EXPECT_GE(Clock::now() - started, kTimeout);
  std::string log = log_text();
  EXPECT_NE(log.find("handshake not finished within 3000 ms; closing"), std::string::npos) << log;
  EXPECT_EQ(bytes_at(0, 4096), std::string(4096, 'g'));
}

TEST_P(NbdBadInputTest, StalledRequestsAreClosedAndWriteNothing) {
  start();
  // Half a request header, then silence.
  RawClient half_header(socket_path());
  ASSERT_NO_FATAL_FAILURE(go(half_header, "default", /*structured=*/true));
  ASSERT_TRUE(half_header.send(request(kCmdRead, 1, 0, 4096).substr(0, 10)));
  // A write of 1 GiB declared, its payload never sent.
  RawClient gigabyte(socket_path());
  ASSERT_NO_FATAL_FAILURE(go(gigabyte, "default", /*structured=*/true));
  ASSERT_TRUE(gigabyte.send(request(kCmdWrite, 2, 8192, 1u << 30)));
  // A valid 32 MiB write with 4 KiB of payload sent.
  RawClient partial(socket_path());
  ASSERT_NO_FATAL_FAILURE(go(partial, "default", /*structured=*/true));
  ASSERT_TRUE(partial.send(request(kCmdWrite, 3, 1 << 20, 32u << 20) + std::string(4096, 'p')));
  // A 4 KiB write whose payload trickles in a byte per 100 ms.
  auto trickling = std::make_shared<RawClient>(socket_path());
  ASSERT_NO_FATAL_FAILURE(go(*trickling, "default", /*structured=*/true));
  ASSERT_TRUE(trickling->send(request(kCmdWrite, 4, 65536, 4096)));
  Trickler trickle(trickling, std::string(4096, 't'));

  ASSERT_NO_FATAL_FAILURE(serve_good_client(0, 'g'));
  EXPECT_TRUE(still_open(half_header.fd()));
  EXPECT_TRUE(still_open(gigabyte.fd()));
  EXPECT_TRUE(still_open(partial.fd()));

  for (RawClient* c : {&half_header, &gigabyte, &partial, trickling.get()}) {
    EXPECT_TRUE(c->closed_by_server());
  }
  std::string log = log_text();
  EXPECT_NE(log.find("request header not complete within 3000 ms"), std::string::npos) << log;
  EXPECT_NE(log.find("WRITE offset 8192 length 1073741824 (refused: "), std::string::npos) << log;
  EXPECT_NE(log.find("WRITE offset 1048576 length 33554432: payload not complete within 3000 ms"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("WRITE offset 65536 length 4096: payload not complete"), std::string::npos)
      << log;
  // None of them wrote a byte.
  EXPECT_EQ(bytes_at(8192, 4096), std::string(4096, '\0'));
  EXPECT_EQ(bytes_at(1 << 20, 4096), std::string(4096, '\0'));
  EXPECT_EQ(bytes_at(65536, 4096), std::string(4096, '\0'));
  ASSERT_NO_FATAL_FAILURE(serve_good_client(4096, 'h'));
}

TEST_P(NbdBadInputTest, TruncatedFramesCloseOnlyTheirConnection) {
  start();
  RawClient good(socket_path());
  ASSERT_NO_FATAL_FAILURE(go(good, "default", /*structured=*/false));
  {
    RawClient cut(socket_path());
    ASSERT_NO_FATAL_FAILURE(go(cut, "default", /*structured=*/false));
    ASSERT_TRUE(cut.send(request(kCmdWrite, 1, 0, 4096).substr(0, 20)));
  }
  {
    RawClient cut(socket_path());
    ASSERT_NO_FATAL_FAILURE(go(cut, "default", /*structured=*/false));
    ASSERT_TRUE(cut.send(request(kCmdWrite, 1, 0, 4096) + std::string(1000, 'x')));
  }
  {
    RawClient cut(socket_path());
    ASSERT_NO_FATAL_FAILURE(greet(cut));
    ASSERT_TRUE(cut.send(option(kOptGo, info_payload("default", {})).substr(0, 20)));
  }
  // The three connections end on their own threads, in any order: wait for
  // both lines.
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while ((log_text().find("in the middle of the payload") == std::string::npos ||
          log_text().find("in the middle of a request header") == std::string::npos) &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::string log = log_text();
  EXPECT_NE(log.find("connection closed in the middle of a request header"), std::string::npos)
      << log;
  EXPECT_NE(log.find("WRITE offset 0 length 4096: connection closed in the middle of the payload"),
            std::string::npos)
      << log;
  EXPECT_EQ(bytes_at(0, 4096), std::string(4096, '\0'));
  ASSERT_TRUE(good.send(request(kCmdFlush, 9, 0, 0)));
  Reply r = read_reply(good);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.error, 0u);
}

TEST_P(NbdBadInputTest, ConnectionsBeyondTheLimitAreRefusedAtOnce) {
  start(/*max_connections=*/3);
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<RawClient>(socket_path()));
    ASSERT_NO_FATAL_FAILURE(go(*held.back(), "default", /*structured=*/false));
  }
  RawClient extra(socket_path());
  EXPECT_EQ(extra.recv(18), "");  // closed before the greeting
  EXPECT_NE(log_text().find("3 connections are open already"), std::string::npos) << log_text();
  held.pop_back();
  // Once one has left (its thread notices the close), a new client is served.
  auto deadline = Clock::now() + std::chrono::seconds(10);
  bool served = false;
  while (!served && Clock::now() < deadline) {
    RawClient next(socket_path());
    served = next.recv(18).size() == 18;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(served);
}

// `rawdax serve` as a child: a burst of bad NBD and control clients leaves
// its memory bounded (relative to itself before the burst), its descriptors
// and threads back where they were, and a good client served throughout.
TEST(NbdServeBadInput, ABurstOfBadClientsKeepsMemoryBoundedAndOthersServed) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  ServeChild serve(dir.path() + "/region", dir.path() + "/nbd.sock", dir.path() + "/serve.log",
                   {"--default-size", "64M"});
  ASSERT_TRUE(serve.ready()) << serve.log();
  // Before any client: every connection's socket and thread must go again.
  const size_t fds_start = serve.fd_count();
  const size_t threads_start = serve.threads();
  auto good_round = [&](uint64_t offset, char fill) {
    RawClient good(serve.nbd_socket());
    ASSERT_NO_FATAL_FAILURE(go(good, "default", /*structured=*/false));
    std::string data(256 << 10, fill);
    ASSERT_TRUE(good.send(request(kCmdWrite, 1, offset, data.size()) + data));
    Reply w = read_reply(good);
    ASSERT_TRUE(w.ok);
    EXPECT_EQ(w.error, 0u);
    ASSERT_TRUE(good.send(request(kCmdRead, 2, offset, data.size())));
    Reply r = read_reply(good);
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(good.recv(data.size()), data);
    auto control = Client::connect(dir.path() + "/region/control.sock");
    ASSERT_TRUE(control) << control.error().message();
    EXPECT_TRUE((*control)->execute("query-namespaces"));
  };
  // Warm-up: every path a good client takes has run once.
  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(good_round(0, 'w'));
  // Ended connections are reaped (and memory trimmed) within a second.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const uint64_t rss_start = serve.rss_kib();
  EXPECT_EQ(serve.fd_count(), fds_start);
  ASSERT_GT(rss_start, 0u);

  constexpr int kEach = 16;
  // One burst: kEach of each kind of bad client at once, a good client served
  // in their midst; returns the RSS then. Then they all go.
  auto burst = [&](uint64_t good_offset) -> uint64_t {
    std::vector<std::unique_ptr<RawClient>> nbd_clients;
    std::vector<internal::UniqueFd> control_clients;
    for (int i = 0; i < kEach; ++i) {
      // A valid 32 MiB write, 512 bytes of it sent.
      auto big = std::make_unique<RawClient>(serve.nbd_socket());
      go(*big, "default", /*structured=*/false);
      EXPECT_TRUE(big->send(request(kCmdWrite, 1, 32u << 20, 32u << 20) + std::string(512, 'b')));
      nbd_clients.push_back(std::move(big));
      // 1 GiB declared, nothing sent.
      auto huge = std::make_unique<RawClient>(serve.nbd_socket());
      go(*huge, "default", /*structured=*/false);
      EXPECT_TRUE(huge->send(request(kCmdWrite, 1, 0, 1u << 30)));
      nbd_clients.push_back(std::move(huge));
      // Never past the greeting.
      auto silent = std::make_unique<RawClient>(serve.nbd_socket());
      EXPECT_EQ(silent->recv(18).size(), 18u);
      nbd_clients.push_back(std::move(silent));
      // Garbage.
      auto garbage = std::make_unique<RawClient>(serve.nbd_socket());
      EXPECT_TRUE(garbage->send(std::string(4096, '\xa5')));
      nbd_clients.push_back(std::move(garbage));
      // Control: half a line, and a line over the 1 MiB limit.
      auto half = control::connect_unix(dir.path() + "/region/control.sock");
      EXPECT_TRUE(half);
      if (half) {
        EXPECT_EQ(::send(half->get(), "{\"execute\":", 11, MSG_NOSIGNAL), 11);
        control_clients.push_back(std::move(*half));
      }
      auto over = control::connect_unix(dir.path() + "/region/control.sock");
      EXPECT_TRUE(over);
      if (over) {
        std::string line(control::kMaxRequestLine + 16, 'x');
        (void)::send(over->get(), line.data(), line.size(), MSG_NOSIGNAL);  // may be cut short
        control_clients.push_back(std::move(*over));
      }
    }
    good_round(good_offset, 'g');
    const uint64_t during = serve.rss_kib();
    nbd_clients.clear();
    control_clients.clear();
    auto deadline = Clock::now() + std::chrono::seconds(20);
    while ((serve.threads() > threads_start || serve.fd_count() > fds_start) &&
           Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    good_round(good_offset + (1 << 20), 'e');
    // Ended connections are reaped and their memory trimmed within a second.
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    return during;
  };
  const uint64_t rss_burst1 = burst(4 << 20);
  const uint64_t rss_after1 = serve.rss_kib();
  const size_t fds_after1 = serve.fd_count();
  const size_t threads_after1 = serve.threads();
  const uint64_t rss_burst2 = burst(8 << 20);
  const uint64_t rss_after2 = serve.rss_kib();
  std::printf("serve RSS: start %llu KiB; burst 1 %llu KiB, after %llu KiB; burst 2 %llu KiB, "
              "after %llu KiB; fds %zu -> %zu; threads %zu -> %zu\n",
              static_cast<unsigned long long>(rss_start), static_cast<unsigned long long>(rss_burst1),
              static_cast<unsigned long long>(rss_after1), static_cast<unsigned long long>(rss_burst2),
              static_cast<unsigned long long>(rss_after2), fds_start, serve.fd_count(),
              threads_start, serve.threads());
  // 64 NBD connections cost threads and a few buffer pages each, not the
  // payloads they announced; a control line is buffered up to its limit
  // (in a string that may have doubled past it) until it is refused.
  const uint64_t control_lines_kib = kEach * 2 * (control::kMaxRequestLine >> 10);
  if (kCheckRss) {
    EXPECT_LT(rss_burst1, 2 * rss_start + control_lines_kib);
    EXPECT_LT(rss_burst2, 2 * rss_start + control_lines_kib);
    // Each burst's good clients write 512 KiB into the namespace, whose
    // pages count in RSS. Beyond that, what the first burst leaves (glibc
    // arenas and cached thread stacks made for it) is bounded relative to the
    // start, and a second burst adds nothing to it.
    EXPECT_LT(rss_after1, rss_start + rss_start / 2 + 512);
    EXPECT_LT(rss_after2, rss_after1 + rss_after1 / 10 + 512);
  }
  EXPECT_EQ(fds_after1, fds_start);
  EXPECT_EQ(threads_after1, threads_start);
  EXPECT_EQ(serve.fd_count(), fds_start);
  EXPECT_EQ(serve.threads(), threads_start);
  std::string log = serve.log();
  EXPECT_NE(log.find("request line longer than"), std::string::npos) << log;
  EXPECT_NE(log.find("unknown client flags"), std::string::npos) << log;
  EXPECT_TRUE(::rawdax::testing::serve_error_lines(log).empty()) << log;
  EXPECT_EQ(serve.stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(Media, NbdBadInputTest, RAWDAX_TMPFS_AND_CARVED,
                         ::rawdax::testing::param_name);

}  // namespace
}  // namespace rawdax

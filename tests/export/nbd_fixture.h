// Shared pieces of the NBD tests: a region of the test's media (tmpfs, or a
// carved file on tmpfs) served in-process on a unix socket in a scratch
// directory (so tests run in parallel), a runner for peer binaries, and a raw
// socket client for byte-level protocol tests.
#ifndef RAWDAX_TESTS_EXPORT_NBD_FIXTURE_H_
#define RAWDAX_TESTS_EXPORT_NBD_FIXTURE_H_

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax::testing {

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string slurp_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Whether a peer program is installed (a test needing a missing one fails,
// saying so: make deps installs them all).
inline bool have_program(const std::string& name) {
  return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0;
}

// python3 with the libnbd bindings (Debian's, which pyenv shims may hide).
inline std::string python_with_libnbd() {
  for (const char* py : {"/usr/bin/python3", "python3"}) {
    std::string cmd = std::string(py) + " -c 'import nbd' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) return py;
  }
  return "";
}

#define RAWDAX_REQUIRE_PROGRAM(name)                                        \
  do {                                                                      \
    if (!::rawdax::testing::have_program(name)) {                           \
      GTEST_FAIL() << name << " is not installed (make deps installs it)"; \
    }                                                                       \
  } while (0)

class NbdFixture : public ::testing::TestWithParam<TestMedia> {
 protected:
  void SetUp() override {
    auto region = Region::open(region_dir_.spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
    auto made = region_->create_namespace({.name = "default", .size = namespace_size()});
    ASSERT_TRUE(made) << made.error().message();
  }
  void TearDown() override {
    if (server_) server_->stop();
    server_.reset();
  }

  virtual uint64_t namespace_size() const { return 64 << 20; }

  void start_server(bool read_only = false) {
    NbdServerOptions options;
    options.read_only = read_only;
    start_server_with(std::move(options));
  }
  // With the given options; the listen address and the log are the fixture's.
  void start_server_with(NbdServerOptions options) {
    options.listen = "unix:" + dir_.path() + "/nbd.sock";
    options.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      log_.push_back(line);
    };
    auto server = NbdServer::start(*region_, std::move(options));
    ASSERT_TRUE(server) << server.error().message();
    server_ = std::move(*server);
  }

  std::string uri(const std::string& name = "default") const { return server_->uri(name); }
  std::string socket_path() const { return dir_.path() + "/nbd.sock"; }

  std::string log_text() {
    std::lock_guard<std::mutex> lock(log_mu_);
    std::string all;
    for (const auto& line : log_) all += line + "\n";
    return all;
  }

  // Runs a shell command (bounded by `timeout`), capturing its output.
  RunResult run(const std::string& command, int timeout_s = 60) {
    static std::atomic<int> counter{0};  // tests may run clients from several threads
    std::string base = dir_.path() + "/run" + std::to_string(counter.fetch_add(1));
    std::string cmd = "timeout " + std::to_string(timeout_s) + " " + command + " >" + base +
                      ".out 2>" + base + ".err </dev/null";
    int status = std::system(cmd.c_str());
    RunResult r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp_file(base + ".out");
    r.err = slurp_file(base + ".err");
    return r;
  }

  std::unique_ptr<Device> open_device(const std::string& name = "default") {
    auto dev = region_->open_device(name);
    EXPECT_TRUE(dev) << dev.error().message();
    return dev ? std::move(*dev) : nullptr;
  }

  ScratchDir dir_{tmpfs_parent()};
  ScratchRegion region_dir_{GetParam()};
  std::unique_ptr<Region> region_;
  std::unique_ptr<NbdServer> server_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

// A client that speaks raw bytes, for what real clients never send.
class RawClient {
 public:
  explicit RawClient(const std::string& socket_path) {
    fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strncpy(sun.sun_path, socket_path.c_str(), sizeof sun.sun_path - 1);
    connected_ = ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0;
    timeval tv{10, 0};  // never hang a test on a silent server
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  bool connected() const { return connected_; }
  int fd() const { return fd_.get(); }
  bool send(const std::string& bytes) {
    return ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  // n bytes, or fewer if the server closed (or went silent for 10 s).
  std::string recv(size_t n) {
    std::string out(n, '\0');
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::recv(fd_.get(), out.data() + got, n - got, 0);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    out.resize(got);
    return out;
  }
  // True when the server has closed the connection (EOF, not a timeout).
  bool closed_by_server() {
    char c;
    while (true) {
      ssize_t r = ::recv(fd_.get(), &c, 1, 0);
      if (r == 0) return true;
      if (r < 0 && errno == EINTR) continue;
      return r < 0 && errno == ECONNRESET;
    }
  }

 private:
  internal::UniqueFd fd_;
  bool connected_ = false;
};

}  // namespace rawdax::testing

#endif  // RAWDAX_TESTS_EXPORT_NBD_FIXTURE_H_

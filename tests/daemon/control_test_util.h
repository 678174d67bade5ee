// Helpers for the control-socket tests: a daemon-side fixture (a Region and
// a ControlServer in this process), a raw line client for protocol-level
// checks, and spawning the rawdax binary as a daemon.
#ifndef RAWDAX_TESTS_DAEMON_CONTROL_TEST_UTIL_H_
#define RAWDAX_TESTS_DAEMON_CONTROL_TEST_UTIL_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <gtest/gtest.h>
#include <memory>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "client/protocol.h"
#include "child_process.h"
#include "daemon/server.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax::testing {

using json = nlohmann::json;

// A protocol-level connection: send raw lines, read raw lines.
class RawConnection {
 public:
  explicit RawConnection(const std::string& path) {
    auto fd = control::connect_unix(path);
    if (!fd) {
      ADD_FAILURE() << fd.error().message();
      return;
    }
    fd_ = std::move(*fd);
    // Bounded: a test never waits forever on a missing line.
    timeval tv{5, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto line = reader_.read_line(fd_.get());
    if (line) greeting_ = json::parse(*line, nullptr, false);
  }
  const json& greeting() const { return greeting_; }
  int fd() const { return fd_.get(); }

  Status send(const std::string& line) { return control::send_line(fd_.get(), line); }
  // The next line, parsed; discarded (is_discarded()) on EOF or garbage.
  json read() {
    auto line = reader_.read_line(fd_.get());
    if (!line) return json(json::value_t::discarded);
    return json::parse(*line, nullptr, false);
  }
  json call(const std::string& line) {
    EXPECT_TRUE(send(line));
    return read();
  }
  json execute(const std::string& command, const json& arguments = json::object()) {
    return call(json{{"execute", command}, {"arguments", arguments}}.dump());
  }
  std::deque<internal::UniqueFd>& fds() { return reader_.fds(); }

 private:
  internal::UniqueFd fd_;
  control::LineReader reader_{control::kMaxReplyLine};
  json greeting_;
};

// The error class of a reply, or "" when it is not an error.
inline std::string error_class(const json& reply) {
  if (!reply.is_object() || !reply.contains("error")) return "";
  return reply["error"].value("class", "");
}

// Where the namespace starts in the fd passed with an open-namespace reply
// line: its "offset" (a carved namespace's extent in the device; 0
// elsewhere). A raw client maps the fd at it. nullopt when the line is no
// such reply.
inline std::optional<uint64_t> open_reply_offset(const std::string& line) {
  json reply = json::parse(line, nullptr, false);
  if (!reply.is_object() || !reply.contains("return") || !reply["return"].is_object()) {
    return std::nullopt;
  }
  const json& ret = reply["return"];
  if (!ret.contains("offset") || !ret["offset"].is_number_unsigned()) return std::nullopt;
  return ret["offset"].get<uint64_t>();
}

// A region with namespace "vm1" and a ControlServer serving it, in this
// process: the test plays the daemon.
class DaemonFixture {
 public:
  explicit DaemonFixture(TestMedia media, uint64_t vm1_size = 1 << 20)
      : region_spec_(media), socket_dir_(tmpfs_parent()) {
    auto region = Region::open(region_spec_.spec(), {.create = true});
    if (!region) {
      ADD_FAILURE() << region.error().message();
      return;
    }
    region_ = std::move(*region);
    auto made = region_->create_namespace({.name = "vm1", .size = vm1_size});
    if (!made) ADD_FAILURE() << made.error().message();
    start();
  }
  ~DaemonFixture() { stop(); }

  // A new daemon each time: a fresh Dispatcher (its own Devices) and server.
  void start() {
    control::LogFn log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      log_.push_back(line);
    };
    dispatcher_ = std::make_unique<control::Dispatcher>(*region_, control::DispatcherOptions{.log = log});
    auto server = control::ControlServer::start(*dispatcher_, {.socket_path = socket_path(), .log = log});
    if (!server) {
      ADD_FAILURE() << server.error().message();
      return;
    }
    server_ = std::move(*server);
  }
  void stop() {
    server_.reset();
    dispatcher_.reset();
  }

  Region& region() { return *region_; }
  control::Dispatcher& dispatcher() { return *dispatcher_; }
  std::string socket_path() const { return socket_dir_.path() + "/control.sock"; }
  bool logged(const std::string& needle) {
    std::lock_guard<std::mutex> lock(log_mu_);
    for (const auto& line : log_) {
      if (line.find(needle) != std::string::npos) return true;
    }
    return false;
  }

 private:
  ScratchRegion region_spec_;
  ScratchDir socket_dir_;
  std::unique_ptr<Region> region_;
  std::unique_ptr<control::Dispatcher> dispatcher_;  // outlives server_
  std::unique_ptr<control::ControlServer> server_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

// Reads one byte from `fd` within `timeout`; false on timeout or EOF.
inline bool wait_byte(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  char c;
  return ::read(fd, &c, 1) == 1;
}

}  // namespace rawdax::testing

#endif  // RAWDAX_TESTS_DAEMON_CONTROL_TEST_UTIL_H_

#include "vm/qmp_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "net/unix_socket.h"

namespace rawdax::internal {

Result<QmpClient> QmpClient::connect(const std::string& path, std::chrono::milliseconds timeout) {
  QmpClient client;
  client.path_ = path;
  client.timeout_ = timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return Error(std::errc::filename_too_long, "QMP socket path " + path + " is too long");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // Non-blocking: QEMU's QMP server takes one client at a time, and a
  // connect to a busy one would otherwise wait forever in its backlog.
  client.fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!client.fd_.valid()) return errno_error(errno, "QMP socket");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (::connect(client.fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno == EINTR) continue;
    if (errno != EAGAIN || std::chrono::steady_clock::now() >= deadline) {
      return errno_error(errno, "cannot connect to QMP socket " + path +
                                    (errno == EAGAIN ? " (another client holds it)" : ""));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  int flags = ::fcntl(client.fd_.get(), F_GETFL);
  if (flags < 0 || ::fcntl(client.fd_.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return errno_error(errno, "QMP socket " + path + ": fcntl");
  }
  auto greeting = client.read_line();
  if (!greeting) return greeting.error();
  auto parsed = nlohmann::json::parse(*greeting, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object() || !parsed.contains("QMP")) {
    return Error(std::errc::protocol_error, "QMP socket " + path + ": not a QMP greeting");
  }
  auto negotiated = client.execute("qmp_capabilities");
  if (!negotiated) return negotiated.error();
  return client;
}

Status QmpClient::write_all(const std::string& text, int fd) {
  return net::send_all(fd_.get(), text, fd, "QMP socket " + path_);
}

Result<std::string> QmpClient::read_line() {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (;;) {
    if (size_t end = buffer_.find('\n'); end != std::string::npos) {
      std::string line = buffer_.substr(0, end);
      buffer_.erase(0, end + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Error(std::errc::timed_out, "QMP socket " + path_ + ": no reply within " +
                                             std::to_string(timeout_.count()) + " ms");
    }
    pollfd pfd{fd_.get(), POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return errno_error(errno, "QMP socket " + path_ + ": poll");
    if (ready == 0) continue;  // the deadline check reports it
    char chunk[4096];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, "QMP socket " + path_ + ": recv");
    if (n == 0) return Error(std::errc::connection_reset, "QMP socket " + path_ + ": closed");
    if (buffer_.size() + static_cast<size_t>(n) > (1u << 20)) {
      return Error(std::errc::message_size, "QMP socket " + path_ + ": line over 1 MiB");
    }
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

Result<std::string> QmpClient::execute(const std::string& command,
                                       const std::string& arguments_json) {
  return run(command, arguments_json, -1);
}

Result<std::string> QmpClient::execute_with_fd(const std::string& command,
                                               const std::string& arguments_json, int fd) {
  return run(command, arguments_json, fd);
}

void QmpClient::note_event(const std::string& name, int64_t timestamp_us) {
  if (name == "STOP") {
    stop_us_ = timestamp_us;
    resume_us_ = -1;
  } else if (name == "RESUME" && stop_us_ >= 0) {
    resume_us_ = timestamp_us;
  }
}

std::optional<std::chrono::nanoseconds> QmpClient::last_pause() const {
  if (stop_us_ < 0 || resume_us_ < stop_us_) return std::nullopt;
  return std::chrono::microseconds(resume_us_ - stop_us_);
}

Result<std::string> QmpClient::run(const std::string& command, const std::string& arguments_json,
                                   int fd) {
  nlohmann::json request = {{"execute", command}};
  if (!arguments_json.empty()) {
    auto args = nlohmann::json::parse(arguments_json, nullptr, false);
    if (args.is_discarded() || !args.is_object()) {
      return Error(std::errc::invalid_argument, "QMP " + command + ": arguments must be an object");
    }
    request["arguments"] = std::move(args);
  }
  RAWDAX_RETURN_IF_ERROR(write_all(request.dump() + "\n", fd));
  for (;;) {
    auto line = read_line();
    if (!line) return line.error();
    auto reply = nlohmann::json::parse(*line, nullptr, false);
    if (reply.is_discarded() || !reply.is_object()) {
      return Error(std::errc::protocol_error, "QMP socket " + path_ + ": bad reply: " + *line);
    }
    if (reply.contains("event")) {
      const auto& ts = reply.value("timestamp", nlohmann::json::object());
      if (reply["event"].is_string() && ts.is_object() && ts.value("seconds", int64_t{-1}) >= 0) {
        note_event(reply["event"].get<std::string>(),
                   ts.value("seconds", int64_t{0}) * 1000000 + ts.value("microseconds", int64_t{0}));
      }
      continue;
    }
    if (reply.contains("return")) return reply["return"].dump();
    if (reply.contains("error")) {
      const auto& e = reply["error"];
      return Error(std::errc::io_error, "QMP " + command + " on " + path_ + ": " +
                                            e.value("class", std::string("Error")) + ": " +
                                            e.value("desc", std::string()));
    }
    return Error(std::errc::protocol_error, "QMP socket " + path_ + ": unexpected reply: " + *line);
  }
}

Result<std::string> QmpClient::status() {
  auto reply = execute("query-status");
  if (!reply) return reply.error();
  auto parsed = nlohmann::json::parse(*reply, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object() || !parsed.contains("status") ||
      !parsed["status"].is_string()) {
    return Error(std::errc::protocol_error, "QMP query-status on " + path_ + ": no status");
  }
  return parsed["status"].get<std::string>();
}

Status QmpClient::stop() {
  auto reply = execute("stop");
  if (!reply) return reply.error();
  return ok();
}

Status QmpClient::cont() {
  auto reply = execute("cont");
  if (!reply) return reply.error();
  return ok();
}

}  // namespace rawdax::internal

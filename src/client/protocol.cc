#include "client/protocol.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "net/unix_socket.h"

namespace rawdax::control {

std::string_view error_class(const Error& error) {
  const std::error_code& code = error.code();
  if (code == std::errc::no_such_file_or_directory) return kDeviceNotFound;
  if (code == std::errc::device_or_resource_busy) return kDeviceBusy;
  if (code == std::errc::function_not_supported) return kCommandNotFound;
  return kGenericError;
}

std::error_code error_code_for_class(std::string_view error_class) {
  if (error_class == kDeviceNotFound) return std::make_error_code(std::errc::no_such_file_or_directory);
  if (error_class == kDeviceBusy) return std::make_error_code(std::errc::device_or_resource_busy);
  if (error_class == kCommandNotFound) return std::make_error_code(std::errc::function_not_supported);
  return std::make_error_code(std::errc::invalid_argument);
}

Result<nlohmann::json> reply_result(const nlohmann::json& message) {
  if (!message.is_object()) return Error(std::errc::protocol_error, "control socket: malformed reply");
  if (auto error = message.find("error"); error != message.end()) {
    if (!error->is_object()) return Error(std::errc::protocol_error, "control socket: malformed error reply");
    auto cls = error->find("class");
    auto desc = error->find("desc");
    return Error(error_code_for_class(cls != error->end() && cls->is_string()
                                          ? cls->get<std::string>()
                                          : std::string(kGenericError)),
                 desc != error->end() && desc->is_string() ? desc->get<std::string>()
                                                           : std::string("daemon error"));
  }
  auto ret = message.find("return");
  if (ret == message.end()) return Error(std::errc::protocol_error, "control socket: reply without return");
  return *ret;
}

Status send_line(int socket, std::string_view line, int pass_fd) {
  std::string buf;
  buf.reserve(line.size() + 1);
  buf.append(line);
  buf.push_back('\n');
  return net::send_all(socket, buf, pass_fd, "control socket");
}

bool LineReader::has_line() const { return buffer_.find('\n', scanned_) != std::string::npos; }

Result<std::string> LineReader::read_line(int socket) {
  constexpr size_t kMaxFds = 16;
  for (;;) {
    size_t newline = buffer_.find('\n', scanned_);
    if (newline != std::string::npos) {
      if (newline > max_line_) break;
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      scanned_ = 0;
      return line;
    }
    scanned_ = buffer_.size();
    if (buffer_.size() > max_line_) break;
    char chunk[16384];
    iovec iov{chunk, sizeof chunk};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "control socket: receive");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds_.emplace_back(fd);
      }
    }
    if (n == 0) return Error(std::errc::connection_reset, "control socket: connection closed");
    buffer_.append(chunk, static_cast<size_t>(n));
  }
  // Too long, finished or not; the rest of the stream is out of step.
  buffer_.clear();
  scanned_ = 0;
  return Error(std::errc::message_size, "line longer than " + std::to_string(max_line_) + " bytes");
}

}  // namespace rawdax::control

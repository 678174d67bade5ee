#include "control/protocol.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

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

namespace {

// A sockaddr_un for `path`. A path too long for sun_path is reached through
// /proc/self/fd/N of its directory; `dir` keeps N open until bind/connect.
struct UnixAddress {
  sockaddr_un addr = {};
  UniqueFd dir;
};

Result<UnixAddress> make_address(const std::string& path) {
  UnixAddress out;
  out.addr.sun_family = AF_UNIX;
  std::string target = path;
  if (target.size() >= sizeof(out.addr.sun_path)) {
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    out.dir.reset(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!out.dir.valid()) return errno_error(errno, "control socket " + path + ": cannot open " + dir);
    target = "/proc/self/fd/" + std::to_string(out.dir.get()) + "/" + base;
    if (target.size() >= sizeof(out.addr.sun_path)) {
      return Error(std::errc::filename_too_long, "control socket " + path + ": name too long");
    }
  }
  std::memcpy(out.addr.sun_path, target.c_str(), target.size() + 1);
  return out;
}

Result<UniqueFd> new_socket(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno_error(errno, "control socket " + path + ": socket");
  return fd;
}

}  // namespace

Result<UniqueFd> connect_unix(const std::string& path) {
  auto address = make_address(path);
  if (!address) return address.error();
  auto fd = new_socket(path);
  if (!fd) return fd.error();
  while (::connect(fd->get(), reinterpret_cast<const sockaddr*>(&address->addr),
                   sizeof address->addr) != 0) {
    if (errno != EINTR) return errno_error(errno, "cannot connect to " + path);
  }
  return std::move(*fd);
}

Result<UniqueFd> listen_unix(const std::string& path, int backlog) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Error(std::errc::file_exists, "control socket " + path + ": exists and is not a socket");
    }
    if (connect_unix(path)) {
      return Error(std::errc::address_in_use,
                   "control socket " + path + ": another daemon is listening on it");
    }
    // Left behind by a daemon that died: nobody accepts on it.
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return errno_error(errno, "control socket " + path + ": cannot remove the stale socket");
    }
  }
  auto address = make_address(path);
  if (!address) return address.error();
  auto fd = new_socket(path);
  if (!fd) return fd.error();
  if (::bind(fd->get(), reinterpret_cast<const sockaddr*>(&address->addr),
             sizeof address->addr) != 0) {
    return errno_error(errno, "control socket " + path + ": bind");
  }
  // Before listen(): until then every connect() is refused, so nobody can
  // get in while the file still has the umask's mode.
  if (::chmod(address->addr.sun_path, 0600) != 0) {
    int err = errno;
    ::unlink(address->addr.sun_path);
    return errno_error(err, "control socket " + path + ": chmod");
  }
  if (::listen(fd->get(), backlog) != 0) {
    int err = errno;
    ::unlink(address->addr.sun_path);
    return errno_error(err, "control socket " + path + ": listen");
  }
  return std::move(*fd);
}

Status send_line(int socket, std::string_view line, int pass_fd) {
  std::string buf;
  buf.reserve(line.size() + 1);
  buf.append(line);
  buf.push_back('\n');
  size_t done = 0;
  bool fd_pending = pass_fd >= 0;
  while (done < buf.size()) {
    iovec iov{buf.data() + done, buf.size() - done};
    msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    if (fd_pending) {
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(cmsg), &pass_fd, sizeof(int));
    }
    ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "control socket: send");
    }
    fd_pending = false;
    done += static_cast<size_t>(n);
  }
  return ok();
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

#include "net/unix_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rawdax::net {

namespace {

// A sockaddr_un for `path`. A path too long for sun_path is reached through
// /proc/self/fd/N of its directory; `dir` keeps N open until bind/connect.
struct UnixAddress {
  sockaddr_un addr = {};
  internal::UniqueFd dir;
};

Result<UnixAddress> make_address(const std::string& path, const std::string& what) {
  UnixAddress out;
  out.addr.sun_family = AF_UNIX;
  std::string target = path;
  if (target.size() >= sizeof(out.addr.sun_path)) {
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    out.dir.reset(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!out.dir.valid()) return errno_error(errno, what + ": cannot open " + dir);
    target = "/proc/self/fd/" + std::to_string(out.dir.get()) + "/" + base;
    if (target.size() >= sizeof(out.addr.sun_path)) {
      return Error(std::errc::filename_too_long, what + ": name too long");
    }
  }
  std::memcpy(out.addr.sun_path, target.c_str(), target.size() + 1);
  return out;
}

Result<internal::UniqueFd> new_socket(const std::string& what) {
  internal::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno_error(errno, what + ": socket");
  return fd;
}

}  // namespace

Result<internal::UniqueFd> connect_unix(const std::string& path, std::string_view what) {
  const std::string named = std::string(what) + " " + path;
  auto address = make_address(path, named);
  if (!address) return address.error();
  auto fd = new_socket(named);
  if (!fd) return fd.error();
  while (::connect(fd->get(), reinterpret_cast<const sockaddr*>(&address->addr),
                   sizeof address->addr) != 0) {
    if (errno != EINTR) return errno_error(errno, "cannot connect to " + path);
  }
  return std::move(*fd);
}

Result<internal::UniqueFd> listen_unix(const std::string& path, int backlog, std::string_view what) {
  const std::string named = std::string(what) + " " + path;
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Error(std::errc::file_exists, named + ": exists and is not a socket");
    }
    if (connect_unix(path)) {
      return Error(std::errc::address_in_use, named + ": another server is listening on it");
    }
    // Left behind by a server that died: nobody accepts on it.
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return errno_error(errno, named + ": cannot remove the stale socket");
    }
  }
  auto address = make_address(path, named);
  if (!address) return address.error();
  auto fd = new_socket(named);
  if (!fd) return fd.error();
  if (::bind(fd->get(), reinterpret_cast<const sockaddr*>(&address->addr),
             sizeof address->addr) != 0) {
    return errno_error(errno, named + ": bind");
  }
  // Before listen(): until then every connect() is refused, so nobody can
  // get in while the file still has the umask's mode.
  if (::chmod(address->addr.sun_path, 0600) != 0) {
    int err = errno;
    ::unlink(address->addr.sun_path);
    return errno_error(err, named + ": chmod");
  }
  if (::listen(fd->get(), backlog) != 0) {
    int err = errno;
    ::unlink(address->addr.sun_path);
    return errno_error(err, named + ": listen");
  }
  return std::move(*fd);
}

Status send_all(int socket, std::string_view data, int pass_fd, std::string_view what) {
  bool fd_pending = pass_fd >= 0;
  for (size_t done = 0; done < data.size();) {
    iovec iov{const_cast<char*>(data.data()) + done, data.size() - done};
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
      return errno_error(errno, std::string(what) + ": send");
    }
    fd_pending = false;
    done += static_cast<size_t>(n);
  }
  return ok();
}

}  // namespace rawdax::net

#include "net/listener.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "net/unix_socket.h"

namespace rawdax::net {
namespace {

Error bad_spec(std::string_view what, std::string_view spec, const std::string& why) {
  return Error(std::errc::invalid_argument,
               std::string(what) + " address '" + std::string(spec) + "': " + why +
                   " (expected HOST:PORT, [IPV6]:PORT or unix:PATH)");
}

// Formats a bound socket address; sets host/port for URIs.
std::string format_address(const sockaddr_storage& ss, std::string* host, uint16_t* port) {
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    *host = "[" + std::string(text) + "]";
    *port = ntohs(in6->sin6_port);
  } else {
    auto* in4 = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &in4->sin_addr, text, sizeof text);
    *host = text;
    *port = ntohs(in4->sin_port);
  }
  return *host + ":" + std::to_string(*port);
}

}  // namespace

Result<Listener> Listener::open_unix(const std::string& path, std::string_view what,
                                     int backlog) {
  Listener l;
  // The servers' one policy: a live server's socket is refused, a stale
  // one replaced, long paths work, mode 0600 (net/unix_socket.h).
  auto fd = listen_unix(path, backlog, std::string(what) + " socket");
  if (!fd) return fd.error();
  l.fd_ = std::move(*fd);
  l.unix_path_ = path;
  l.address_ = "unix:" + path;
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    l.socket_dev_ = st.st_dev;
    l.socket_ino_ = st.st_ino;
  }
  return l;
}

Result<Listener> Listener::open(std::string_view spec, std::string_view what, int backlog) {
  if (spec.substr(0, 5) == "unix:") {
    std::string path(spec.substr(5));
    if (path.empty()) return bad_spec(what, spec, "empty socket path");
    return open_unix(path, what, backlog);
  }
  Listener l;
  size_t colon = spec.rfind(':');
  if (colon == std::string_view::npos) return bad_spec(what, spec, "no port");
  std::string host(spec.substr(0, colon));
  std::string port(spec.substr(colon + 1));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) return bad_spec(what, spec, "no host");
  if (port.empty() || port.find_first_not_of("0123456789") != std::string::npos ||
      port.size() > 5 || std::stoul(port) > 65535) {
    return bad_spec(what, spec, "bad port '" + port + "'");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    return bad_spec(what, spec, std::string("cannot resolve host: ") + ::gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owner(found, ::freeaddrinfo);
  l.fd_.reset(::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!l.fd_.valid()) return errno_error(errno, std::string(what) + ": socket");
  int one = 1;
  ::setsockopt(l.fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(l.fd_.get(), found->ai_addr, found->ai_addrlen) != 0) {
    return errno_error(errno, std::string(what) + ": cannot bind " + std::string(spec));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(l.fd_.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  l.address_ = format_address(bound, &l.host_, &l.port_);
  if (::listen(l.fd_.get(), backlog) != 0) {
    return errno_error(errno, std::string(what) + ": listen on " + l.address_);
  }
  return l;
}

Listener& Listener::operator=(Listener&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::move(other.fd_);
    address_ = std::move(other.address_);
    host_ = std::move(other.host_);
    port_ = other.port_;
    unix_path_ = std::move(other.unix_path_);
    socket_dev_ = other.socket_dev_;
    socket_ino_ = other.socket_ino_;
  }
  return *this;
}

void Listener::close() {
  if (!fd_.valid()) return;
  struct stat st;
  // Only our own socket file: after a stale-socket replacement by another
  // server the path names its socket, not ours.
  if (!unix_path_.empty() && ::lstat(unix_path_.c_str(), &st) == 0 && st.st_dev == socket_dev_ &&
      st.st_ino == socket_ino_) {
    ::unlink(unix_path_.c_str());
  }
  fd_.reset();
}

Result<ucred> peer_credentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return errno_error(errno, "SO_PEERCRED");
  }
  return cred;
}

std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "unknown peer";
  if (ss.ss_family == AF_UNIX) {
    auto cred = peer_credentials(fd);
    return cred ? "unix peer pid " + std::to_string(cred->pid) : "unix peer";
  }
  std::string host;
  uint16_t port = 0;
  return format_address(ss, &host, &port);
}

}  // namespace rawdax::net

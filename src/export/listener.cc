#include "export/listener.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/unix_socket.h"

namespace rawdax::nbd {
namespace {

Error bad_spec(std::string_view spec, const std::string& why) {
  return Error(std::errc::invalid_argument,
               "NBD address '" + std::string(spec) + "': " + why +
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

Result<Listener> Listener::open(std::string_view spec) {
  Listener l;
  if (spec.substr(0, 5) == "unix:") {
    std::string path(spec.substr(5));
    if (path.empty()) return bad_spec(spec, "empty socket path");
    // The servers' one policy: a live server's socket is refused, a stale
    // one replaced, long paths work, mode 0600 (common/unix_socket.h).
    auto fd = internal::listen_unix(path, /*backlog=*/128, "NBD socket");
    if (!fd) return fd.error();
    l.fd_ = std::move(*fd);
    l.unix_path_ = path;
    l.address_ = "unix:" + path;
    return l;
  } else {
    size_t colon = spec.rfind(':');
    if (colon == std::string_view::npos) return bad_spec(spec, "no port");
    std::string host(spec.substr(0, colon));
    std::string port(spec.substr(colon + 1));
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    if (host.empty()) return bad_spec(spec, "no host");
    if (port.empty() || port.find_first_not_of("0123456789") != std::string::npos ||
        port.size() > 5 || std::stoul(port) > 65535) {
      return bad_spec(spec, "bad port '" + port + "'");
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
    if (rc != 0) return bad_spec(spec, std::string("cannot resolve host: ") + ::gai_strerror(rc));
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owner(found, ::freeaddrinfo);
    l.fd_.reset(::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!l.fd_.valid()) return errno_error(errno, "NBD: socket");
    int one = 1;
    ::setsockopt(l.fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(l.fd_.get(), found->ai_addr, found->ai_addrlen) != 0) {
      return errno_error(errno, "NBD: cannot bind " + std::string(spec));
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(l.fd_.get(), reinterpret_cast<sockaddr*>(&bound), &len);
    l.address_ = format_address(bound, &l.host_, &l.port_);
  }
  if (::listen(l.fd_.get(), 128) != 0) return errno_error(errno, "NBD: listen on " + l.address_);
  return l;
}

Listener::~Listener() {
  if (fd_.valid() && !unix_path_.empty()) ::unlink(unix_path_.c_str());
}

std::string Listener::uri(std::string_view export_name) const {
  if (is_unix()) return "nbd+unix:///" + std::string(export_name) + "?socket=" + unix_path_;
  return "nbd://" + host_ + ":" + std::to_string(port_) + "/" + std::string(export_name);
}

std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "unknown peer";
  if (ss.ss_family == AF_UNIX) {
    ucred cred{};
    socklen_t clen = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
      return "unix peer pid " + std::to_string(cred.pid);
    }
    return "unix peer";
  }
  std::string host;
  uint16_t port = 0;
  return format_address(ss, &host, &port);
}

}  // namespace rawdax::nbd

// Listener: a bound, listening stream socket made from an address spec
// ("HOST:PORT", "[V6]:PORT" or "unix:PATH"), plus the naming of peers for
// logs. Owns its fd; a unix listener removes its socket file on destruction.
// Not thread-safe except fd(), which is immutable after open().
#ifndef RAWDAX_EXPORT_LISTENER_H_
#define RAWDAX_EXPORT_LISTENER_H_

#include <string>
#include <string_view>

#include "common/unique_fd.h"
#include "rawdax/result.h"

namespace rawdax::nbd {

class Listener {
 public:
  // EINVAL for a malformed spec; the failing call's errno otherwise. A unix
  // PATH follows common/unix_socket.h: EADDRINUSE while a server accepts
  // there, a stale socket file replaced, any other file EEXIST, mode 0600.
  static Result<Listener> open(std::string_view spec);
  Listener(Listener&& other) noexcept = default;
  Listener& operator=(Listener&& other) noexcept = default;
  ~Listener();

  int fd() const { return fd_.get(); }
  bool is_unix() const { return !unix_path_.empty(); }
  const std::string& unix_path() const { return unix_path_; }
  // The bound address: "127.0.0.1:10809", "[::1]:10809" or "unix:PATH".
  const std::string& address() const { return address_; }
  // nbd://HOST:PORT/NAME or nbd+unix:///NAME?socket=PATH.
  std::string uri(std::string_view export_name) const;

 private:
  Listener() = default;
  UniqueFd fd_;
  std::string address_;
  std::string host_;  // as it goes into a URI (IPv6 in brackets)
  uint16_t port_ = 0;
  std::string unix_path_;
};

// "127.0.0.1:50312" for TCP peers, "unix peer pid 1234" for unix ones.
std::string peer_name(int fd);

}  // namespace rawdax::nbd

#endif  // RAWDAX_EXPORT_LISTENER_H_

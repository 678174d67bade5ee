// Listener: a bound, listening stream socket made from an address spec, and
// the naming of peers for logs. The one place the servers (the NBD export,
// the control socket) turn an address into a socket.
//
// Specs: "HOST:PORT" (an IPv4 literal or a host name), "[V6]:PORT", or
// "unix:PATH". Port 0 binds a free port; address() tells which.
//
// Ownership: a Listener owns its fd. A unix listener removes its socket file
// on close() (or destruction), but only while the file at the path is still
// the socket it bound (same device and inode): a file another server put
// there since is left alone.
//
// Thread safety: the accessors are immutable after
// open() and may be called from any thread until close(); close() and the
// destructor must not race with anything else on the object.
#ifndef RAWDAX_NET_LISTENER_H_
#define RAWDAX_NET_LISTENER_H_

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "common/unique_fd.h"
#include "rawdax/result.h"

namespace rawdax::net {

class Listener {
 public:
  // Errors name `what` ("NBD": "NBD address '...'", "NBD: cannot bind ...";
  // a unix path: "NBD socket PATH: ..."). EINVAL for a malformed spec; the
  // failing call's errno otherwise. A unix PATH follows net/unix_socket.h:
  // EADDRINUSE while a server accepts there, a stale socket file replaced,
  // any other file EEXIST, mode 0600.
  static Result<Listener> open(std::string_view spec, std::string_view what = "NBD",
                               int backlog = 128);
  // The unix socket at `path` (no "unix:" prefix); errors name
  // "`what` socket PATH" as above.
  static Result<Listener> open_unix(const std::string& path, std::string_view what, int backlog);

  Listener(Listener&& other) noexcept = default;
  Listener& operator=(Listener&& other) noexcept;
  ~Listener() { close(); }

  // Removes the socket file (unix, when still ours) and closes the fd; new
  // connects are refused from then on. Idempotent.
  void close();

  int fd() const { return fd_.get(); }
  bool is_unix() const { return !unix_path_.empty(); }
  const std::string& unix_path() const { return unix_path_; }
  // The bound address: "127.0.0.1:10809", "[::1]:10809" or "unix:PATH".
  const std::string& address() const { return address_; }
  // A TCP listener's host as it goes into a URI ("127.0.0.1", "[::1]") and
  // its bound port; "" and 0 for a unix one.
  const std::string& host() const { return host_; }
  uint16_t port() const { return port_; }

 private:
  Listener() = default;
  internal::UniqueFd fd_;
  std::string address_;
  std::string host_;
  uint16_t port_ = 0;
  std::string unix_path_;
  dev_t socket_dev_ = 0;  // the socket file bound, so close() removes only it
  ino_t socket_ino_ = 0;
};

// "127.0.0.1:50312" for TCP peers, "unix peer pid 1234" for unix ones.
// Thread-safe.
std::string peer_name(int fd);

// The peer's pid, uid and gid (SO_PEERCRED) of a unix socket. The
// getsockopt errno ("SO_PEERCRED: ...") when it fails. Thread-safe.
Result<ucred> peer_credentials(int fd);

}  // namespace rawdax::net

#endif  // RAWDAX_NET_LISTENER_H_

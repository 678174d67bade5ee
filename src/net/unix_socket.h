// Unix stream sockets for the servers (the NBD listener, the control
// daemon) and their clients: one policy for both. Servers reach it through
// net::Listener (net/listener.h); clients call connect_unix().
//
// - Paths longer than sun_path are reached through /proc/self/fd/N of their
//   directory.
// - listen_unix() refuses a path where a server accepts (EADDRINUSE, even one
//   of another process), replaces a stale socket file (nobody accepts on
//   it), refuses any other file (EEXIST), and gives the socket mode 0600
//   before listen(), so no connection is ever accepted under the umask's
//   mode: only the server's user (and root) may connect.
// Errors name `what` ("control socket", "NBD socket") and the path.
//
// Ownership: the returned fd is the caller's; listen_unix() never removes
// the file of a socket it returned (net::Listener does, on close).
// Thread safety: thread-safe; the check for a live server and the bind are
// not one step, so two servers starting on one path at the same instant may
// both pass the check, and then the second bind fails with EADDRINUSE.
#ifndef RAWDAX_NET_UNIX_SOCKET_H_
#define RAWDAX_NET_UNIX_SOCKET_H_

#include <string>
#include <string_view>

#include "common/unique_fd.h"
#include "rawdax/result.h"

namespace rawdax::net {

// A connected stream socket to `path`. ENOENT/ECONNREFUSED when nobody listens.
Result<internal::UniqueFd> connect_unix(const std::string& path, std::string_view what = "socket");
// A listening socket bound at `path` with mode 0600 (see above).
Result<internal::UniqueFd> listen_unix(const std::string& path, int backlog, std::string_view what);
// Sends all of `data` on a stream socket (retrying EINTR and short sends,
// MSG_NOSIGNAL), with `pass_fd` (if >= 0) riding on the first bytes as
// SCM_RIGHTS. Errors name `what`.
Status send_all(int socket, std::string_view data, int pass_fd, std::string_view what);

}  // namespace rawdax::net

#endif  // RAWDAX_NET_UNIX_SOCKET_H_

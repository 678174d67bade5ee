// Peer: one accepted control connection, as the daemon's threads share it.
//
// The connection's own thread reads requests and writes replies; other
// threads write events to it (NAMESPACE_REVOKED). write_mu_ keeps lines whole
// whoever writes. Lock order: the Dispatcher's mutex may be held while
// send() takes write_mu_, never the reverse (send() takes no other lock).
//
// Ownership: shared by the server (until the connection's thread is joined)
// and by the dispatcher's holder table (until the session ends); the socket
// closes with the last owner, so no thread ever writes to a reused fd number.
#ifndef RAWDAX_DAEMON_PEER_H_
#define RAWDAX_DAEMON_PEER_H_

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <string_view>

#include "common/unique_fd.h"
#include "client/protocol.h"
#include "rawdax/result.h"

namespace rawdax::control {

class Peer {
 public:
  Peer(uint64_t id, internal::UniqueFd socket, pid_t pid, uid_t uid)
      : id_(id), pid_(pid), uid_(uid), socket_(std::move(socket)) {}
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  uint64_t id() const { return id_; }
  pid_t pid() const { return pid_; }
  uid_t uid() const { return uid_; }
  int socket() const { return socket_.get(); }

  // Sends one line (with `pass_fd` by SCM_RIGHTS when >= 0). Blocks at most
  // the socket's send timeout when the peer does not read.
  Status send(std::string_view line, int pass_fd = -1) {
    std::lock_guard<std::mutex> lock(write_mu_);
    return send_line(socket_.get(), line, pass_fd);
  }

  // Wakes the connection's reader (it sees end of stream) and fails later
  // sends; the fd stays open until the last owner goes.
  void shut_down() { ::shutdown(socket_.get(), SHUT_RDWR); }

 private:
  const uint64_t id_;
  const pid_t pid_;
  const uid_t uid_;
  std::mutex write_mu_;
  internal::UniqueFd socket_;
};

}  // namespace rawdax::control

#endif  // RAWDAX_DAEMON_PEER_H_

// ControlServer: the control socket of `rawdax serve` (docs/control.md).
//
// The accept thread, the cap and the connection threads are net::AcceptLoop's
// (net/accept_loop.h); the socket is a net::Listener. Each admitted
// connection gets its own thread, which reads request lines (at most
// kMaxRequestLine bytes each) and writes the Dispatcher's replies. A slow or
// silent client therefore only stalls its own thread, and memory per
// connection is bounded by the line limit; the number of connections is
// capped. Peers are admitted only when SO_PEERCRED shows the daemon's own uid
// or root; others are logged and closed.
//
// When a connection ends (close, crash, or stop()), everything it held is
// released: its opens (Dispatcher::end_session) and its freezes (the
// Session's FreezeGuards), so a dying client never wedges the daemon.
//
// Thread safety: stop() and the destructor may be called from any one
// thread; the server's other methods are const accessors.
#ifndef RAWDAX_DAEMON_SERVER_H_
#define RAWDAX_DAEMON_SERVER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/unique_fd.h"
#include "daemon/dispatcher.h"
#include "daemon/peer.h"
#include "net/accept_loop.h"
#include "net/listener.h"
#include "rawdax/result.h"

namespace rawdax::control {

struct ServerOptions {
  std::string socket_path = {};
  LogFn log = nullptr;          // one line per event; may be empty. Called from any
                                // server thread, concurrently: it must be thread-safe.
  size_t max_connections = 64;  // beyond: refused with a GenericError line
  // A peer that stops reading is dropped once a line waits this long.
  std::chrono::milliseconds send_timeout{5000};
};

class ControlServer {
 public:
  // Binds options.socket_path (mode 0600; a stale socket is replaced) and
  // starts serving commands to `dispatcher`, which must outlive the server.
  static Result<std::unique_ptr<ControlServer>> start(Dispatcher& dispatcher,
                                                      ServerOptions options);
  ~ControlServer();  // stop()
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Closes every connection (releasing what each held), joins the threads and
  // removes the socket file. Idempotent.
  void stop();

  const std::string& socket_path() const { return options_.socket_path; }

 private:
  class Connection;

  ControlServer(Dispatcher& dispatcher, ServerOptions options, net::Listener listener);
  // Admission: SO_PEERCRED must show our uid or root (accept thread only).
  std::unique_ptr<net::Connection> admit(internal::UniqueFd socket);
  void serve(const std::shared_ptr<Peer>& peer);  // one connection's thread

  ServerOptions options_;
  Dispatcher& dispatcher_;
  std::optional<net::Listener> listener_;  // reset by stop(): removes the socket file
  std::unique_ptr<net::AcceptLoop> loop_;
  uint64_t next_id_ = 1;  // accept thread only
  bool stopped_ = false;  // stop()'s caller only (see Thread safety)
};

}  // namespace rawdax::control

#endif  // RAWDAX_DAEMON_SERVER_H_

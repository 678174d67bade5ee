// ControlServer: the control socket of `rawdax serve` (docs/control.md).
//
// One thread accepts; each admitted connection gets its own thread, which
// reads request lines (at most kMaxRequestLine bytes each) and writes the
// Dispatcher's replies. A slow or silent client therefore only stalls its own
// thread, and memory per connection is bounded by the line limit; the number
// of connections is capped. Peers are admitted only when SO_PEERCRED shows
// the daemon's own uid or root; others are logged and closed.
//
// When a connection ends (close, crash, or stop()), everything it held is
// released: its opens (Dispatcher::end_session) and its freezes (the
// Session's FreezeGuards), so a dying client never wedges the daemon.
//
// Thread safety: stop() and the destructor may be called from any one
// thread; the server's other methods are const accessors.
#ifndef RAWDAX_CONTROL_SERVER_H_
#define RAWDAX_CONTROL_SERVER_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/unique_fd.h"
#include "control/dispatcher.h"
#include "control/peer.h"
#include "rawdax/region.h"
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
  // starts serving `region`, which must outlive the server.
  static Result<std::unique_ptr<ControlServer>> start(Region& region, ServerOptions options);
  ~ControlServer();  // stop()
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Closes every connection (releasing what each held), joins the threads and
  // removes the socket file. Idempotent.
  void stop();

  const std::string& socket_path() const { return options_.socket_path; }

 private:
  struct Connection {
    std::shared_ptr<Peer> peer;
    std::thread thread;
    std::atomic<bool> done{false};  // set (release) as the thread's last act
  };

  ControlServer(Region& region, ServerOptions options);
  void accept_loop();
  void admit(UniqueFd socket);
  void serve(Connection* connection);
  void reap_finished();  // joins finished connection threads

  ServerOptions options_;
  Dispatcher dispatcher_;
  UniqueFd listen_fd_;
  UniqueFd wake_fd_;  // eventfd: wakes the acceptor for stop()
  dev_t socket_dev_ = 0;
  ino_t socket_ino_ = 0;  // the socket file we made, so stop() removes only it
  std::thread acceptor_;
  uint64_t next_id_ = 1;  // acceptor thread only

  std::mutex mu_;
  bool stopped_ = false;                                 // guarded by mu_
  std::list<std::unique_ptr<Connection>> connections_;  // guarded by mu_
};

}  // namespace rawdax::control

#endif  // RAWDAX_CONTROL_SERVER_H_

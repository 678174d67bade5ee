// AcceptLoop: the one server loop under the NBD export and the control
// socket. One thread accepts on a Listener; each admitted connection gets its
// own thread, which runs the server's handler (Connection::run); the number
// served at once is capped; finished threads are joined ("reaped"); stop()
// ends it all gracefully.
//
//   accept  -> SO_SNDTIMEO (send_timeout) -> admit(socket): the server's
//              admission (control: SO_PEERCRED; NBD: everyone) builds the
//              Connection, or refuses it (returns null: the socket closes)
//           -> over max_connections: Connection::refuse(), then it is
//              destroyed unrun (its socket closes)
//           -> else Connection::serving(), and run() on a new thread
//
// Reaping: a connection's thread marks itself done when run() returns; the
// accept thread joins done threads and destroys their Connections before
// each admission and at least once a second when idle, so the sockets and
// buffers of ended connections go then (and free heap pages go back to the
// kernel, common/memory_release.h), not only when the next client comes.
//
// stop(grace): stops accepting (an eventfd wakes the accept thread), calls
// request_stop() on every connection, waits up to `grace` for their run()s to
// return, calls cut_off() on those still running, and joins every thread.
// A client connecting meanwhile is not served: its socket closes.
//
// Errors: accept(2) failures that say only "try again" (EINTR, EAGAIN,
// ECONNABORTED, and the network errors accept passes on for TCP) are
// retried silently; others (EMFILE, ENFILE, ENOBUFS, ENOMEM, ...) go to
// on_error("accept", errno) and the loop waits error_backoff (stop() still
// wakes it) rather than spin on a ready listener. A failed poll(2) goes to
// on_error("poll", errno) and ends the accept thread (connections already
// served go on until stop()). A connection thread that cannot be created goes
// to on_error("thread", errno) and that connection is dropped.
//
// Thread safety: served(), active() and threads() may be called from any
// thread; stop() from any thread but a connection's own (it joins them), and
// a second stop() waits for the first and returns. The callbacks (admit,
// on_error, and Connection::refuse/serving) run on the accept thread,
// serving() with the loop's lock held: they must not call the loop.
// Ownership: the loop borrows the Listener, which must outlive it (or at
// least its stop()), and makes its socket non-blocking. It owns the accept
// thread, the connection threads and the Connections; every one is gone when
// stop() returns.
#ifndef RAWDAX_NET_ACCEPT_LOOP_H_
#define RAWDAX_NET_ACCEPT_LOOP_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "common/unique_fd.h"
#include "net/listener.h"
#include "rawdax/result.h"

namespace rawdax::net {

// One admitted connection, as a server implements it.
class Connection {
 public:
  virtual ~Connection() = default;

  // The handler: serves the connection on its own thread and returns when it
  // has ended. Called at most once.
  virtual void run() = 0;
  // stop() asks the connection to end soon (typically a shutdown(2) that
  // wakes a blocked recv). Called from the stopping thread while run() may
  // be running, may not have started yet, or may have returned.
  virtual void request_stop() = 0;
  // stop()'s grace is over and run() has not returned: end it now. Same
  // calling conditions as request_stop(). The default calls request_stop().
  virtual void cut_off() { request_stop(); }
  // Over the cap: the connection will not be served (tell the peer, log).
  // On the accept thread; run() is never called. Default: nothing.
  virtual void refuse(size_t limit) { (void)limit; }
  // Admitted under the cap: called on the accept thread just before run()'s
  // thread starts, with the loop's lock held. Default: nothing.
  virtual void serving() {}
};

struct AcceptLoopOptions {
  // Names start()'s errors ("NBD", "control socket").
  std::string what = "server";
  // Served at once; beyond, Connection::refuse().
  size_t max_connections = 64;
  // SO_SNDTIMEO of every accepted socket: a send to a peer that stops
  // reading fails after this. 0: none.
  std::chrono::milliseconds send_timeout{0};
  // The pause after an accept(2) error that is not "try again".
  std::chrono::milliseconds error_backoff{100};
  // Admission (required): the Connection that serves `socket` (which already
  // has its send timeout), or null to refuse it (admit logs why).
  std::function<std::unique_ptr<Connection>(internal::UniqueFd socket)> admit = nullptr;
  // The loop's own failures: "poll", "accept" or "thread", and the errno.
  // May be null.
  std::function<void(std::string_view call, int error)> on_error = nullptr;
};

class AcceptLoop {
 public:
  // Starts the accept thread on `listener`. Errors: EINVAL without admit;
  // the eventfd's or the thread's errno.
  static Result<std::unique_ptr<AcceptLoop>> start(const Listener& listener,
                                                   AcceptLoopOptions options);
  ~AcceptLoop();  // stop() with no grace
  AcceptLoop(const AcceptLoop&) = delete;
  AcceptLoop& operator=(const AcceptLoop&) = delete;

  // See above. Idempotent; returns when every thread of the loop has ended
  // and every Connection is destroyed.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(0));

  // Connections served since start (refused ones not counted).
  uint64_t served() const;
  // Connections whose run() has not returned.
  size_t active() const;
  // Connection threads not yet joined: active() plus the ended ones not yet
  // reaped.
  size_t threads() const;

 private:
  struct Entry {
    std::unique_ptr<Connection> connection;
    std::thread thread;
    bool done = false;  // guarded by mu_; set when run() has returned
  };

  AcceptLoop(int listen_fd, internal::UniqueFd wake, AcceptLoopOptions options);
  void accept_thread();
  void admit(internal::UniqueFd socket);
  // Joins the threads of ended connections and destroys those.
  void reap();
  void report(std::string_view call, int error) const;

  const int listen_fd_;
  const internal::UniqueFd wake_;  // eventfd: stop() writes it to end accept_thread()
  const AcceptLoopOptions options_;
  std::thread acceptor_;

  std::mutex stop_mu_;  // serializes stop()
  mutable std::mutex mu_;
  std::condition_variable ended_;  // notified when an entry becomes done
  bool stopping_ = false;          // guarded by mu_
  uint64_t served_ = 0;            // guarded by mu_
  // Guarded by mu_. std::list: an Entry's address is stable while its thread
  // runs, also when reap() splices it out. Only the accept thread adds and
  // removes entries until stop() has joined it; stop() alone after that.
  std::list<Entry> entries_;
};

}  // namespace rawdax::net

#endif  // RAWDAX_NET_ACCEPT_LOOP_H_

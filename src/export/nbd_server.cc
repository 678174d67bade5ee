// NbdServer: the listener, its accept thread, and one thread per connection.
#include "rawdax/nbd_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>

#include "common/memory_release.h"
#include "common/unique_fd.h"
#include "export/listener.h"
#include "export/nbd_connection.h"

namespace rawdax {

class NbdServer::Impl {
 public:
  Impl(Region& region, NbdServerOptions options, nbd::Listener listener, UniqueFd wake_read,
       UniqueFd wake_write)
      : listener_(std::move(listener)),
        wake_read_(std::move(wake_read)),
        wake_write_(std::move(wake_write)) {
    context_.region = &region;
    context_.read_only = options.read_only;
    context_.log = std::move(options.log);
    context_.handshake_timeout = options.handshake_timeout;
    context_.message_timeout = options.message_timeout;
    max_connections_ = options.max_connections;
  }

  void start() { accept_thread_ = std::thread([this] { accept_loop(); }); }

  void stop(std::chrono::milliseconds grace);
  NbdServerStats stats() const;
  const nbd::Listener& listener() const { return listener_; }

 private:
  struct Session {
    std::unique_ptr<nbd::NbdConnection> connection;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  void accept_loop();
  // Joins ended sessions; then gives their memory back (see reaped_).
  void reap_locked();
  void log(const std::string& line) const {
    if (context_.log) context_.log(line);
  }

  nbd::ServerContext context_;
  nbd::Listener listener_;
  UniqueFd wake_read_, wake_write_;  // a pipe: a byte on it ends accept_loop
  std::thread accept_thread_;
  size_t max_connections_ = 0;
  std::atomic<uint64_t> accepted_{0};

  mutable std::mutex mu_;
  bool stopping_ = false;           // guarded by mu_
  std::list<Session> sessions_;     // guarded by mu_; std::list: stable addresses
};

void NbdServer::Impl::accept_loop() {
  while (true) {
    pollfd fds[2] = {{listener_.fd(), POLLIN, 0}, {wake_read_.get(), POLLIN, 0}};
    // Woken once a second to reap ended sessions: their sockets and buffers
    // go then, not whenever the next client happens to connect.
    int ready = ::poll(fds, 2, 1000);
    if (ready < 0) {
      if (errno == EINTR) continue;
      log("error: NBD: poll on the listener failed: " + std::string(std::strerror(errno)));
      return;
    }
    if (ready == 0) {
      std::lock_guard<std::mutex> lock(mu_);
      reap_locked();
      continue;
    }
    if (fds[1].revents != 0) return;
    int fd = ::accept4(listener_.fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
        // Out of descriptors: back off rather than spin on the ready listener.
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      continue;
    }
    UniqueFd owned(fd);
    std::string peer = nbd::peer_name(fd);
    std::lock_guard<std::mutex> lock(mu_);
    reap_locked();
    if (stopping_) return;
    if (sessions_.size() >= max_connections_) {
      // Closing at once (the UniqueFd) bounds threads and buffers; the
      // client sees EOF before the greeting.
      log("client " + peer + " refused: " + std::to_string(max_connections_) +
          " connections are open already");
      continue;
    }
    accepted_.fetch_add(1, std::memory_order_relaxed);
    log("client " + peer + " connected");
    Session& s = sessions_.emplace_back();
    s.connection = std::make_unique<nbd::NbdConnection>(std::move(owned), peer, context_);
    // `done` is stored with release after run() returns, and read with
    // acquire by whoever joins, so the joiner sees the session's last writes.
    s.thread = std::thread([&s] {
      s.connection->run();
      s.done.store(true, std::memory_order_release);
    });
  }
}

void NbdServer::Impl::reap_locked() {
  bool ended = false;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (it->done.load(std::memory_order_acquire)) {
      it->thread.join();
      it = sessions_.erase(it);
      ended = true;
    } else {
      ++it;
    }
  }
  // Their buffers were freed into the threads' arenas; hand them back.
  release_free_memory(ended);
}

void NbdServer::Impl::stop(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;  // under mu_: accept_loop adds no session after this
  }
  char byte = 1;
  while (::write(wake_write_.get(), &byte, 1) < 0 && errno == EINTR) {
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  // No thread adds sessions any more, so the list can be walked unlocked by
  // this thread; sessions only flip their atomic `done`.
  for (Session& s : sessions_) s.connection->request_stop();
  auto deadline = std::chrono::steady_clock::now() + grace;
  auto all_done = [&] {
    for (Session& s : sessions_) {
      if (!s.done.load(std::memory_order_acquire)) return false;
    }
    return true;
  };
  while (!all_done() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (Session& s : sessions_) {
    if (!s.done.load(std::memory_order_acquire)) {
      log("client " + s.connection->peer() + " did not finish in time; cutting it off");
      s.connection->cut_off();
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (Session& s : sessions_) s.thread.join();
  sessions_.clear();
}

NbdServerStats NbdServer::Impl::stats() const {
  NbdServerStats st;
  st.connections = accepted_.load(std::memory_order_relaxed);
  st.requests = context_.requests.load(std::memory_order_relaxed);
  st.errors = context_.errors.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mu_);
  for (const Session& s : sessions_) {
    if (!s.done.load(std::memory_order_acquire)) ++st.active_connections;
  }
  return st;
}

Result<std::unique_ptr<NbdServer>> NbdServer::start(Region& region, NbdServerOptions options) {
  auto listener = nbd::Listener::open(options.listen);
  if (!listener) return listener.error();
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return errno_error(errno, "NBD: pipe");
  auto impl = std::make_unique<Impl>(region, std::move(options), std::move(*listener),
                                     UniqueFd(pipe_fds[0]), UniqueFd(pipe_fds[1]));
  impl->start();
  return std::unique_ptr<NbdServer>(new NbdServer(std::move(impl)));
}

NbdServer::NbdServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

NbdServer::~NbdServer() { stop(); }

const std::string& NbdServer::address() const { return impl_->listener().address(); }

std::string NbdServer::uri(std::string_view export_name) const {
  return impl_->listener().uri(export_name);
}

void NbdServer::stop(std::chrono::milliseconds grace) { impl_->stop(grace); }

NbdServerStats NbdServer::stats() const { return impl_->stats(); }

}  // namespace rawdax

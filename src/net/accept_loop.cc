#include "net/accept_loop.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <utility>

#include "common/memory_release.h"

namespace rawdax::net {
namespace {

// accept(2) errors that only mean "try again": the connection went before
// it was taken, or (for TCP) a network error accept passes on (accept(2),
// "Error handling").
bool retry_at_once(int err) {
  switch (err) {
    case EINTR:
    case EAGAIN:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
      return true;
    default:
      return false;
  }
}

}  // namespace

Result<std::unique_ptr<AcceptLoop>> AcceptLoop::start(const Listener& listener,
                                                      AcceptLoopOptions options) {
  if (!options.admit) return Error(std::errc::invalid_argument, options.what + ": no admission");
  // Non-blocking: a connection that vanishes between poll and accept makes
  // accept fail with EAGAIN instead of blocking the loop (and stop()).
  int flags = ::fcntl(listener.fd(), F_GETFL);
  if (flags < 0 || ::fcntl(listener.fd(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return errno_error(errno, options.what + ": listener");
  }
  internal::UniqueFd wake(::eventfd(0, EFD_CLOEXEC));
  if (!wake.valid()) return errno_error(errno, options.what + ": eventfd");
  std::unique_ptr<AcceptLoop> loop(new AcceptLoop(listener.fd(), std::move(wake), std::move(options)));
  try {
    loop->acceptor_ = std::thread([l = loop.get()] { l->accept_thread(); });
  } catch (const std::system_error& e) {
    return Error(e.code(), loop->options_.what + ": cannot start the accept thread");
  }
  return loop;
}

AcceptLoop::AcceptLoop(int listen_fd, internal::UniqueFd wake, AcceptLoopOptions options)
    : listen_fd_(listen_fd), wake_(std::move(wake)), options_(std::move(options)) {}

AcceptLoop::~AcceptLoop() { stop(); }

void AcceptLoop::report(std::string_view call, int error) const {
  if (options_.on_error) options_.on_error(call, error);
}

void AcceptLoop::accept_thread() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    // Woken once a second to reap ended connections: their sockets and
    // buffers go then, not whenever the next client happens to connect.
    int ready = ::poll(fds, 2, 1000);
    if (ready < 0) {
      if (errno == EINTR) continue;
      report("poll", errno);
      return;
    }
    if (fds[1].revents != 0) return;
    if (ready == 0) {
      reap();
      continue;
    }
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (retry_at_once(err)) continue;
      report("accept", err);
      // Out of descriptors or memory: back off rather than spin on the
      // ready listener; stop() still wakes us.
      pollfd wake = {wake_.get(), POLLIN, 0};
      ::poll(&wake, 1, static_cast<int>(options_.error_backoff.count()));
      continue;
    }
    admit(internal::UniqueFd(fd));
  }
}

void AcceptLoop::admit(internal::UniqueFd socket) {
  if (options_.send_timeout.count() > 0) {
    auto ms = options_.send_timeout.count();
    timeval tv = {.tv_sec = static_cast<time_t>(ms / 1000),
                  .tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000)};
    ::setsockopt(socket.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  reap();
  std::unique_ptr<Connection> connection = options_.admit(std::move(socket));
  if (connection == nullptr) return;
  int thread_error = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // stop() sets stopping_ under mu_ before it joins this thread: after
    // that no entry is added, so stop() sees the final list.
    if (stopping_) return;  // `connection` closes after the unlock
    if (entries_.size() < options_.max_connections) {
      connection->serving();
      Entry& entry = entries_.emplace_back();
      entry.connection = std::move(connection);
      try {
        // `done` is set under mu_ after run() returned, and read under mu_
        // by reap() and stop(): they see it only once the handler is
        // finished with the Connection; the join then orders the thread's
        // exit before the Connection's destruction.
        entry.thread = std::thread([this, &entry] {
          entry.connection->run();
          {
            std::lock_guard<std::mutex> done_lock(mu_);
            entry.done = true;
          }
          ended_.notify_all();
        });
        ++served_;
        return;
      } catch (const std::system_error& e) {
        connection = std::move(entry.connection);
        entries_.pop_back();
        thread_error = e.code().value();
      }
    }
  }
  if (thread_error != 0) {
    report("thread", thread_error);
    return;  // `connection` is dropped unserved: its socket closes
  }
  // Closing at once bounds threads and buffers whatever clients do.
  connection->refuse(options_.max_connections);
}

void AcceptLoop::reap() {
  std::list<Entry> finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->done) {
        finished.splice(finished.end(), entries_, it++);
      } else {
        ++it;
      }
    }
  }
  const bool freed = !finished.empty();
  for (Entry& e : finished) e.thread.join();
  finished.clear();  // the Connections, with their sockets and buffers
  // Their buffers were freed into the threads' arenas; hand them back.
  internal::release_free_memory(freed);
}

void AcceptLoop::stop(std::chrono::milliseconds grace) {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  uint64_t one = 1;
  while (::write(wake_.get(), &one, sizeof one) < 0 && errno == EINTR) {
  }
  if (acceptor_.joinable()) acceptor_.join();
  // The accept thread is gone, so this thread alone changes entries_ from
  // here on, and may walk it unlocked; connection threads only set their
  // `done`, under mu_.
  for (Entry& e : entries_) e.connection->request_stop();
  auto all_done = [this] {
    for (const Entry& e : entries_) {
      if (!e.done) return false;
    }
    return true;
  };
  {
    std::unique_lock<std::mutex> lock(mu_);
    ended_.wait_for(lock, grace, all_done);
  }
  for (Entry& e : entries_) {
    bool done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done = e.done;
    }
    if (!done) e.connection->cut_off();
  }
  for (Entry& e : entries_) e.thread.join();
  std::list<Entry> ended;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ended.swap(entries_);
  }
}

uint64_t AcceptLoop::served() const {
  std::lock_guard<std::mutex> lock(mu_);
  return served_;
}

size_t AcceptLoop::active() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const Entry& e : entries_) n += e.done ? 0 : 1;
  return n;
}

size_t AcceptLoop::threads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

}  // namespace rawdax::net

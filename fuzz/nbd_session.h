// Shared by the NBD fuzz targets: a small region created once per process,
// and one NBD session served synchronously on a socketpair, with the fuzz
// input as everything the client sends.
//
// The session is the server's own NbdConnection (what every accepted socket
// runs); a helper thread plays the client: it writes the input, shuts its
// sending side, and reads every reply (handing the bytes, in order, to the
// harness's sink when it gives one), so the server never blocks on a full
// socket. The helper lives as long as the process (creating a
// thread per input costs more than the session itself), and the harness
// keeps a Device of each namespace open, so that a session's GO attaches to
// the open namespace instead of mapping it anew. The session ends when the input is used up (EOF), on
// protocol corruption, or on a DISC/ABORT, exactly as with a real client.
#ifndef RAWDAX_FUZZ_NBD_SESSION_H_
#define RAWDAX_FUZZ_NBD_SESSION_H_

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "export/nbd_connection.h"
#include "rawdax/region.h"

namespace rawdax::fuzz {

// A region on tmpfs (so reads of 64 KiB and more go through sendfile, as in
// production) with "default" (1 MiB) and "small" (64 KiB). Created on first
// use, removed at exit.
inline Region& nbd_region() {
  static const std::string dir = [] {
    std::filesystem::path parent = std::filesystem::exists("/dev/shm")
                                       ? std::filesystem::path("/dev/shm")
                                       : std::filesystem::temp_directory_path();
    return (parent / ("rawdax-fuzz-nbd-" + std::to_string(::getpid()))).string();
  }();
  static std::unique_ptr<Region> region = [] {
    std::filesystem::remove_all(dir);
    std::atexit([] { std::filesystem::remove_all(dir); });
    auto r = Region::open(dir, {.create = true});
    if (!r) {
      std::fprintf(stderr, "fuzz: region %s: %s\n", dir.c_str(), r.error().message().c_str());
      std::abort();
    }
    for (auto [name, size] : {std::pair{"default", uint64_t{1} << 20},
                              std::pair{"small", uint64_t{64} << 10}}) {
      auto ns = (*r)->create_namespace({.name = name, .size = size});
      if (!ns) {
        std::fprintf(stderr, "fuzz: namespace %s: %s\n", name, ns.error().message().c_str());
        std::abort();
      }
    }
    return std::move(*r);
  }();
  static std::vector<std::unique_ptr<Device>> held = [] {
    std::vector<std::unique_ptr<Device>> devices;
    for (const auto& ns : region->list()) {
      auto dev = region->open_device(ns.name);
      if (!dev) std::abort();
      devices.push_back(std::move(*dev));
    }
    return devices;
  }();
  return *region;
}

// What the client does with the server's bytes, in order as they arrive.
using ReplySink = std::function<void(std::string_view)>;

// Plays the client: sends `input`, then half-closes and drains replies until
// the server closes, passing them to `sink` (when set). Non-blocking with
// poll, so that sending and draining interleave (a server blocked on a full
// reply buffer stops reading).
inline void play_client(int fd, std::string_view input, const ReplySink& sink) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  size_t sent = 0;
  bool sending = true;
  char buf[64 << 10];
  while (true) {
    if (sending && sent == input.size()) {
      ::shutdown(fd, SHUT_WR);
      sending = false;
    }
    pollfd p = {fd, static_cast<short>(POLLIN | (sending ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, -1) < 0) continue;
    if (p.revents & POLLIN) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n == 0) return;  // the server closed: the session is over
      if (n < 0 && errno != EAGAIN && errno != EINTR) return;
      if (n > 0 && sink) sink(std::string_view(buf, static_cast<size_t>(n)));
    } else if (p.revents & (POLLHUP | POLLERR)) {
      return;
    }
    if (sending && (p.revents & POLLOUT)) {
      ssize_t n = ::send(fd, input.data() + sent, input.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        sending = false;  // the server stopped reading for good
        ::shutdown(fd, SHUT_WR);
      }
    }
  }
}

// The client thread: plays one input at a time, handed over under mu.
class ClientThread {
 public:
  ClientThread() : thread_([this] { loop(); }) { thread_.detach(); }

  // Starts playing `input` on `fd`; all three must stay valid until wait().
  void start(int fd, std::string_view input, const ReplySink& sink) {
    std::lock_guard<std::mutex> lock(mu_);
    fd_ = fd;
    input_ = input;
    sink_ = &sink;
    busy_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !busy_; });
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return busy_; });
      lock.unlock();
      play_client(fd_, input_, *sink_);
      lock.lock();
      busy_ = false;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false;  // guarded by mu_; fd_ and input_ are set before it turns true
  int fd_ = -1;
  std::string_view input_;
  const ReplySink* sink_ = nullptr;
  std::thread thread_;
};

// One whole session: greeting, the client's bytes, and the end. `sink` sees
// every byte the server sent, on the client thread, before this returns.
inline void serve_session(nbd::ServerContext& context, std::string_view input,
                          const ReplySink& sink = {}) {
  // Never destroyed: the detached thread may outlive static destructors.
  static ClientThread* client_thread = new ClientThread;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  internal::UniqueFd server(sv[0]), client(sv[1]);
  client_thread->start(client.get(), input, sink);
  {
    // "unix" in the peer's name: no TCP_NODELAY on this socket.
    nbd::NbdConnection session(std::move(server), "unix fuzz client", context);
    session.run();
  }  // the server's end closes here, so a client still sending sees an error
  client_thread->wait();
}

}  // namespace rawdax::fuzz

#endif  // RAWDAX_FUZZ_NBD_SESSION_H_

#include "control/server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/memory_release.h"
#include "control/protocol.h"

namespace rawdax::control {

Result<std::unique_ptr<ControlServer>> ControlServer::start(Dispatcher& dispatcher,
                                                              ServerOptions options) {
  if (!options.log) options.log = [](const std::string&) {};
  auto listening = listen_unix(options.socket_path, /*backlog=*/16);
  if (!listening) return listening.error();
  std::unique_ptr<ControlServer> server(new ControlServer(dispatcher, std::move(options)));
  server->listen_fd_ = std::move(*listening);
  struct stat st;
  if (::stat(server->options_.socket_path.c_str(), &st) == 0) {
    server->socket_dev_ = st.st_dev;
    server->socket_ino_ = st.st_ino;
  }
  server->wake_fd_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!server->wake_fd_.valid()) {
    ::unlink(server->options_.socket_path.c_str());
    return errno_error(errno, "control socket: eventfd");
  }
  server->acceptor_ = std::thread(&ControlServer::accept_loop, server.get());
  server->options_.log("control socket " + server->options_.socket_path + " listening");
  return server;
}

ControlServer::ControlServer(Dispatcher& dispatcher, ServerOptions options)
    : options_(std::move(options)), dispatcher_(dispatcher) {}

ControlServer::~ControlServer() { stop(); }

void ControlServer::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  if (acceptor_.joinable()) {
    uint64_t one = 1;
    (void)!::write(wake_fd_.get(), &one, sizeof one);
    acceptor_.join();
  }
  // The acceptor is gone and saw stopped_, so the list is final: every
  // connection it admitted is in it (admit() checks stopped_ under mu_).
  std::list<std::unique_ptr<Connection>> connections;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : connections_) c->peer->shut_down();
    connections.swap(connections_);
  }
  for (auto& c : connections) c->thread.join();
  struct stat st;
  if (::stat(options_.socket_path.c_str(), &st) == 0 && st.st_dev == socket_dev_ &&
      st.st_ino == socket_ino_) {
    ::unlink(options_.socket_path.c_str());
  }
  listen_fd_.reset();
  options_.log("control socket " + options_.socket_path + " closed");
}

void ControlServer::accept_loop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    // Woken once a second to join ended connections, so their sockets close
    // then rather than at the next connection.
    int ready = ::poll(fds, 2, 1000);
    if (ready == 0) {
      reap_finished();
      continue;
    }
    if (ready < 0) {
      if (errno == EINTR) continue;
      options_.log(std::string("error: control socket: poll: ") + std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    int s = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (s < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      options_.log(std::string("error: control socket: accept: ") + std::strerror(errno));
      // Out of fds: back off instead of spinning on a readable socket.
      ::poll(fds + 1, 1, 100);
      continue;
    }
    admit(UniqueFd(s));
  }
}

void ControlServer::admit(UniqueFd socket) {
  ucred cred = {};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    options_.log(std::string("error: control socket: SO_PEERCRED: ") + std::strerror(errno));
    return;
  }
  if (cred.uid != ::geteuid() && cred.uid != 0) {
    options_.log("refused control connection from pid " + std::to_string(cred.pid) + " (uid " +
                 std::to_string(cred.uid) + "): only uid " + std::to_string(::geteuid()) +
                 " and root may connect");
    return;
  }
  timeval tv = {};
  tv.tv_sec = options_.send_timeout.count() / 1000;
  tv.tv_usec = (options_.send_timeout.count() % 1000) * 1000;
  ::setsockopt(socket.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

  reap_finished();
  auto connection = std::make_unique<Connection>();
  connection->peer = std::make_shared<Peer>(next_id_++, std::move(socket), cred.pid, cred.uid);
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return;
  if (connections_.size() >= options_.max_connections) {
    options_.log("refused control connection from pid " + std::to_string(cred.pid) +
                 ": too many connections");
    (void)connection->peer->send(Dispatcher::error_line(
        kGenericError, "too many control connections (" +
                           std::to_string(options_.max_connections) + ")"));
    return;
  }
  options_.log("control connection from pid " + std::to_string(cred.pid));
  Connection* raw = connection.get();
  connections_.push_back(std::move(connection));
  raw->thread = std::thread(&ControlServer::serve, this, raw);
}

void ControlServer::reap_finished() {
  std::list<std::unique_ptr<Connection>> finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      // Acquire pairs with serve()'s release: the thread has nothing left to do.
      if ((*it)->done.load(std::memory_order_acquire)) {
        finished.splice(finished.end(), connections_, it++);
      } else {
        ++it;
      }
    }
  }
  for (auto& c : finished) c->thread.join();
  // A connection may have buffered a line of up to 1 MiB; give that memory back.
  release_free_memory(!finished.empty());
}

void ControlServer::serve(Connection* connection) {
  const std::shared_ptr<Peer>& peer = connection->peer;
  {
    Session session{peer, {}};
    Status st = peer->send(dispatcher_.greeting());
    LineReader reader(kMaxRequestLine);
    while (st) {
      auto line = reader.read_line(peer->socket());
      reader.fds().clear();  // requests carry no fds; close any sent
      if (!line) {
        if (line.error().code() == std::errc::message_size) {
          options_.log("pid " + std::to_string(peer->pid()) + ": request line longer than " +
                       std::to_string(kMaxRequestLine) + " bytes; connection closed");
          (void)peer->send(Dispatcher::error_line(
              kGenericError, "request line longer than " + std::to_string(kMaxRequestLine) +
                                 " bytes; closing the connection"));
        }
        break;
      }
      if (line->find_first_not_of(" \t\r") == std::string::npos) continue;
      Dispatcher::Reply reply = dispatcher_.handle(session, *line);
      st = peer->send(reply.line, reply.fd.get());
    }
    dispatcher_.end_session(session);
  }  // the session's freezes thaw here
  peer->shut_down();
  options_.log("control connection from pid " + std::to_string(peer->pid()) + " closed");
  connection->done.store(true, std::memory_order_release);
}

}  // namespace rawdax::control

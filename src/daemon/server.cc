#include "daemon/server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string_view>

#include "client/protocol.h"

namespace rawdax::control {

// One admitted peer as the accept loop serves it.
class ControlServer::Connection final : public net::Connection {
 public:
  Connection(ControlServer& server, std::shared_ptr<Peer> peer)
      : server_(server), peer_(std::move(peer)) {}

  void run() override { server_.serve(peer_); }
  // Wakes the reader: the connection ends, releasing what it held.
  void request_stop() override { peer_->shut_down(); }
  void refuse(size_t limit) override {
    server_.options_.log("refused control connection from pid " + std::to_string(peer_->pid()) +
                         ": too many connections");
    (void)peer_->send(Dispatcher::error_line(
        kGenericError, "too many control connections (" + std::to_string(limit) + ")"));
  }
  void serving() override {
    server_.options_.log("control connection from pid " + std::to_string(peer_->pid()));
  }

 private:
  ControlServer& server_;
  std::shared_ptr<Peer> peer_;
};

Result<std::unique_ptr<ControlServer>> ControlServer::start(Dispatcher& dispatcher,
                                                              ServerOptions options) {
  if (!options.log) options.log = [](const std::string&) {};
  auto listener = net::Listener::open_unix(options.socket_path, "control", /*backlog=*/16);
  if (!listener) return listener.error();
  std::unique_ptr<ControlServer> server(
      new ControlServer(dispatcher, std::move(options), std::move(*listener)));
  ControlServer* s = server.get();
  auto loop = net::AcceptLoop::start(
      *s->listener_,
      {.what = "control socket",
       .max_connections = s->options_.max_connections,
       .send_timeout = s->options_.send_timeout,
       .error_backoff = std::chrono::milliseconds(100),
       .admit = [s](internal::UniqueFd socket) { return s->admit(std::move(socket)); },
       .on_error =
           [s](std::string_view call, int error) {
             s->options_.log("error: control socket: " + std::string(call) + ": " +
                             std::strerror(error));
           }});
  if (!loop) return loop.error();  // the listener removes the socket file
  s->loop_ = std::move(*loop);
  s->options_.log("control socket " + s->options_.socket_path + " listening");
  return server;
}

ControlServer::ControlServer(Dispatcher& dispatcher, ServerOptions options,
                             net::Listener listener)
    : options_(std::move(options)), dispatcher_(dispatcher), listener_(std::move(listener)) {}

ControlServer::~ControlServer() { stop(); }

void ControlServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  // No grace: every connection is shut down at once (its thread sees end of
  // stream and releases its opens and freezes), then joined.
  if (loop_ != nullptr) loop_->stop();
  listener_.reset();  // removes the socket file, if it is still ours
  options_.log("control socket " + options_.socket_path + " closed");
}

std::unique_ptr<net::Connection> ControlServer::admit(internal::UniqueFd socket) {
  auto cred = net::peer_credentials(socket.get());
  if (!cred) {
    options_.log("error: control socket: " + cred.error().message());
    return nullptr;
  }
  if (cred->uid != ::geteuid() && cred->uid != 0) {
    options_.log("refused control connection from pid " + std::to_string(cred->pid) + " (uid " +
                 std::to_string(cred->uid) + "): only uid " + std::to_string(::geteuid()) +
                 " and root may connect");
    return nullptr;
  }
  return std::make_unique<Connection>(
      *this, std::make_shared<Peer>(next_id_++, std::move(socket), cred->pid, cred->uid));
}

void ControlServer::serve(const std::shared_ptr<Peer>& peer) {
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
}

}  // namespace rawdax::control

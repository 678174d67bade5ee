// NbdServer: a Listener and the accept loop (net/accept_loop.h), which runs
// one NbdConnection per client on its own thread, and the TLS credentials
// (export/nbd_tls.h) every connection shares.
#include "rawdax/nbd_server.h"

#include <cstring>
#include <thread>

#include "common/unique_fd.h"
#include "export/export_registry.h"
#include "export/nbd_connection.h"
#include "export/nbd_tls.h"
#include "net/accept_loop.h"
#include "net/listener.h"

namespace rawdax {
namespace {

// One client as the accept loop serves it: an NbdConnection and the lines
// the server logs about it.
class NbdSession final : public net::Connection {
 public:
  NbdSession(internal::UniqueFd socket, std::string peer, nbd::ServerContext& context)
      : connection_(std::move(socket), std::move(peer), context), context_(context) {}

  void run() override { connection_.run(); }
  void request_stop() override { connection_.request_stop(); }
  void cut_off() override {
    log("client " + connection_.peer() + " did not finish in time; cutting it off");
    connection_.cut_off();
  }
  // The client sees EOF before the greeting.
  void refuse(size_t limit) override {
    log("client " + connection_.peer() + " refused: " + std::to_string(limit) +
        " connections are open already");
  }
  void serving() override { log("client " + connection_.peer() + " connected"); }

 private:
  void log(const std::string& line) const {
    if (context_.log) context_.log(line);
  }
  nbd::NbdConnection connection_;
  nbd::ServerContext& context_;
};

// Whether only this machine can reach the listener: a unix socket, or a
// TCP address in 127.0.0.0/8 or ::1 (the listener names its bound address
// numerically).
bool loopback_only(const net::Listener& l) {
  return l.is_unix() || l.host().starts_with("127.") || l.host() == "[::1]";
}

}  // namespace

class NbdServer::Impl {
 public:
  Impl(Region& region, NbdServerOptions options, net::Listener listener,
       std::unique_ptr<nbd::TlsCredentials> tls)
      : tls_(std::move(tls)), exports_(region, options.read_only), listener_(std::move(listener)) {
    context_.region = &region;
    context_.exports = &exports_;
    context_.tls_mode = options.tls;
    context_.tls = tls_.get();
    context_.read_only = options.read_only;
    context_.log = std::move(options.log);
    context_.handshake_timeout = options.handshake_timeout;
    context_.message_timeout = options.message_timeout;
  }

  Status start(size_t max_connections) {
    auto loop = net::AcceptLoop::start(
        listener_,
        {.what = "NBD",
         .max_connections = max_connections,
         // A client that stops reading replies is cut off like one that
         // stops sending a request: a send waiting longer fails.
         .send_timeout = context_.message_timeout,
         .error_backoff = std::chrono::milliseconds(50),
         .admit = [this](internal::UniqueFd socket) -> std::unique_ptr<net::Connection> {
           std::string peer = net::peer_name(socket.get());
           return std::make_unique<NbdSession>(std::move(socket), std::move(peer), context_);
         },
         .on_error =
             [this](std::string_view call, int error) {
               // accept failures (out of descriptors) only back off.
               if (call == "accept" || !context_.log) return;
               if (call == "poll") {
                 context_.log("error: NBD: poll on the listener failed: " +
                              std::string(std::strerror(error)));
               } else {
                 context_.log("error: NBD: cannot start a connection thread: " +
                              std::string(std::strerror(error)));
               }
             }});
    if (!loop) return loop.error();
    loop_ = std::move(*loop);
    return {};
  }

  void stop(std::chrono::milliseconds grace) { loop_->stop(grace); }

  NbdServerStats stats() const {
    NbdServerStats st;
    st.connections = loop_->served();
    st.active_connections = loop_->active();
    st.requests = context_.requests.load(std::memory_order_relaxed);
    st.errors = context_.errors.load(std::memory_order_relaxed);
    return st;
  }

  const net::Listener& listener() const { return listener_; }
  bool tls() const { return context_.tls != nullptr; }
  nbd::ExportRegistry& exports() { return exports_; }
  const std::function<void(const std::string&)>& log() const { return context_.log; }

 private:
  std::unique_ptr<nbd::TlsCredentials> tls_;  // read by every connection
  nbd::ExportRegistry exports_;
  nbd::ServerContext context_;
  net::Listener listener_;
  std::unique_ptr<net::AcceptLoop> loop_;  // before listener_ and context_ go
};

Result<std::unique_ptr<NbdServer>> NbdServer::start(Region& region, NbdServerOptions options) {
  // The TLS material first: a server that would fail every TLS client must
  // not start (nor take the port).
  auto tls = nbd::TlsCredentials::load(options);
  if (!tls) return tls.error();
  auto listener = net::Listener::open(options.listen, "NBD");
  if (!listener) return listener.error();
  if (!loopback_only(*listener) && options.tls != NbdTls::kRequire && options.log) {
    options.log("warning: NBD listens on " + listener->address() +
                " without TLS required (--tls require): anyone who can reach this port can "
                "read and write every namespace, in clear text");
  }
  const size_t max_connections = options.max_connections;
  auto impl = std::make_unique<Impl>(region, std::move(options), std::move(*listener),
                                     std::move(*tls));
  if (Status st = impl->start(max_connections); !st) return st.error();
  return std::unique_ptr<NbdServer>(new NbdServer(std::move(impl)));
}

NbdServer::NbdServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

NbdServer::~NbdServer() { stop(); }

const std::string& NbdServer::address() const { return impl_->listener().address(); }

std::string NbdServer::uri(std::string_view export_name) const {
  const net::Listener& l = impl_->listener();
  const std::string scheme = impl_->tls() ? "nbds" : "nbd";
  if (l.is_unix()) {
    return scheme + "+unix:///" + std::string(export_name) + "?socket=" + l.unix_path();
  }
  return scheme + "://" + l.host() + ":" + std::to_string(l.port()) + "/" +
         std::string(export_name);
}

void NbdServer::stop(std::chrono::milliseconds grace) { impl_->stop(grace); }

NbdServerStats NbdServer::stats() const { return impl_->stats(); }

Result<NbdExportInfo> NbdServer::export_snapshot(const std::string& path, const std::string& name) {
  auto info = impl_->exports().add_snapshot(path, name);
  if (!info) return info.error();
  if (impl_->log()) {
    impl_->log()("NBD export " + uri(info->name) + ": snapshot " + path +
                 (info->base_export.empty() ? "" : " (dirty bitmap against " + info->base_export + ")"));
  }
  return info;
}

Status NbdServer::unexport(const std::string& name) {
  RAWDAX_RETURN_IF_ERROR(impl_->exports().remove_snapshot(name));
  if (impl_->log()) impl_->log()("NBD export " + name + " removed");
  return ok();
}

std::vector<NbdExportInfo> NbdServer::exports() const { return impl_->exports().list(); }

}  // namespace rawdax

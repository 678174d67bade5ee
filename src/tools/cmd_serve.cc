// Verb: serve. Owns the region (its flock), makes sure a namespace exists,
// keeps every namespace open, exports them all over NBD (and the snapshot
// files export-snapshot adds), logs one line per
// event, and exits 0 on SIGINT or SIGTERM once in-flight NBD requests are
// answered and everything is flushed.
#include <malloc.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "common/units.h"
#include "daemon/server.h"
#include "export/nbd_tls.h"
#include "rawdax/nbd_server.h"
#include "tools/cli_common.h"
#include "tools/commands.h"
#include "tools/command_path.h"
#include "tools/daemon_record.h"

namespace rawdax::cli {
namespace {

struct ServeOptions {
  GlobalOptions global;
  std::string default_name = "default";
  std::string default_size = "256M";
  std::string nbd = "127.0.0.1:10809";
  bool read_only = false;
  std::string tls = "off";
  std::string tls_psk;
  std::string tls_certificates;
  bool tls_verify_peer = false;
};

// One line per event on stderr: "2026-11-25T21:30:00Z rawdax serve: MESSAGE".
// A MESSAGE that starts with "error: " is the daemon's own failure (media,
// flush, accept); everything else, a client's bad input included, is not
// (docs/hardening.md). Thread-safe: one fprintf per line.
void log_event(const std::string& message) {
  // NBD threads log too; one line at a time.
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::time_t now = std::time(nullptr);
  char stamp[32];
  std::tm utc;
  gmtime_r(&now, &utc);  // the control server's threads log too: not gmtime()'s static buffer
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &utc);
  std::fprintf(stderr, "%s rawdax serve: %s\n", stamp, message.c_str());
  std::fflush(stderr);
}

int run_serve(const ServeOptions& options) {
  // Block the stop signals before anything else so sigwait() receives them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  // Buffers of 128 KiB and more (NBD input and payload buffers, a control
  // line near its 1 MiB limit) get their own mappings and are unmapped when
  // freed, instead of landing in glibc's per-thread arenas, whose tops
  // malloc_trim cannot shrink. Setting the threshold also stops glibc from
  // raising it after the first large free. So the daemon's memory follows the
  // connections still open, whatever a burst of clients left (hardening.md).
  ::mallopt(M_MMAP_THRESHOLD, 128 * 1024);

  auto default_size = internal::parse_size(options.default_size);
  if (!default_size) return fail(default_size.error());
  NbdServerOptions nbd_options{.listen = options.nbd,
                               .read_only = options.read_only,
                               .log = log_event,
                               .tls = options.tls == "require" ? NbdTls::kRequire
                                      : options.tls == "on"    ? NbdTls::kOn
                                                               : NbdTls::kOff,
                               .tls_psk_file = options.tls_psk,
                               .tls_certificates_dir = options.tls_certificates,
                               .tls_verify_peer = options.tls_verify_peer};
  // TLS settings and material are checked before the region is touched: a
  // refused start changes nothing (NbdServer::start loads them again).
  if (auto tls = nbd::TlsCredentials::load(nbd_options); !tls) return fail(tls.error());
  auto region = open_region(options.global);
  if (!region) return fail(region.error());
  const Capabilities& caps = (*region)->capabilities();
  log_event("region " + (*region)->spec() + " opened (" + caps.filesystem + ", persist " +
            std::string(to_string(caps.persist)) + ", engine " +
            std::string(to_string(caps.engine)) + ")");
  if ((*region)->list().empty()) {
    auto made = (*region)->create_namespace({.name = options.default_name, .size = *default_size});
    if (!made) return fail(made.error());
    log_event("namespace " + made->name + " created (" + internal::format_size(made->size) + ")");
  }
  // Bound first: the dispatcher manages its snapshot exports.
  auto nbd = NbdServer::start(**region, std::move(nbd_options));
  if (!nbd) return fail(nbd.error());
  // The dispatcher keeps every namespace open for the daemon's life (and
  // closes one only to restore it); a namespace that does not open stops
  // serve here.
  control::Dispatcher dispatcher(**region, {.log = log_event, .nbd = nbd->get()});
  size_t served = 0;
  for (const auto& ns : (*region)->list()) {
    auto dev = (*region)->open_device(ns.name);
    if (!dev) return fail(dev.error());
    log_event("namespace " + ns.name + " open (" + internal::format_size(ns.size) + ", " + ns.path + ")");
    ++served;
  }
  log_event(std::string("NBD listening on ") + (*nbd)->address() +
            (options.read_only ? " (read-only)" : "") +
            (options.tls == "off" ? "" : ", TLS " + options.tls));
  for (const auto& ns : (*region)->list()) log_event("NBD export " + (*nbd)->uri(ns.name));
  std::unique_ptr<control::ControlServer> control;
  std::optional<DaemonRecord> record;
  if (std::string path = options.global.control.empty()
                             ? default_control_path(options.global.region)
                             : options.global.control;
      !path.empty()) {
    auto started = control::ControlServer::start(dispatcher, {.socket_path = path, .log = log_event});
    if (!started) return fail(started.error());
    control = std::move(*started);
    // So that every verb finds this daemon, whatever --control said.
    auto written = DaemonRecord::write(options.global.region, path);
    if (written) {
      record.emplace(std::move(*written));
    } else {
      log_event("no daemon record (verbs find the socket only by --control or its default "
                "path): " + written.error().message());
    }
  }
  log_event("ready: serving " + std::to_string(served) + " namespace(s)");

  int sig = 0;
  while (sigwait(&stop, &sig) != 0) {
  }
  log_event(std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + ", shutting down");
  // Connections answer what they have received and flush; the grace period
  // leaves room inside the 5 s a service manager usually allows.
  (*nbd)->stop(std::chrono::milliseconds(3000));
  log_event("NBD stopped");
  record.reset();
  if (control) control->stop();  // clients released, freezes thawed
  dispatcher.flush_all();
  control.reset();
  log_event("stopped");
  return 0;
}

}  // namespace

void register_serve_command(CLI::App& app, int* exit_code) {
  auto options = std::make_shared<ServeOptions>();
  CLI::App* serve = app.add_subcommand(
      "serve", "Own the region and serve its namespaces until SIGINT or SIGTERM");
  add_global_options(*serve, options->global);
  serve->add_option("--default-name", options->default_name,
                    "Namespace created when the region has none")
      ->capture_default_str();
  serve->add_option("--default-size", options->default_size, "Its size")->capture_default_str();
  serve->add_option("--nbd", options->nbd,
                    "NBD listen address: HOST:PORT (port 0 picks one) or unix:PATH")
      ->capture_default_str();
  serve->add_flag("--read-only", options->read_only, "Export every namespace read-only");
  serve->add_option("--tls", options->tls,
                    "TLS (NBD_OPT_STARTTLS): off, on (plain clients too) or require")
      ->check(CLI::IsMember({"off", "on", "require"}))
      ->capture_default_str();
  auto* psk = serve->add_option("--tls-psk", options->tls_psk,
                                "Pre-shared keys for TLS: a psktool file of username:hexkey lines");
  auto* certs = serve->add_option(
      "--tls-certificates", options->tls_certificates,
      "X.509 for TLS: a directory with server-cert.pem, server-key.pem (and ca-cert.pem)");
  psk->excludes(certs);
  serve->add_flag("--tls-verify-peer", options->tls_verify_peer,
                  "Require a client certificate signed by the directory's ca-cert.pem");
  serve->callback([=] { *exit_code = run_serve(*options); });
}

}  // namespace rawdax::cli

// NbdServer: exports every namespace of a Region over the NBD protocol
// (fixed newstyle; see docs/export.md for what is supported).
//
//   auto server = rawdax::NbdServer::start(*region, {.listen = "127.0.0.1:0"});
//   std::string uri = (*server)->uri("default");   // nbd://127.0.0.1:PORT/default
//
// Exports are namespaces, by name; a client's NBD_OPT_GO or EXPORT_NAME opens
// the namespace through Region::open_device at that moment, so namespaces
// created after start() are served too. All connections to one namespace
// share its one device state, hence NBD_FLAG_CAN_MULTI_CONN. A namespace
// removed while served answers ESHUTDOWN.
//
// Snapshot files (and their base chains) can be exported too, read-only, by
// export_snapshot() at any time: `vm1@s1` for s1.snap taken of vm1. An
// incremental's export offers the metadata context
// qemu:dirty-bitmap:<its base's export name>, the pages it stores
// (docs/export.md, "Point-in-time exports").
//
// Threads: one accept thread per server and one thread per connection, which
// parses requests, executes them inline (the block face is a memcpy on a
// shared mapping) and sends the replies in batches. The measurements behind
// this choice are in docs/export.md.
//
// Thread safety: stop(), the accessors and the export calls are thread-safe. Ownership: the
// Region must outlive the server; the server owns its sockets and threads
// and releases them in stop() (or its destructor).
#ifndef RAWDAX_NBD_SERVER_H_
#define RAWDAX_NBD_SERVER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "rawdax/export.h"
#include "rawdax/region.h"
#include "rawdax/result.h"

namespace rawdax {

// TLS on the export, negotiated with NBD_OPT_STARTTLS (docs/export.md, "TLS").
enum class NbdTls {
  kOff,      // STARTTLS is unsupported: every client is served in clear text
  kOn,       // clients may start TLS; plain ones are served too
  kRequire,  // before TLS, every option but STARTTLS and ABORT is refused
};

struct NbdServerOptions {
  // "HOST:PORT" (an IPv4 literal, "[IPv6]" or a host name; port 0 picks a
  // free port, see address()) or "unix:PATH". The default is loopback only.
  std::string listen = "127.0.0.1:10809";
  // Every export is read-only: NBD_FLAG_READ_ONLY, and writes get EPERM.
  bool read_only = false;
  // Receives one line per event (connections, bad requests with the client,
  // export, offset and size, removals). Called from the server's threads,
  // possibly concurrently; null discards the lines.
  std::function<void(const std::string&)> log;
  // A client must finish the handshake (greeting to NBD_OPT_GO) within this,
  // and once a request's first byte has arrived, its header and payload
  // within message_timeout; otherwise the connection is closed and logged.
  // Idle time between requests is unlimited. Together they keep a client
  // that trickles bytes (or never finishes) from holding a thread forever.
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds message_timeout{30000};
  // Connections served at once; more are closed at accept (and logged), so
  // threads and buffers stay bounded whatever clients do.
  size_t max_connections = 256;
  // TLS, with GnuTLS. On or required, it needs one kind of material: a
  // psktool file ("username:hexkey" lines) or a directory holding
  // server-cert.pem and server-key.pem (and ca-cert.pem, which
  // tls_verify_peer needs: clients must then present a certificate that CA
  // signed). The material is read and checked once, in start(). The
  // handshake_timeout bounds the TLS handshake too.
  NbdTls tls = NbdTls::kOff;
  std::string tls_psk_file{};
  std::string tls_certificates_dir{};
  bool tls_verify_peer = false;
};

// One export, as exports() lists it.
struct NbdExportInfo {
  std::string name;
  std::string kind;            // "namespace" or "snapshot"
  std::string namespace_name;  // the namespace (a snapshot's: the one it was taken of; may be "")
  uint64_t size = 0;
  // Snapshot exports only:
  std::string file;         // the snapshot file, made absolute
  std::string taken_at;     // UTC, ISO 8601 (the file's mtime for old files)
  std::string base_export;  // an incremental's dirty bitmap is against this export name
  bool broken = false;      // a file of its chain was deleted or replaced: reads fail (EIO)
  std::string reason;       // why it is broken
};

struct NbdServerStats {
  uint64_t connections = 0;         // accepted since start
  uint64_t active_connections = 0;  // open now
  uint64_t requests = 0;            // transmission requests answered
  uint64_t errors = 0;              // of which answered with an error
};

class RAWDAX_EXPORT NbdServer {
 public:
  // Loads the TLS material, binds the listening socket and starts
  // accepting. EINVAL for a malformed address or TLS settings or material
  // (the message names the file and what is wrong), the errno of TLS
  // material that cannot be read, the socket call's errno (EADDRINUSE,
  // EACCES, ...) otherwise. Listening on an address other than loopback
  // without NbdTls::kRequire logs a warning that names the risk.
  static Result<std::unique_ptr<NbdServer>> start(Region& region, NbdServerOptions options);
  ~NbdServer();  // stop()
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;

  // Where the server listens, with the port it got: "127.0.0.1:10809",
  // "[::1]:10809" or "unix:/run/x.sock".
  const std::string& address() const;
  // The NBD URI of one export: nbd://127.0.0.1:10809/NAME or
  // nbd+unix:///NAME?socket=PATH; nbds:// and nbds+unix:// with TLS on or
  // required.
  std::string uri(std::string_view export_name) const;

  // Stops accepting; every connection answers the requests it has already
  // received, sends the replies, flushes its device if it wrote, and closes.
  // Connections still busy after `grace` (a client that stopped reading) are
  // cut off. Idempotent; returns when every server thread has ended.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));

  NbdServerStats stats() const;

  // Exports the snapshot file `path` and its base chain read-only as
  // `name` ("" for <namespace>@<file stem>). The whole chain is verified
  // first (every page's checksum): a chain that fails is refused with that
  // error. EEXIST when a namespace or another export has the name; EINVAL
  // for a name that is too long or empty once defaulted.
  Result<NbdExportInfo> export_snapshot(const std::string& path, const std::string& name = "");
  // Removes a snapshot export. Its connections get ESHUTDOWN from then on.
  // ENOENT when no export has the name; EINVAL when it is a namespace's.
  Status unexport(const std::string& name);
  // Every export: namespaces, then snapshot exports (their state checked now).
  std::vector<NbdExportInfo> exports() const;

  class RAWDAX_NO_EXPORT Impl;

 private:
  explicit NbdServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rawdax

#endif  // RAWDAX_NBD_SERVER_H_

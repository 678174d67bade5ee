// Dispatcher: executes control commands against the daemon's Region, and
// keeps the daemon-side state they share: which connection holds which
// namespace (and how), and one open Device per namespace.
//
// Each request line gets exactly one reply line (docs/control.md):
// {"return":…,"id":…} or {"error":{"class":…,"desc":…},"id":…}. Malformed
// JSON, unknown or mistyped arguments are GenericError; an unknown command is
// CommandNotFound; a missing namespace DeviceNotFound; a conflicting holder
// DeviceBusy. Nothing throws out of handle(): JSON errors become GenericError.
//
// Arguments: each command declares its arguments (name, type, required or
// default, range) in one schema; a request's arguments are checked against
// it before the command runs, so an unknown, missing, mistyped or
// out-of-range argument is one GenericError naming the command and the
// argument, and the command reads only typed values.
//
// Thread safety: handle() and end_session() may run concurrently for
// different sessions; a Session is used by one thread at a time (its
// connection's). mu_ guards the namespace table and the holder freezes
// (HolderFreezes, which takes the same mutex: see its lock order). It is
// held across destroy-namespace (so no open can slip in between the check
// and the removal) but not across freeze, resize or snapshot, which may
// wait long and need only the Device (thread-safe); a freeze waiting for
// the holders' acks releases it while it waits. While mu_ is held, events
// are sent through Peer::send(), which takes only the peer's write lock
// (Peer's lock order).
//
// Freezes: `freeze` and `snapshot` pause the attached VM, freeze the
// holders (HolderFreezes: the FREEZE/freeze-ack/THAW protocol, revocation
// with `force`) and then the device. A `freeze` is kept by its connection's
// Session as a SessionFreeze until `thaw` or the connection's end.
#ifndef RAWDAX_DAEMON_DISPATCHER_H_
#define RAWDAX_DAEMON_DISPATCHER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "daemon/holder_freezes.h"
#include "daemon/peer.h"
#include "daemon/process_stops.h"
#include "rawdax/device.h"
#include "rawdax/nbd_server.h"
#include "rawdax/region.h"
#include "rawdax/result.h"
#include "vm/attached_vms.h"

namespace rawdax::control {

struct DispatcherOptions {
  // One line per event; may be empty. Called from any thread that runs a
  // command, concurrently: it must be thread-safe.
  LogFn log = nullptr;
  // The daemon opens a Device for every namespace at start and keeps it
  // (its counters and write tracking live as long). A verb run in-process
  // opens one only when a command needs it.
  bool open_every_namespace = true;
  // Progress of a snapshot's copy (SnapshotOptions::progress), called on the
  // commanding thread; for a terminal. Empty in the daemon.
  std::function<void(uint64_t done, uint64_t total)> progress = nullptr;
  // The NBD server whose exports export-snapshot, unexport and query-exports
  // manage (serve's); it must outlive the dispatcher. Null in a verb run
  // in-process: there is no NBD server, and those commands say so.
  NbdServer* nbd = nullptr;
};

// What one `freeze` taken through the socket holds: the VM attached to the
// namespace (if any) paused, the other holders write-protected (a share of
// the HolderFreezes), and the device frozen, for exactly as long. Members
// end in reverse order: the device thaws first, then the holders, then the
// VM resumes.
struct SessionFreeze {
  internal::AttachedVms::Pause vm;
  HolderFreeze holders;
  FreezeGuard guard;
};

// What one control connection holds in the daemon. Destroying it thaws the
// freezes it took, so a client that dies never leaves a namespace frozen.
struct Session {
  std::shared_ptr<Peer> peer;
  std::multimap<std::string, SessionFreeze> freezes;  // by namespace
};

class Dispatcher final : private HolderFreezes::Table {
 public:
  // Serves `region`, which must outlive this (see DispatcherOptions). Every
  // Session must be destroyed before this is (its freezes refer to it).
  Dispatcher(Region& region, DispatcherOptions options);
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // The line sent on connect: {"rawdax":{"version":…,"capabilities":[…]}}.
  std::string greeting() const;

  struct Reply {
    std::string line;
    internal::UniqueFd fd;  // passed with the line when valid (open-namespace)
  };
  Reply handle(Session& session, std::string_view request_line);

  // An error line without an id, for failures outside any request.
  static std::string error_line(std::string_view error_class, const std::string& desc);

  // Flushes every Device the dispatcher holds; each failure is logged as
  // "error: flush failed: …". Thread-safe.
  void flush_all();

  // Releases every namespace the session holds, and ends its part in the
  // holder freezes (it acks nothing more). The caller then destroys the
  // session, which thaws its freezes.
  void end_session(Session& session);

 private:
  struct Holder {
    std::shared_ptr<Peer> peer;
    bool writable = false;
    bool exclusive = false;
  };
  struct NamespaceState {
    std::shared_ptr<Device> device;  // null if not opened (yet) or it could not be
    std::vector<Holder> holders;
    bool restoring = false;  // a restore-namespace runs: device() refuses it
  };
  class Command;

  // HolderFreezes::Table, called with mu_ held.
  std::vector<std::shared_ptr<Peer>> writable_holders_locked(const std::string& name) override;
  void revoke_locked(const std::string& name, const std::shared_ptr<Peer>& peer) override;

  Region& region_;
  const DispatcherOptions options_;
  LogFn log_;
  std::mutex mu_;
  std::map<std::string, NamespaceState, std::less<>> namespaces_;  // guarded by mu_
  HolderFreezes holder_freezes_{mu_, *this, log_};  // guarded by mu_ (its own lock order)
  internal::AttachedVms vms_;  // thread-safe itself
};

}  // namespace rawdax::control

#endif  // RAWDAX_DAEMON_DISPATCHER_H_

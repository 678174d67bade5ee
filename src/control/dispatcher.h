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
// Thread safety: handle() and end_session() may run concurrently for
// different sessions; a Session is used by one thread at a time (its
// connection's). mu_ guards the namespace table; it is held across
// destroy-namespace (so no open can slip in between the check and the
// removal) but not across freeze, resize or snapshot, which may wait long
// and need only the Device (thread-safe). While mu_ is held, events are sent
// through Peer::send(), which takes only the peer's write lock (Peer's lock
// order).
//
// Holder freezes: `freeze` and `snapshot` first ask every other connection
// that holds the namespace read-write to write-protect its mappings (a FREEZE
// event) and wait, on cv_ under mu_, for each one's `freeze-ack` (handled on
// that connection's own thread) or for its connection to end. Only the
// outermost freeze of a namespace asks; nested ones count depth, and wait
// while the outermost is still collecting acks. The last one to end sends
// THAW. A holder that does not ack in time fails the freeze (everyone asked
// is sent THAW), or with `force` is revoked: its open ends and its process is
// stopped (ProcessStops) until the thaw, and during every later freeze of the
// namespace while its connection lives.
#ifndef RAWDAX_CONTROL_DISPATCHER_H_
#define RAWDAX_CONTROL_DISPATCHER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "control/peer.h"
#include "control/process_stops.h"
#include "rawdax/device.h"
#include "rawdax/region.h"
#include "rawdax/result.h"
#include "vm/attached_vms.h"

namespace rawdax::control {

using LogFn = std::function<void(const std::string&)>;

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
};

class Dispatcher;

// The holders of one namespace kept write-protected for one freeze or
// snapshot taken through the socket (see Dispatcher). Move-only; ending it
// (destruction or end()) ends this freeze's share: the last one sends THAW
// and continues the processes stopped for it.
class HolderFreeze {
 public:
  HolderFreeze() = default;
  HolderFreeze(HolderFreeze&& other) noexcept
      : d_(std::exchange(other.d_, nullptr)), name_(std::move(other.name_)) {}
  HolderFreeze& operator=(HolderFreeze&& other) noexcept {
    if (this != &other) {
      end();
      d_ = std::exchange(other.d_, nullptr);
      name_ = std::move(other.name_);
    }
    return *this;
  }
  HolderFreeze(const HolderFreeze&) = delete;
  HolderFreeze& operator=(const HolderFreeze&) = delete;
  ~HolderFreeze() { end(); }
  void end();

 private:
  friend class Dispatcher;
  HolderFreeze(Dispatcher* d, std::string name) : d_(d), name_(std::move(name)) {}
  Dispatcher* d_ = nullptr;
  std::string name_;
};

// A freeze taken through the socket: the VM attached to the namespace (if
// any) is paused and the other holders are write-protected for exactly as
// long. Members end in reverse order: the device thaws first, then the
// holders, then the VM resumes.
struct HeldFreeze {
  internal::AttachedVms::Pause vm;
  HolderFreeze holders;
  FreezeGuard guard;
};

// What one control connection holds in the daemon. Destroying it thaws the
// freezes it took, so a client that dies never leaves a namespace frozen.
struct Session {
  std::shared_ptr<Peer> peer;
  std::multimap<std::string, HeldFreeze> freezes;  // by namespace
};

class Dispatcher {
 public:
  // Serves `region`, which must outlive this (see DispatcherOptions).
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

  // Releases every namespace the session holds. The caller then destroys
  // the session, which thaws its freezes.
  void end_session(Session& session);

 private:
  friend class HolderFreeze;
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
  // The holder side of the freezes of one namespace, while any is in effect.
  struct HolderFreezeState {
    int depth = 0;          // freezes in effect, the one collecting acks included
    bool settling = false;  // the outermost freeze is waiting for acks
    uint64_t token = 0;     // of the outermost freeze: FREEZE, acks and THAW carry it
    std::vector<std::shared_ptr<Peer>> asked;  // sent FREEZE (or opened while frozen)
    std::set<uint64_t> waiting;                // peer ids whose ack is due
    std::vector<pid_t> stopped;                // stopped for this freeze
  };
  class Command;

  // Freezes the holders of `name` other than `self` (see the class comment);
  // `revoked` receives the pids revoked by `force`. EBUSY naming the pids
  // that did not ack; ETIMEDOUT if an earlier freeze still collects acks at
  // the deadline.
  Result<HolderFreeze> freeze_holders(const std::string& name, const std::shared_ptr<Peer>& self,
                                      std::chrono::steady_clock::time_point deadline, bool force,
                                      std::vector<pid_t>* revoked);
  void thaw_holders(const std::string& name);
  // Sends THAW for `state` and continues its stopped processes. mu_ held.
  void release_holders_locked(const std::string& name, HolderFreezeState& state);
  Status ack_freeze(const std::shared_ptr<Peer>& peer, const std::string& name, uint64_t token);

  Region& region_;
  const DispatcherOptions options_;
  LogFn log_;
  std::mutex mu_;
  std::condition_variable cv_;  // with mu_: acks, ended sessions, settled freezes
  std::map<std::string, NamespaceState, std::less<>> namespaces_;  // guarded by mu_
  std::map<std::string, HolderFreezeState, std::less<>> holder_freezes_;  // guarded by mu_
  // Connections inside a freeze or snapshot of a namespace: they cannot ack
  // (their thread is busy), so no freeze asks them. Guarded by mu_.
  std::multimap<std::string, uint64_t, std::less<>> freezing_;
  // Connections revoked by a forced freeze, stopped during each later freeze
  // of the namespace until their connection ends. Guarded by mu_.
  std::multimap<std::string, std::shared_ptr<Peer>, std::less<>> revoked_;
  uint64_t next_token_ = 1;  // guarded by mu_
  ProcessStops stops_;       // thread-safe itself
  internal::AttachedVms vms_;  // thread-safe itself
};

}  // namespace rawdax::control

#endif  // RAWDAX_CONTROL_DISPATCHER_H_

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
#ifndef RAWDAX_CONTROL_DISPATCHER_H_
#define RAWDAX_CONTROL_DISPATCHER_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "control/peer.h"
#include "rawdax/rawdax.h"
#include "vm/attached_vms.h"

namespace rawdax::control {

using LogFn = std::function<void(const std::string&)>;

// A freeze taken through the socket: the VM attached to the namespace (if
// any) is paused for exactly as long. Members end in reverse order: thaw
// first, then the VM resumes.
struct HeldFreeze {
  internal::AttachedVms::Pause vm;
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
  // Opens a Device for every namespace of `region`, which must outlive this.
  Dispatcher(Region& region, LogFn log);
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // The line sent on connect: {"rawdax":{"version":…,"capabilities":[…]}}.
  std::string greeting() const;

  struct Reply {
    std::string line;
    UniqueFd fd;  // passed with the line when valid (open-namespace)
  };
  Reply handle(Session& session, std::string_view request_line);

  // An error line without an id, for failures outside any request.
  static std::string error_line(std::string_view error_class, const std::string& desc);

  // Releases every namespace the session holds. The caller then destroys
  // the session, which thaws its freezes.
  void end_session(Session& session);

 private:
  struct Holder {
    std::shared_ptr<Peer> peer;
    bool writable = false;
    bool exclusive = false;
  };
  struct NamespaceState {
    std::shared_ptr<Device> device;  // null if it could not be opened
    std::vector<Holder> holders;
  };
  class Command;

  Region& region_;
  LogFn log_;
  std::mutex mu_;
  std::map<std::string, NamespaceState, std::less<>> namespaces_;  // guarded by mu_
  internal::AttachedVms vms_;  // thread-safe itself
};

}  // namespace rawdax::control

#endif  // RAWDAX_CONTROL_DISPATCHER_H_

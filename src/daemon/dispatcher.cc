#include "daemon/dispatcher.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <utility>
#include <variant>

#include "daemon/command_arguments.h"
#include "daemon/json_forms.h"
#include "vm/qemu_args.h"
#include "vm/vm_snapshot.h"

namespace rawdax::control {
namespace {

using json = nlohmann::json;

#ifndef RAWDAX_VERSION
#define RAWDAX_VERSION "0"
#endif

// What this daemon offers; clients check before relying on a feature.
const char* const kCapabilities[] = {"fd-passing", "exclusive-open", "events",
                                     "freeze",     "snapshot",       "stats",
                                     "vm",         "holder-freeze"};

// Never throws: client-supplied strings may be invalid UTF-8.
std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

Error generic_error(std::string message) {
  return Error(std::errc::invalid_argument, std::move(message));
}

// Errors of an operation on a namespace already known to exist: ENOENT there
// means some other file (a snapshot's base, its directory), not the device.
Error not_a_device_error(const Error& error) {
  if (error.code() == std::errc::no_such_file_or_directory) return generic_error(error.message());
  return error;
}



constexpr double kDefaultFreezeTimeoutSeconds = 10;

std::chrono::nanoseconds to_ns(double seconds) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::duration<double>(seconds));
}

}  // namespace

// One request being executed: the dispatcher, the session it came on, its
// arguments, and where an fd to pass goes.
class Dispatcher::Command {
 public:
  Command(Dispatcher& d, Session& session, internal::UniqueFd* fd_out)
      : d_(d), session_(session), fd_out_(fd_out) {}

  // Checks `arguments` against the command's schema, then runs it. ENOSYS
  // (CommandNotFound) for an unknown command.
  Result<json> run(std::string_view name, const json& arguments) {
    using namespace args;  // the schema's vocabulary
    using Fn = Result<json> (Command::*)();
    struct Entry {
      std::string_view name;
      std::vector<ArgSpec> schema;  // in the order errors are reported
      Fn fn;
    };
    static const std::vector<Entry> kTable = {
        {"query-namespaces", {}, &Command::query_namespaces},
        {"query-region", {}, &Command::query_region},
        {"create-namespace", {text("name"), size("size")}, &Command::create_namespace},
        {"destroy-namespace", {text("name"), flag("force", false)}, &Command::destroy_namespace},
        {"resize-namespace",
         {text("name"), size("size"), flag("force", false)},
         &Command::resize_namespace},
        {"open-namespace",
         {text("name"), choice("access", {"rw", "ro"}, "rw"), flag("exclusive", false)},
         &Command::open_namespace},
        {"release-namespace", {text("name")}, &Command::release_namespace},
        {"freeze",
         {text("name"), seconds("timeout", kDefaultFreezeTimeoutSeconds), flag("force", false)},
         &Command::freeze},
        {"freeze-ack", {text("name"), size("token")}, &Command::freeze_ack},
        {"thaw", {text("name")}, &Command::thaw},
        {"snapshot",
         {text("name"), path("file"), text("base", ""),
          seconds("timeout", kDefaultFreezeTimeoutSeconds), flag("force", false),
          count("threads", 0, kMaxSnapshotCopyThreads),
          choice("vm", {"background", "pause"}, "background")},
         &Command::snapshot},
        {"query-stats", {}, &Command::query_stats},
        {"attach-vm", {text("name"), text("qmp")}, &Command::attach_vm},
        {"detach-vm", {text("name")}, &Command::detach_vm},
        {"restore-namespace",
         {text("name"), path("file"), flag("force", false), flag("lazy", false)},
         &Command::restore_namespace},
        // Not path(): an empty file is refused by the reader (as a missing one).
        {"verify-snapshot", {text("file")}, &Command::verify_snapshot},
        {"vm-args",
         {text("name"), flag("virtio", false), size("ram"), text("qemu", "qemu-system-x86_64")},
         &Command::vm_args},
        {"export-snapshot", {path("file"), text("export", "")}, &Command::export_snapshot},
        {"unexport", {text("export")}, &Command::unexport},
        {"query-exports", {}, &Command::query_exports},
    };
    for (const Entry& e : kTable) {
      if (e.name != name) continue;
      auto parsed = parse_arguments(name, e.schema, arguments);
      if (!parsed) return parsed.error();
      args_ = std::move(*parsed);
      return (this->*e.fn)();
    }
    return Error(std::errc::function_not_supported, "The command " + std::string(name) +
                                                        " has not been found");
  }

 private:
  std::string pid_list(const std::vector<Holder>& holders) const {
    std::string out;
    for (const Holder& h : holders) {
      out += (out.empty() ? "" : ", ") + std::to_string(h.peer->pid());
    }
    return out;
  }

  // The table entry of `name`; the region's own ENOENT error when absent.
  Result<NamespaceState*> lookup_locked(const std::string& name) {
    auto it = d_.namespaces_.find(name);
    if (it == d_.namespaces_.end()) {
      auto found = d_.region_.find(name);
      if (!found) return found.error();
      it = d_.namespaces_.emplace(name, NamespaceState{}).first;  // device opened on demand
    }
    return &it->second;
  }

  // The daemon's Device of `name`, opened now if it could not be before.
  Result<std::shared_ptr<Device>> device(const std::string& name) {
    std::lock_guard<std::mutex> lock(d_.mu_);
    auto state = lookup_locked(name);
    if (!state) return state.error();
    if ((*state)->restoring) {
      return Error(std::errc::device_or_resource_busy,
                   "namespace " + name + " is being restored");
    }
    if ((*state)->device == nullptr) {
      auto dev = d_.region_.open_device(name);
      if (!dev) return dev.error();
      (*state)->device = std::move(*dev);
    }
    return (*state)->device;
  }

  void notify_locked(const std::vector<Holder>& holders, const json& event) {
    std::string line = dump(event);
    for (const Holder& h : holders) {
      Status sent = h.peer->send(line);
      if (!sent) d_.log_("event to pid " + std::to_string(h.peer->pid()) + " failed: " +
                         sent.error().message());
    }
  }

  Result<json> query_namespaces() {
    std::lock_guard<std::mutex> lock(d_.mu_);
    json out = json::array();
    for (const NamespaceInfo& ns : d_.region_.list()) {
      json entry = namespace_json(ns);
      json holders = json::array();
      auto it = d_.namespaces_.find(ns.name);
      if (it != d_.namespaces_.end()) {
        for (const Holder& h : it->second.holders) {
          holders.push_back({{"pid", h.peer->pid()},
                             {"access", h.writable ? "rw" : "ro"},
                             {"exclusive", h.exclusive}});
        }
      }
      entry["holders"] = std::move(holders);
      if (std::string qmp = d_.vms_.qmp_path(ns.name); !qmp.empty()) entry["vm"] = {{"qmp", qmp}};
      out.push_back(std::move(entry));
    }
    return out;
  }

  Result<json> query_region() {
    return json{{"region", d_.region_.spec()},
                {"capabilities", capabilities_json(d_.region_.capabilities())},
                {"space", space_json(d_.region_.space())}};
  }

  Result<json> create_namespace() {
    std::lock_guard<std::mutex> lock(d_.mu_);
    auto info = d_.region_.create_namespace(
        {.name = args_.text("name"), .size = args_.number("size")});
    if (!info) return info.error();
    NamespaceState& state = d_.namespaces_[info->name];
    auto dev = d_.region_.open_device(info->name);
    if (dev) state.device = std::move(*dev);
    d_.log_("namespace " + info->name + " created (" + std::to_string(info->size) + " bytes)");
    return namespace_json(*info);
  }

  // On a carved region a holder's fd is the whole device: no truncate can
  // take its mappings away, and freed bytes go to the next namespace
  // created. So what holders map is never freed under them, force or not.
  Status refuse_if_unrevocable(const std::string& name, const std::vector<Holder>& holders,
                               const char* what) const {
    if (holders.empty() || !d_.region_.space().carved) return ok();
    return Error(std::errc::device_or_resource_busy,
                 "namespace " + name + " is open by pid(s) " + pid_list(holders) +
                     ", which map the carved device itself: it cannot be " + what +
                     " until they release it (their mappings cannot be revoked)");
  }

  Result<json> destroy_namespace() {
    const std::string& name = args_.text("name");
    const bool force = args_.flag("force");
    std::lock_guard<std::mutex> lock(d_.mu_);
    auto state = lookup_locked(name);
    if (!state) return state.error();
    std::vector<Holder>& holders = (*state)->holders;
    // Said first: on a carved region force would not help either.
    RAWDAX_RETURN_IF_ERROR(refuse_if_unrevocable(name, holders, "destroyed"));
    if (!holders.empty() && !force) {
      return Error(std::errc::device_or_resource_busy,
                   "namespace " + name + " is open by pid(s) " + pid_list(holders) +
                       "; force revokes it");
    }
    // Holders hear first; then removal truncates the backing object, which
    // turns their mappings' next access into SIGBUS.
    notify_locked(holders, {{"event", "NAMESPACE_REVOKED"}, {"data", {{"name", name}}}});
    // force: the daemon's own Device handles are not users to protect.
    Status st = d_.region_.destroy_namespace(name, {.force = true});
    if (!st) return st.error();
    if (!holders.empty()) {
      d_.log_("namespace " + name + " revoked from pid(s) " + pid_list(holders));
    }
    d_.namespaces_.erase(name);
    d_.log_("namespace " + name + " destroyed");
    return json::object();
  }

  Result<json> resize_namespace() {
    const std::string& name = args_.text("name");
    const uint64_t size = args_.number("size");
    const bool force = args_.flag("force");
    auto dev = device(name);
    if (!dev) return dev.error();
    {
      std::lock_guard<std::mutex> lock(d_.mu_);
      auto state = lookup_locked(name);
      if (!state) return state.error();
      // Their mappings may cover the cut, and the daemon cannot see them.
      if (size < (*dev)->size() && !(*state)->holders.empty() && !force) {
        return Error(std::errc::device_or_resource_busy,
                     "namespace " + name + " is open by pid(s) " +
                         pid_list((*state)->holders) + "; force shrinks it under them");
      }
      if (size < (*dev)->size()) {
        RAWDAX_RETURN_IF_ERROR(refuse_if_unrevocable(name, (*state)->holders, "shrunk"));
      }
    }
    // Not under mu_: a resize waits for in-flight writes.
    Status st = (*dev)->resize(size, {.force = force});
    if (!st) return st.error();
    NamespaceInfo info = (*dev)->info();
    std::lock_guard<std::mutex> lock(d_.mu_);
    auto state = lookup_locked(name);
    if (state) {
      notify_locked((*state)->holders, {{"event", "NAMESPACE_RESIZED"},
                                        {"data", {{"name", name}, {"size", info.size}}}});
    }
    d_.log_("namespace " + name + " resized to " + std::to_string(info.size) + " bytes");
    return namespace_json(info);
  }

  Result<json> open_namespace() {
    const std::string& name = args_.text("name");
    const std::string& access = args_.text("access");
    const bool exclusive = args_.flag("exclusive");
    std::lock_guard<std::mutex> lock(d_.mu_);
    auto state = lookup_locked(name);
    if (!state) return state.error();
    std::vector<Holder>& holders = (*state)->holders;
    for (const Holder& h : holders) {
      if (h.peer == session_.peer) {
        return generic_error("namespace " + name + " is already open on this connection");
      }
      if (h.exclusive) {
        return Error(std::errc::device_or_resource_busy,
                     "namespace " + name + " is held exclusively by pid " +
                         std::to_string(h.peer->pid()));
      }
    }
    if (exclusive && !holders.empty()) {
      return Error(std::errc::device_or_resource_busy,
                   "namespace " + name + " is open by pid(s) " + pid_list(holders) +
                       "; an exclusive open needs it unshared");
    }
    auto fd = d_.region_.open_backing_fd(name, access == "rw");
    if (!fd) return not_a_device_error(fd.error());
    fd_out_->reset(*fd);
    auto info = d_.region_.find(name);
    if (!info) return info.error();
    holders.push_back({session_.peer, access == "rw", exclusive});
    d_.log_("namespace " + name + " opened " + access + (exclusive ? " exclusively" : "") +
            " by pid " + std::to_string(session_.peer->pid()));
    uint64_t size = (*state)->device ? (*state)->device->size() : info->size;
    // On a carved region the fd is the whole device: the namespace starts
    // at `offset` in it (docs/control.md).
    json out = {{"name", name},
                {"uuid", info->uuid},
                {"size", size},
                {"offset", info->offset},
                {"access", access},
                {"exclusive", exclusive},
                {"capabilities", capabilities_json(d_.region_.capabilities())}};
    // Opened while frozen: the client protects what it maps until the THAW
    // carrying this token (it may reach the wire before this reply).
    // (The same hold of mu_ as the holder's entry: no freeze can start in
    // between and miss it.)
    if (access == "rw") {
      if (auto token = d_.holder_freezes_.holder_opened_locked(name, session_.peer)) {
        out["freeze_token"] = *token;
      }
    }
    return out;
  }

  Result<json> release_namespace() {
    const std::string& name = args_.text("name");
    std::lock_guard<std::mutex> lock(d_.mu_);
    auto state = lookup_locked(name);
    if (!state) return state.error();
    std::vector<Holder>& holders = (*state)->holders;
    auto mine = std::find_if(holders.begin(), holders.end(),
                             [&](const Holder& h) { return h.peer == session_.peer; });
    if (mine == holders.end()) {
      return generic_error("namespace " + name + " is not open on this connection");
    }
    holders.erase(mine);
    d_.log_("namespace " + name + " released by pid " + std::to_string(session_.peer->pid()));
    return json::object();
  }

  // The writers whose stores bypass every engine here, stopped for a freeze
  // or a snapshot: an attached guest (its VMM maps the namespace itself) is
  // paused, and the other holders write-protect their own mappings
  // (HolderFreezes). The guest resumes last.
  struct OutsideWriters {
    internal::AttachedVms::Pause vm;
    HolderFreeze holders;
  };
  // `pause_vm` false leaves an attached guest running (its stores are then
  // the caller's to hold, as snapshot_through_vm() does).
  Result<OutsideWriters> stop_outside_writers(const std::string& name, double timeout,
                                              bool force, std::vector<pid_t>* revoked,
                                              bool pause_vm = true) {
    auto paused = pause_vm ? d_.vms_.pause(name) : internal::AttachedVms::Pause();
    if (!paused) return generic_error(paused.error().message());
    auto holders = d_.holder_freezes_.freeze(
        name, session_.peer, std::chrono::steady_clock::now() + to_ns(timeout), force, revoked);
    if (!holders) {
      resume(*paused);
      return holders.error();
    }
    return OutsideWriters{std::move(*paused), std::move(*holders)};
  }
  void resume(internal::AttachedVms::Pause& paused) {
    Status resumed = paused.resume();
    if (!resumed) d_.log_("error: " + resumed.error().message());
  }

  Result<json> freeze() {
    const std::string& name = args_.text("name");
    const double timeout = args_.seconds("timeout");
    const bool force = args_.flag("force");
    auto dev = device(name);
    if (!dev) return dev.error();
    HolderFreezes::BusyMark busy(d_.holder_freezes_, name, session_.peer->id());
    // They stop before the device freeze persists the namespace, so what
    // holders wrote before their ack is in the persisted image.
    std::vector<pid_t> revoked;
    auto outside = stop_outside_writers(name, timeout, force, &revoked);
    if (!outside) return outside.error();
    // Not under mu_: draining block writes may take up to the timeout.
    auto guard = (*dev)->freeze({.timeout = to_ns(timeout)});
    if (!guard) return not_a_device_error(guard.error());
    session_.freezes.emplace(name, SessionFreeze{std::move(outside->vm),
                                                 std::move(outside->holders), std::move(*guard)});
    d_.log_("namespace " + name + " frozen by pid " + std::to_string(session_.peer->pid()));
    return json{{"revoked", revoked}};
  }

  Result<json> freeze_ack() {
    const std::string& name = args_.text("name");
    const uint64_t token = args_.number("token");
    RAWDAX_RETURN_IF_ERROR(d_.holder_freezes_.ack(session_.peer, name, token));
    return json::object();
  }

  Result<json> thaw() {
    const std::string& name = args_.text("name");
    auto it = session_.freezes.find(name);
    if (it == session_.freezes.end()) {
      std::lock_guard<std::mutex> lock(d_.mu_);
      auto state = lookup_locked(name);
      if (!state) return state.error();
      return generic_error("namespace " + name + " is not frozen by this connection");
    }
    session_.freezes.erase(it);
    d_.log_("namespace " + name + " thawed by pid " + std::to_string(session_.peer->pid()));
    return json::object();
  }

  // A full snapshot of a namespace an attached, running VM maps, through
  // QEMU's background snapshot (vm/vm_snapshot.h): the guest is paused only
  // while QEMU write-protects its RAM. Holders and block writers, whose
  // stores QEMU does not see, are stopped for the whole copy, as without a
  // VM. An error says why it could not; the caller then pauses the guest
  // for the whole copy.
  Result<SnapshotInfo> snapshot_through_vm(Device& dev, const std::string& name,
                                           const std::string& file, double timeout, bool force,
                                           std::vector<pid_t>* revoked) {
    auto ns = d_.region_.find(name);
    if (!ns) return ns.error();
    auto outside = stop_outside_writers(name, timeout, force, revoked, /*pause_vm=*/false);
    if (!outside) return outside.error();
    Result<SnapshotInfo> taken = Error(std::errc::operation_not_supported, "not taken");
    {
      auto frozen = dev.freeze({.timeout = to_ns(timeout)});
      if (!frozen) {
        outside->holders.end();
        return frozen.error();
      }
      taken = d_.vms_.with_running_vm(name, [&](internal::QmpClient& qmp) {
        return internal::snapshot_through_qemu(qmp, *ns, file);
      });
    }
    outside->holders.end();
    return taken;
  }

  Result<json> snapshot() {
    const std::string& name = args_.text("name");
    const std::string& file = args_.text("file");
    const std::string& base = args_.text("base");
    const double timeout = args_.seconds("timeout");
    const bool force = args_.flag("force");
    const uint64_t threads = args_.number("threads");
    auto dev = device(name);
    if (!dev) return dev.error();
    HolderFreezes::BusyMark busy(d_.holder_freezes_, name, session_.peer->id());
    std::vector<pid_t> revoked;
    const bool vm_attached = !d_.vms_.qmp_path(name).empty();
    if (vm_attached) {
      std::string why;
      if (args_.text("vm") == "pause") {
        why = "asked to (vm: pause)";
      } else if (!base.empty()) {
        why = "an incremental snapshot is taken with the VM paused";
      } else {
        auto taken = snapshot_through_vm(**dev, name, file, timeout, force, &revoked);
        if (taken) {
          d_.log_("namespace " + name + " snapshot " + taken->path +
                  " through QEMU's background snapshot (VM paused " +
                  std::to_string(taken->vm_pause_ns / 1000) + " us)");
          json out = snapshot_json(*taken);
          out["revoked"] = revoked;
          return out;
        }
        why = taken.error().message();
      }
      d_.log_("namespace " + name + ": pausing the VM for the whole snapshot: " + why);
    }
    // Stopped for the whole copy, and let go when it ends, whatever its result.
    auto outside = stop_outside_writers(name, timeout, force, &revoked);
    if (!outside) return outside.error();
    // Not under mu_: the copy takes as long as the namespace is big.
    auto info = (*dev)->snapshot(file, {.base = base,
                                         .progress = d_.options_.progress,
                                         .copy_threads = static_cast<unsigned>(threads)});
    outside->holders.end();
    const bool paused = outside->vm.paused();
    resume(outside->vm);
    if (!info) return not_a_device_error(info.error());
    if (paused) {
      info->vm_snapshot = "pause";
      info->vm_pause_ns = d_.vms_.last_pause_ns(name);
    }
    d_.log_("namespace " + name + " snapshot " + info->path);
    json out = snapshot_json(*info);
    out["revoked"] = revoked;
    return out;
  }

  Result<json> attach_vm() {
    const std::string& name = args_.text("name");
    const std::string& qmp = args_.text("qmp");
    {
      std::lock_guard<std::mutex> lock(d_.mu_);
      auto state = lookup_locked(name);
      if (!state) return state.error();
    }
    Status attached = d_.vms_.attach(name, qmp);
    if (!attached) return generic_error(attached.error().message());
    d_.log_("namespace " + name + ": VM attached (QMP " + qmp + ")");
    return json::object();
  }

  Result<json> detach_vm() {
    const std::string& name = args_.text("name");
    {
      std::lock_guard<std::mutex> lock(d_.mu_);
      auto state = lookup_locked(name);
      if (!state) return state.error();
    }
    Status detached = d_.vms_.detach(name);
    if (!detached) return generic_error(detached.error().message());
    d_.log_("namespace " + name + ": VM detached");
    return json::object();
  }

  // The daemon's own Device keeps the namespace's old backing object open,
  // so it is closed for the restore and reopened after it, whatever the
  // result; meanwhile device() refuses the namespace. A holder, an NBD
  // client or a command still using the Device keeps it open, and the
  // region then refuses the restore (EBUSY).
  Result<json> restore_namespace() {
    const std::string& name = args_.text("name");
    const std::string& file = args_.text("file");
    const bool force = args_.flag("force");
    const bool lazy = args_.flag("lazy");
    {
      std::lock_guard<std::mutex> lock(d_.mu_);
      NamespaceState& state = d_.namespaces_[name];
      if (state.restoring) {
        return Error(std::errc::device_or_resource_busy,
                     "namespace " + name + " is being restored");
      }
      if (!state.holders.empty()) {
        return Error(std::errc::device_or_resource_busy,
                     "namespace " + name + " is open by pid(s) " + pid_list(state.holders) +
                         "; they must release it before a restore");
      }
      state.restoring = true;
      state.device.reset();
    }
    auto info = d_.region_.restore_namespace(name, file, {.force = force, .lazy = lazy});
    std::lock_guard<std::mutex> lock(d_.mu_);
    NamespaceState& state = d_.namespaces_[name];
    state.restoring = false;
    if (d_.region_.find(name)) {
      if (d_.options_.open_every_namespace) {
        auto dev = d_.region_.open_device(name);
        if (dev) {
          state.device = std::move(*dev);
        } else {
          d_.log_("error: namespace " + name + ": " + dev.error().message());
        }
      }
    } else {
      d_.namespaces_.erase(name);
    }
    if (!info) return info.error();
    d_.log_("namespace " + name + (lazy ? " lazily restored from " : " restored from ") + file +
            (lazy ? " (the fill goes on in the background)" : ""));
    return namespace_json(*info);
  }

  // Reads only the file: no namespace is involved.
  Result<json> verify_snapshot() {
    const std::string& file = args_.text("file");
    auto chain = ::rawdax::verify_snapshot(file);
    if (!chain) return chain.error();
    json out = json::array();
    for (const SnapshotInfo& s : *chain) out.push_back(snapshot_json(s));
    return out;
  }

  // The QEMU arguments giving a guest the namespace. Only a carved
  // namespace needs to know what `qemu` can do; it is asked then.
  Result<json> vm_args() {
    const std::string& name = args_.text("name");
    const bool virtio = args_.flag("virtio");
    const uint64_t ram = args_.number("ram");
    const std::string& qemu = args_.text("qemu");
    auto ns = d_.region_.find(name);
    if (!ns) return ns.error();
    internal::QemuBackendSupport support;
    if (ns->offset != 0) {
      auto asked = internal::qemu_backend_support(qemu);
      if (!asked) return generic_error(asked.error().message());
      support = *asked;
    }
    auto pmem = internal::qemu_pmem_args(*ns, virtio, ram, support,
                                         d_.region_.capabilities().alignment);
    if (!pmem) return generic_error(pmem.error().message());
    std::vector<std::string> args = {
        "-machine", pmem->machine_option.empty() ? "pc" : "pc," + pmem->machine_option, "-m",
        std::to_string(ram >> 20) + "M," + pmem->memory_option};
    args.insert(args.end(), pmem->args.begin(), pmem->args.end());
    return json{{"name", ns->name},
                {"device", virtio ? "virtio-pmem-pci" : "nvdimm"},
                {"path", ns->path},
                {"offset", ns->offset},
                {"size", ns->size},
                {"args", args}};
  }

  // The NBD server's, which only serve has.
  Result<NbdServer*> nbd(const char* command) {
    if (d_.options_.nbd == nullptr) {
      return generic_error(std::string(command) + " needs a running `rawdax serve` for region " +
                           d_.region_.spec() + " (its NBD server serves the exports)");
    }
    return d_.options_.nbd;
  }

  // Verified whole before it is exported (it reads every page); no
  // namespace is involved.
  Result<json> export_snapshot() {
    auto server = nbd("export-snapshot");
    if (!server) return server.error();
    const std::string& file = args_.text("file");
    auto info = (*server)->export_snapshot(file, args_.text("export"));
    if (!info) {
      // ENOENT here is the file's, not a device's.
      return not_a_device_error(info.error()).with_context("export-snapshot " + file + ": ");
    }
    return export_json(*info, (*server)->uri(info->name));
  }

  Result<json> unexport() {
    auto server = nbd("unexport");
    if (!server) return server.error();
    RAWDAX_RETURN_IF_ERROR((*server)->unexport(args_.text("export")));
    return json::object();
  }

  Result<json> query_exports() {
    auto server = nbd("query-exports");
    if (!server) return server.error();
    json out = json::array();
    for (const NbdExportInfo& e : (*server)->exports()) {
      out.push_back(export_json(e, (*server)->uri(e.name)));
    }
    return out;
  }

  Result<json> query_stats() {
    std::lock_guard<std::mutex> lock(d_.mu_);
    json out = json::array();
    for (const auto& [name, state] : d_.namespaces_) {
      if (state.device == nullptr) continue;
      json entry = stats_json(name, state.device->stats());
      entry["badblocks"] = badblocks_json(state.device->info().badblocks);
      out.push_back(std::move(entry));
    }
    return out;
  }

  Dispatcher& d_;
  Session& session_;
  Arguments args_;  // set by run()
  internal::UniqueFd* fd_out_;
};

Dispatcher::Dispatcher(Region& region, DispatcherOptions options)
    : region_(region), options_(std::move(options)), log_(options_.log) {
  if (!log_) log_ = [](const std::string&) {};
  if (!options_.open_every_namespace) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (const NamespaceInfo& ns : region_.list()) {
    NamespaceState& state = namespaces_[ns.name];
    auto dev = region_.open_device(ns.name);
    if (dev) {
      state.device = std::move(*dev);
    } else {
      log_("error: namespace " + ns.name + ": " + dev.error().message());
    }
  }
}

Dispatcher::~Dispatcher() = default;

std::string Dispatcher::greeting() const {
  json caps = json::array();
  for (const char* c : kCapabilities) caps.push_back(c);
  // export-snapshot, unexport and query-exports: only with an NBD server.
  if (options_.nbd != nullptr) caps.push_back("snapshot-export");
  return dump({{"rawdax", {{"version", RAWDAX_VERSION}, {"capabilities", caps}}}});
}

std::string Dispatcher::error_line(std::string_view error_class, const std::string& desc) {
  return dump({{"error", {{"class", error_class}, {"desc", desc}}}});
}

Dispatcher::Reply Dispatcher::handle(Session& session, std::string_view request_line) {
  Reply reply;
  json id;  // null: the request had none
  auto fail = [&](std::string_view error_class, const std::string& desc) {
    json out = {{"error", {{"class", error_class}, {"desc", desc}}}};
    if (!id.is_null()) out["id"] = id;
    reply.fd.reset();
    reply.line = dump(out);
  };
  try {
    json request = json::parse(request_line, nullptr, /*allow_exceptions=*/false);
    if (request.is_discarded()) {
      fail(kGenericError, "malformed JSON");
      return reply;
    }
    if (!request.is_object()) {
      fail(kGenericError, "a request must be a JSON object");
      return reply;
    }
    if (auto it = request.find("id"); it != request.end()) id = *it;
    auto execute = request.find("execute");
    if (execute == request.end() || !execute->is_string()) {
      fail(kGenericError, "a request needs \"execute\": a command name string");
      return reply;
    }
    for (const auto& [key, value] : request.items()) {
      if (key != "execute" && key != "arguments" && key != "id") {
        fail(kGenericError, "unknown request member '" + key + "'");
        return reply;
      }
    }
    json args = json::object();
    if (auto it = request.find("arguments"); it != request.end()) {
      if (!it->is_object()) {
        fail(kGenericError, "\"arguments\" must be a JSON object");
        return reply;
      }
      args = *it;
    }
    const std::string command = execute->get<std::string>();
    Command cmd(*this, session, &reply.fd);
    Result<json> result = cmd.run(command, args);
    if (!result) {
      fail(error_class(result.error()), result.error().message());
      return reply;
    }
    json out = {{"return", std::move(*result)}};
    if (!id.is_null()) out["id"] = id;
    reply.line = dump(out);
  } catch (const json::exception& e) {
    fail(kGenericError, std::string("bad request: ") + e.what());
  }
  return reply;
}

std::vector<std::shared_ptr<Peer>> Dispatcher::writable_holders_locked(const std::string& name) {
  std::vector<std::shared_ptr<Peer>> out;
  auto ns = namespaces_.find(name);
  if (ns == namespaces_.end()) return out;
  for (const Holder& h : ns->second.holders) {
    if (h.writable) out.push_back(h.peer);
  }
  return out;
}

void Dispatcher::revoke_locked(const std::string& name, const std::shared_ptr<Peer>& peer) {
  auto ns = namespaces_.find(name);
  if (ns == namespaces_.end()) return;
  std::erase_if(ns->second.holders, [&](const Holder& h) { return h.peer == peer; });
}

void Dispatcher::flush_all() {
  std::vector<std::shared_ptr<Device>> devices;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, state] : namespaces_) {
      if (state.device != nullptr) devices.push_back(state.device);
    }
  }
  // Not under mu_: a flush waits for the media.
  for (const auto& dev : devices) {
    Status st = dev->flush();
    if (!st) log_("error: flush failed: " + st.error().message());
  }
}

void Dispatcher::end_session(Session& session) {
  std::lock_guard<std::mutex> lock(mu_);
  // A closed connection acks nothing more and is sent nothing more; its
  // process is no longer stopped for later freezes.
  holder_freezes_.connection_ended_locked(session.peer);
  for (auto& [name, state] : namespaces_) {
    auto& holders = state.holders;
    size_t before = holders.size();
    std::erase_if(holders, [&](const Holder& h) { return h.peer == session.peer; });
    if (holders.size() != before) {
      log_("namespace " + name + " released by pid " + std::to_string(session.peer->pid()) +
           " (connection closed)");
    }
  }
}

}  // namespace rawdax::control

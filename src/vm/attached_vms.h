// AttachedVms: which namespaces a running VM maps, and the QMP socket to
// pause it by. A guest's stores come from the VMM's own mapping, which no
// protection engine of ours sees, so a freeze or snapshot of such a
// namespace pauses the VM for its whole length (QMP stop … cont).
//
// Thread-safe: one mutex guards the table, and each VM has its own for its
// QMP connection. Pauses of one VM nest: the first stops it, and it resumes
// when the last one ends, on whatever thread.
#ifndef RAWDAX_VM_ATTACHED_VMS_H_
#define RAWDAX_VM_ATTACHED_VMS_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "rawdax/result.h"
#include "rawdax/snapshot.h"
#include "vm/qmp_client.h"

namespace rawdax::internal {

class AttachedVms {
 public:
  // Resumes the paused VM (if any) when destroyed. Move-only.
  class Pause {
   public:
    Pause() = default;
    Pause(Pause&&) noexcept = default;
    Pause& operator=(Pause&&) noexcept;
    ~Pause();
    bool paused() const { return vm_ != nullptr; }
    // Resumes now; the error of QMP cont, if any.
    Status resume();

   private:
    friend class AttachedVms;
    struct Vm;
    explicit Pause(std::shared_ptr<Vm> vm) : vm_(std::move(vm)) {}
    std::shared_ptr<Vm> vm_;
  };

  // Connects to `qmp_path` and checks it answers; replaces an earlier
  // attachment of `name`. Errors name the namespace and socket.
  Status attach(const std::string& name, const std::string& qmp_path);
  // ENOENT when nothing is attached to `name`.
  Status detach(const std::string& name);
  // The QMP socket attached to `name`, or empty.
  std::string qmp_path(const std::string& name) const;
  std::vector<std::pair<std::string, std::string>> list() const;  // name, qmp path

  // Pauses the VM attached to `name` (QMP stop), or returns an empty Pause
  // when none is attached.
  Result<Pause> pause(const std::string& name);

  // Runs `fn` with the QMP connection of the VM attached to `name`, which
  // must be running under no Pause of ours (QEMU's background snapshot
  // resumes the guest it stopped, so it must not run while a freeze holds
  // it paused). Pauses of that VM wait until `fn` returns. ENOENT when no
  // VM is attached, EBUSY when a Pause holds it; else `fn`'s result.
  Result<SnapshotInfo> with_running_vm(
      const std::string& name, const std::function<Result<SnapshotInfo>(QmpClient&)>& fn);

  // The attached VM's last pause as QEMU reported it (RESUME − STOP event
  // timestamps), 0 when unknown or nothing is attached.
  uint64_t last_pause_ns(const std::string& name) const;

 private:
  std::shared_ptr<Pause::Vm> find(const std::string& name) const;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Pause::Vm>> vms_;  // guarded by mu_
};

}  // namespace rawdax::internal

#endif  // RAWDAX_VM_ATTACHED_VMS_H_

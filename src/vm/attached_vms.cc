#include "vm/attached_vms.h"

namespace rawdax::internal {

// One attached VM. `depth` counts the live Pauses: the first one stops the
// VM and the last one to end resumes it. A plain count under `mu` (not a
// lock held while paused), so a Pause may end on any thread.
struct AttachedVms::Pause::Vm {
  std::string name;
  std::string qmp_path;
  std::mutex mu;
  int depth = 0;                      // guarded by mu
  std::unique_ptr<QmpClient> client;  // guarded by mu
};

AttachedVms::Pause& AttachedVms::Pause::operator=(Pause&& other) noexcept {
  if (this != &other) {
    (void)resume();
    vm_ = std::move(other.vm_);
  }
  return *this;
}

AttachedVms::Pause::~Pause() { (void)resume(); }

Status AttachedVms::Pause::resume() {
  if (vm_ == nullptr) return ok();
  std::shared_ptr<Vm> vm = std::move(vm_);
  Status result;
  {
    std::lock_guard<std::mutex> lock(vm->mu);
    if (--vm->depth == 0) result = vm->client->cont();
  }
  if (!result) return result.error().with_context("namespace " + vm->name + ": resuming the VM: ");
  return ok();
}

Status AttachedVms::attach(const std::string& name, const std::string& qmp_path) {
  auto client = QmpClient::connect(qmp_path);
  if (!client) return client.error().with_context("namespace " + name + ": attach-vm: ");
  auto vm = std::make_shared<Pause::Vm>();
  vm->name = name;
  vm->qmp_path = qmp_path;
  vm->client = std::make_unique<QmpClient>(std::move(*client));
  std::lock_guard<std::mutex> lock(mu_);
  vms_[name] = std::move(vm);
  return ok();
}

Status AttachedVms::detach(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  if (vms_.erase(name) == 0) {
    return Error(std::errc::no_such_file_or_directory, "namespace " + name + ": no VM attached");
  }
  return ok();
}

std::string AttachedVms::qmp_path(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = vms_.find(name);
  return it == vms_.end() ? std::string() : it->second->qmp_path;
}

std::vector<std::pair<std::string, std::string>> AttachedVms::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, vm] : vms_) out.emplace_back(name, vm->qmp_path);
  return out;
}

std::shared_ptr<AttachedVms::Pause::Vm> AttachedVms::find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = vms_.find(name);
  // Shared: a detach meanwhile cannot free it under its user.
  return it == vms_.end() ? nullptr : it->second;
}

Result<SnapshotInfo> AttachedVms::with_running_vm(
    const std::string& name, const std::function<Result<SnapshotInfo>(QmpClient&)>& fn) {
  std::shared_ptr<Pause::Vm> vm = find(name);
  if (vm == nullptr) {
    return Error(std::errc::no_such_file_or_directory, "namespace " + name + ": no VM attached");
  }
  // Held for the whole of fn: a pause() meanwhile waits, so no freeze can
  // stop the VM under QEMU's background snapshot.
  std::lock_guard<std::mutex> lock(vm->mu);
  if (vm->depth > 0) {
    return Error(std::errc::device_or_resource_busy,
                 "namespace " + name + ": its VM is paused by a freeze");
  }
  return fn(*vm->client);
}

uint64_t AttachedVms::last_pause_ns(const std::string& name) const {
  std::shared_ptr<Pause::Vm> vm = find(name);
  if (vm == nullptr) return 0;
  std::lock_guard<std::mutex> lock(vm->mu);
  auto pause = vm->client->last_pause();
  return pause ? static_cast<uint64_t>(pause->count()) : 0;
}

Result<AttachedVms::Pause> AttachedVms::pause(const std::string& name) {
  std::shared_ptr<Pause::Vm> vm = find(name);
  if (vm == nullptr) return Pause();
  std::lock_guard<std::mutex> lock(vm->mu);
  if (vm->depth == 0) {
    Status stopped = vm->client->stop();
    if (!stopped) return stopped.error().with_context("namespace " + name + ": pausing the VM: ");
  }
  ++vm->depth;
  return Pause(vm);
}

}  // namespace rawdax::internal

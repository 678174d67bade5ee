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

Result<AttachedVms::Pause> AttachedVms::pause(const std::string& name) {
  std::shared_ptr<Pause::Vm> vm;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = vms_.find(name);
    if (it == vms_.end()) return Pause();
    vm = it->second;  // shared: a detach meanwhile cannot free it under us
  }
  std::lock_guard<std::mutex> lock(vm->mu);
  if (vm->depth == 0) {
    Status stopped = vm->client->stop();
    if (!stopped) return stopped.error().with_context("namespace " + name + ": pausing the VM: ");
  }
  ++vm->depth;
  return Pause(vm);
}

}  // namespace rawdax::internal

// The public Region: the facade over the catalog (region layer), the open
// namespaces and restore. It sits above them so that open_device() and
// restore_namespace() are not upward calls.
#include "rawdax/region.h"

#include <functional>

#include "namespace/open_namespace.h"
#include "region/catalog.h"
#include "snapshot/restore.h"

namespace rawdax {

Result<std::unique_ptr<Region>> Region::open(std::string_view spec, RegionOptions options) {
  auto catalog = internal::Catalog::open(spec, options.create, options.require_dax, options.file_size);
  if (!catalog) return catalog.error();
  return std::unique_ptr<Region>(new Region(std::shared_ptr<internal::Catalog>(std::move(*catalog))));
}

Result<InitReport> Region::init(std::string_view spec, InitOptions options) {
  return internal::Catalog::init(spec, options);
}

Region::Region(std::shared_ptr<internal::Catalog> catalog) : catalog_(std::move(catalog)) {}
Region::~Region() = default;

const std::string& Region::spec() const { return catalog_->spec(); }
const Capabilities& Region::capabilities() const { return catalog_->capabilities(); }
uint64_t Region::generation() const { return catalog_->generation(); }
std::vector<NamespaceInfo> Region::list() const { return catalog_->list(); }
RegionSpace Region::space() const { return catalog_->space(); }
Result<NamespaceInfo> Region::find(std::string_view name) const { return catalog_->find(name); }

Result<NamespaceInfo> Region::create_namespace(const NamespaceSpec& spec) {
  return catalog_->create(spec);
}

std::shared_ptr<internal::OpenNamespace> Region::live_locked(std::string_view name) const {
  auto it = open_.find(std::string(name));
  if (it == open_.end()) return nullptr;
  auto ns = it->second.lock();
  if (ns == nullptr || ns->core().removed()) return nullptr;
  return ns;
}

Status Region::destroy_namespace(std::string_view name, DestroyOptions options) {
  // Holding mu_ keeps open_device() from reopening the namespace meanwhile.
  std::lock_guard<std::mutex> lock(mu_);
  if (auto ns = live_locked(name)) {
    if (!options.force) {
      return Error(std::errc::device_or_resource_busy,
                   "namespace " + std::string(name) +
                       " is open (a Device or Mapping of it is alive); force removes it first");
    }
    RAWDAX_RETURN_IF_ERROR(ns->core().remove());
  }
  open_.erase(std::string(name));
  return catalog_->destroy(name);
}

Result<std::shared_ptr<internal::OpenNamespace>> Region::open_locked(
    std::string_view name, const DeviceOptions& options) {
  auto ns = live_locked(name);
  if (ns == nullptr) {
    auto opened = internal::OpenNamespace::open(catalog_, name, options);
    if (!opened) return opened.error();
    ns = std::move(*opened);
    open_[std::string(name)] = ns;
  } else if (options.track_dirty != ns->options().track_dirty ||
             (options.engine != EngineChoice::kAuto &&
              options.engine != ns->options().engine)) {
    return Error(std::errc::device_or_resource_busy,
                 "namespace " + std::string(name) +
                     " is already open with other tracking or engine options");
  }
  return ns;
}

Result<std::unique_ptr<Device>> Region::open_device(std::string_view name,
                                                    DeviceOptions options) {
  std::lock_guard<std::mutex> lock(mu_);
  auto ns = open_locked(name, options);
  if (!ns) return ns.error();
  return std::make_unique<Device>(std::move(*ns), options);
}

Result<int> Region::open_backing_fd(std::string_view name, bool writable) const {
  auto fd = catalog_->open_backing(name, writable);
  if (!fd) return fd.error();
  return fd->release();
}

Result<NamespaceInfo> Region::restore_namespace(std::string_view name, const std::string& path,
                                                RestoreOptions options) {
  internal::RestoreHost host;
  host.locked = [&](const std::function<Result<NamespaceInfo>(bool)>& step) {
    std::lock_guard<std::mutex> lock(mu_);
    const bool open = live_locked(name) != nullptr;
    if (!open) open_.erase(std::string(name));  // expired or removed: forgotten
    return step(open);
  };
  host.open_core = [&]() -> Result<std::shared_ptr<internal::DeviceCore>> {
    std::lock_guard<std::mutex> lock(mu_);
    auto ns = open_locked(name, DeviceOptions{});
    if (!ns) return ns.error();
    // Shares ownership of the whole open namespace, pointing at its core.
    return std::shared_ptr<internal::DeviceCore>(*ns, &(*ns)->core());
  };
  return internal::restore_snapshot(*catalog_, host, name, path, options);
}

}  // namespace rawdax

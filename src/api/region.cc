// The public Region: the facade over the catalog (region layer), the open
// namespaces and restore. It sits above them so that open_device() and
// restore_namespace() are not upward calls.
#include "rawdax/region.h"

#include <functional>

#include "namespace/open_namespace.h"
#include "region/catalog.h"
#include "snapshot/lazy_restore.h"
#include "snapshot/restore.h"

namespace rawdax {

Result<std::unique_ptr<Region>> Region::open(std::string_view spec, RegionOptions options) {
  auto catalog = internal::Catalog::open(spec, options.create, options.require_dax, options.file_size);
  if (!catalog) return catalog.error();
  std::unique_ptr<Region> region(new Region(std::shared_ptr<internal::Catalog>(std::move(*catalog))));
  // Lazy restores a crash (or an earlier close) left incomplete go on now.
  // One that cannot resume fails the opens of its namespace instead.
  std::lock_guard<std::mutex> lock(region->mu_);
  for (const NamespaceInfo& ns : region->catalog_->list()) {
    if (ns.restore) (void)region->fill_for_locked(ns);
  }
  return region;
}

Result<InitReport> Region::init(std::string_view spec, InitOptions options) {
  return internal::Catalog::init(spec, options);
}

Region::Region(std::shared_ptr<internal::Catalog> catalog) : catalog_(std::move(catalog)) {}
Region::~Region() = default;

const std::string& Region::spec() const { return catalog_->spec(); }
const Capabilities& Region::capabilities() const { return catalog_->capabilities(); }
uint64_t Region::generation() const { return catalog_->generation(); }
RegionSpace Region::space() const { return catalog_->space(); }

std::vector<NamespaceInfo> Region::list() const {
  std::vector<NamespaceInfo> out = catalog_->list();
  std::lock_guard<std::mutex> lock(mu_);
  for (NamespaceInfo& ns : out) ns = with_restore_locked(std::move(ns));
  return out;
}

Result<NamespaceInfo> Region::find(std::string_view name) const {
  auto found = catalog_->find(name);
  if (!found) return found.error();
  std::lock_guard<std::mutex> lock(mu_);
  return with_restore_locked(std::move(*found));
}

NamespaceInfo Region::with_restore_locked(NamespaceInfo ns) const {
  if (!ns.restore) return ns;
  if (auto it = fills_.find(ns.name); it != fills_.end()) {
    ns.restore = it->second->state();
  } else if (auto err = resume_errors_.find(ns.name); err != resume_errors_.end()) {
    ns.restore->error = err->second.message();
  }
  return ns;
}

std::shared_ptr<internal::LazyFill> Region::filling_locked(std::string_view name) const {
  auto it = fills_.find(std::string(name));
  if (it == fills_.end() || it->second->done()) return nullptr;
  return it->second;
}

Result<std::shared_ptr<internal::LazyFill>> Region::fill_for_locked(const NamespaceInfo& ns) {
  if (!ns.restore) return std::shared_ptr<internal::LazyFill>();
  if (auto it = fills_.find(ns.name); it != fills_.end()) return it->second;
  auto resumed = internal::LazyFill::resume(catalog_, ns);
  if (!resumed) {
    resume_errors_.insert_or_assign(ns.name, resumed.error());
    return resumed.error();
  }
  resume_errors_.erase(ns.name);
  std::shared_ptr<internal::LazyFill> fill = std::move(*resumed);
  fills_[ns.name] = fill;
  return fill;
}

Status Region::wait_for_restore(std::string_view name) const {
  std::shared_ptr<internal::LazyFill> fill;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = fills_.find(std::string(name));
    if (it == fills_.end()) return ok();
    fill = it->second;
  }
  return fill->wait();
}

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
  fills_.erase(std::string(name));  // stops and joins its background pass
  resume_errors_.erase(std::string(name));
  return catalog_->destroy(name);
}

Result<std::shared_ptr<internal::OpenNamespace>> Region::open_locked(
    std::string_view name, const DeviceOptions& options) {
  auto ns = live_locked(name);
  if (ns == nullptr) {
    // A namespace marked incomplete opens with its fill (resumed now if no
    // fill of it runs here), or not at all.
    auto info = catalog_->find(name);
    if (!info) return info.error();
    auto fill = fill_for_locked(*info);
    if (!fill) return fill.error();
    std::shared_ptr<internal::PageFill> pages;
    if (*fill != nullptr && !(*fill)->done()) pages = (*fill)->page_fill();
    auto opened = internal::OpenNamespace::open(catalog_, name, options, std::move(pages));
    if (!opened) return opened.error();
    ns = std::move(*opened);
    open_[std::string(name)] = ns;
  } else if (options.track_dirty != ns->options().track_dirty ||
             (options.engine != EngineChoice::kAuto &&
              options.engine != ns->options().engine) ||
             (options.uffd_faults != UffdFaults::kAuto &&
              options.uffd_faults != ns->options().uffd_faults)) {
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
  // Another process maps the fd directly and would not see on-demand fills.
  if (auto info = find(name); info && info->restore) {
    const RestoreState& r = *info->restore;
    return Error(std::errc::device_or_resource_busy,
                 "namespace " + std::string(name) + ": a lazy restore of " + r.snapshot +
                     " is still filling it (" + std::to_string(r.pages_filled) + " of " +
                     std::to_string(r.pages_total) + " pages" +
                     (r.error.empty() ? "" : "; stopped: " + r.error) +
                     "); retry once it has completed");
  }
  auto fd = catalog_->open_backing(name, writable);
  if (!fd) return fd.error();
  return fd->release();
}

Result<NamespaceInfo> Region::restore_namespace(std::string_view name, const std::string& path,
                                                RestoreOptions options) {
  internal::RestoreHost host;
  host.locked = [&](const std::function<Result<NamespaceInfo>(bool)>& step)
      -> Result<NamespaceInfo> {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto fill = filling_locked(name)) {
      const RestoreState r = fill->state();
      return Error(std::errc::device_or_resource_busy,
                   "restore of " + path + " into namespace " + std::string(name) +
                       ": a lazy restore of " + r.snapshot + " is still filling it (" +
                       std::to_string(r.pages_filled) + " of " + std::to_string(r.pages_total) +
                       " pages)");
    }
    const bool open = live_locked(name) != nullptr;
    if (!open) open_.erase(std::string(name));  // expired or removed: forgotten
    // A finished fill, or one that could not resume: the restore replaces
    // the object (should it fail, the marker stays and the next open
    // resumes again).
    if (!open) {
      fills_.erase(std::string(name));
      resume_errors_.erase(std::string(name));
    }
    return step(open);
  };
  host.adopt_fill = [&](std::unique_ptr<internal::LazyFill> fill) {
    fills_[std::string(name)] = std::move(fill);  // called inside locked(): mu_ held
  };
  host.open_core = [&]() -> Result<std::shared_ptr<internal::DeviceCore>> {
    std::lock_guard<std::mutex> lock(mu_);
    auto ns = open_locked(name, DeviceOptions{});
    if (!ns) return ns.error();
    // Shares ownership of the whole open namespace, pointing at its core.
    return std::shared_ptr<internal::DeviceCore>(*ns, &(*ns)->core());
  };
  return internal::restore_snapshot(catalog_, host, name, path, options);
}

}  // namespace rawdax

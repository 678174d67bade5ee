// The public Region: the facade over the catalog (region layer) and devices.
// It sits above the device layer so that open_device() is not an upward call.
#include "rawdax/region.h"

#include "device/device_core.h"
#include "engine/protector.h"
#include "region/catalog.h"

namespace rawdax {

Result<std::unique_ptr<Region>> Region::open(std::string_view spec, RegionOptions options) {
  auto catalog = Catalog::open(spec, options.create);
  if (!catalog) return catalog.error();
  return std::unique_ptr<Region>(new Region(std::shared_ptr<Catalog>(std::move(*catalog))));
}

Region::Region(std::shared_ptr<Catalog> catalog) : catalog_(std::move(catalog)) {}
Region::~Region() = default;

const std::string& Region::spec() const { return catalog_->spec(); }
const Capabilities& Region::capabilities() const { return catalog_->capabilities(); }
uint64_t Region::generation() const { return catalog_->generation(); }
std::vector<NamespaceInfo> Region::list() const { return catalog_->list(); }
Result<NamespaceInfo> Region::find(std::string_view name) const { return catalog_->find(name); }

Result<NamespaceInfo> Region::create_namespace(const NamespaceSpec& spec) {
  return catalog_->create(spec);
}

std::shared_ptr<internal::DeviceCore> Region::live_core_locked(std::string_view name) const {
  auto it = open_.find(std::string(name));
  if (it == open_.end()) return nullptr;
  auto core = it->second.lock();
  if (core == nullptr || core->removed()) return nullptr;
  return core;
}

Status Region::destroy_namespace(std::string_view name, DestroyOptions options) {
  // Holding mu_ keeps open_device() from reopening the namespace meanwhile.
  std::lock_guard<std::mutex> lock(mu_);
  if (auto core = live_core_locked(name)) {
    if (!options.force) {
      return Error(std::errc::device_or_resource_busy,
                   "namespace " + std::string(name) +
                       " is open (a Device or Mapping of it is alive); force removes it first");
    }
    RAWDAX_RETURN_IF_ERROR(core->remove());
  }
  open_.erase(std::string(name));
  return catalog_->destroy(name);
}

Result<std::unique_ptr<Device>> Region::open_device(std::string_view name,
                                                    DeviceOptions options) {
  std::lock_guard<std::mutex> lock(mu_);
  auto core = live_core_locked(name);
  if (core == nullptr) {
    auto opened = internal::DeviceCore::open(catalog_, name, options);
    if (!opened) return opened.error();
    auto engine = internal::Protector::create(**opened, options.engine);
    if (!engine) return engine.error();
    (*opened)->set_observer(std::move(*engine));
    core = std::move(*opened);
    open_[std::string(name)] = core;
  } else if (options.track_dirty != core->options().track_dirty ||
             (options.engine != EngineChoice::kAuto &&
              options.engine != core->options().engine)) {
    return Error(std::errc::device_or_resource_busy,
                 "namespace " + std::string(name) +
                     " is already open with other tracking or engine options");
  }
  return std::make_unique<Device>(std::move(core), options);
}

}  // namespace rawdax

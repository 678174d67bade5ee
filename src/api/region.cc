// The public Region: the facade over the catalog (region layer) and devices.
// It sits above the device layer so that open_device() is not an upward call.
#include "rawdax/region.h"

#include <cstring>

#include "common/crash_point.h"
#include "device/device_core.h"
#include "engine/protector.h"
#include "media/files.h"
#include "region/catalog.h"
#include "region/names.h"
#include "snapshot/snapshot_file.h"

namespace rawdax {

Result<std::unique_ptr<Region>> Region::open(std::string_view spec, RegionOptions options) {
  auto catalog = Catalog::open(spec, options.create, options.require_dax, options.file_size);
  if (!catalog) return catalog.error();
  return std::unique_ptr<Region>(new Region(std::shared_ptr<Catalog>(std::move(*catalog))));
}

Result<InitReport> Region::init(std::string_view spec, InitOptions options) {
  return Catalog::init(spec, options);
}

Region::Region(std::shared_ptr<Catalog> catalog) : catalog_(std::move(catalog)) {}
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

Result<int> Region::open_backing_fd(std::string_view name, bool writable) const {
  auto fd = catalog_->open_backing(name, writable);
  if (!fd) return fd.error();
  return fd->release();
}

namespace {

Status write_chain(const std::vector<internal::SnapshotFile>& chain,
                   const std::function<Status(uint64_t, std::span<const std::byte>)>& write) {
  // Newest first, each page once: the newest file that stores a page wins.
  const internal::SnapshotHeader& newest = chain.front().header();
  std::vector<uint8_t> done(newest.page_count(), 0);
  std::vector<std::byte> page(newest.page_size);
  for (const auto& file : chain) {
    for (uint64_t p = 0; p < file.header().page_count(); ++p) {
      if (done[p] || !file.has_page(p)) continue;
      done[p] = 1;
      uint64_t offset = p * newest.page_size;
      std::span<std::byte> buf(page.data(),
                               std::min<uint64_t>(newest.page_size, newest.namespace_size - offset));
      RAWDAX_RETURN_IF_ERROR(file.read_page(p, buf));
      RAWDAX_RETURN_IF_ERROR(write(offset, buf));
    }
  }
  return ok();
}

// devdax-whole holds exactly one namespace: there is no room for a second
// copy, so the restore overwrites it in place (not crash-atomic; docs/snapshot.md).
Result<NamespaceInfo> restore_in_place(Region& region, std::string_view name,
                                       const std::vector<internal::SnapshotFile>& chain,
                                       const std::string& what) {
  auto dev = region.open_device(name);
  if (!dev) return dev.error().with_context(what);
  const internal::SnapshotHeader& newest = chain.front().header();
  if ((*dev)->size() != newest.namespace_size) {
    return Error(std::errc::invalid_argument, what + "a devdax-whole namespace cannot be resized");
  }
  Status done = (*dev)->write_zeroes(0, newest.namespace_size);
  if (done) {
    done = write_chain(chain, [&](uint64_t offset, std::span<const std::byte> data) {
      return (*dev)->write(offset, data);
    });
  }
  if (done) done = (*dev)->flush();
  if (!done) return done.error().with_context(what);
  return region.find(name);
}

}  // namespace

Result<NamespaceInfo> Region::restore_namespace(std::string_view name, const std::string& path,
                                                RestoreOptions options) {
  const std::string what = "restore of " + path + " into namespace " + std::string(name) + ": ";
  // Everything is checked before anything changes.
  auto chain = internal::open_chain(path);
  if (!chain) return chain.error().with_context(what);
  for (const auto& file : *chain) RAWDAX_RETURN_IF_ERROR(file.verify_pages());
  const internal::SnapshotHeader& newest = chain->front().header();
  // The restored namespace has exactly the snapshot's size, which a media
  // with larger pages may not hold (a 4 KiB-page image into hugetlbfs).
  if (Status aligned = check_aligned("snapshot namespace size", newest.namespace_size,
                                     capabilities());
      !aligned) {
    return aligned.error().with_context(what);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (live_core_locked(name)) {
      return Error(std::errc::device_or_resource_busy, what + "the namespace is open");
    }
  }
  auto existing = find(name);
  if (existing && existing->size != newest.namespace_size && !options.force) {
    return Error(std::errc::invalid_argument,
                 what + "the namespace has " + std::to_string(existing->size) +
                     " bytes, the snapshot " + std::to_string(newest.namespace_size) +
                     " (force resizes it)");
  }
  if (capabilities().kind == MediaKind::kDevdax && !catalog_->carved()) {
    return restore_in_place(*this, name, *chain, what);
  }

  // Into a new backing object that the metadata names only once it is
  // complete: a crash or failure leaves the namespace as it was (or absent).
  auto object = catalog_->create_detached(std::string(name), newest.namespace_size);
  if (!object) return object.error().with_context(what);
  Status written = write_chain(*chain, [&](uint64_t offset, std::span<const std::byte> data) {
    if (object->view.valid()) {  // a carved extent, zeroed: only its pages are written
      std::memcpy(object->view.data() + offset, data.data(), data.size());
      return ok();
    }
    return pwrite_all(object->fd.get(), data.data(), data.size(), offset,
                      "namespace " + std::string(name));
  });
  if (!written) {
    catalog_->discard(std::move(*object));
    return written.error().with_context(what);
  }
  crash_point("restore data written");
  // The namespace must still be closed: an open device keeps its old object.
  std::lock_guard<std::mutex> lock(mu_);
  if (live_core_locked(name)) {
    catalog_->discard(std::move(*object));
    return Error(std::errc::device_or_resource_busy, what + "the namespace was opened meanwhile");
  }
  open_.erase(std::string(name));
  auto installed = catalog_->install(std::move(*object));
  if (!installed) return installed.error().with_context(what);
  return installed;
}

}  // namespace rawdax

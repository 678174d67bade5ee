#include "export/export_registry.h"

#include <atomic>
#include <filesystem>

#include "export/nbd_protocol.h"
#include "snapshot/snapshot_image.h"

namespace rawdax::nbd {

// A registered snapshot export. Immutable once registered, but `removed`.
struct ExportRegistry::Entry {
  std::string name;
  NbdExportInfo info;  // broken/reason are filled in when listed
  std::shared_ptr<const internal::SnapshotImage> image;
  std::vector<std::string> contexts;
  std::string description;
  std::atomic<bool> removed{false};
};

namespace {

const std::vector<std::string>& namespace_contexts() {
  static const std::vector<std::string> kContexts = {kBaseAllocation};
  return kContexts;
}

// A namespace, through its Device.
class NamespaceSource final : public ExportSource {
 public:
  NamespaceSource(std::unique_ptr<Device> device, std::string name)
      : device_(std::move(device)), name_(std::move(name)) {}

  uint64_t size() const override { return device_->size(); }
  bool read_only() const override { return false; }  // the server's option decides
  std::string description() const override {
    return "rawdax namespace " + name_ + " (" + std::to_string(size()) + " bytes)";
  }
  const std::vector<std::string>& contexts() const override { return namespace_contexts(); }
  Status read(uint64_t offset, std::span<std::byte> out) override {
    return device_->read(offset, out);
  }
  Status check_readable(uint64_t offset, uint64_t length) override {
    return device_->check_readable(offset, length);
  }
  Result<bool> is_hole(uint64_t offset, uint64_t length) override {
    return device_->is_hole(offset, length);
  }
  Result<std::vector<StatusExtent>> block_status(size_t, uint64_t offset, uint64_t length,
                                                 size_t max) override {
    auto runs = device_->extents(offset, length, max);
    if (!runs) return runs.error();
    std::vector<StatusExtent> out;
    for (const Extent& e : *runs) out.push_back({e.length, e.hole ? (kStateHole | kStateZero) : 0});
    return out;
  }
  Status write(uint64_t offset, std::span<const std::byte> data, bool fua) override {
    return device_->write(offset, data, {.fua = fua});
  }
  Status write_zeroes(uint64_t offset, uint64_t length, bool no_hole) override {
    return device_->write_zeroes(offset, length, {.no_hole = no_hole});
  }
  Status discard(uint64_t offset, uint64_t length) override {
    return device_->discard(offset, length);
  }
  Status flush() override { return device_->flush(); }
  std::string backing_path() const override { return device_->info().path; }
  uint64_t backing_offset() const override { return device_->info().offset; }

 private:
  std::unique_ptr<Device> device_;
  std::string name_;
};

// A snapshot chain, read-only. Context 0 is base:allocation (stored by some
// file = data, else HOLE|ZERO); an incremental's context 1 is its dirty
// bitmap (stored by the newest file = 1).
class SnapshotSource final : public ExportSource {
 public:
  explicit SnapshotSource(std::shared_ptr<const ExportRegistry::Entry> entry)
      : entry_(std::move(entry)), image_(*entry_->image) {}

  uint64_t size() const override { return image_.size(); }
  bool read_only() const override { return true; }
  std::string description() const override { return entry_->description; }
  const std::vector<std::string>& contexts() const override { return entry_->contexts; }
  Status read(uint64_t offset, std::span<std::byte> out) override {
    RAWDAX_RETURN_IF_ERROR(present());
    return image_.read(offset, out);
  }
  Status check_readable(uint64_t, uint64_t) override {
    RAWDAX_RETURN_IF_ERROR(present());
    return image_.check();
  }
  Result<bool> is_hole(uint64_t offset, uint64_t length) override {
    RAWDAX_RETURN_IF_ERROR(present());
    return image_.unstored(offset, length);
  }
  Result<std::vector<StatusExtent>> block_status(size_t index, uint64_t offset, uint64_t length,
                                                 size_t max) override {
    RAWDAX_RETURN_IF_ERROR(present());
    std::vector<StatusExtent> out;
    if (index == 0) {
      for (const auto& e : image_.allocation(offset, length, max)) {
        out.push_back({e.length, e.set ? 0 : (kStateHole | kStateZero)});
      }
    } else {
      for (const auto& e : image_.dirty(offset, length, max)) {
        out.push_back({e.length, e.set ? kStateDirty : 0});
      }
    }
    return out;
  }
  Status write(uint64_t, std::span<const std::byte>, bool) override { return refuse(); }
  Status write_zeroes(uint64_t, uint64_t, bool) override { return refuse(); }
  Status discard(uint64_t, uint64_t) override { return refuse(); }
  Status flush() override { return ok(); }

 private:
  Status present() const {
    if (entry_->removed.load(std::memory_order_relaxed)) {
      return Error(std::errc::no_such_device_or_address,
                   "snapshot export " + entry_->name + " was unexported");
    }
    return ok();
  }
  Status refuse() const {
    return Error(std::errc::read_only_file_system,
                 "snapshot export " + entry_->name + " is read-only");
  }
  std::shared_ptr<const ExportRegistry::Entry> entry_;
  const internal::SnapshotImage& image_;
};

// The namespace a snapshot file was taken of: its header's, else the
// region's namespace with its source uuid (files from before the header
// named it), else "".
std::string namespace_of(const internal::SnapshotHeader& header, const Region& region) {
  if (!header.namespace_name.empty()) return header.namespace_name;
  for (const NamespaceInfo& ns : region.list()) {
    if (ns.uuid == header.source_uuid) return ns.name;
  }
  return "";
}

// `<namespace>@<file stem>`, or the stem alone when the namespace is unknown.
std::string default_name(const internal::SnapshotFile& file, const Region& region) {
  std::string stem = std::filesystem::path(file.path()).stem().string();
  std::string ns = namespace_of(file.header(), region);
  return ns.empty() ? stem : ns + "@" + stem;
}

}  // namespace

std::string ExportRegistry::default_export() const {
  auto all = region_.list();
  for (const auto& ns : all) {
    if (ns.name == "default") return ns.name;
  }
  return all.empty() ? std::string() : all.front().name;
}

Result<std::unique_ptr<ExportSource>> ExportRegistry::open(const std::string& name,
                                                           std::string* resolved) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = snapshots_.find(name); it != snapshots_.end()) {
      *resolved = name;
      return std::unique_ptr<ExportSource>(new SnapshotSource(it->second));
    }
  }
  std::string target = name.empty() ? default_export() : name;
  if (target.empty()) {
    return Error(std::errc::no_such_file_or_directory, "the region has no namespace");
  }
  auto dev = region_.open_device(target, {.read_only = read_only_});
  if (!dev) return dev.error();
  *resolved = target;
  return std::unique_ptr<ExportSource>(new NamespaceSource(std::move(*dev), target));
}

Result<std::vector<std::string>> ExportRegistry::contexts(const std::string& name) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = snapshots_.find(name); it != snapshots_.end()) return it->second->contexts;
  }
  std::string target = name.empty() ? default_export() : name;
  if (target.empty() || !region_.find(target)) {
    return Error(std::errc::no_such_file_or_directory, "no export named '" + name + "'");
  }
  return namespace_contexts();
}

Result<NbdExportInfo> ExportRegistry::add_snapshot(const std::string& given,
                                                   const std::string& name) {
  // Absolute: the image checks its files by path on every read, and the
  // export lists its file, whatever the working directory later.
  std::error_code ec;
  const std::string path = std::filesystem::absolute(given, ec).string();
  if (ec) return Error(ec, "snapshot " + given + ": " + ec.message());
  // Verified before anything is registered, and without mu_: it reads every page.
  auto image = internal::SnapshotImage::open(path);
  if (!image) return image.error();
  const internal::SnapshotFile& newest = (*image)->newest();
  auto entry = std::make_shared<Entry>();
  entry->name = name.empty() ? default_name(newest, region_) : name;
  if (entry->name.empty() || entry->name.size() > kMaxString) {
    return Error(std::errc::invalid_argument,
                 "export name '" + entry->name + "' must be 1 to " + std::to_string(kMaxString) +
                     " bytes");
  }
  NbdExportInfo& info = entry->info;
  info.name = entry->name;
  info.kind = "snapshot";
  info.namespace_name = namespace_of(newest.header(), region_);
  info.size = (*image)->size();
  info.file = path;
  info.taken_at = newest.header().taken_at.empty()
                      ? internal::utc_timestamp_of_mtime(newest.fd())
                      : newest.header().taken_at;
  entry->contexts = {kBaseAllocation};
  if ((*image)->incremental()) {
    info.base_export = default_name((*image)->chain()[1], region_);
    entry->contexts.push_back(std::string(kDirtyBitmapPrefix) + info.base_export);
  }
  entry->description = "rawdax snapshot of namespace " +
                       (info.namespace_name.empty() ? "(unknown)" : info.namespace_name) +
                       " taken " + (info.taken_at.empty() ? "(unknown)" : info.taken_at) + " (" +
                       std::filesystem::path(path).filename().string() +
                       (info.base_export.empty() ? ", full" : ", changes since " + info.base_export) +
                       ")";
  entry->image = std::move(*image);
  std::lock_guard<std::mutex> lock(mu_);
  if (region_.find(entry->name)) {
    return Error(std::errc::file_exists,
                 "export name " + entry->name + " is taken by a namespace");
  }
  if (auto it = snapshots_.find(entry->name); it != snapshots_.end()) {
    return Error(std::errc::file_exists, "export name " + entry->name +
                                             " is taken by the snapshot export of " +
                                             it->second->info.file);
  }
  snapshots_.emplace(entry->name, entry);
  return info;
}

Status ExportRegistry::remove_snapshot(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = snapshots_.find(name);
  if (it == snapshots_.end()) {
    if (region_.find(name)) {
      return Error(std::errc::invalid_argument,
                   "export " + name + " is a namespace; only snapshot exports can be unexported");
    }
    return Error(std::errc::no_such_file_or_directory, "no snapshot export named " + name);
  }
  // Connections that hold the entry see the flag at their next request.
  it->second->removed.store(true, std::memory_order_relaxed);
  snapshots_.erase(it);
  return ok();
}

std::vector<NbdExportInfo> ExportRegistry::list() const {
  std::vector<NbdExportInfo> out;
  for (const NamespaceInfo& ns : region_.list()) {
    NbdExportInfo info;
    info.name = ns.name;
    info.kind = "namespace";
    info.namespace_name = ns.name;
    info.size = ns.size;
    out.push_back(std::move(info));
  }
  std::vector<std::shared_ptr<Entry>> entries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, entry] : snapshots_) entries.push_back(entry);
  }
  // Checked without mu_: it stats every file of each chain.
  for (const auto& entry : entries) {
    NbdExportInfo info = entry->info;
    Status state = entry->image->check();
    if (!state) {
      info.broken = true;
      info.reason = state.error().message();
    }
    out.push_back(std::move(info));
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> ExportRegistry::listing() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const NamespaceInfo& ns : region_.list()) out.emplace_back(ns.name, "");
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, entry] : snapshots_) out.emplace_back(name, entry->description);
  return out;
}

}  // namespace rawdax::nbd

#include "region/catalog.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <filesystem>

#include "common/crash_point.h"
#include "common/units.h"
#include "common/uuid.h"
#include "media/files.h"
#include "media/hugetlb_pool.h"
#include "media/probe.h"
#include "region/bad_ranges.h"
#include "region/names.h"

namespace rawdax::internal {
namespace {

constexpr std::string_view kMemfdPrefix = "memfd:";
constexpr std::string_view kDevdaxWholePrefix = "devdax-whole:";

std::string metadata_path(const std::string& dir) { return dir + "/rawdax.meta"; }
std::string backing_dir(const std::string& dir) { return dir + "/ns"; }

// A stable uuid for a device that has nowhere to store one.
std::string uuid_from_path(const std::string& path) {
  XXH128_hash_t h = XXH3_128bits(path.data(), path.size());
  char out[37];
  std::snprintf(out, sizeof out, "%08" PRIx64 "-%04" PRIx64 "-4%03" PRIx64 "-8%03" PRIx64
                "-%012" PRIx64,
                h.high64 >> 32, (h.high64 >> 16) & 0xffff, h.high64 & 0xfff,
                (h.low64 >> 48) & 0xfff, h.low64 & uint64_t{0xffffffffffff});
  return out;
}

}  // namespace

Result<std::unique_ptr<Catalog>> Catalog::open(std::string_view spec, bool create,
                                               bool require_dax, uint64_t file_size) {
  std::unique_ptr<Catalog> catalog(new Catalog());
  catalog->spec_ = std::string(spec);
  if (spec.empty()) return Error(std::errc::invalid_argument, "empty region path");
  if (spec.substr(0, kMemfdPrefix.size()) == kMemfdPrefix) {
    if (require_dax) {
      return Error(std::errc::operation_not_supported,
                   "region " + std::string(spec) +
                       ": media memfd is anonymous memory, not DAX (DAX required)");
    }
    auto caps = probe_memfd();
    if (!caps) return caps.error();
    catalog->caps_ = *caps;
    catalog->meta_.region_uuid = new_uuid();
    return catalog;
  }
  if (spec.substr(0, kDevdaxWholePrefix.size()) == kDevdaxWholePrefix) {
    RAWDAX_RETURN_IF_ERROR(
        catalog->open_devdax(std::string(spec.substr(kDevdaxWholePrefix.size()))));
    return catalog;
  }
  if (CarvedMedia::is_carved_spec(spec)) {
    auto media = CarvedMedia::open(std::string(spec), {.create = create,
                                                        .file_size = file_size,
                                                        .require_dax = require_dax});
    if (!media) return media.error();
    catalog->carved_ = std::move(*media);
    catalog->caps_ = catalog->carved_->capabilities();
    RAWDAX_RETURN_IF_ERROR(catalog->open_carved(create));
    return catalog;
  }
  catalog->dir_ = std::string(spec);
  while (catalog->dir_.size() > 1 && catalog->dir_.back() == '/') catalog->dir_.pop_back();
  RAWDAX_RETURN_IF_ERROR(catalog->open_directory(create, require_dax));
  return catalog;
}

Status Catalog::open_directory(bool create, bool require_dax) {
  struct stat st;
  std::string made;  // the topmost directory this call created, if any
  if (::stat(dir_.c_str(), &st) != 0) {
    if (errno != ENOENT || !create) {
      return errno_error(errno, "region " + dir_ + (create ? "" : " (pass create to make it)"));
    }
    std::filesystem::path top = dir_;
    while (top.has_parent_path() && top.parent_path() != top &&
           !std::filesystem::exists(top.parent_path())) {
      top = top.parent_path();
    }
    made = top.string();
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) return Error(ec, "cannot create region directory " + dir_ + ": " + ec.message());
  } else if (!S_ISDIR(st.st_mode)) {
    return Error(std::errc::not_a_directory, "region " + dir_ + " is not a directory");
  }
  // Probed before the lock file exists, so a refusal below leaves nothing
  // behind (the probe file is unlinked as soon as it is open).
  auto caps = probe_directory(dir_);
  if (caps && require_dax && !caps->map_sync) {
    caps = Error(std::errc::operation_not_supported,
                 "region " + dir_ + ": DAX required, but the directory is on " + caps->filesystem +
                     " without DAX (a MAP_SYNC mapping is refused; mount it with -o dax)");
  }
  if (!caps) {
    if (!made.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(made, ec);
    }
    return caps.error();
  }
  caps_ = *caps;

  auto lock = RegionLock::acquire(dir_);
  if (!lock) return lock.error();
  lock_.emplace(std::move(*lock));

  auto bytes = read_whole_file(metadata_path(dir_));
  if (bytes) {
    auto meta = decode_metadata(*bytes, metadata_path(dir_));
    if (!meta) return meta.error();
    meta_ = std::move(*meta);
  } else if (bytes.error().code() == std::errc::no_such_file_or_directory && create) {
    meta_ = RegionMetadata{};
    meta_.region_uuid = new_uuid();
    if (::mkdir(backing_dir(dir_).c_str(), 0700) != 0 && errno != EEXIST) {
      return errno_error(errno, "cannot create " + backing_dir(dir_));
    }
    RAWDAX_RETURN_IF_ERROR(replace_file_atomically(metadata_path(dir_), encode_metadata(meta_)));
  } else if (bytes.error().code() == std::errc::no_such_file_or_directory) {
    return Error(std::errc::no_such_file_or_directory,
                 "region " + dir_ + " has no rawdax.meta: not a rawdax region");
  } else {
    return bytes.error();
  }
  if (::mkdir(backing_dir(dir_).c_str(), 0700) != 0 && errno != EEXIST) {
    return errno_error(errno, "cannot create " + backing_dir(dir_));
  }
  return remove_orphans();
}

Status Catalog::open_devdax(const std::string& path) {
  auto geometry = read_devdax_geometry(path);
  if (!geometry) return geometry.error();
  devdax_fd_.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!devdax_fd_.valid()) return errno_error(errno, "cannot open devdax device " + path);
  auto caps = probe_devdax(devdax_fd_.get(), *geometry);
  if (!caps) return caps.error();
  caps_ = *caps;
  NamespaceInfo ns;
  ns.name = std::filesystem::path(path).filename().string();
  ns.uuid = uuid_from_path(path);
  ns.size = geometry->size;
  ns.path = path;
  meta_.region_uuid = ns.uuid;
  meta_.namespaces.push_back(ns);
  return ok();
}

namespace {

PersistFn persist_with(const CarvedMedia& media) {
  return [&media](const std::byte* addr, size_t length) { return media.persist(addr, length); };
}

// What to tell the owner of a device that holds data but no label area.
std::string unlabelled_data_advice(const CarvedMedia& media, uint64_t at) {
  std::string out = "region " + media.spec() + " has no rawdax label area but holds data " +
                    "(the first non-zero byte is at offset " + std::to_string(at) + ")";
  if (media.capabilities().kind == MediaKind::kDevdax) {
    out += "; if it is a namespace of rawdax before carving (the whole device as one "
           "namespace), open it as devdax-whole:" + media.path() +
           " and copy it out with rawdax snapshot (docs/region.md, migration)";
  }
  return out + "; rawdax init-region " + media.spec() + " --force erases it";
}

std::vector<Label> labels_of(const std::vector<NamespaceInfo>& namespaces) {
  std::vector<Label> out;
  for (const auto& ns : namespaces) out.push_back({ns.uuid, ns.name, ns.offset, ns.size, ns.mode});
  return out;
}

std::string describe_namespaces(const std::vector<Label>& labels) {
  std::string out;
  for (const Label& l : labels) {
    out += (out.empty() ? "" : ", ") + l.name + " (" + format_size(l.size) + " at offset " +
           std::to_string(l.offset) + ")";
  }
  return out;
}

}  // namespace

Status Catalog::open_carved(bool create) {
  CarvedMedia& media = *carved_;
  std::span<const std::byte> area(media.label_area(), media.label_area_size());
  if (label_area_blank(area)) {
    // A whole-device scan only when about to format: it is the one time a
    // device's contents decide anything.
    auto data = media.first_nonzero(0, create ? media.size() : media.label_area_size());
    if (!data) return data.error();
    if (*data) return Error(std::errc::directory_not_empty, unlabelled_data_advice(media, **data));
    if (!create) {
      return Error(std::errc::no_such_file_or_directory,
                   "region " + spec_ + " has no rawdax label area (it reads as zeros): open it " +
                       "with create, or run rawdax init-region " + spec_);
    }
    auto state = format_label_area(
        media.label_area(), {media.size(), media.align(), media.label_area_size(), 0}, new_uuid(),
        persist_with(media));
    if (!state) return state.error();
    labels_ = std::move(*state);
  } else {
    auto state = read_label_area(area, spec_);
    if (!state) return state.error();
    const LabelGeometry& g = state->geometry;
    if (g.device_size != media.size() || g.align != media.align() ||
        g.area_size != media.label_area_size()) {
      return Error(std::errc::illegal_byte_sequence,
                   "region " + spec_ + ": the labels were written for a device of " +
                       std::to_string(g.device_size) + " bytes with align " +
                       std::to_string(g.align) + ", but " + media.path() + " now has " +
                       std::to_string(media.size()) + " bytes with align " +
                       std::to_string(media.align()) +
                       " (its size changed under the labels); nothing was changed");
    }
    labels_ = std::move(*state);
  }
  meta_.region_uuid = labels_.region_uuid;
  meta_.generation = labels_.seq;
  for (const Label& l : labels_.labels) {
    NamespaceInfo ns;
    ns.name = l.name;
    ns.uuid = l.uuid;
    ns.size = l.size;
    ns.mode = l.mode;
    ns.offset = l.offset;
    meta_.namespaces.push_back(ns);
  }
  return ok();
}

Result<InitReport> Catalog::init(std::string_view spec, InitOptions options) {
  if (!CarvedMedia::is_carved_spec(spec)) {
    return Error(std::errc::invalid_argument,
                 "init-region: " + std::string(spec) +
                     " is not a carved region (devdax:PATH or file:PATH); directory and memfd: "
                     "regions need no formatting");
  }
  auto media = CarvedMedia::open(std::string(spec),
                                 {.create = true, .file_size = options.file_size});
  if (!media) return media.error();
  CarvedMedia& m = **media;
  InitReport report;
  report.spec = std::string(spec);
  report.device_size = m.size();
  report.label_area_size = m.label_area_size();
  report.align = m.align();
  std::span<const std::byte> area(m.label_area(), m.label_area_size());
  if (label_area_blank(area)) {
    // Without force the whole device is read, to be sure nothing is erased.
    if (!options.force) {
      auto data = m.first_nonzero(0, m.size());
      if (!data) return data.error();
      if (*data) return Error(std::errc::file_exists, unlabelled_data_advice(m, **data));
    } else {
      report.erased = "whatever data the device held (it had no rawdax label area)";
    }
  } else if (auto state = read_label_area(area, std::string(spec)); state) {
    if (!state->labels.empty()) {
      report.erased = std::to_string(state->labels.size()) + " namespace(s): " +
                      describe_namespaces(state->labels);
    }
  } else {
    report.erased = "a corrupt label area (" + state.error().message() + ")";
  }
  if (!report.erased.empty() && !options.force) {
    return Error(std::errc::file_exists, "region " + std::string(spec) + " holds " +
                                             report.erased + "; init-region --force erases it");
  }
  auto state = format_label_area(m.label_area(),
                                 {m.size(), m.align(), m.label_area_size(), 0}, new_uuid(),
                                 persist_with(m));
  if (!state) return state.error();
  return report;
}

FreeSpace Catalog::free_space_locked(const std::string& skip_uuid) const {
  std::vector<ByteRange> used;
  for (const auto& ns : meta_.namespaces) {
    if (ns.uuid != skip_uuid) used.push_back({ns.offset, ns.size});
  }
  for (const auto& [uuid, range] : holds_) {
    if (uuid != skip_uuid) used.push_back(range);
  }
  return FreeSpace(carved_->label_area_size(), carved_->size(), std::move(used));
}

Error Catalog::no_space_error(const std::string& name, uint64_t size,
                              const FreeSpace& space) const {
  return Error(std::errc::no_space_on_device,
               "namespace " + name + ": " + std::to_string(size) + " bytes (" +
                   format_size(size) + ") do not fit in region " + spec_ + ": " +
                   std::to_string(space.total_free()) + " bytes free in " +
                   std::to_string(space.free_extents().size()) +
                   " extent(s), the largest free extent has " +
                   std::to_string(space.largest_free()) + " (" +
                   format_size(space.largest_free()) + ")");
}

Status Catalog::check_grow_locked(const NamespaceInfo& ns, uint64_t new_size) const {
  uint64_t room = free_space_locked(ns.uuid).free_at(ns.offset + ns.size);
  if (new_size - ns.size <= room) return ok();
  return Error(std::errc::no_space_on_device,
               "namespace " + ns.name + ": cannot grow in place from " + std::to_string(ns.size) +
                   " to " + std::to_string(new_size) + " bytes: the largest size that fits in " +
                   "place is " + std::to_string(ns.size + room) + " (" +
                   format_size(ns.size + room) + "); a namespace is never moved");
}

RegionSpace Catalog::space() const {
  RegionSpace out;
  out.align = caps_.alignment;
  std::lock_guard<std::mutex> lock(mu_);
  if (carved_ != nullptr) {
    FreeSpace free = free_space_locked();
    out.carved = true;
    out.device_size = carved_->size();
    out.label_area_size = carved_->label_area_size();
    out.free = free.total_free();
    out.largest_free = free.largest_free();
    out.label_slots = labels_.geometry.slot_count;
    out.recovered_from = labels_.recovered_from;
    return out;
  }
  if (caps_.kind == MediaKind::kDevdax) return out;  // devdax-whole: nothing to allocate
  std::string where, unit;
  auto available = available_bytes(&where, &unit);
  out.free = available ? *available : 0;
  out.largest_free = out.free;
  return out;
}

void Catalog::hold_view(const std::string& uuid, uint64_t offset, uint64_t length) {
  if (carved_ == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  ByteRange& held = holds_[uuid];
  held.offset = offset;
  held.length = std::max(held.length, length);
}

void Catalog::release_view(const std::string& uuid) {
  if (carved_ == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  holds_.erase(uuid);
}

// Deletes what a crash can leave behind: backing files no metadata names,
// temporary metadata files, and probe files.
Status Catalog::remove_orphans() {
  auto unlink_if = [](const std::string& dir, auto&& is_orphan) -> Status {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return errno_error(errno, "cannot list " + dir);
    std::vector<std::string> doomed;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != ".." && is_orphan(name)) doomed.push_back(dir + "/" + name);
    }
    ::closedir(d);
    for (const auto& path : doomed) {
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return errno_error(errno, "cannot remove orphan " + path);
      }
    }
    return ok();
  };
  RAWDAX_RETURN_IF_ERROR(unlink_if(backing_dir(dir_), [&](const std::string& name) {
    return std::none_of(meta_.namespaces.begin(), meta_.namespaces.end(),
                        [&](const NamespaceInfo& ns) { return ns.uuid == name; });
  }));
  RAWDAX_RETURN_IF_ERROR(unlink_if(dir_, [](const std::string& name) {
    return name.rfind("rawdax.meta.tmp.", 0) == 0 || name.rfind(".rawdax-probe.", 0) == 0;
  }));
  return fsync_directory(backing_dir(dir_));
}

uint64_t Catalog::generation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return meta_.generation;
}

NamespaceInfo Catalog::with_path(NamespaceInfo ns) const {
  if (carved_ != nullptr) {
    ns.path = carved_->path();
    return ns;
  }
  switch (caps_.kind) {
    case MediaKind::kDirectory: ns.path = backing_dir(dir_) + "/" + ns.uuid; break;
    case MediaKind::kMemfd: ns.path = "memfd:" + ns.name; break;
    case MediaKind::kDevdax:  // devdax-whole: recorded at open
    case MediaKind::kFile: break;
  }
  return ns;
}

const NamespaceInfo* Catalog::lookup(std::string_view name) const {
  for (const auto& ns : meta_.namespaces) {
    if (ns.name == name) return &ns;
  }
  return nullptr;
}

std::vector<NamespaceInfo> Catalog::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<NamespaceInfo> out;
  for (const auto& ns : meta_.namespaces) out.push_back(with_path(ns));
  return out;
}

Error Catalog::not_found(std::string_view name) const {
  // A name no namespace could have is named as bad input, quoted, so an empty
  // or odd one is visible in the message.
  Status valid = validate_namespace_name(name);
  if (!valid) return valid.error();
  return Error(std::errc::no_such_file_or_directory,
               "namespace " + std::string(name) + " not found in region " + spec_);
}

Result<NamespaceInfo> Catalog::find(std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  const NamespaceInfo* ns = lookup(name);
  if (ns == nullptr) {
    return not_found(name);
  }
  return with_path(*ns);
}

Result<uint64_t> Catalog::available_bytes(std::string* where, std::string* unit) const {
  uint64_t available = 0;
  bool sized_fs = false;  // statvfs reports a size
  if (caps_.kind == MediaKind::kDirectory) {
    struct statvfs vfs;
    if (::statvfs(dir_.c_str(), &vfs) != 0) return errno_error(errno, "statvfs " + dir_);
    available = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    sized_fs = vfs.f_blocks > 0;
    *where = dir_;
  } else {
    available = static_cast<uint64_t>(::sysconf(_SC_PHYS_PAGES)) *
                static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    *where = "memory";
  }
  if (caps_.hugetlb) {
    // hugetlbfs takes its pages from the kernel's pool; statvfs only knows a
    // mount's size= limit, and reports no blocks at all without one.
    auto pool = hugetlb_free_bytes(caps_.huge_page_size);
    if (!pool) return pool.error();
    if (sized_fs) *pool = std::min(*pool, available);
    // The metadata update that follows writes the new rawdax.meta beside the
    // old one: one more huge page until the rename.
    available = *pool > caps_.huge_page_size ? *pool - caps_.huge_page_size : 0;
    *where = "hugetlbfs " + dir_;
    *unit = " in huge pages of " + format_size(caps_.huge_page_size) +
            " (one more is kept for the metadata update)";
  }
  return available;
}

Status Catalog::check_space(const std::string& name, uint64_t size) const {
  if (carved_ != nullptr) {
    std::lock_guard<std::mutex> lock(mu_);  // never called with mu_ held on carved
    const NamespaceInfo* ns = lookup(name);
    if (ns == nullptr) {
      FreeSpace space = free_space_locked();
      if (space.best_fit(size)) return ok();
      return no_space_error(name, size, space);
    }
    return check_grow_locked(*ns, ns->size + size);  // a grow: only in place
  }
  std::string where, unit;
  auto available = available_bytes(&where, &unit);
  if (!available) return available.error().with_context("namespace " + name + ": ");
  if (size > *available) {
    return Error(std::errc::no_space_on_device,
                 "namespace " + name + ": " + std::to_string(size) + " bytes (" +
                     format_size(size) + ") do not fit: " + where + " has " +
                     std::to_string(*available) + " (" + format_size(*available) + ") free" +
                     unit);
  }
  return ok();
}

Status Catalog::commit(RegionMetadata next) {
  next.generation = meta_.generation + 1;
  if (carved_ != nullptr) {
    RAWDAX_RETURN_IF_ERROR(commit_labels(carved_->label_area(), labels_,
                                         labels_of(next.namespaces), persist_with(*carved_),
                                         spec_));
  } else if (caps_.kind == MediaKind::kDirectory) {
    RAWDAX_RETURN_IF_ERROR(replace_file_atomically(metadata_path(dir_), encode_metadata(next)));
  }
  meta_ = std::move(next);
  return ok();
}

Result<NamespaceInfo> Catalog::create(const NamespaceSpec& spec) {
  RAWDAX_RETURN_IF_ERROR(validate_namespace_name(spec.name));
  auto size = validate_namespace_size(spec.name, spec.size, caps_.alignment);
  if (!size) return size.error();
  if (carved_ != nullptr) {
    // An extent is exactly the size asked for: rounding up would take a
    // device's align (2 MiB on devdax) nobody asked for, silently.
    if (Status aligned = check_aligned("size", spec.size, caps_); !aligned) {
      return aligned.error().with_context("namespace " + spec.name + ": ");
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (lookup(spec.name) != nullptr) {
        return Error(std::errc::file_exists,
                     "namespace " + spec.name + " already exists in region " + spec_);
      }
    }
    auto object = create_detached(spec.name, *size, /*to_fill=*/false);
    if (!object) return object.error();
    return install(std::move(*object), /*replace=*/false);
  }
  if (caps_.kind == MediaKind::kDevdax) {
    return Error(std::errc::operation_not_supported,
                 "namespace " + spec.name + ": a devdax-whole region holds exactly its one "
                 "device (open it as devdax: to carve it, after init-region)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (lookup(spec.name) != nullptr) {
    return Error(std::errc::file_exists,
                 "namespace " + spec.name + " already exists in region " + spec_);
  }
  RAWDAX_RETURN_IF_ERROR(check_space(spec.name, *size));

  NamespaceInfo ns;
  ns.name = spec.name;
  ns.uuid = new_uuid();
  ns.size = *size;
  RegionMetadata next = meta_;
  next.namespaces.push_back(ns);

  if (caps_.kind == MediaKind::kMemfd) {
    auto fd = create_memfd("rawdax:" + ns.name, ns.size);
    if (!fd) return fd.error().with_context("namespace " + ns.name + ": ");
    RAWDAX_RETURN_IF_ERROR(commit(std::move(next)));
    memfds_[ns.uuid] = std::move(*fd);
    return with_path(ns);
  }
  std::string path = backing_dir(dir_) + "/" + ns.uuid;
  // On hugetlbfs every page is allocated now: a store must never need a
  // free huge page later (a fault finding none raises SIGBUS).
  auto fd = create_sized_file(path, ns.size, caps_.hugetlb);
  if (!fd) return fd.error().with_context("namespace " + ns.name + ": ");
  Status made = fsync_directory(backing_dir(dir_));
  if (made) made = commit(std::move(next));
  if (!made) {
    ::unlink(path.c_str());
    return made.error().with_context("namespace " + ns.name + ": ");
  }
  return with_path(ns);
}

Status Catalog::destroy(std::string_view name) {
  if (caps_.kind == MediaKind::kDevdax && carved_ == nullptr) {
    return Error(std::errc::operation_not_supported,
                 "namespace " + std::string(name) + ": a devdax namespace cannot be destroyed");
  }
  std::lock_guard<std::mutex> lock(mu_);
  const NamespaceInfo* ns = lookup(name);
  if (ns == nullptr) {
    return not_found(name);
  }
  std::string uuid = ns->uuid;
  RegionMetadata next = meta_;
  next.namespaces.erase(std::find_if(next.namespaces.begin(), next.namespaces.end(),
                                     [&](const NamespaceInfo& n) { return n.name == name; }));
  ByteRange freed{ns->offset, ns->size};
  RAWDAX_RETURN_IF_ERROR(commit(std::move(next)));
  if (carved_ != nullptr) {
    release_extent_locked(freed);
    return ok();
  }
  // Truncating before the object goes makes every mapping of it, in any
  // process that still holds an fd, raise SIGBUS (the kernel unmaps the
  // pages past EOF); unlinking or closing alone would leave them working.
  if (caps_.kind == MediaKind::kMemfd) {
    (void)::ftruncate(memfds_.at(uuid).get(), 0);
    memfds_.erase(uuid);
    return ok();
  }
  crash_point("namespace unnamed, file not yet removed");
  return remove_backing_file(std::string(name), uuid);
}

void Catalog::release_extent_locked(ByteRange range) const {
  if (caps_.kind == MediaKind::kFile && !caps_.hugetlb) {
    (void)carved_->zero(range.offset, range.length);
  }
}

Status Catalog::remove_backing_file(const std::string& name, const std::string& uuid) {
  const std::string path = backing_dir(dir_) + "/" + uuid;
  // Truncated first: every process that maps it (clients holding the fd)
  // then gets SIGBUS, as the kernel's unmap_mapping_range gives on truncate.
  if (::truncate(path.c_str(), 0) != 0 && errno != ENOENT) {
    return errno_error(errno, "namespace " + name + ": cannot truncate " + path);
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    // The metadata no longer names it, so the next open removes it as an orphan.
    return errno_error(errno, "namespace " + name + ": cannot remove " + path);
  }
  return fsync_directory(backing_dir(dir_));
}

Result<Catalog::DetachedObject> Catalog::create_detached(const std::string& name, uint64_t size,
                                                         bool to_fill) {
  RAWDAX_RETURN_IF_ERROR(validate_namespace_name(name));
  auto rounded = validate_namespace_size(name, size, caps_.alignment);
  if (!rounded) return rounded.error();
  if (caps_.kind == MediaKind::kDevdax && carved_ == nullptr) {
    return Error(std::errc::operation_not_supported,
                 "namespace " + name + ": a devdax-whole region cannot hold a second copy");
  }
  DetachedObject object;
  object.name = name;
  object.uuid = new_uuid();
  object.size = *rounded;
  if (carved_ != nullptr) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      FreeSpace space = free_space_locked();
      auto at = space.best_fit(object.size);
      if (!at) return no_space_error(name, object.size, space);
      object.offset = *at;
      holds_[object.uuid] = {object.offset, object.size};
    }
    // Zeroed before any label can name it: no tenant ever reads another's
    // bytes, whatever a crash left in free space.
    Status zeroed = carved_->zero(object.offset, object.size);
    if (!zeroed) {
      release_view(object.uuid);
      return zeroed.error().with_context("namespace " + name + ": ");
    }
    if (to_fill) {
      auto view = carved_->map(object.offset, object.size);
      if (!view) {
        release_view(object.uuid);
        return view.error().with_context("namespace " + name + ": ");
      }
      object.view = std::move(*view);
    }
    return object;
  }
  RAWDAX_RETURN_IF_ERROR(check_space(name, *rounded));
  if (caps_.kind == MediaKind::kMemfd) {
    auto fd = create_memfd("rawdax:" + name, object.size);
    if (!fd) return fd.error().with_context("namespace " + name + ": ");
    object.fd = std::move(*fd);
    return object;
  }
  auto fd = create_sized_file(backing_dir(dir_) + "/" + object.uuid, object.size, caps_.hugetlb);
  if (!fd) return fd.error().with_context("namespace " + name + ": ");
  object.fd = std::move(*fd);
  return object;
}

Result<NamespaceInfo> Catalog::install(DetachedObject object, bool replace) {
  if (carved_ != nullptr) {
    // The extent's bytes are durable before the label names them (zeroing
    // persisted an unfilled one already).
    Status persisted =
        object.view.valid() ? carved_->persist(object.view.data(), object.view.size()) : ok();
    crash_point("detached extent persisted");
    std::lock_guard<std::mutex> lock(mu_);
    const NamespaceInfo* existing = lookup(object.name);
    if (!persisted || (existing != nullptr && !replace)) {
      holds_.erase(object.uuid);
      if (!persisted) return persisted.error().with_context("namespace " + object.name + ": ");
      return Error(std::errc::file_exists,
                   "namespace " + object.name + " already exists in region " + spec_);
    }
    NamespaceInfo ns;
    ns.name = object.name;
    ns.uuid = object.uuid;
    ns.size = object.size;
    ns.offset = object.offset;
    ns.restore = object.restore;
    std::optional<ByteRange> replaced;
    RegionMetadata next = meta_;
    if (existing != nullptr) {
      replaced = ByteRange{existing->offset, existing->size};
      ns.mode = existing->mode;
      for (auto& n : next.namespaces) {
        if (n.name == ns.name) n = ns;
      }
    } else {
      next.namespaces.push_back(ns);
    }
    Status named = commit(std::move(next));
    holds_.erase(object.uuid);
    if (!named) return named.error().with_context("namespace " + ns.name + ": ");
    if (replaced) release_extent_locked(*replaced);
    return with_path(ns);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!replace && lookup(object.name) != nullptr) {
    return Error(std::errc::file_exists,
                 "namespace " + object.name + " already exists in region " + spec_);
  }
  std::string path = backing_dir(dir_) + "/" + object.uuid;
  if (caps_.kind == MediaKind::kDirectory) {
    // The object's data must be durable before the metadata names it.
    if (::fdatasync(object.fd.get()) != 0) return errno_error(errno, "fdatasync " + path);
    crash_point("detached object synced");
    RAWDAX_RETURN_IF_ERROR(fsync_directory(backing_dir(dir_)));
  }
  RegionMetadata next = meta_;
  std::string replaced;
  NamespaceInfo ns;
  ns.name = object.name;
  ns.uuid = object.uuid;
  ns.size = object.size;
  ns.restore = object.restore;
  auto it = std::find_if(next.namespaces.begin(), next.namespaces.end(),
                         [&](const NamespaceInfo& n) { return n.name == object.name; });
  if (it != next.namespaces.end()) {
    replaced = it->uuid;
    ns.mode = it->mode;
    *it = ns;
  } else {
    next.namespaces.push_back(ns);
  }
  if (Status named = commit(std::move(next)); !named) {
    if (caps_.kind == MediaKind::kDirectory) ::unlink(path.c_str());
    return named.error();
  }
  if (caps_.kind == MediaKind::kMemfd) {
    if (!replaced.empty()) memfds_.erase(replaced);
    memfds_[ns.uuid] = std::move(object.fd);
    return with_path(ns);
  }
  if (!replaced.empty()) {
    crash_point("namespace renamed to its new object, old file not yet removed");
    RAWDAX_RETURN_IF_ERROR(remove_backing_file(ns.name, replaced));
  }
  return with_path(ns);
}

void Catalog::discard(DetachedObject object) {
  if (carved_ != nullptr) {
    release_view(object.uuid);
    return;
  }
  if (caps_.kind != MediaKind::kDirectory) return;  // a memfd goes with its fd
  ::unlink((backing_dir(dir_) + "/" + object.uuid).c_str());
}

Status Catalog::clear_restore(std::string_view name, const std::string& uuid) {
  std::lock_guard<std::mutex> lock(mu_);
  const NamespaceInfo* ns = lookup(name);
  if (ns == nullptr || ns->uuid != uuid || !ns->restore) return ok();
  RegionMetadata next = meta_;
  for (auto& entry : next.namespaces) {
    if (entry.name == name) entry.restore.reset();
  }
  return commit(std::move(next));
}

Status Catalog::set_size(std::string_view name, uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  const NamespaceInfo* ns = lookup(name);
  if (ns == nullptr) {
    return not_found(name);
  }
  if (carved_ != nullptr && size > ns->size) {
    RAWDAX_RETURN_IF_ERROR(check_grow_locked(*ns, size));
    // The grown bytes were free space: zeroed before the label covers them.
    Status zeroed = carved_->zero(ns->offset + ns->size, size - ns->size);
    if (!zeroed) return zeroed.error().with_context("namespace " + std::string(name) + ": ");
  }
  RegionMetadata next = meta_;
  for (auto& ns : next.namespaces) {
    if (ns.name != name) continue;
    ns.size = size;
    // A shrink cuts bad bytes off with the rest (a grow exposes zeroed bytes).
    internal::remove_bad_range(ns.badblocks, size, UINT64_MAX - size);
  }
  return commit(std::move(next));
}

Status Catalog::set_badblocks(std::string_view name, std::vector<BadRange> badblocks) {
  std::lock_guard<std::mutex> lock(mu_);
  NamespaceInfo* ns = nullptr;
  for (auto& entry : meta_.namespaces) {
    if (entry.name == name) ns = &entry;
  }
  if (ns == nullptr) return not_found(name);
  if (ns->badblocks == badblocks) return ok();
  if (caps_.kind != MediaKind::kDirectory || carved_ != nullptr) {
    // No room in a carved label or a devdax-whole layout; memfd metadata is
    // memory anyway. No update either: the labels did not change.
    ns->badblocks = std::move(badblocks);
    return ok();
  }
  RegionMetadata next = meta_;
  for (auto& entry : next.namespaces) {
    if (entry.name == name) entry.badblocks = std::move(badblocks);
  }
  return commit(std::move(next));
}

namespace {

// A new fd on what `fd` refers to. A dup shares the open file description and
// so its write access; a read-only fd needs a new description, which
// reopening through /proc gives (memfds and devices have no other name).
Result<UniqueFd> reopen_fd(int fd, bool writable, const std::string& name) {
  int out = writable
                ? ::fcntl(fd, F_DUPFD_CLOEXEC, 0)
                : ::open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_RDONLY | O_CLOEXEC);
  if (out < 0) return errno_error(errno, "namespace " + name + ": reopen backing fd");
  return UniqueFd(out);
}

}  // namespace

Result<UniqueFd> Catalog::open_backing(std::string_view name, bool writable) const {
  std::lock_guard<std::mutex> lock(mu_);
  const NamespaceInfo* ns = lookup(name);
  if (ns == nullptr) {
    return not_found(name);
  }
  if (carved_ != nullptr) return reopen_fd(carved_->fd(), writable, ns->name);
  switch (caps_.kind) {
    case MediaKind::kFile:
      break;
    case MediaKind::kDirectory:
      return open_file(backing_dir(dir_) + "/" + ns->uuid, writable);
    case MediaKind::kMemfd:
      return reopen_fd(memfds_.at(ns->uuid).get(), writable, ns->name);
    case MediaKind::kDevdax:
      return reopen_fd(devdax_fd_.get(), writable, ns->name);
  }
  return Error(std::errc::invalid_argument, "unknown media kind");
}

}  // namespace rawdax::internal

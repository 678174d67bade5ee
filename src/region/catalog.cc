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
#include "region/names.h"

namespace rawdax {
namespace {

constexpr std::string_view kMemfdPrefix = "memfd:";
constexpr std::string_view kDevdaxPrefix = "devdax:";

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
                                               bool require_dax) {
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
  if (spec.substr(0, kDevdaxPrefix.size()) == kDevdaxPrefix) {
    RAWDAX_RETURN_IF_ERROR(catalog->open_devdax(std::string(spec.substr(kDevdaxPrefix.size()))));
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
  switch (caps_.kind) {
    case MediaKind::kDirectory: ns.path = backing_dir(dir_) + "/" + ns.uuid; break;
    case MediaKind::kMemfd: ns.path = "memfd:" + ns.name; break;
    case MediaKind::kDevdax: break;  // recorded at open
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

Status Catalog::check_space(const std::string& name, uint64_t size) const {
  uint64_t available = 0;
  std::string where, unit;
  bool sized_fs = false;  // statvfs reports a size
  if (caps_.kind == MediaKind::kDirectory) {
    struct statvfs vfs;
    if (::statvfs(dir_.c_str(), &vfs) != 0) return errno_error(errno, "statvfs " + dir_);
    available = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    sized_fs = vfs.f_blocks > 0;
    where = dir_;
  } else {
    available = static_cast<uint64_t>(::sysconf(_SC_PHYS_PAGES)) *
                static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    where = "memory";
  }
  if (caps_.hugetlb) {
    // hugetlbfs takes its pages from the kernel's pool; statvfs only knows a
    // mount's size= limit, and reports no blocks at all without one.
    auto pool = hugetlb_free_bytes(caps_.huge_page_size);
    if (!pool) return pool.error().with_context("namespace " + name + ": ");
    if (sized_fs) *pool = std::min(*pool, available);
    // The metadata update that follows writes the new rawdax.meta beside the
    // old one: one more huge page until the rename.
    available = *pool > caps_.huge_page_size ? *pool - caps_.huge_page_size : 0;
    where = "hugetlbfs " + dir_;
    unit = " in huge pages of " + format_size(caps_.huge_page_size) +
           " (one more is kept for the metadata update)";
  }
  if (size > available) {
    return Error(std::errc::no_space_on_device,
                 "namespace " + name + ": " + std::to_string(size) + " bytes (" +
                     format_size(size) + ") do not fit: " + where + " has " +
                     std::to_string(available) + " (" + format_size(available) + ") free" + unit);
  }
  return ok();
}

Status Catalog::commit(RegionMetadata next) {
  next.generation = meta_.generation + 1;
  if (caps_.kind == MediaKind::kDirectory) {
    RAWDAX_RETURN_IF_ERROR(replace_file_atomically(metadata_path(dir_), encode_metadata(next)));
  }
  meta_ = std::move(next);
  return ok();
}

Result<NamespaceInfo> Catalog::create(const NamespaceSpec& spec) {
  RAWDAX_RETURN_IF_ERROR(validate_namespace_name(spec.name));
  auto size = validate_namespace_size(spec.name, spec.size, caps_.alignment);
  if (!size) return size.error();
  if (caps_.kind == MediaKind::kDevdax) {
    return Error(std::errc::operation_not_supported,
                 "namespace " + spec.name + ": a devdax region holds exactly its one device");
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
  if (caps_.kind == MediaKind::kDevdax) {
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
  RAWDAX_RETURN_IF_ERROR(commit(std::move(next)));
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

Result<Catalog::DetachedObject> Catalog::create_detached(const std::string& name, uint64_t size) {
  RAWDAX_RETURN_IF_ERROR(validate_namespace_name(name));
  auto rounded = validate_namespace_size(name, size, caps_.alignment);
  if (!rounded) return rounded.error();
  if (caps_.kind == MediaKind::kDevdax) {
    return Error(std::errc::operation_not_supported,
                 "namespace " + name + ": a devdax region cannot hold a second copy");
  }
  RAWDAX_RETURN_IF_ERROR(check_space(name, *rounded));
  DetachedObject object;
  object.name = name;
  object.uuid = new_uuid();
  object.size = *rounded;
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

Result<NamespaceInfo> Catalog::install(DetachedObject object) {
  std::lock_guard<std::mutex> lock(mu_);
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
  if (caps_.kind != MediaKind::kDirectory) return;  // a memfd goes with its fd
  ::unlink((backing_dir(dir_) + "/" + object.uuid).c_str());
}

Status Catalog::set_size(std::string_view name, uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  if (lookup(name) == nullptr) {
    return not_found(name);
  }
  RegionMetadata next = meta_;
  for (auto& ns : next.namespaces) {
    if (ns.name == name) ns.size = size;
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
  switch (caps_.kind) {
    case MediaKind::kDirectory:
      return open_file(backing_dir(dir_) + "/" + ns->uuid, writable);
    case MediaKind::kMemfd:
      return reopen_fd(memfds_.at(ns->uuid).get(), writable, ns->name);
    case MediaKind::kDevdax:
      return reopen_fd(devdax_fd_.get(), writable, ns->name);
  }
  return Error(std::errc::invalid_argument, "unknown media kind");
}

}  // namespace rawdax

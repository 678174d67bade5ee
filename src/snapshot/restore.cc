#include "snapshot/restore.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cstring>
#include <vector>

#include "common/crash_point.h"
#include "media/files.h"
#include "region/names.h"
#include "snapshot/snapshot_file.h"

namespace rawdax::internal {
namespace {

Status write_chain(const std::vector<SnapshotFile>& chain,
                   const std::function<Status(uint64_t, std::span<const std::byte>)>& write) {
  // Newest first, each page once: the newest file that stores a page wins.
  const SnapshotHeader& newest = chain.front().header();
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
Result<NamespaceInfo> restore_in_place(Catalog& catalog, const RestoreHost& host,
                                       std::string_view name,
                                       const std::vector<SnapshotFile>& chain,
                                       const std::string& what) {
  auto core = host.open_core();
  if (!core) return core.error().with_context(what);
  DeviceCore& dev = **core;
  const SnapshotHeader& newest = chain.front().header();
  if (dev.size() != newest.namespace_size) {
    return Error(std::errc::invalid_argument, what + "a devdax-whole namespace cannot be resized");
  }
  Status done = dev.write_zeroes(0, newest.namespace_size, ZeroOptions{}, /*is_discard=*/false,
                                 /*read_only=*/false);
  if (done) {
    done = write_chain(chain, [&](uint64_t offset, std::span<const std::byte> data) {
      return dev.write(offset, data, WriteOptions{}, /*read_only=*/false);
    });
  }
  if (done) done = dev.flush();
  if (!done) return done.error().with_context(what);
  return catalog.find(name);
}

// The empty object is named at once, with the restore marker in the same
// metadata update (a crash leaves the old state or a restartable fill); the
// host adopts the fill before its lock is released.
Result<NamespaceInfo> restore_lazy(const std::shared_ptr<Catalog>& catalog,
                                   const RestoreHost& host, Catalog::DetachedObject object,
                                   std::vector<SnapshotFile> chain, const std::string& path,
                                   const std::string& what) {
  const std::string name = object.name;
  // The fill's own fd; the object's goes to the catalog (a memfd's stays there).
  int dup = ::fcntl(object.fd.get(), F_DUPFD_CLOEXEC, 0);
  if (dup < 0) {
    Error e = errno_error(errno, what + "dup of the new backing object");
    catalog->discard(std::move(object));
    return e;
  }
  UniqueFd fd(dup);
  // The fresh object must show its pages as holes, or a resumed fill could
  // not tell which ones are missing.
  if (catalog->capabilities().kind == MediaKind::kDirectory &&
      ::lseek(fd.get(), 0, SEEK_HOLE) != 0) {
    catalog->discard(std::move(object));
    return Error(std::errc::operation_not_supported,
                 what + "the filesystem does not report the new object's pages as holes "
                        "(SEEK_HOLE); restore without --lazy");
  }
  std::error_code ec;
  std::string absolute = std::filesystem::absolute(path, ec).lexically_normal().string();
  if (ec) absolute = path;
  object.restore = RestoreState{.snapshot = absolute,
                                .checksum = chain.front().header().header_checksum};
  return host.locked([&](bool open) -> Result<NamespaceInfo> {
    if (open) {
      catalog->discard(std::move(object));
      return Error(std::errc::device_or_resource_busy, what + "the namespace was opened meanwhile");
    }
    auto installed = catalog->install(std::move(object));
    if (!installed) return installed.error().with_context(what);
    crash_point("lazy restore object named");
    auto fill = LazyFill::start(catalog, *installed, std::move(fd), std::move(chain));
    // The marker stays: the next open of the region resumes the fill.
    if (!fill) return fill.error().with_context(what);
    host.adopt_fill(std::move(*fill));
    return installed;
  });
}

}  // namespace

Result<NamespaceInfo> restore_snapshot(const std::shared_ptr<Catalog>& shared,
                                       const RestoreHost& host, std::string_view name,
                                       const std::string& path, const RestoreOptions& options) {
  Catalog& catalog = *shared;
  const std::string what = "restore of " + path + " into namespace " + std::string(name) + ": ";
  // Everything is checked before anything changes.
  if (options.lazy) RAWDAX_RETURN_IF_ERROR(check_lazy_media(catalog, what));
  auto chain = open_chain(path);
  if (!chain) return chain.error().with_context(what);
  // A lazy restore checks each page's checksum as it fills the page instead
  // (open_chain has checked everything else): reading the whole chain first
  // would cost what the lazy restore saves.
  if (!options.lazy) {
    for (const auto& file : *chain) RAWDAX_RETURN_IF_ERROR(file.verify_pages());
  }
  const SnapshotHeader& newest = chain->front().header();
  // The restored namespace has exactly the snapshot's size, which a media
  // with larger pages may not hold (a 4 KiB-page image into hugetlbfs).
  if (Status aligned = check_aligned("snapshot namespace size", newest.namespace_size,
                                     catalog.capabilities());
      !aligned) {
    return aligned.error().with_context(what);
  }
  auto closed = host.locked([&](bool open) -> Result<NamespaceInfo> {
    if (open) return Error(std::errc::device_or_resource_busy, what + "the namespace is open");
    return NamespaceInfo{};
  });
  if (!closed) return closed.error();
  auto existing = catalog.find(name);
  if (existing && existing->size != newest.namespace_size && !options.force) {
    return Error(std::errc::invalid_argument,
                 what + "the namespace has " + std::to_string(existing->size) +
                     " bytes, the snapshot " + std::to_string(newest.namespace_size) +
                     " (force resizes it)");
  }
  if (catalog.capabilities().kind == MediaKind::kDevdax && !catalog.carved()) {
    return restore_in_place(catalog, host, name, *chain, what);
  }

  // Into a new backing object that the metadata names only once it is
  // complete: a crash or failure leaves the namespace as it was (or absent).
  auto object = catalog.create_detached(std::string(name), newest.namespace_size);
  if (!object) return object.error().with_context(what);
  if (options.lazy) return restore_lazy(shared, host, std::move(*object), std::move(*chain), path, what);
  Status written = write_chain(*chain, [&](uint64_t offset, std::span<const std::byte> data) {
    if (object->view.valid()) {  // a carved extent, zeroed: only its pages are written
      std::memcpy(object->view.data() + offset, data.data(), data.size());
      return ok();
    }
    return pwrite_all(object->fd.get(), data.data(), data.size(), offset,
                      "namespace " + std::string(name));
  });
  if (!written) {
    catalog.discard(std::move(*object));
    return written.error().with_context(what);
  }
  crash_point("restore data written");
  // The namespace must still be closed: an open device keeps its old object.
  return host.locked([&](bool open) -> Result<NamespaceInfo> {
    if (open) {
      catalog.discard(std::move(*object));
      return Error(std::errc::device_or_resource_busy,
                   what + "the namespace was opened meanwhile");
    }
    auto installed = catalog.install(std::move(*object));
    if (!installed) return installed.error().with_context(what);
    return installed;
  });
}

}  // namespace rawdax::internal

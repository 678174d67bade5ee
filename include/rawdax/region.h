// Region: a set of namespaces on one media, and the entry point of the API.
//
//   auto region = rawdax::Region::open("./data", {.create = true});
//   auto info = (*region)->create_namespace({.name = "vm1", .size = 256 << 20});
//   auto dev = (*region)->open_device("vm1");
//
// A region spec is a directory on any filesystem (tmpfs, ext4, hugetlbfs, a
// DAX filesystem), "memfd:" (anonymous memory in this process, gone when the
// Region and its devices and mappings are), or a carved device:
// "devdax:/dev/daxX.Y" or "file:PATH" (one preallocated file). A carved
// region keeps a label area at the start of the device and gives each
// namespace an aligned extent of it (docs/region.md). "devdax-whole:PATH"
// opens a device in the layout of rawdax before carving: one namespace, the
// whole device, for copying it out.
//
// First use of a carved device: with `create`, a device that is all zeros is
// formatted; one with data and no label area is refused (init() formats it).
//
// A directory region is owned by one Region object at a time, across
// processes (flock); a second open fails with EBUSY naming the holder's pid.
// Metadata updates are crash-consistent: after a crash the region reopens
// with the old or the new metadata, and files a crash orphaned are removed.
//
// Thread safety: all methods are thread-safe. Devices and mappings keep what
// they need alive, so they may outlive the Region object.
#ifndef RAWDAX_REGION_H_
#define RAWDAX_REGION_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "rawdax/capabilities.h"
#include "rawdax/device.h"
#include "rawdax/export.h"
#include "rawdax/namespace.h"
#include "rawdax/region_space.h"
#include "rawdax/result.h"

namespace rawdax {

namespace internal {
class Catalog;
class LazyFill;
}  // namespace internal

struct RegionOptions {
  bool create = false;  // make and initialise a missing directory region
  // Refuse media without DAX: a directory on a filesystem that is not
  // mounted with DAX (a MAP_SYNC mapping of it fails), or memfd:. The error
  // (ENOTSUP) names the directory and its filesystem; nothing is created.
  // devdax: is always DAX.
  bool require_dax = false;
  // file: regions: the size of a missing file that `create` makes (0: 4 GiB).
  // Files on disk and DAX filesystems are allocated whole; tmpfs stays sparse.
  uint64_t file_size = 0;
};

class RAWDAX_EXPORT Region {
 public:
  static Result<std::unique_ptr<Region>> open(std::string_view spec, RegionOptions options = {});
  // Formats a carved device (devdax:, file:) with an empty label area. The
  // data area is not written: new namespaces are zeroed when they are
  // created. EINVAL for other specs; EBUSY while the region is open.
  static Result<InitReport> init(std::string_view spec, InitOptions options = {});
  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  const std::string& spec() const;
  const Capabilities& capabilities() const;
  // Increases by one with every metadata update.
  uint64_t generation() const;

  std::vector<NamespaceInfo> list() const;
  RegionSpace space() const;
  Result<NamespaceInfo> find(std::string_view name) const;

  // EINVAL (name, size), EEXIST, ENOSPC (names the size and the space free;
  // on a carved region also the largest free extent). A carved namespace
  // takes the best-fitting free extent and is zeroed before it is named.
  Result<NamespaceInfo> create_namespace(const NamespaceSpec& spec);
  // ENOENT when absent. EBUSY while a Device or Mapping of the namespace
  // (opened through this Region) is alive, unless options.force: then the
  // device is removed first (Device::remove(): I/O fails with ENXIO, mappings
  // are revoked and raise SIGBUS), and then destroyed.
  Status destroy_namespace(std::string_view name, DestroyOptions options = {});

  // Restores snapshot `path` (and its base chain) into namespace `name`,
  // creating it when missing. The whole chain is verified (checksums, base
  // ids) before anything is written; on any error nothing is created or
  // changed. EINVAL on a size mismatch unless options.force. EBUSY while the
  // namespace is open.
  //
  // options.lazy: the namespace is usable as soon as this returns. The
  // chain's headers, bitmaps, checksum tables and base ids are checked first;
  // each page's checksum when the page is filled (a page that fails it fails
  // its reads with EILSEQ and stops the fill). Pages not
  // restored yet are filled on demand by the first block I/O or map() that
  // touches them, and a background thread of this Region fills the rest;
  // find()/list() show the progress in NamespaceInfo::restore. Until the
  // fill completes the region's metadata marks the namespace incomplete:
  // after a crash (or when this Region is closed first) the next
  // Region::open resumes the fill. Directory (not hugetlbfs) and memfd media
  // only: ENOTSUP elsewhere. While it fills, open_backing_fd() and resize
  // are refused (EBUSY), and so is another restore of the namespace.
  // docs/snapshot.md "Lazy restore".
  Result<NamespaceInfo> restore_namespace(std::string_view name, const std::string& path,
                                          RestoreOptions options = {});
  // Waits until the lazy restore of `name` running in this Region has filled
  // every page (ok at once when none runs), or returns the error that
  // stopped it.
  Status wait_for_restore(std::string_view name) const;

  // Every Device of one namespace opened through this Region shares one
  // state: a resize or remove through any of them is seen by all.
  Result<std::unique_ptr<Device>> open_device(std::string_view name, DeviceOptions options = {});

  // A new file descriptor on the namespace's backing object (a file, memfd or
  // devdax device), close-on-exec, for handing to another process; EBUSY
  // while a lazy restore fills the namespace (another process's mapping
  // would not see the pages filled on demand here); opened
  // read-only unless `writable`. The caller owns it and must close it.
  // Mappings of it in other processes raise SIGBUS once the namespace is
  // destroyed (destroy truncates the backing object before removing it).
  // On a carved region the fd is the whole device or file: the namespace is
  // [info.offset, info.offset + info.size) of it, and nothing stops the
  // receiver from mapping more, nor revokes its mappings at destroy (a file
  // region punches the extent, so they read zeros). Hand it only to a
  // process trusted with the whole device. ENOENT when absent.
  Result<int> open_backing_fd(std::string_view name, bool writable) const;

 private:
  explicit Region(std::shared_ptr<internal::Catalog> catalog);
  std::shared_ptr<internal::Catalog> catalog_;
  mutable std::mutex mu_;
  // The open state of each namespace, by name; expired once every Device and
  // Mapping of it is gone. Guarded by mu_.
  std::map<std::string, std::weak_ptr<internal::OpenNamespace>> open_;
  // Lazy restores of this Region, by name (started or resumed here); each
  // owns its background thread. Guarded by mu_; declared after catalog_, so
  // the threads are joined before the catalog can go.
  std::map<std::string, std::shared_ptr<internal::LazyFill>> fills_;
  // Why a marked namespace's fill could not resume (Region::open); its
  // devices are refused with it. Guarded by mu_.
  std::map<std::string, Error> resume_errors_;
  // fills_ of `name` while incomplete, else null. mu_ held.
  std::shared_ptr<internal::LazyFill> filling_locked(std::string_view name) const;
  // The fill of `ns` when it carries a restore marker (resumed now when none
  // runs here; the resume's error otherwise), null when it carries none.
  // mu_ held.
  Result<std::shared_ptr<internal::LazyFill>> fill_for_locked(const NamespaceInfo& ns);
  // `ns` with the progress of its fill, when one is incomplete. mu_ held.
  NamespaceInfo with_restore_locked(NamespaceInfo ns) const;
  std::shared_ptr<internal::OpenNamespace> live_locked(std::string_view name) const;
  // The namespace's open state, shared with every open Device of it, or a
  // new one; EBUSY when open with other tracking or engine options. mu_ held.
  Result<std::shared_ptr<internal::OpenNamespace>> open_locked(std::string_view name,
                                                               const DeviceOptions& options);
};

}  // namespace rawdax

#endif  // RAWDAX_REGION_H_

// Restoring a snapshot chain into a namespace (the snapshot layer; the
// public entry point is Region::restore_namespace). Everything is checked
// before anything changes: the chain is opened and every stored page of
// every file verified, and the image's size must be a multiple of the
// region's alignment. Then, by media:
//  - directory and carved regions: the pages go into a new detached backing
//    object (Catalog::create_detached) that one metadata update names once
//    it is complete, so a crash or failure leaves the namespace as it was
//    (or absent);
//  - devdax-whole: there is no room for a second copy, so the namespace is
//    overwritten in place through its device core (not crash-atomic;
//    docs/snapshot.md).
// Each page is written once, from the newest file of the chain that stores
// it; pages no file stores read as zeros.
//
// options.lazy (directory and memfd media; check_lazy_media): after the same
// checks, except that the pages' checksums are checked as each page is
// filled rather than all first (a page that fails it fails the accesses to
// it and stops the background fill, leaving the namespace marked
// incomplete), an empty detached object is installed at once, carrying the
// restore marker (snapshot path and header checksum) in the same metadata
// update, and a LazyFill (snapshot/lazy_restore.h) handed to the host fills
// it on demand and in the background. ENOTSUP on other media.
//
// Errors name the file and the namespace ("restore of P into namespace N: "):
// those of the chain and its verification; EINVAL when the size is off the
// alignment, or differs from the existing namespace's without
// options.force; EBUSY when the namespace is open, or was opened meanwhile;
// ENOSPC and the media's errors while writing.
//
// Thread safety: safe to call concurrently with anything; the host's lock
// (RestoreHost::locked) decides the race with an open of the namespace.
#ifndef RAWDAX_SNAPSHOT_RESTORE_H_
#define RAWDAX_SNAPSHOT_RESTORE_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "device/device_core.h"
#include "rawdax/namespace.h"
#include "rawdax/region_space.h"
#include "region/catalog.h"
#include "snapshot/lazy_restore.h"

namespace rawdax::internal {

// What restore needs from the owner of the region's open namespaces (the
// Region facade, which sits above this layer).
struct RestoreHost {
  // Runs `step` with the host's lock held, so that no device of the
  // namespace opens meanwhile; `open` says whether one is open now. When
  // none is, the host forgets any stale open state of the name first.
  std::function<Result<NamespaceInfo>(
      const std::function<Result<NamespaceInfo>(bool open)>& step)>
      locked;
  // The namespace's device core, opened (and shared) as open_device() would
  // open it; the result keeps it open. For the in-place restore.
  std::function<Result<std::shared_ptr<DeviceCore>>()> open_core;
  // Lazy restore: takes the namespace's fill, called inside the step that
  // installs the object (the host's lock held), so no device of the
  // namespace can open without it.
  std::function<void(std::unique_ptr<LazyFill>)> adopt_fill;
};

Result<NamespaceInfo> restore_snapshot(const std::shared_ptr<Catalog>& catalog, const RestoreHost& host,
                                       std::string_view name, const std::string& path,
                                       const RestoreOptions& options);

}  // namespace rawdax::internal

#endif  // RAWDAX_SNAPSHOT_RESTORE_H_

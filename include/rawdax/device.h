// Device: an open namespace, with its two faces over the same bytes.
//
// Block face: read/write/write_zeroes/discard/flush, bounds-checked; each is
// a memcpy (or memset / hole punch) on the device's own shared mapping, so
// the hot path makes no system call. Mapping face: map() hands out Mappings
// of the same pages.
//
// Errors: every offset/length outside the namespace, or overflowing, fails
// with an Error naming the namespace, offset, length and size, and writes
// nothing: EINVAL (reads, bad alignment, overflow), ENOSPC (writes past the
// end), EROFS/EACCES (writes on a read-only device).
//
// Media errors: a block request that meets poisoned memory or a backing file
// cut short under the device fails with EIO naming the namespace and the bad
// offset; the process and every other request go on, and the range joins
// the namespace's bad-block list (info().badblocks; docs/device.md).
//
// Thread safety: all methods are thread-safe. Concurrent writes to the same
// bytes race as plain memory does (last store wins, no tearing guarantee below
// a page for the block face). Ownership: the caller owns the Device; Mappings
// keep the internals alive after the Device is destroyed.
#ifndef RAWDAX_DEVICE_H_
#define RAWDAX_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "rawdax/capabilities.h"
#include "rawdax/device_types.h"
#include "rawdax/export.h"
#include "rawdax/mapping.h"
#include "rawdax/namespace.h"
#include "rawdax/result.h"
#include "rawdax/snapshot.h"

namespace rawdax {

class Device;

// Holds a device frozen; destroying it (or calling thaw()) thaws. Move-only.
// Freezes nest: the device thaws when the last guard goes.
class RAWDAX_EXPORT FreezeGuard {
 public:
  FreezeGuard(FreezeGuard&& other) noexcept;
  FreezeGuard& operator=(FreezeGuard&& other) noexcept;
  FreezeGuard(const FreezeGuard&) = delete;
  FreezeGuard& operator=(const FreezeGuard&) = delete;
  ~FreezeGuard();
  void thaw();  // idempotent

 private:
  friend class Device;
  explicit FreezeGuard(std::shared_ptr<internal::OpenNamespace> ns) : ns_(std::move(ns)) {}
  std::shared_ptr<internal::OpenNamespace> ns_;
};

class RAWDAX_EXPORT Device {
 public:
  // Made by Region::open_device(); not for direct use.
  Device(std::shared_ptr<internal::OpenNamespace> ns, DeviceOptions options);
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  ~Device();

  const std::string& name() const;
  NamespaceInfo info() const;  // with the current size
  uint64_t size() const;
  const Capabilities& capabilities() const;

  Status read(uint64_t offset, std::span<std::byte> out) const;
  // Fails as read() would, without reading: EINVAL outside the namespace,
  // ENXIO after remove(), EIO when the range overlaps the bad-block list or
  // lies past the end of a backing file cut short under the device. For
  // callers that move the bytes another way (the NBD server's sendfile).
  Status check_readable(uint64_t offset, uint64_t length) const;
  Status write(uint64_t offset, std::span<const std::byte> data, WriteOptions options = {});
  // Reads of the range return zeros afterwards. Punches a hole where the
  // media can (page-aligned interior), unless options.no_hole.
  Status write_zeroes(uint64_t offset, uint64_t length, ZeroOptions options = {});
  // Releases the range's space where the media can; reads then return zeros.
  Status discard(uint64_t offset, uint64_t length);
  // Makes every write that returned before it durable by the media's method.
  Status flush();

  // Describes [offset, offset+length) as alternating data and hole runs, in
  // order, from SEEK_DATA/SEEK_HOLE on the backing file. Stops after
  // max_extents runs, so the runs may then cover less than the range. Media
  // that cannot report holes (devdax, filesystems without SEEK_HOLE) show one
  // data run; a data run may still read as zeros. A snapshot in time: a
  // concurrent write or discard may change the answer as it is returned.
  // EINVAL outside the namespace; ENXIO after remove().
  // Cost: each run costs a SEEK_DATA and a SEEK_HOLE, and on tmpfs a
  // SEEK_HOLE walks every page of the data run it starts in, up to its end
  // (not just to offset+length): about 8 ms per fully written GiB.
  Result<std::vector<Extent>> extents(uint64_t offset, uint64_t length,
                                      size_t max_extents = SIZE_MAX) const;
  // Whether [offset, offset+length) is one hole (reads as zeros, no space
  // allocated): a single SEEK_DATA, cheap on every media. False on media
  // without holes. Errors as extents().
  Result<bool> is_hole(uint64_t offset, uint64_t length) const;

  // Maps [offset, offset+length). The offset must be a multiple of
  // capabilities().alignment (the page size; the huge page size on hugetlbfs
  // and devdax); the length must be > 0 and inside the namespace.
  Result<Mapping> map(uint64_t offset, uint64_t length, Access access);

  // Changes the namespace's size (rounded up to the alignment) and records it
  // crash-consistently. Growing is always allowed, under load. Shrinking fails
  // with EBUSY while a Mapping covers the cut, unless options.force, which
  // revokes those mappings first (their accesses then raise SIGBUS). Block
  // writes wait while a resize runs; I/O past the new end fails. EBUSY while
  // the namespace is frozen (a freeze waits for a resize already running).
  // ENOTSUP on devdax; ENXIO after remove().
  Status resize(uint64_t new_size, ResizeOptions options = {});

  // Tears the namespace down in this process, as the kernel's device removal
  // does. When it returns: new block I/O and map() fail with ENXIO; every
  // Mapping is revoked (loads and stores raise SIGBUS, while the address
  // range stays reserved until the Mapping is destroyed); in-flight requests
  // have drained; the backing media is released. Idempotent. Every Device
  // handle of the namespace sees the removal.
  Status remove();

  // Freezes the device. When it returns: no block write is in flight and new
  // ones wait; no store through any mapping lands (the writer waits: parked
  // in the uffd engine, which also holds kernel-mode writes such as read(2)
  // into a mapping; parked in a SIGSEGV handler in the mprotect engine, where
  // kernel-mode writes fail with EFAULT instead); loads and block reads go
  // on; and everything written before is persisted by the media's method.
  // New mappings made while frozen start write-protected. Freezes nest and
  // may come from several threads. ETIMEDOUT (device left unfrozen) when
  // block writes take longer than options.timeout to drain; ENXIO after
  // remove(). remove() while frozen wakes every writer: stores raise SIGBUS,
  // block writes fail with ENXIO.
  Result<FreezeGuard> freeze(FreezeOptions options = {});

  // Persists what was written since the last sync: exactly the dirty pages
  // with tracking, otherwise the whole namespace. With tracking it then
  // re-arms: write-protect, clear, flush, per dirty page (the kernel's order
  // for writeback), so a store racing the sync is never lost to tracking.
  Status sync();

  // Writes a point-in-time image of the namespace to `path` (see
  // docs/snapshot.md): the contents at the instant the device froze. Writers
  // wait while the pages are copied (max_writer_stall_ns says how long).
  // With options.base, only pages written since that snapshot are stored; it
  // must be the last snapshot taken of this device, opened with track_dirty.
  // The file appears complete or not at all. ENXIO after remove().
  Result<SnapshotInfo> snapshot(const std::string& path, SnapshotOptions options = {});

  // The engine in use: kUffd or kMprotect.
  ProtectionEngine engine() const;
  // The uffd engine's fault mode in effect (kHandlerThread or
  // kFaultingThread); kAuto for the mprotect engine.
  UffdFaults uffd_faults() const;

  DeviceStats stats() const;

 private:
  std::shared_ptr<internal::OpenNamespace> ns_;
  bool read_only_;
};

}  // namespace rawdax

#endif  // RAWDAX_DEVICE_H_

// DeviceCore: the block face and mapping registry of an open namespace in
// this process. Its owner, internal::OpenNamespace (namespace/), also owns
// the protection engine and the snapshot state; every Device handle and
// every Mapping of the namespace holds that owner, so the backing fd and the
// views live until the last is gone.
//
// Lifecycle gate. A LiveRef guards everything that touches the namespace's
// bytes or mappings: block reads take a reader ref, block writes a writer ref,
// map() and resize() a reader ref. remove() kills the ref (new work fails with
// ENXIO), revokes every Mapping, waits for in-flight work to drain, and only
// then releases the media. resize() freezes writers for its duration.
//
// Views. The block face works on a "view": one shared mapping of the backing
// object whose capacity may exceed the current size (mapping past EOF is
// allowed; only touching it faults, and bounds checks prevent that), except
// on hugetlbfs, where a writable mapping past EOF would extend the file, and
// on a carved region, where the bytes past the extent are a neighbour's: its
// views are made at the extent's offset (info().offset) in the device and
// cover exactly the extent, and the Catalog holds what they cover until the
// media is released (so a shrink's cut goes to nobody while a late reader
// may still touch it). Growing
// past the capacity publishes a new, larger view; old views stay mapped until
// the media is released, so a request that loaded the old pointer still
// works (all views are shared mappings of the same pages: coherent). The
// backing file only shrinks when the media is released (remove() or the last
// reference going away); before that a shrink punches the cut instead, so no
// in-flight request can hit SIGBUS.
//
// Ordering of size and view: resize stores a new view (release) before the new
// size (release); requests load the size (acquire) and then the view
// (acquire), so a request that sees a size also sees a view that covers it.
//
// Media errors. Every access the block face and the snapshot copier make to
// the namespace's bytes goes through SafeCopy (common/safe_copy.h): a SIGBUS
// from poison or from a backing file cut short under us fails that one
// request with EIO and puts the page on the namespace's bad-block list
// (bad_, mirrored into the Catalog, which persists it where it can). Reads
// overlapping a listed range fail with EIO without touching the media again;
// a write covering whole listed pages first drops them where the media can
// (a punched hole frees a poisoned page-cache page or fsdax block), then
// takes them off the list once the write landed. A stale any_bad_ (false
// while another thread just listed a page) only costs a guarded access.
//
// Lazy restore. While a PageFill (device/page_fill.h) is installed and not
// complete, every access to the namespace's bytes first fills the pages it
// touches: map() (unless the engine resolves faults on missing pages, as
// the userfaultfd engine does on shmem and memfd, engine/uffd_protector.h)
// fills the mapped range before the mmap ("read-then-map"); reads, check_readable (so a sendfile sends filled pages only),
// read_for_copy, writes (a partial write never lands on an unfilled page),
// write_zeroes and discard (which then write zeros instead of punching, so
// a hole keeps meaning "not filled yet" for a resumed fill). Resize is
// refused (EBUSY), and extents() reports data only, until the fill is
// settled: complete and recorded so (a crash before that resumes it, and
// would refill a page punched after the last page was filled).
//
// Thread safety: every method is thread-safe. lifecycle_mu_ serializes remove
// and resize; maps_mu_ guards the mapping registry and is held across mmap,
// munmap and revocation so that no address range changes owner unobserved.
// Counters are relaxed atomics: they order nothing.
#ifndef RAWDAX_DEVICE_DEVICE_CORE_H_
#define RAWDAX_DEVICE_DEVICE_CORE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/mapped_range.h"
#include "common/safe_copy.h"
#include "common/unique_fd.h"
#include "device/dirty_bitmap.h"
#include "device/mapping_observer.h"
#include "device/page_copier.h"
#include "device/page_fill.h"
#include "rawdax/capabilities.h"
#include "rawdax/device_types.h"
#include "rawdax/mapping.h"
#include "rawdax/namespace.h"
#include "rawdax/result.h"
#include "ref/live_ref.h"
#include "region/catalog.h"

namespace rawdax::internal {

// One live user mapping, owned by the registry; its Mapping points at it.
struct MappingRecord {
  std::byte* addr = nullptr;
  size_t mapped_len = 0;  // whole pages
  uint64_t offset = 0;
  uint64_t length = 0;
  Access access = Access::ReadOnly;
  bool revoked = false;  // now a SIGBUS-raising placeholder over the same range
};

class DeviceCore {
 public:
  // options.track_dirty makes the dirty bitmaps; the rest is for the layers above.
  static Result<std::unique_ptr<DeviceCore>> open(std::shared_ptr<Catalog> catalog,
                                                  std::string_view name,
                                                  const DeviceOptions& options);
  ~DeviceCore();
  DeviceCore(const DeviceCore&) = delete;
  DeviceCore& operator=(const DeviceCore&) = delete;

  NamespaceInfo info() const;
  const std::string& name() const { return name_; }
  const Capabilities& capabilities() const { return catalog_->capabilities(); }
  uint64_t size() const { return size_.load(std::memory_order_acquire); }
  bool removed() const { return ref_.killed(); }

  Status read(uint64_t offset, std::span<std::byte> out);
  // Fails as read() would, without copying: EINVAL outside the namespace,
  // ENXIO after remove(), EIO when the range overlaps the bad-block list or
  // lies past the end of a backing file cut short (then listed). For paths
  // that send the bytes another way (sendfile).
  Status check_readable(uint64_t offset, uint64_t length);
  std::vector<BadRange> badblocks() const;
  // read() for bulk copiers (snapshots): through the backing file where the
  // media allows it, so a copy of the whole namespace does not fault in the
  // view's page tables one by one (on virtualised hosts each fault costs
  // more than copying its page). Falls back to the view (devdax).
  Status read_for_copy(uint64_t offset, std::span<std::byte> out);
  Status write(uint64_t offset, std::span<const std::byte> data, WriteOptions options,
               bool read_only);
  Status write_zeroes(uint64_t offset, uint64_t length, ZeroOptions options, bool is_discard,
                      bool read_only);
  Status flush();
  // Data and hole runs of the backing file; see Device::extents().
  Result<std::vector<Extent>> extents(uint64_t offset, uint64_t length, size_t max_extents);
  Result<bool> is_hole(uint64_t offset, uint64_t length);
  // Maps [offset, offset+length) and registers it. The caller owns the
  // record (a Mapping wraps it) until it hands it to unmap().
  Result<MappingRecord*> map(uint64_t offset, uint64_t length, Access access, bool read_only);
  void unmap(MappingRecord* record);
  bool is_revoked(const MappingRecord* record) const;
  Status resize(uint64_t new_size, ResizeOptions options);
  Status remove();
  DeviceStats stats() const;

  // --- For the protection engine and the live snapshot (the layers above) ---

  // Installs (or, with nullptr, removes) the observer of every mapping event;
  // before any map(). Not owned: the caller keeps it alive while a mapping
  // exists (internal::OpenNamespace owns both).
  void set_observer(MappingObserver* observer);
  // The dirty bitmap fed by block writes; null unless opened with track_dirty.
  // sync() consumes it.
  DirtyBitmap* dirty() const { return dirty_.get(); }
  // The same pages, consumed by snapshots instead (pages since the last one).
  DirtyBitmap* snapshot_dirty() const { return snapshot_dirty_.get(); }
  // Marks pages dirty for both consumers (the engine's write faults).
  void mark_pages(uint64_t first_page, uint64_t count);
  // Makes mark_pages() of these pages allocation-free (DirtyBitmap::reserve).
  void reserve_marks(uint64_t first_page, uint64_t count);

  // Installs a lazy restore's fill; before the core is shared with anyone
  // (OpenNamespace::open). Never replaced.
  void set_fill(std::shared_ptr<PageFill> fill) { fill_ = std::move(fill); }
  // True while a fill is installed and not settled (PageFill::settle: its
  // completion recorded in the region's metadata).
  bool filling() const { return fill_ != nullptr && !fill_->settled(); }
  // For an observer that resolves a mapping's faults on pages missing from
  // the backing object (MappingObserver::fills_missing_pages): puts the
  // namespace's [offset, offset+length) in place (PageFill::fault_in). A
  // no-op without a fill. Errors name the namespace and the range.
  Status fault_in(uint64_t offset, uint64_t length);
  // Replaces [addr, addr+len), inside a live mapping of this namespace that
  // the caller keeps from being unmapped, by the SIGBUS-raising placeholder
  // a revoked mapping gets: for a page a fault could not put in place.
  void fail_pages(std::byte* addr, size_t len) const;

  // Installs (or, with nullptr, removes) the live snapshot's copier. Removal
  // returns once no block write can still be inside the old one.
  void set_copier(PageCopier* copier);
  PageCopier* copier() const { return copier_.load(std::memory_order_acquire); }

  // Page granularity of dirty tracking and write-protection.
  uint64_t page_size() const { return capabilities().alignment; }
  // Block writers wait (and the ones inside drain) while frozen.
  Status freeze_block_writes(std::chrono::nanoseconds timeout);
  void thaw_block_writes();
  // Persists [offset, offset+length) of the namespace by the media's method.
  Status persist(uint64_t offset, uint64_t length);

 private:
  explicit DeviceCore(std::shared_ptr<Catalog> catalog) : catalog_(std::move(catalog)) {}

  // Fills the pages of [offset, offset+length) a lazy restore has not yet
  // (one acquire load when none is pending); errors name the operation.
  Status fill_range(const char* op, uint64_t offset, uint64_t length);
  bool observer_fills_missing_pages() const;
  // EINVAL/ENOSPC/EROFS with the namespace, operation, offset, length and size.
  Status check_range(const char* op, uint64_t offset, uint64_t length, uint64_t size,
                     bool is_write, bool read_only) const;
  Error removed_error(const char* op) const;
  // A writer hold; while frozen it parks, and the wait counts as a stall.
  std::optional<LiveRef::Hold> hold_for_write();
  void mark_dirty(uint64_t offset, uint64_t length);
  void before_block_write(uint64_t offset, uint64_t length);
  // Maps `capacity` bytes of the backing object as a new block-face view.
  Result<MappedRange> map_view(uint64_t capacity) const;
  // Replaces a mapping's pages with a placeholder that raises SIGBUS.
  void revoke_locked(MappingRecord& record);
  Status zero_range(uint64_t offset, uint64_t length, bool allow_hole);
  // EIO for a request that overlaps the listed range `bad`.
  Error listed_error(const char* op, uint64_t offset, uint64_t length, const BadRange& bad) const;
  // EIO (listed_error) when [offset, offset+length) overlaps the bad-block
  // list, counted as a media error; ok otherwise (one atomic load when the
  // list is empty).
  Status refuse_listed(const char* op, uint64_t offset, uint64_t length);
  // Lists the unit a fault hit (`base` is the view the access went through)
  // and returns the request's EIO naming it.
  Error fault_error(const char* op, uint64_t offset, uint64_t length, const std::byte* base,
                    const MediaFault& fault);
  // Lists [bad_offset, +granule) (rounded out to the granule, clipped to the
  // size) and returns the EIO naming it and `why`.
  Error media_error(const char* op, uint64_t offset, uint64_t length, uint64_t bad_offset,
                    uint64_t granule, const std::string& why);
  // Whole listed pages inside [offset, offset+length): punched before a write
  // (drop_bad_pages), taken off the list after it (clear_bad_pages).
  void drop_bad_pages(uint64_t offset, uint64_t length);
  void clear_bad_pages(uint64_t offset, uint64_t length);
  // persist_range() over the view, guarded; EIO on a fault.
  Status persist_guarded(const char* op, uint64_t offset, uint64_t length);
  // Trims the backing file to the final size, unmaps the views, closes the fd.
  void release_media();

  std::shared_ptr<Catalog> catalog_;
  std::string name_;
  NamespaceInfo info_;  // name, uuid, mode, path; size_ holds the live size
  UniqueFd fd_;
  LiveRef ref_;

  std::atomic<uint64_t> size_{0};
  std::atomic<std::byte*> view_{nullptr};  // current view; capacity in view_capacity_
  uint64_t view_capacity_ = 0;             // guarded by lifecycle_mu_
  std::vector<MappedRange> views_;         // all views, newest last; guarded by lifecycle_mu_

  std::mutex lifecycle_mu_;
  mutable std::mutex maps_mu_;
  std::list<MappingRecord> mappings_;  // guarded by maps_mu_

  std::atomic<uint64_t> reads_{0}, writes_{0}, bytes_read_{0}, bytes_written_{0};
  std::atomic<uint64_t> write_zeroes_{0}, discards_{0}, flushes_{0}, maps_{0};
  std::atomic<uint64_t> revoked_{0};
  std::atomic<uint64_t> media_errors_{0};

  mutable std::mutex bad_mu_;          // taken before the Catalog's mutex
  std::vector<BadRange> bad_;          // guarded by bad_mu_
  std::atomic<bool> any_bad_{false};   // !bad_.empty(); hot-path hint (see above)
  std::atomic<uint64_t> block_stall_total_ns_{0}, block_stall_max_ns_{0};

  std::unique_ptr<DirtyBitmap> dirty_;           // set at open, never replaced
  std::unique_ptr<DirtyBitmap> snapshot_dirty_;  // likewise
  MappingObserver* observer_ = nullptr;          // guarded by maps_mu_; not owned
  std::atomic<PageCopier*> copier_{nullptr};
  std::shared_ptr<PageFill> fill_;  // set before the core is shared, never replaced
};

}  // namespace rawdax::internal

#endif  // RAWDAX_DEVICE_DEVICE_CORE_H_

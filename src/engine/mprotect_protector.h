// MprotectProtector: the protection engine where sync userfaultfd
// write-protect is refused (regular files such as ext4, devdax); it also
// works on shmem when forced.
//
// Freeze: each writable mapping's parking slot is marked frozen, then the
// mapping is mprotect()ed read-only. A store then raises SIGSEGV, and the
// process-wide handler (segv_parking.h) parks the thread on a futex until
// thaw; faults that are not ours go to the previous handler. Thaw restores
// PROT_WRITE first and clears the slot after, so a woken store always lands.
// Kernel-mode writes (read(2) into a frozen mapping) are not stores by the
// thread: they fail with EFAULT. That is a documented limit of this engine.
//
// device-dax: every mprotect covers whole units of the device alignment (the
// engine's pages are those units, and map() maps whole ones there), because
// the kernel refuses to split a device-dax VMA anywhere else. Each mprotect's
// result is checked; a thaw the kernel refuses leaves that mapping's stores
// parked and the next freeze (or the live snapshot's end) reports it.
//
// Live snapshot: at the instant the mappings are frozen as above, and thaw
// leaves them so (slots frozen, read-only). The copier copies 2 MiB chunks in
// order and makes each writable again; a store into a chunk not yet copied
// parks and posts its address, and the copier serves that chunk next. So a
// store waits for at most the chunk in flight plus its own chunk's copy
// (about 2 ms at 2 GB/s), and the mapping splits into at most a few VMAs per
// chunk served out of order. Kernel-mode writes get EFAULT until its chunk is
// copied.
//
// Tracking: async userfaultfd write-protect plus PAGEMAP_SCAN (write_tracker.h)
// reports and re-protects written pages in one ioctl where the kernel allows
// it; otherwise every writable mapped page counts as dirty at each sync
// ("whole-range").
//
// Thread safety: as Protector.
#ifndef RAWDAX_ENGINE_MPROTECT_PROTECTOR_H_
#define RAWDAX_ENGINE_MPROTECT_PROTECTOR_H_

#include <map>
#include <memory>

#include "engine/protector.h"
#include "engine/write_tracker.h"

namespace rawdax::internal {

class MprotectProtector : public Protector {
 public:
  static Result<std::unique_ptr<Protector>> create(DeviceCore& core);
  ~MprotectProtector() override = default;

  Status on_map(MappingRecord& record) override;
  void on_unmap(MappingRecord& record) override;
  void on_revoked(MappingRecord& record) override;

  // Live snapshots: 2 MiB chunks (or the page size, if larger).
  uint64_t live_chunk_pages() const override;
  Status release_copied(uint64_t first_page, uint64_t count) override;
  std::vector<uint64_t> take_demanded_pages() override;
  bool demand_changed(uint32_t* seen) const override;
  Status end_live_copy() override;

  // True when tracking falls back to "every mapped page is dirty".
  bool whole_range_tracking() const { return tracking() && tracker_ == nullptr; }

 protected:
  Status protect_all_locked() override;
  void release_all_locked() override;
  Status collect_dirty_locked() override;
  void add_engine_stats_locked(DeviceStats& stats) const override;

 private:
  explicit MprotectProtector(DeviceCore& core) : Protector(core, ProtectionEngine::kMprotect) {}
  void forget_locked(MappingRecord& record);
  // mprotect() of [addr, addr+len), checked: on devdax both must be
  // multiples of the device alignment, and the kernel's refusal is an error
  // naming the media, namespace, range and alignment.
  Status protect_range(std::byte* addr, uint64_t len, int prot) const;

  struct Watched {
    MappingRecord* record;
    int slot;  // SegvParking slot
  };
  std::map<const std::byte*, Watched> writable_;  // guarded by mu_
  std::unique_ptr<WriteTracker> tracker_;          // null: untracked or whole-range
  // The first failure of a thaw to make a mapping writable again, reported by
  // the next freeze or end_live_copy(); guarded by mu_.
  Status release_error_ = ok();
  // Parking stats of slots already gone, so stats() keeps counting them.
  uint64_t gone_parked_ = 0, gone_stall_total_ns_ = 0, gone_stall_max_ns_ = 0;
};

}  // namespace rawdax::internal

#endif  // RAWDAX_ENGINE_MPROTECT_PROTECTOR_H_

// Protector: the protection engine of one open namespace. It write-protects
// every writable mapping of the device to freeze it, parks the writers until
// thaw, and feeds the dirty bitmap from write faults for sync().
//
// Two implementations, chosen from the region's capabilities (tests may force
// either where the media allows both):
//  - UffdProtector (uffd_protector.h): sync userfaultfd write-protect, on
//    shmem/tmpfs, memfd and hugetlbfs. Parks user-mode stores, and
//    kernel-mode writes too where the userfaultfd is full-mode; with a plain
//    user's user-mode-only one, kernel-mode writes into protected pages fail
//    with EFAULT (docs/engine.md, "Kernel-mode writes").
//  - MprotectProtector (mprotect_protector.h): mprotect(PROT_READ) plus a
//    SIGSEGV handler that parks the faulting thread, on regular files and
//    devdax. Kernel-mode writes into a frozen mapping fail with EFAULT.
//
// internal::OpenNamespace (namespace/open_namespace.h) owns the Protector
// next to the device core and installs it as the core's MappingObserver; it
// is destroyed only once no mapping of the device is left.
//
// Freeze protocol (outermost freeze; inner ones only count depth):
//   0. with tracking, the engine may protect ahead (protect_before_freeze);
//   1. block writers: the device's live ref is frozen (new ones wait, the
//      ones inside drain), bounded by the timeout;
//   2. mappings: frozen_ is set, then every writable mapping is
//      write-protected; from here a store faults and parks;
//   3. persistence: what was written before is persisted by the media's
//      method (the dirty pages with tracking, else the whole namespace).
// Thaw undoes 2 (releasing parked stores) and then 1.
//
// Thread safety: all public methods are thread-safe. freeze_mu_ serializes
// freezers and thawers (depth_); mu_ guards the engine's mapping list and
// frozen_, and is taken inside the device's registry lock by the observer
// calls, never the other way round.
#ifndef RAWDAX_ENGINE_PROTECTOR_H_
#define RAWDAX_ENGINE_PROTECTOR_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "device/device_core.h"
#include "device/mapping_observer.h"
#include "rawdax/capabilities.h"
#include "rawdax/device_types.h"
#include "rawdax/result.h"

namespace rawdax::internal {

class Protector : public MappingObserver {
 public:
  // ENOTSUP, naming the namespace and media, when `choice` cannot work here.
  // `faults` picks the uffd engine's mode (ignored by the mprotect engine).
  static Result<std::unique_ptr<Protector>> create(DeviceCore& core, EngineChoice choice,
                                                   UffdFaults faults = UffdFaults::kAuto);
  ~Protector() override = default;

  ProtectionEngine kind() const { return kind_; }
  // The uffd engine's fault mode; kAuto for the mprotect engine.
  virtual UffdFaults uffd_faults() const { return UffdFaults::kAuto; }
  // persist=false skips step 3 (a snapshot copies memory, not media; pages
  // stay dirty for the next sync).
  Status freeze(std::chrono::nanoseconds timeout, bool persist = true);
  void thaw();
  Status sync();
  // With tracking, protects ahead what the next freeze would have to, while
  // stores go on (freeze step 0); a caller that times the freeze's stall
  // calls it first, so that the freeze's own step 0 finds little left.
  Status protect_ahead();
  // Moves pages written through mappings into the dirty bitmaps and
  // write-protects them again (what sync does before it flushes).
  Status collect_dirty();
  // --- Live snapshots (src/snapshot drives these) ---
  // While a PageCopier is installed, thaw leaves the mappings protected: a
  // store to a page not yet copied waits for its copy. The uffd engine copies
  // it from the fault handler (one page); the mprotect engine parks the store
  // and posts a demand that the copier serves a chunk at a time.
  //
  // The copier's unit: pages per run, and the granularity release_copied()
  // makes writable again (2 MiB on the mprotect engine, or the media's
  // alignment if larger, so that the mapping splits into few VMAs and only
  // where device-dax allows a split).
  virtual uint64_t live_chunk_pages() const = 0;
  // Pages [first_page, +count) are copied: their mappings may take stores
  // without faulting, unless frozen meanwhile. Wakes stores parked on them.
  // The uffd engine leaves them to the handler: a store's fault finds the
  // page copied and only unprotects it. Fails when the kernel refuses to
  // make them writable; their stores then stay parked until
  // end_live_copy() (the snapshot should fail).
  virtual Status release_copied(uint64_t first_page, uint64_t count) = 0;
  // Pages that parked stores wait for (mprotect engine; none on uffd).
  virtual std::vector<uint64_t> take_demanded_pages() { return {}; }
  // Whether take_demanded_pages() may have something new since `*seen`
  // (updated); cheap enough to call between runs.
  virtual bool demand_changed(uint32_t* /*seen*/) const { return false; }
  // After the copier is removed: what is still protected for the snapshot
  // takes stores again (tracking's protection stays on the uffd engine).
  // Also waits out any fault handler still using the copier.
  virtual Status end_live_copy() = 0;
  void add_stats(DeviceStats& stats) const;

 protected:
  Protector(DeviceCore& core, ProtectionEngine kind) : core_(core), kind_(kind) {}

  // Before freeze step 1, with tracking and without mu_: protects ahead
  // what step 2 would, in steps that let stores go on, so that step 2 is
  // left with what was written meanwhile. Fails as step 2 would.
  virtual Status protect_before_freeze() { return ok(); }
  // Engine-specific steps, all called with mu_ held.
  // Freeze step 2: every writable mapping stops taking stores.
  virtual Status protect_all_locked() = 0;
  // Thaw: parked stores go on (with tracking, their pages count as dirty).
  virtual void release_all_locked() = 0;
  // Sync: moves the pages written through mappings into the dirty bitmap and
  // write-protects them again, so later stores are seen.
  virtual Status collect_dirty_locked() = 0;
  // Stats the engine keeps itself (stall of parked stores, faults).
  virtual void add_engine_stats_locked(DeviceStats& stats) const = 0;

  bool tracking() const { return core_.dirty() != nullptr; }
  // Namespace offset of page-aligned `addr` inside `record`.
  static uint64_t offset_of(const MappingRecord& record, const std::byte* addr) {
    return record.offset + static_cast<uint64_t>(addr - record.addr);
  }
  void record_stall(uint64_t ns);

  DeviceCore& core_;
  const ProtectionEngine kind_;
  mutable std::mutex mu_;
  bool frozen_ = false;  // guarded by mu_
  std::atomic<uint64_t> faults_{0};
  std::atomic<uint64_t> stall_total_ns_{0}, stall_max_ns_{0};

 private:
  // Persists and clears the dirty pages. mu_ held.
  Status flush_dirty_locked();

  std::mutex freeze_mu_;
  int depth_ = 0;  // guarded by freeze_mu_
  std::atomic<uint64_t> freezes_{0}, synced_{0};
};

uint64_t elapsed_ns(std::chrono::steady_clock::time_point since);

}  // namespace rawdax::internal

#endif  // RAWDAX_ENGINE_PROTECTOR_H_

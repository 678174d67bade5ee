// UffdProtector: the protection engine on media where sync userfaultfd
// write-protect works (shmem/tmpfs, memfd, hugetlbfs). It also carries live
// snapshots: while the device has a PageCopier, a write fault copies the page
// before unprotecting it (copy-before-write).
//
// One userfaultfd per device, every writable mapping registered in WP mode,
// and one handler thread. The userfaultfd is full-mode where the process may
// have one, user-mode-only otherwise (a plain user; media/userfaultfd.h):
// then a kernel-mode write into a protected page is never delivered here and
// fails with EFAULT, frozen or not. A write fault on a protected page is, by
// state:
//  - frozen: parked (left unanswered, so the writer, a user-mode store or,
//    on a full-mode userfaultfd, a kernel-mode copy, sleeps in the kernel)
//    until thaw;
//  - tracking, not frozen: the page is marked dirty and unprotected;
//  - neither: unprotected (a page left protected by an earlier freeze).
// Unprotecting a page also wakes the faults waiting on it.
//
// Freeze: with tracking only the pages the handler unprotected since they
// were last protected can be writable, so the freeze write-protects just those (an incremental
// snapshot's writer stall scales with what changed); without tracking, every
// writable mapping whole.
//
// Lazy restore: a mapping made while the device is filling (a lazy
// restore's unfilled pages, device/page_fill.h) is also registered in
// MISSING mode, read-only ones included, so map() returns at once and a
// load or store of a page not yet in the backing object comes here. The
// handler puts the page in place (DeviceCore::fault_in: fills it from the
// snapshot, or allocates a hole the image does not store) and wakes the
// fault; the retried access then finds the page in the page cache, and a
// store to a write-protected one faults again as a write fault. Filling
// never changes the namespace's image, so it is done frozen or not. A page
// that cannot be filled (a snapshot page failing its checksum, ENOSPC) is
// replaced by the SIGBUS placeholder: the access raises SIGBUS, as poison
// would. On a user-mode-only userfaultfd a kernel-mode access to an unfilled
// page (a read(2) into a mapping, say) fails with EFAULT instead.
//
// Faulting-thread mode (UffdFaults::kFaultingThread; the default where the
// userfaultfd is user-mode-only): the userfaultfd is opened with
// UFFD_FEATURE_SIGBUS and there is no handler thread. A fault raises SIGBUS
// in the thread that stored, and UffdSigbus (uffd_sigbus.h) calls on_fault()
// there: the same decisions as the handler's, made by the writer itself. A
// frozen store waits in on_fault() on thaw_epoch_ (a futex word, bumped and
// woken by thaw and by unmap/revoke) and then returns, so the store is
// retried and faults again if its page is still protected. A kernel-mode
// write into a protected page is never delivered: it fails with EFAULT,
// frozen or not. The mode is fixed when the engine is made, and is refused
// (kAuto: not chosen) while a lazy restore fills the namespace, since a
// MISSING fault needs its message: map() then fills its range first.
//
// Ordering: the handler decides under mu_, and freeze sets frozen_ under mu_
// before it write-protects, so a fault is either resolved before the freeze
// protects its page again (the retried store faults anew and parks) or seen
// as frozen. Revocation wakes the range after the placeholder is in place, so
// a woken writer retries into the placeholder and gets SIGBUS.
//
// In faulting-thread mode a waiting store reads thaw_epoch_ under mu_ and
// waits for it to change after letting go; thaw bumps it under mu_ before it
// wakes, so a thaw after the read changes the word and the wait returns.
//
// Thread safety: as Protector. The handler thread is owned by the object and
// joined by its destructor; in faulting-thread mode the destructor waits out
// the SIGBUS handlers still inside on_fault() (UffdSigbus::quiesce).
#ifndef RAWDAX_ENGINE_UFFD_PROTECTOR_H_
#define RAWDAX_ENGINE_UFFD_PROTECTOR_H_

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "device/dirty_bitmap.h"
#include "engine/protector.h"
#include "engine/uffd_sigbus.h"

namespace rawdax::internal {

class UffdProtector : public Protector, private UffdSigbus::Client {
 public:
  // ENOTSUP for kFaultingThread while the namespace is being filled.
  static Result<std::unique_ptr<Protector>> create(DeviceCore& core, UffdFaults faults);
  ~UffdProtector() override;

  UffdFaults uffd_faults() const override {
    return faulting_thread_ ? UffdFaults::kFaultingThread : UffdFaults::kHandlerThread;
  }
  Status on_map(MappingRecord& record) override;
  bool fills_missing_pages() const override { return !faulting_thread_; }
  // 256 KiB: 64 pages of 4 KiB, one huge page (a store waits for its run).
  uint64_t live_chunk_pages() const override {
    return std::max<uint64_t>(1, (uint64_t{256} << 10) / core_.page_size());
  }
  Status release_copied(uint64_t first_page, uint64_t count) override;  // nothing: see .cc
  Status end_live_copy() override;
  void on_unmap(MappingRecord& record) override;
  void on_revoked(MappingRecord& record) override;

 protected:
  Status protect_before_freeze() override;
  Status protect_all_locked() override;
  void release_all_locked() override;
  Status collect_dirty_locked() override;
  // Parked faults: each is a writer asleep in the kernel, its store not
  // landed. Read under mu_, as the handler adds them: release_all_locked()
  // and forget_locked() wake writers and drop their entries in one critical
  // section, so a counted writer has not been let go.
  void add_engine_stats_locked(DeviceStats& stats) const override {
    stats.parked_writers += parked_.size() + waiting_in_thread_;
  }

 private:
  explicit UffdProtector(DeviceCore& core) : Protector(core, ProtectionEngine::kUffd) {}
  void handle_faults();
  // Faulting-thread mode: one fault, on the thread that took it.
  bool on_fault(std::byte* addr) override;
  // Lets every store waiting in on_fault() retry. mu_ held.
  void wake_waiting_locked();
  // Tracking: write-protects the pages in unprotected_ again, which are all
  // the pages of the writable mappings that may be writable (the freeze, and
  // collect_dirty while not frozen). mu_ held.
  Status protect_dirty_locked();
  void resolve_locked(MappingRecord& record, std::byte* page_addr);
  // A MISSING fault: the page put in place (or failed), the fault woken.
  void fill_missing_locked(MappingRecord& record, std::byte* page_addr);
  void forget_locked(MappingRecord& record);
  Status write_protect(std::byte* addr, uint64_t len, bool protect) const;
  void wake(std::byte* addr, uint64_t len) const;
  MappingRecord* find_locked(const std::byte* addr) const;

  struct Parked {
    std::byte* page;
    std::chrono::steady_clock::time_point since;
  };

  UniqueFd uffd_;
  UniqueFd stop_;  // eventfd: tells the handler to exit
  std::thread handler_;
  std::map<const std::byte*, MappingRecord*> writable_;  // by address; guarded by mu_
  // Read-only mappings registered for MISSING faults only; guarded by mu_.
  std::map<const std::byte*, MappingRecord*> read_only_;
  std::vector<Parked> parked_;                           // guarded by mu_
  bool faulting_thread_ = false;                         // fixed by create()
  std::atomic<uint32_t> thaw_epoch_{0};  // bumped under mu_; waited on without it
  uint64_t waiting_in_thread_ = 0;       // stores waiting in on_fault(); guarded by mu_
  // With tracking: the pages resolve_locked() unprotected since
  // protect_dirty_locked() last protected them; written under mu_.
  DirtyBitmap unprotected_;
};

}  // namespace rawdax::internal

#endif  // RAWDAX_ENGINE_UFFD_PROTECTOR_H_

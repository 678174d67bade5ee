// WriteTracker: "which pages of these mappings were written since I last
// asked?" Dirty tracking for MAP_SHARED mappings without taking a fault per
// write into user space: asynchronous userfaultfd write-protect
// (UFFD_FEATURE_WP_ASYNC, Linux 6.7+) lets the kernel resolve the first write
// to a protected page by itself, and PAGEMAP_SCAN on /proc/self/pagemap reads
// and re-arms those "written" bits. The mprotect engine uses it on media where
// sync uffd-wp is refused (ext4 and other regular files); it works on
// tmpfs/memfd too.
//
// Semantics (all per mapping, i.e. per page-table entry of the ranges added):
//  - Reported: every store through a tracked range after add_range() or the
//    previous scan of that page, by user code or by the kernel on this
//    process's behalf (read(2) into the mapping, ...). Writing a page that was
//    never populated counts (UFFD_FEATURE_WP_UNPOPULATED + pte markers).
//  - Not reported: reads; writes through another mapping of the same file
//    (another address, another process); write(2)/pwrite(2) to the file.
//    Those change the page cache, not this mapping's page tables, which is
//    why the project also keeps a block-face dirty bitmap.
//  - Only the process that called create(): /proc/self/pagemap and the
//    userfaultfd both stay bound to that process's address space (after
//    fork() the child's copies of the ranges are not tracked).
//
// Thread safety: every method is thread-safe; the object holds only two file
// descriptors fixed at creation and the kernel serializes the ioctls
// (register/unregister take the mmap lock for writing, a scan takes it for
// reading plus each page table's lock). `fn` runs on the scanning thread
// with no lock of ours held, so it may call back into the tracker.
//
// Why a write racing a scan is never lost: PAGEMAP_SCAN with
// PM_SCAN_WP_MATCHING tests and re-protects each page-table entry under that
// page table's lock, replacing the entry atomically (a hardware dirty-bit
// update cannot slip between test and protect), and flushes the TLB for the
// range before it drops the lock; the write fault that lifts the protection
// takes the same lock. So a write to a tracked page lands either
//  (a) before the scan examines the entry: the page is reported by this scan;
//  (b) after it is re-protected: the write faults, the kernel lifts the
//      protection, and the next scan reports the page; or
//  (c) through a stale TLB entry between re-protect and flush: the page was
//      writable, so this scan reports it, and the flush completes before the
//      ioctl returns, i.e. before fn sees the run, so whoever reads the page
//      in fn or later sees the write.
// Each lifting of a page's protection is reported by exactly one scan, also
// when threads scan overlapping ranges. A page may be reported with unchanged
// contents: a store that faults is retried after the fault, and if a scan
// re-protected the page in between, the retry faults again. Scans run
// back-to-back can so starve a writer of that page (measured here: a tight
// scan loop over 256 pages cut a writer from ~80M to ~300 stores/s), so
// scan periodically, not in a spin.
//
// Huge pages (hugetlbfs) are tracked and reported whole: keep ranges
// huge-page aligned there.
//
// What may fail (Result/Status, never exceptions):
//  - create(): operation_not_supported (message says which feature) when the
//    kernel lacks async uffd-wp or PAGEMAP_SCAN; errno errors opening
//    userfaultfd or /proc/self/pagemap (e.g. EPERM from a seccomp or LSM
//    policy; EACCES on pagemap in a process made non-dumpable, as by a
//    setuid). No privilege is needed: a plain user's user-mode-only
//    userfaultfd tracks kernel-mode writes too (media/userfaultfd.h).
//  - add_range(): invalid_argument for an unaligned or empty range; EINVAL
//    (a hole, or not a mapping userfaultfd accepts) or EBUSY (the range is
//    registered by another userfaultfd, e.g. another WriteTracker) from the
//    kernel.
//  - scan_and_reprotect(): invalid_argument for an unaligned range; EPERM
//    when part of the range is mapped but not registered with an async-WP
//    userfaultfd (never added, or removed); unmapped holes are skipped
//    silently; io_error if the kernel stops short without progress (a huge
//    page only partly inside the range).
#ifndef RAWDAX_ENGINE_WRITE_TRACKER_H_
#define RAWDAX_ENGINE_WRITE_TRACKER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "common/unique_fd.h"
#include "rawdax/result.h"

namespace rawdax::internal {

class WriteTracker {
 public:
  // Opens a userfaultfd with WP_ASYNC (+ WP_UNPOPULATED, + WP_HUGETLBFS_SHMEM)
  // and /proc/self/pagemap; probes that PAGEMAP_SCAN exists. A few syscalls
  // beyond the opens; cheap enough to call per device.
  static Result<std::unique_ptr<WriteTracker>> create();

  // Closing the userfaultfd unregisters every range still registered (the
  // kernel drops the protection with the registration).
  ~WriteTracker() = default;
  WriteTracker(const WriteTracker&) = delete;
  WriteTracker& operator=(const WriteTracker&) = delete;

  // Registers [addr, addr+len) (page-aligned, inside MAP_SHARED mappings) in
  // write-protect mode and write-protects it, so every page written after this
  // call returns is reported by the next scan; writes before it are not.
  // Unpopulated pages count too. Adding a range that is already added
  // re-protects it, forgetting writes not yet reported.
  Status add_range(void* addr, size_t len);

  // Unregisters [addr, addr+len) and drops its protection. Tolerates a range
  // that was already unmapped, or replaced by a mapping nobody registered.
  // Caution: the kernel does not check which userfaultfd owns a registration,
  // so call it before the address range can be reused by another tracker.
  void remove_range(void* addr, size_t len);

  // Reports the pages of [addr, addr+len) written since add_range or the
  // previous scan of them as maximal runs fn(run_start, run_bytes), in
  // ascending order, and re-protects exactly those pages in the same ioctl
  // (PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC on PAGE_IS_WRITTEN), looping
  // on walk_end until the whole range is walked. Each run is passed to fn only
  // after the ioctl that re-protected it returned. Returns the bytes reported.
  // On error, fn has still been called for every page the kernel re-protected
  // before it failed (those pages are not reported again).
  Result<uint64_t> scan_and_reprotect(void* addr, size_t len,
                                      const std::function<void(void*, size_t)>& fn);

 private:
  WriteTracker(UniqueFd uffd, UniqueFd pagemap)
      : uffd_(std::move(uffd)), pagemap_(std::move(pagemap)) {}

  const UniqueFd uffd_;
  const UniqueFd pagemap_;
};

// True when WriteTracker::create() succeeds on this machine. Probes once, on
// first call (thread-safe), and caches the answer.
bool write_tracker_supported();

}  // namespace rawdax::internal

#endif  // RAWDAX_ENGINE_WRITE_TRACKER_H_

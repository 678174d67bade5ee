#include "engine/uffd_protector.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "media/uffd_compat.h"
#include "media/userfaultfd.h"

namespace rawdax::internal {

Result<std::unique_ptr<Protector>> UffdProtector::create(DeviceCore& core, UffdFaults faults) {
  std::unique_ptr<UffdProtector> engine(new UffdProtector(core));
  if (faults == UffdFaults::kFaultingThread && core.filling()) {
    return Error(std::errc::operation_not_supported,
                 "namespace " + core.name() +
                     ": faults in the faulting thread cannot fill a lazy restore's pages; "
                     "open it with the handler thread, or once the restore is complete");
  }
  // kAuto: the faulting thread where kernel-mode writes get EFAULT anyway
  // (a user-mode-only userfaultfd, a plain user's), the handler elsewhere.
  engine->faulting_thread_ =
      faults == UffdFaults::kFaultingThread ||
      (faults == UffdFaults::kAuto && core.capabilities().uffd_mode == UffdMode::kUserModeOnly &&
       !core.filling());
  // A user-mode-only userfaultfd (a plain user's) parks stores alike; only
  // kernel-mode writes into protected pages differ: EFAULT instead of a wait.
  auto uffd = open_userfaultfd(O_CLOEXEC | O_NONBLOCK,
                               UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
                                   (engine->faulting_thread_ ? UFFD_FEATURE_SIGBUS : 0));
  if (!uffd) return uffd.error().with_context("namespace " + core.name() + ": ");
  engine->uffd_ = std::move(uffd->fd);
  if (engine->faulting_thread_) return std::unique_ptr<Protector>(std::move(engine));
  engine->stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!engine->stop_.valid()) return errno_error(errno, "eventfd");
  engine->handler_ = std::thread([e = engine.get()] { e->handle_faults(); });
  return std::unique_ptr<Protector>(std::move(engine));
}

UffdProtector::~UffdProtector() {
  if (faulting_thread_) {
    // Every mapping is gone (and its range with it): wait out the handlers
    // that found one before.
    UffdSigbus::quiesce(this);
  } else {
    uint64_t one = 1;
    (void)::write(stop_.get(), &one, sizeof one);
    if (handler_.joinable()) handler_.join();
  }
  // Closing the userfaultfd wakes any fault still waiting on it.
}

Status UffdProtector::write_protect(std::byte* addr, uint64_t len, bool protect) const {
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<uint64_t>(addr);
  wp.range.len = len;
  wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;  // unprotecting also wakes
  if (::ioctl(uffd_.get(), UFFDIO_WRITEPROTECT, &wp) != 0) {
    return errno_error(errno, "namespace " + core_.name() + ": UFFDIO_WRITEPROTECT");
  }
  return ok();
}

void UffdProtector::wake(std::byte* addr, uint64_t len) const {
  uffdio_range range{reinterpret_cast<uint64_t>(addr), len};
  ::ioctl(uffd_.get(), UFFDIO_WAKE, &range);
}

Status UffdProtector::on_map(MappingRecord& record) {
  const bool writable = record.access == Access::ReadWrite;
  // Registered for MISSING while filling: map() then skipped read-then-map
  // (fills_missing_pages). A fill settling after this check leaves the mode
  // on for nothing: every page is in place by then. Never in faulting-thread
  // mode, which map() fills for (fills_missing_pages() is false).
  const bool missing = core_.filling() && !faulting_thread_;
  if (!writable && !missing) return ok();
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(record.addr);
  reg.range.len = record.mapped_len;
  reg.mode = (writable ? UFFDIO_REGISTER_MODE_WP : 0) | (missing ? UFFDIO_REGISTER_MODE_MISSING : 0);
  if (::ioctl(uffd_.get(), UFFDIO_REGISTER, &reg) != 0) {
    return errno_error(errno, "namespace " + core_.name() + ": UFFDIO_REGISTER");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!writable) {
    read_only_[record.addr] = &record;
    return ok();
  }
  // Born protected while frozen (it must not take stores) or tracking (its
  // first store to each page must be seen).
  if (frozen_ || tracking() || core_.copier() != nullptr) {
    RAWDAX_RETURN_IF_ERROR(write_protect(record.addr, record.mapped_len, true));
  }
  if (faulting_thread_) {
    // on_fault() marks pages from a SIGBUS handler, which must not allocate.
    const uint64_t first = record.offset / core_.page_size();
    const uint64_t count = (record.mapped_len + core_.page_size() - 1) / core_.page_size();
    core_.reserve_marks(first, count);
    if (tracking()) unprotected_.reserve(first, count);
    RAWDAX_RETURN_IF_ERROR(UffdSigbus::add(this, record.addr, record.mapped_len));
  }
  writable_[record.addr] = &record;
  return ok();
}

void UffdProtector::forget_locked(MappingRecord& record) {
  if (writable_.erase(record.addr) == 0 && read_only_.erase(record.addr) == 0) return;
  std::byte* end = record.addr + record.mapped_len;
  std::erase_if(parked_, [&](const Parked& p) { return p.page >= record.addr && p.page < end; });
  wake(record.addr, record.mapped_len);
  if (faulting_thread_) {
    // Under mu_ with the record's removal: a handler that finds the range
    // then finds the record, or retries and finds neither.
    UffdSigbus::remove(record.addr);
    wake_waiting_locked();
  }
}

void UffdProtector::wake_waiting_locked() {
  if (waiting_in_thread_ == 0) return;
  thaw_epoch_.fetch_add(1, std::memory_order_relaxed);
  thaw_epoch_.notify_all();
}

void UffdProtector::on_unmap(MappingRecord& record) {
  std::lock_guard<std::mutex> lock(mu_);
  forget_locked(record);
}

void UffdProtector::on_revoked(MappingRecord& record) {
  // The placeholder is in place: woken writers retry into it and get SIGBUS.
  std::lock_guard<std::mutex> lock(mu_);
  forget_locked(record);
}

namespace {

MappingRecord* find_in(const std::map<const std::byte*, MappingRecord*>& records,
                       const std::byte* addr) {
  auto it = records.upper_bound(addr);
  if (it == records.begin()) return nullptr;
  --it;
  MappingRecord* record = it->second;
  return addr < record->addr + record->mapped_len ? record : nullptr;
}

}  // namespace

MappingRecord* UffdProtector::find_locked(const std::byte* addr) const {
  return find_in(writable_, addr);
}

Status UffdProtector::protect_all_locked() {
  // With tracking, every page outside unprotected_ is write-protected already
  // (see protect_dirty_locked), so the freeze protects only the dirty ones:
  // its writer stall scales with what changed since the last sync or
  // snapshot, not with the size mapped.
  if (tracking()) return protect_dirty_locked();
  for (auto& [addr, record] : writable_) {
    RAWDAX_RETURN_IF_ERROR(write_protect(record->addr, record->mapped_len, true));
  }
  return ok();
}

Status UffdProtector::protect_before_freeze() {
  // The freeze protects the pages in unprotected_ while every store waits
  // (protect_dirty_locked). Protecting them first, a slice of runs at a time
  // with mu_ let go in between (faults are resolved meanwhile), leaves the
  // freeze only the pages written during this pass: its stall follows the
  // write rate, not what was written since the last snapshot or sync.
  // Ordering: a page's bit is cleared only after the page is protected,
  // both under mu_, so whenever mu_ is free every writable page is still in
  // unprotected_, and a freeze, sync or snapshot meanwhile keeps
  // protect_dirty_locked()'s invariant. A page written after this listed
  // its run is in unprotected_ anyway; the freeze gets it.
  constexpr uint64_t kPagesPerIoctl = 64;  // as in protect_dirty_locked()
  // One slice under mu_: at most 128 calls or 2048 pages (4 KiB ones),
  // about 0.2 ms here either way; longer runs are cut.
  constexpr size_t kCallsPerSlice = 128;
  constexpr uint64_t kPagesPerSlice = 2048;
  const uint64_t page = core_.page_size();
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t mapped_pages = 0;
    for (auto& [addr, record] : writable_) mapped_pages += record->mapped_len / page;
    std::vector<std::pair<uint64_t, uint64_t>> listed;
    unprotected_.for_each_run([&](uint64_t first, uint64_t count) { listed.emplace_back(first, count); });
    // So many runs that whole mappings are cheaper to cover, as the freeze
    // would: the mappings' pages, a slice at a time.
    if (listed.size() * kPagesPerIoctl > mapped_pages) {
      listed.clear();
      for (auto& [addr, record] : writable_) {
        listed.emplace_back(record->offset / page, record->mapped_len / page);
      }
    }
    for (auto [first, count] : listed) {
      for (uint64_t at = first; at < first + count; at += kPagesPerSlice) {
        runs.emplace_back(at, std::min(kPagesPerSlice, first + count - at));
      }
    }
  }
  for (size_t i = 0; i < runs.size();) {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t pages = 0;
    for (size_t calls = 0; i < runs.size() && calls < kCallsPerSlice && pages < kPagesPerSlice;
         ++i, ++calls) {
      const auto [first, count] = runs[i];
      pages += count;
      for (auto& [addr, record] : writable_) {
        const uint64_t lo_page = record->offset / page;
        const uint64_t hi_page = (record->offset + record->mapped_len) / page;
        const uint64_t lo = std::max(first, lo_page), hi = std::min(first + count, hi_page);
        if (lo >= hi) continue;
        RAWDAX_RETURN_IF_ERROR(
            write_protect(record->addr + (lo * page - record->offset), (hi - lo) * page, true));
      }
      unprotected_.clear_range(first, count);
    }
  }
  return ok();
}

void UffdProtector::release_all_locked() {
  for (const Parked& p : parked_) record_stall(elapsed_ns(p.since));
  if (tracking() || core_.copier() != nullptr) {
    // Unparked stores land now, one page at a time, as in resolve_locked().
    // Pages nobody wrote stay protected: their first store is still seen.
    for (const Parked& p : parked_) {
      if (MappingRecord* record = find_locked(p.page)) resolve_locked(*record, p.page);
    }
  } else {
    for (auto& [addr, record] : writable_) {
      (void)write_protect(record->addr, record->mapped_len, false);
    }
  }
  parked_.clear();
  // Stores waiting in on_fault() retry: into a page unprotected above, or
  // they fault again and are resolved like any first store.
  wake_waiting_locked();
}

Status UffdProtector::collect_dirty_locked() {
  // Frozen: every mapping is write-protected already (protect_all_locked).
  if (frozen_) return ok();
  return protect_dirty_locked();
}

Status UffdProtector::protect_dirty_locked() {
  // Why the pages outside unprotected_ need nothing: with tracking, a
  // mapping is born protected (on_map), and the only page this engine
  // unprotects is one resolve_locked() records in unprotected_ first, under
  // mu_, as this runs. end_live_copy() and release_all_locked() unprotect
  // whole mappings only without tracking. (The sync bitmap dirty() would not
  // do: a page stays in it, protected again, until the next sync persists
  // it, so after a snapshot it still holds every page written before.)
  //
  // One ioctl per run costs about as much as protecting 64 pages in bulk
  // (it flushes the TLB each time), so many scattered runs are cheaper to
  // cover with one ioctl over the whole mapping: the other pages in it are
  // protected already, so that changes nothing for them.
  std::vector<std::pair<uint64_t, uint64_t>> all;
  unprotected_.take([&](uint64_t first, uint64_t count) { all.emplace_back(first, count); });
  const uint64_t page = core_.page_size();
  constexpr uint64_t kPagesPerIoctl = 64;
  Status result;
  for (auto& [addr, record] : writable_) {
    const uint64_t lo_page = record->offset / page;
    const uint64_t hi_page = (record->offset + record->mapped_len) / page;
    std::vector<std::pair<uint64_t, uint64_t>> runs;  // pages, clipped to this mapping
    for (auto [first, count] : all) {
      uint64_t lo = std::max(first, lo_page), hi = std::min(first + count, hi_page);
      if (lo < hi) runs.emplace_back(lo, hi - lo);
    }
    // Pages past the bitmap's capacity are never recorded: protect them all.
    if (hi_page > DirtyBitmap::kMaxPages || runs.size() * kPagesPerIoctl > hi_page - lo_page) {
      result = write_protect(record->addr, record->mapped_len, true);
    } else {
      for (auto [first, count] : runs) {
        result = write_protect(record->addr + (first * page - record->offset), count * page, true);
        if (!result) break;
      }
    }
    if (!result) break;
  }
  // Failed: the pages may still be writable, so the next attempt covers them.
  if (!result) {
    for (auto [first, count] : all) unprotected_.set_range(first, count);
  }
  return result;
}

// Lets the first store to a protected page land: a live snapshot copies the
// page first, tracking marks it dirty, then the page is unprotected (which
// wakes the writer).
void UffdProtector::resolve_locked(MappingRecord& record, std::byte* page_addr) {
  const uint64_t page = core_.page_size();
  const uint64_t index = offset_of(record, page_addr) / page;
  // The faulting thread copies from its own mapping (no live-ref hold in a
  // SIGBUS handler); the handler thread reads through the device, so that
  // it never loads what other threads stored there with no ordering the
  // program (and TSan) can see: the write-protect orders them in the kernel.
  if (PageCopier* copier = core_.copier()) {
    if (faulting_thread_) {
      copier->before_store(index, page_addr);
    } else {
      copier->before_write(index, 1);
    }
  }
  if (tracking()) {
    core_.mark_pages(index, 1);
    unprotected_.set(index);  // before the unprotect: see protect_dirty_locked()
  }
  (void)write_protect(page_addr, page, false);
}

Status UffdProtector::end_live_copy() {
  // A slice at a time, letting go of mu_ in between: faults that arrive
  // meanwhile are resolved by the handler instead of waiting for the whole
  // range (70 ms for 1 GiB of 4 KiB pages in one call here).
  constexpr uint64_t kSlice = 16 << 20;
  std::byte* at = nullptr;  // the next byte to unprotect
  for (;;) {
    std::lock_guard<std::mutex> lock(mu_);
    if (tracking() || frozen_) return ok();
    MappingRecord* record = find_locked(at);
    if (record == nullptr) {  // at is past a mapping, or it went away
      auto next = writable_.upper_bound(at);
      if (next == writable_.end()) return ok();
      record = next->second;
      at = record->addr;
    }
    uint64_t len = std::min<uint64_t>(kSlice, static_cast<uint64_t>(
                                                  record->addr + record->mapped_len - at));
    RAWDAX_RETURN_IF_ERROR(write_protect(at, len, false));
    at += len;
  }
}

Status UffdProtector::release_copied(uint64_t, uint64_t) {
  // Copied pages stay protected until their first store, which the handler
  // resolves without a copy, or until end_live_copy(). Unprotecting each run
  // from the copier's thread measured worse: its UFFDIO_WRITEPROTECT calls
  // contend in the kernel with the handler's, and a fault then waited up to
  // 0.9 ms (p99) for its one-page ioctl instead of 0.07 ms; the snapshot
  // also took twice as long (docs/snapshot.md, "Stall").
  return ok();
}

void UffdProtector::fill_missing_locked(MappingRecord& record, std::byte* page_addr) {
  const uint64_t page = core_.page_size();
  const uint64_t offset = record.offset + static_cast<uint64_t>(page_addr - record.addr);
  // The record stays mapped while mu_ is held (on_unmap takes mu_ before the
  // munmap), so the placeholder cannot land on someone else's range.
  if (Status st = core_.fault_in(offset, page); !st) core_.fail_pages(page_addr, page);
  wake(page_addr, page);
}

bool UffdProtector::on_fault(std::byte* addr) {
  const uint64_t page = core_.page_size();
  auto* page_addr = reinterpret_cast<std::byte*>(reinterpret_cast<uintptr_t>(addr) & ~(page - 1));
  std::unique_lock<std::mutex> lock(mu_);
  MappingRecord* record = find_locked(page_addr);
  // Gone meanwhile: the retried access finds no range either and is chained
  // (a revoked mapping's placeholder: the application's SIGBUS).
  if (record == nullptr) return true;
  faults_.fetch_add(1, std::memory_order_relaxed);
  if (frozen_) {
    const auto since = std::chrono::steady_clock::now();
    const uint32_t seen = thaw_epoch_.load(std::memory_order_relaxed);
    ++waiting_in_thread_;
    lock.unlock();
    thaw_epoch_.wait(seen, std::memory_order_relaxed);
    lock.lock();
    --waiting_in_thread_;
    record_stall(elapsed_ns(since));
    return true;
  }
  resolve_locked(*record, page_addr);
  return true;
}

void UffdProtector::handle_faults() {
  const uint64_t page = core_.page_size();
  pollfd fds[2] = {{uffd_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) return;
    uffd_msg msgs[32];
    ssize_t n = ::read(uffd_.get(), msgs, sizeof msgs);
    if (n <= 0) continue;  // EAGAIN: another wake-up raced us
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(uffd_msg); ++i) {
      const uffd_msg& msg = msgs[i];
      if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
      auto* addr = reinterpret_cast<std::byte*>(msg.arg.pagefault.address & ~(page - 1));
      if ((msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) == 0) {
        // MISSING: a page a lazy restore has not put in place yet.
        MappingRecord* record = find_locked(addr);
        if (record == nullptr) record = find_in(read_only_, addr);
        if (record == nullptr) {
          wake(addr, page);  // unmapped or revoked meanwhile: let it retry
        } else {
          fill_missing_locked(*record, addr);
        }
        continue;
      }
      MappingRecord* record = find_locked(addr);
      if (record == nullptr) {
        wake(addr, page);  // unmapped or revoked meanwhile: let it retry
        continue;
      }
      faults_.fetch_add(1, std::memory_order_relaxed);
      if (frozen_) {
        parked_.push_back({addr, std::chrono::steady_clock::now()});
        continue;
      }
      resolve_locked(*record, addr);
    }
  }
}

}  // namespace rawdax::internal

#include "engine/write_tracker.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>

#include "media/uffd_compat.h"

// Linux 5.11+; in Debian 12's headers, but cheap to keep building without.

namespace rawdax::internal {
namespace {

// Debian 12 ships Linux 6.1 uapi headers; everything below arrived later, so
// we spell it out with the kernel's values. Own names (not the kernel's
// macros) so a newer <linux/fs.h> included elsewhere cannot clash.
// From include/uapi/linux/userfaultfd.h (WP_HUGETLBFS_SHMEM 5.19,
// WP_UNPOPULATED 6.4, WP_ASYNC 6.7):
constexpr uint64_t kUffdFeatureWpHugetlbfsShmem = 1ull << 12;
constexpr uint64_t kUffdFeatureWpUnpopulated = 1ull << 13;
constexpr uint64_t kUffdFeatureWpAsync = 1ull << 15;
constexpr uint64_t kUffdFeatures =
    kUffdFeatureWpAsync | kUffdFeatureWpUnpopulated | kUffdFeatureWpHugetlbfsShmem;

// From include/uapi/linux/fs.h (PAGEMAP_SCAN, 6.7+): struct pm_scan_arg.
struct PmScanArg {
  uint64_t size;                 // sizeof(PmScanArg); the kernel checks it
  uint64_t flags;                // kPmScan*
  uint64_t start;                // page-aligned
  uint64_t end;                  // exclusive
  uint64_t walk_end;             // out: where the walk stopped (== end when done)
  uint64_t vec;                  // PageRegion array for the output
  uint64_t vec_len;              // entries in vec
  uint64_t max_pages;            // 0: no limit
  uint64_t category_inverted;    // categories that match when 0
  uint64_t category_mask;        // all of these must match
  uint64_t category_anyof_mask;  // one of these must match
  uint64_t return_mask;          // categories reported in PageRegion
};
// struct page_region.
struct PageRegion {
  uint64_t start;
  uint64_t end;  // exclusive
  uint64_t categories;
};
static_assert(sizeof(PmScanArg) == 96 && offsetof(PmScanArg, walk_end) == 32 &&
              offsetof(PmScanArg, return_mask) == 88);
static_assert(sizeof(PageRegion) == 24 && offsetof(PageRegion, categories) == 16);

// PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg).
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
static_assert(kPagemapScan == 0xc0606610ul);

// pm_scan_arg.flags.
constexpr uint64_t kPmScanWpMatching = 1ull << 0;    // write-protect matched pages
constexpr uint64_t kPmScanCheckWpAsync = 1ull << 1;  // EPERM on a non-async-WP vma
// Page categories (pm_scan_arg masks, page_region.categories); SOFT_DIRTY
// came after the rest. Only WRITTEN is used; the others document the ABI.
[[maybe_unused]] constexpr uint64_t kPageIsWpAllowed = 1ull << 0;
constexpr uint64_t kPageIsWritten = 1ull << 1;
[[maybe_unused]] constexpr uint64_t kPageIsFile = 1ull << 2;
[[maybe_unused]] constexpr uint64_t kPageIsPresent = 1ull << 3;
[[maybe_unused]] constexpr uint64_t kPageIsSwapped = 1ull << 4;
[[maybe_unused]] constexpr uint64_t kPageIsPfnZero = 1ull << 5;
[[maybe_unused]] constexpr uint64_t kPageIsHuge = 1ull << 6;
[[maybe_unused]] constexpr uint64_t kPageIsSoftDirty = 1ull << 7;

// Output entries per ioctl. The kernel returns early (walk_end < end) when
// they fill; 512 keeps the buffer at 12 KiB and the number of extra walks
// for a fragmented 64K-page dirty set at 128.
constexpr size_t kVecLen = 512;

size_t page_size() {
  static const size_t size = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

std::string range_text(uint64_t start, uint64_t len) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "[0x%llx, +0x%llx)", static_cast<unsigned long long>(start),
                static_cast<unsigned long long>(len));
  return buf;
}

Status check_range(const char* what, void* addr, size_t len) {
  uint64_t start = reinterpret_cast<uint64_t>(addr);
  if (len == 0 || start % page_size() != 0 || len % page_size() != 0 ||
      start + len < start) {
    return Error(std::errc::invalid_argument,
                 std::string("write tracker: ") + what + " " + range_text(start, len) +
                     " is empty or not page-aligned");
  }
  return ok();
}

// Feature bits the kernel offers, from a throwaway userfaultfd: UFFDIO_API
// may be issued once per userfaultfd, and asking for a feature the kernel
// lacks fails without saying which one.
Result<uint64_t> kernel_uffd_features(int open_flags) {
  UniqueFd probe(static_cast<int>(::syscall(SYS_userfaultfd, open_flags)));
  if (!probe.valid()) {
    int err = errno;
    if (err == ENOSYS || err == EINVAL) {  // no userfaultfd, or older than 5.11
      return Error(std::errc::operation_not_supported,
                   "write tracker: the kernel has no (user-mode) userfaultfd");
    }
    return errno_error(err, "write tracker: userfaultfd");
  }
  uffdio_api api{};
  api.api = UFFD_API;
  if (::ioctl(probe.get(), UFFDIO_API, &api) != 0) {
    return errno_error(errno, "write tracker: UFFDIO_API");
  }
  return static_cast<uint64_t>(api.features);
}

}  // namespace

Result<std::unique_ptr<WriteTracker>> WriteTracker::create() {
  // User-mode-only needs no privilege (vm.unprivileged_userfaultfd=0) and
  // costs nothing here: async write-protect faults are resolved in the kernel
  // and never reach the user-mode check, so kernel-mode writes are tracked.
  const int open_flags = O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY;
  auto offered = kernel_uffd_features(open_flags);
  if (!offered) return offered.error();
  if ((*offered & kUffdFeatures) != kUffdFeatures) {
    std::string missing;
    if (!(*offered & kUffdFeatureWpAsync)) missing += " WP_ASYNC";
    if (!(*offered & kUffdFeatureWpUnpopulated)) missing += " WP_UNPOPULATED";
    if (!(*offered & kUffdFeatureWpHugetlbfsShmem)) missing += " WP_HUGETLBFS_SHMEM";
    return Error(std::errc::operation_not_supported,
                 "write tracker: the kernel's userfaultfd lacks" + missing +
                     " (async write-protect needs Linux 6.7+)");
  }

  UniqueFd uffd(static_cast<int>(::syscall(SYS_userfaultfd, open_flags)));
  if (!uffd.valid()) return errno_error(errno, "write tracker: userfaultfd");
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = kUffdFeatures;
  if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0) {
    return errno_error(errno, "write tracker: UFFDIO_API with async write-protect");
  }

  UniqueFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!pagemap.valid()) return errno_error(errno, "write tracker: open /proc/self/pagemap");
  // An empty scan: 0 where PAGEMAP_SCAN exists, ENOTTY before Linux 6.7.
  PmScanArg arg{};
  arg.size = sizeof arg;
  if (::ioctl(pagemap.get(), kPagemapScan, &arg) != 0) {
    int err = errno;
    if (err == ENOTTY || err == EINVAL) {
      return Error(std::errc::operation_not_supported,
                   "write tracker: the kernel has no PAGEMAP_SCAN ioctl on "
                   "/proc/self/pagemap (needs Linux 6.7+)");
    }
    return errno_error(err, "write tracker: PAGEMAP_SCAN probe");
  }
  return std::unique_ptr<WriteTracker>(new WriteTracker(std::move(uffd), std::move(pagemap)));
}

Status WriteTracker::add_range(void* addr, size_t len) {
  RAWDAX_RETURN_IF_ERROR(check_range("add_range", addr, len));
  uint64_t start = reinterpret_cast<uint64_t>(addr);
  uffdio_register reg{};
  reg.range.start = start;
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(uffd_.get(), UFFDIO_REGISTER, &reg) != 0) {
    return errno_error(errno, "write tracker: register " + range_text(start, len) +
                                  " for async write-protect");
  }
  // Registration alone leaves present pages writable (they would count as
  // written); protecting the whole range is what starts the clock.
  uffdio_writeprotect wp{};
  wp.range.start = start;
  wp.range.len = len;
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  if (::ioctl(uffd_.get(), UFFDIO_WRITEPROTECT, &wp) != 0) {
    int err = errno;
    uffdio_range range{start, len};
    ::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &range);
    return errno_error(err, "write tracker: write-protect " + range_text(start, len));
  }
  return ok();
}

void WriteTracker::remove_range(void* addr, size_t len) {
  if (!check_range("remove_range", addr, len)) return;
  uffdio_range range{reinterpret_cast<uint64_t>(addr), len};
  // Unmapped or never-registered parts are skipped by the kernel; an error
  // here leaves nothing for the caller to do (closing the fd drops the rest).
  ::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &range);
}

Result<uint64_t> WriteTracker::scan_and_reprotect(
    void* addr, size_t len, const std::function<void(void*, size_t)>& fn) {
  RAWDAX_RETURN_IF_ERROR(check_range("scan", addr, len));
  const uint64_t end = reinterpret_cast<uint64_t>(addr) + len;
  auto vec = std::make_unique<PageRegion[]>(kVecLen);

  // The kernel merges adjacent pages within one ioctl; a run cut by a full
  // vector is held back and merged with the next batch's first region.
  uint64_t run_start = 0;
  uint64_t run_end = 0;
  uint64_t reported = 0;
  auto emit = [&](uint64_t start, uint64_t stop) {
    reported += stop - start;
    if (start == run_end && run_end != 0) {
      run_end = stop;
      return;
    }
    if (run_end != 0) fn(reinterpret_cast<void*>(run_start), run_end - run_start);
    run_start = start;
    run_end = stop;
  };
  auto flush = [&] {
    if (run_end != 0) fn(reinterpret_cast<void*>(run_start), run_end - run_start);
    run_end = 0;
  };

  uint64_t cursor = reinterpret_cast<uint64_t>(addr);
  while (cursor < end) {
    // Zeroed so that on failure the regions the kernel already copied out
    // (and re-protected) can still be found: it returns -1 then, not a count.
    std::memset(vec.get(), 0, kVecLen * sizeof(PageRegion));
    PmScanArg arg{};
    arg.size = sizeof arg;
    arg.flags = kPmScanWpMatching | kPmScanCheckWpAsync;
    arg.start = cursor;
    arg.end = end;
    arg.vec = reinterpret_cast<uint64_t>(vec.get());
    arg.vec_len = kVecLen;
    arg.category_mask = kPageIsWritten;
    arg.return_mask = kPageIsWritten;
    long n = ::ioctl(pagemap_.get(), kPagemapScan, &arg);
    int err = errno;
    size_t filled = 0;
    if (n >= 0) {
      filled = static_cast<size_t>(n) < kVecLen ? static_cast<size_t>(n) : kVecLen;
    } else {
      while (filled < kVecLen && vec[filled].end != 0) ++filled;
    }
    for (size_t i = 0; i < filled; ++i) emit(vec[i].start, vec[i].end);
    if (n < 0) {
      flush();
      if (err == EPERM) {
        return Error(std::error_code(err, std::generic_category()),
                     "write tracker: scan " + range_text(cursor, end - cursor) +
                         " covers a mapping that is not registered for async "
                         "write-protect (never added, or removed)");
      }
      return errno_error(err, "write tracker: PAGEMAP_SCAN " + range_text(cursor, end - cursor));
    }
    if (arg.walk_end <= cursor || arg.walk_end > end) {
      flush();
      return Error(std::errc::io_error,
                   "write tracker: PAGEMAP_SCAN made no progress at " +
                       range_text(cursor, end - cursor) +
                       " (a huge page only partly inside the range?)");
    }
    cursor = arg.walk_end;
  }
  flush();
  return reported;
}

bool write_tracker_supported() {
  static const bool supported = WriteTracker::create().has_value();
  return supported;
}

}  // namespace rawdax::internal

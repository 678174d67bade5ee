#include "engine/write_tracker.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>

#include "media/pagemap_scan.h"
#include "media/uffd_compat.h"
#include "media/userfaultfd.h"

namespace rawdax::internal {
namespace {

constexpr uint64_t kUffdFeatures =
    UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;

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

}  // namespace

Result<std::unique_ptr<WriteTracker>> WriteTracker::create() {
  // Either userfaultfd mode will do: async write-protect faults are resolved
  // in the kernel and never reach the user-mode-only check, so kernel-mode
  // writes are tracked even for a plain user.
  auto uffd = open_userfaultfd(O_CLOEXEC | O_NONBLOCK, kUffdFeatures);
  if (!uffd) {
    if (uffd.error().code() == std::errc::operation_not_supported) {
      return uffd.error().with_context("write tracker (async write-protect needs Linux 6.7+): ");
    }
    return uffd.error().with_context("write tracker: ");
  }
  auto pagemap = open_pagemap_scan();
  if (!pagemap) return pagemap.error().with_context("write tracker: ");
  return std::unique_ptr<WriteTracker>(
      new WriteTracker(std::move(uffd->fd), std::move(*pagemap)));
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

// PAGEMAP_SCAN (Linux 6.7): the ioctl on /proc/PID/pagemap that reports page
// categories over a range, and can write-protect the pages it matches in the
// same walk. Debian 12 ships Linux 6.1 uapi headers, so the ABI is spelled
// out here with the kernel's values (include/uapi/linux/fs.h), under our own
// names so that a newer <linux/fs.h> included elsewhere cannot clash.
//
// Thread-safe; the descriptor returned belongs to the caller.
#ifndef RAWDAX_MEDIA_PAGEMAP_SCAN_H_
#define RAWDAX_MEDIA_PAGEMAP_SCAN_H_

#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>

#include "common/unique_fd.h"
#include "rawdax/result.h"

namespace rawdax::internal {

// struct pm_scan_arg.
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
inline constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
static_assert(kPagemapScan == 0xc0606610ul);

// pm_scan_arg.flags.
inline constexpr uint64_t kPmScanWpMatching = 1ull << 0;    // write-protect matched pages
inline constexpr uint64_t kPmScanCheckWpAsync = 1ull << 1;  // EPERM on a non-async-WP vma
// Page categories (pm_scan_arg masks, page_region.categories); SOFT_DIRTY
// came after the rest.
inline constexpr uint64_t kPageIsWpAllowed = 1ull << 0;
inline constexpr uint64_t kPageIsWritten = 1ull << 1;
inline constexpr uint64_t kPageIsFile = 1ull << 2;
inline constexpr uint64_t kPageIsPresent = 1ull << 3;
inline constexpr uint64_t kPageIsSwapped = 1ull << 4;
inline constexpr uint64_t kPageIsPfnZero = 1ull << 5;
inline constexpr uint64_t kPageIsHuge = 1ull << 6;
inline constexpr uint64_t kPageIsSoftDirty = 1ull << 7;

// Opens /proc/self/pagemap and checks, with an empty scan, that the kernel
// has PAGEMAP_SCAN. Errors: operation_not_supported before Linux 6.7;
// errno errors from the open (a process that is not dumpable, e.g. right
// after a setuid, finds its /proc/self files owned by root: EACCES).
Result<UniqueFd> open_pagemap_scan();

}  // namespace rawdax::internal

#endif  // RAWDAX_MEDIA_PAGEMAP_SCAN_H_

#include "media/pagemap_scan.h"

#include <fcntl.h>

#include <cerrno>

namespace rawdax::internal {

Result<UniqueFd> open_pagemap_scan() {
  UniqueFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!pagemap.valid()) return errno_error(errno, "open /proc/self/pagemap");
  // An empty scan: 0 where PAGEMAP_SCAN exists, ENOTTY before Linux 6.7.
  PmScanArg arg{};
  arg.size = sizeof arg;
  if (::ioctl(pagemap.get(), kPagemapScan, &arg) != 0) {
    int err = errno;
    if (err == ENOTTY || err == EINVAL) {
      return Error(std::errc::operation_not_supported,
                   "the kernel has no PAGEMAP_SCAN ioctl on /proc/self/pagemap (needs Linux 6.7+)");
    }
    return errno_error(err, "PAGEMAP_SCAN probe");
  }
  return pagemap;
}

}  // namespace rawdax::internal

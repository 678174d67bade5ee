// RegionLock: the exclusive flock that makes one process the owner of a
// region directory. The holder's pid is written into the lock file so that a
// second opener's error can name it (write_file_contents: on hugetlbfs the
// file is one huge page, the pid followed by NULs). The lock is released when the object is
// destroyed or the process dies (the kernel drops flocks with the last fd).
// Not thread-safe; owned by one Catalog.
#ifndef RAWDAX_REGION_REGION_LOCK_H_
#define RAWDAX_REGION_REGION_LOCK_H_

#include <string>

#include "common/unique_fd.h"
#include "rawdax/result.h"

namespace rawdax::internal {

class RegionLock {
 public:
  // Fails with EBUSY ("region DIR is in use by pid N") when another open file
  // description, in this process or another, holds the lock.
  static Result<RegionLock> acquire(const std::string& dir);

  RegionLock(RegionLock&&) = default;
  RegionLock& operator=(RegionLock&&) = default;

 private:
  explicit RegionLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace rawdax::internal

#endif  // RAWDAX_REGION_REGION_LOCK_H_

// PageCopier: lets a live snapshot copy a page before its first write lands.
// The device calls it from block writes (write, write-zeroes, discard) and
// the protection engine from write faults, for as long as one is installed.
//
// Contract: before_write() returns only once the pages' contents as of the
// snapshot instant are safe; it may block (that is the writer's stall). It
// is called with a writer's live-ref hold (block face) or the engine's lock
// (faults) held, so it must not call back into writes or freezes.
#ifndef RAWDAX_DEVICE_PAGE_COPIER_H_
#define RAWDAX_DEVICE_PAGE_COPIER_H_

#include <cstdint>

namespace rawdax::internal {

class PageCopier {
 public:
  virtual ~PageCopier() = default;
  virtual void before_write(uint64_t first_page, uint64_t count) = 0;
};

}  // namespace rawdax::internal

#endif  // RAWDAX_DEVICE_PAGE_COPIER_H_

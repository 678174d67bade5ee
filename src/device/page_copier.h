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
  // before_write(page, 1) for a store that faulted on `mapped`, the page's
  // address in the storing thread's own (write-protected, readable)
  // mapping: the copy may read the page there. Called from the uffd
  // engine's SIGBUS handler, so it takes no live-ref hold (whose first use
  // on a thread allocates) and allocates nothing.
  virtual void before_store(uint64_t page, const std::byte* /*mapped*/) { before_write(page, 1); }
};

}  // namespace rawdax::internal

#endif  // RAWDAX_DEVICE_PAGE_COPIER_H_

// PageFill: the pages of a namespace that a lazy restore has not put in
// place yet, and the one way they get there. The device core consults it
// before any access to the namespace's bytes (block reads and writes,
// check_readable before a sendfile, read_for_copy, map); the snapshot layer's
// background pass drives it too. The image's bytes come from a PageSource,
// which the layer above implements (the snapshot chain): the device never
// calls up into the snapshot layer.
//
// Each page is in one of three states: pending (not in place), filling (one
// thread claimed it and is writing it) or filled (terminal). A page moves
// pending -> filling by compare-and-swap, so exactly one thread writes it;
// the writer pwrite()s the image's bytes into the backing object through the
// fill's own fd, then stores filled (release) and wakes waiters. A failed
// write puts the page back to pending (and wakes waiters, who retry or fail
// themselves).
//
// Ordering argument: a page's bytes are written only by the thread that won
// its pending -> filling CAS, and before the release store of filled; fill()
// returns only once every page of its range was seen filled with an acquire
// load. The device writes user data (block writes, mappings) only after
// fill() returned for the range, so no fill can land on a page after a user
// write to it: a partial write never meets a page the filler later
// overwrites. pwrite() and the device's shared mappings reach the same page
// cache pages, so a reader that saw filled reads the filled bytes. The count
// of pages left is decremented (acq_rel) after each page's filled store, so
// complete() (acquire load of zero) implies every page's fill is visible.
// Waiting: a waiter re-checks a page's state under mu_, and a filler takes
// mu_ after its state store and before notify_all, so no wakeup is lost.
//
// Thread safety: every method is thread-safe. Ownership: the fill owns its
// fd and shares the source; the device core and the background pass share
// the fill (shared_ptr), so either may outlive the other.
#ifndef RAWDAX_DEVICE_PAGE_FILL_H_
#define RAWDAX_DEVICE_PAGE_FILL_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "rawdax/result.h"

namespace rawdax::internal {

// The bytes of the image being restored. Implemented above the device
// (snapshot/lazy_restore.h). Must be thread-safe: fills of different pages
// call it at once.
class PageSource {
 public:
  virtual ~PageSource() = default;
  // Writes page `page`'s bytes into `out` (page_size bytes, fewer for the
  // namespace's short last page). Errors name the source.
  virtual Status read_page(uint64_t page, std::span<std::byte> out) const = 0;
};

class PageFill {
 public:
  // `pending` holds one byte per page of a `size`-byte namespace: nonzero
  // for a page still to fill (every other page is already in place). Pages
  // are written at `base` + page * `page_size` of `fd`. `name` is the
  // namespace's, for errors.
  PageFill(std::shared_ptr<const PageSource> source, UniqueFd fd, uint64_t base, uint64_t size,
           uint64_t page_size, const std::vector<uint8_t>& pending, std::string name);
  PageFill(const PageFill&) = delete;
  PageFill& operator=(const PageFill&) = delete;

  uint64_t page_size() const { return page_size_; }
  uint64_t size() const { return size_; }
  // No page is pending or being filled. One acquire load.
  bool complete() const { return left_.load(std::memory_order_acquire) == 0; }
  uint64_t pages_total() const { return total_; }
  uint64_t pages_filled() const { return total_ - left_.load(std::memory_order_relaxed); }
  bool is_filled(uint64_t page) const;

  // Returns once every page overlapping [offset, offset+length) is filled,
  // filling the pending ones itself (at most kMaxRun pages per write) and
  // waiting for those another thread is filling. Errors: the source's, the
  // backing object's (ENOSPC, EIO), each naming the namespace and page.
  Status fill(uint64_t offset, uint64_t length);
  // For a mapping's fault on a page that is not in the backing object
  // (userfaultfd MISSING, engine/uffd_protector.h): puts the pages of
  // [offset, offset+length) there. Pending pages are filled as fill() fills
  // them; then the range (pages filled meanwhile, or holes the image does not
  // store) is allocated with
  // fallocate(2) mode 0, which never touches bytes a writer put there, so
  // the retried access finds the page a fault on a namespace not being
  // filled would have found. Errors as fill()'s, and fallocate's (ENOSPC).
  Status fault_in(uint64_t offset, uint64_t length);
  // For the background pass: fills the pending pages among the next
  // `max_pages` from *cursor, and advances it. False once *cursor passed the
  // last page.
  Result<bool> fill_next(uint64_t* cursor, uint64_t max_pages);
  // fdatasync of the backing object (before the fill is recorded complete).
  Status sync() const;
  // Set by the owner once the fill is recorded complete (the restore marker
  // dropped from the region's metadata); release store, acquire load. Until
  // then a crash would resume the fill, which takes every hole over a page
  // the image stores for an unfilled page: so the device punches no hole
  // (nor resizes) before it, even once complete() holds.
  void settle() { settled_.store(true, std::memory_order_release); }
  bool settled() const { return settled_.load(std::memory_order_acquire); }

  static constexpr uint64_t kMaxRun = 256;

 private:
  enum : uint8_t { kFilled = 0, kPending = 1, kFilling = 2 };
  // Claims the pending run starting at `first` (up to `last`, exclusive, and
  // kMaxRun pages) and writes it. `first` was just seen pending; a lost CAS
  // returns ok with *claimed == 0.
  Status claim_and_write(uint64_t first, uint64_t last, uint64_t* claimed);
  void wait_while_filling(uint64_t page);

  const std::shared_ptr<const PageSource> source_;
  const UniqueFd fd_;
  const uint64_t base_, size_, page_size_, pages_;
  const std::string name_;
  uint64_t total_ = 0;
  std::unique_ptr<std::atomic<uint8_t>[]> state_;
  std::atomic<uint64_t> left_{0};
  std::atomic<bool> settled_{false};
  std::mutex mu_;  // only for waiting; see the ordering argument above
  std::condition_variable cv_;
};

}  // namespace rawdax::internal

#endif  // RAWDAX_DEVICE_PAGE_FILL_H_

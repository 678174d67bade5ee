#include "device/page_fill.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "media/files.h"

namespace rawdax::internal {

PageFill::PageFill(std::shared_ptr<const PageSource> source, UniqueFd fd, uint64_t base,
                   uint64_t size, uint64_t page_size, const std::vector<uint8_t>& pending,
                   std::string name)
    : source_(std::move(source)),
      fd_(std::move(fd)),
      base_(base),
      size_(size),
      page_size_(page_size),
      pages_((size + page_size - 1) / page_size),
      name_(std::move(name)),
      state_(new std::atomic<uint8_t>[pages_]) {
  for (uint64_t p = 0; p < pages_; ++p) {
    const bool todo = p < pending.size() && pending[p] != 0;
    state_[p].store(todo ? kPending : kFilled, std::memory_order_relaxed);
    total_ += todo ? 1 : 0;
  }
  // Published to other threads with the fill itself (shared_ptr handoff).
  left_.store(total_, std::memory_order_release);
}

bool PageFill::is_filled(uint64_t page) const {
  return page >= pages_ || state_[page].load(std::memory_order_acquire) == kFilled;
}

Status PageFill::claim_and_write(uint64_t first, uint64_t last, uint64_t* claimed) {
  *claimed = 0;
  uint64_t end = first;
  const uint64_t limit = std::min({last, pages_, first + kMaxRun});
  while (end < limit) {
    uint8_t expected = kPending;
    if (!state_[end].compare_exchange_strong(expected, kFilling, std::memory_order_acquire,
                                             std::memory_order_relaxed)) {
      break;
    }
    ++end;
  }
  if (end == first) return ok();
  const uint64_t offset = first * page_size_;
  const uint64_t bytes = std::min(end * page_size_, size_) - offset;
  std::vector<std::byte> buf(bytes);
  Status st;
  for (uint64_t p = first; p < end && st; ++p) {
    const uint64_t at = (p - first) * page_size_;
    st = source_->read_page(p, std::span<std::byte>(buf.data() + at,
                                                    std::min(page_size_, bytes - at)));
  }
  if (st) {
    st = pwrite_all(fd_.get(), buf.data(), buf.size(), base_ + offset, "namespace " + name_);
  }
  const uint8_t next = st ? kFilled : kPending;
  for (uint64_t p = first; p < end; ++p) state_[p].store(next, std::memory_order_release);
  if (st) left_.fetch_sub(end - first, std::memory_order_acq_rel);
  {
    std::lock_guard<std::mutex> lock(mu_);  // see the waiting argument in the header
  }
  cv_.notify_all();
  if (!st) {
    return st.error().with_context("namespace " + name_ + ": restoring pages " +
                                   std::to_string(first) + "-" + std::to_string(end - 1) + ": ");
  }
  *claimed = end - first;
  return ok();
}

void PageFill::wait_while_filling(uint64_t page) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return state_[page].load(std::memory_order_acquire) != kFilling; });
}

Status PageFill::fill(uint64_t offset, uint64_t length) {
  if (complete() || length == 0) return ok();
  const uint64_t last = std::min(pages_, (offset + length + page_size_ - 1) / page_size_);
  for (uint64_t p = offset / page_size_; p < last;) {
    const uint8_t st = state_[p].load(std::memory_order_acquire);
    if (st == kFilled) {
      ++p;
    } else if (st == kPending) {
      uint64_t claimed = 0;
      RAWDAX_RETURN_IF_ERROR(claim_and_write(p, last, &claimed));
      p += claimed;  // 0: another thread claimed p first; look again
    } else {
      wait_while_filling(p);  // then look again: filled, or pending after a failure
    }
  }
  return ok();
}

Status PageFill::fault_in(uint64_t offset, uint64_t length) {
  if (offset >= size_ || length == 0) return ok();
  length = std::min(length, size_ - offset);
  RAWDAX_RETURN_IF_ERROR(fill(offset, length));
  if (::fallocate(fd_.get(), 0, static_cast<off_t>(base_ + offset), static_cast<off_t>(length)) !=
      0) {
    return errno_error(errno, "namespace " + name_ + ": allocating offset " +
                                  std::to_string(offset) + " length " + std::to_string(length) +
                                  " for a mapping's fault");
  }
  return ok();
}

Result<bool> PageFill::fill_next(uint64_t* cursor, uint64_t max_pages) {
  if (*cursor >= pages_) return false;
  const uint64_t last = std::min(pages_, *cursor + max_pages);
  for (uint64_t p = *cursor; p < last;) {
    if (state_[p].load(std::memory_order_acquire) != kPending) {
      ++p;  // filled, or being filled on demand: that thread finishes it
      continue;
    }
    uint64_t claimed = 0;
    RAWDAX_RETURN_IF_ERROR(claim_and_write(p, last, &claimed));
    p += std::max<uint64_t>(claimed, 1);
  }
  *cursor = last;
  return true;
}

Status PageFill::sync() const {
  if (::fdatasync(fd_.get()) != 0 && errno != EINVAL && errno != EROFS) {
    return errno_error(errno, "namespace " + name_ + ": fdatasync of the restored pages");
  }
  return ok();
}

}  // namespace rawdax::internal

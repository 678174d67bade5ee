// MappedRange: sole owner of one mmap()ed range; unmaps it on destruction.
// Not thread-safe; the bytes it points at may be shared, the object is not.
#ifndef RAWDAX_COMMON_MAPPED_RANGE_H_
#define RAWDAX_COMMON_MAPPED_RANGE_H_

#include <sys/mman.h>

#include <cstddef>
#include <utility>

namespace rawdax::internal {

class MappedRange {
 public:
  MappedRange() = default;
  MappedRange(void* addr, size_t len) : addr_(static_cast<std::byte*>(addr)), len_(len) {}
  MappedRange(MappedRange&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), len_(std::exchange(o.len_, 0)) {}
  MappedRange& operator=(MappedRange&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = std::exchange(o.addr_, nullptr);
      len_ = std::exchange(o.len_, 0);
    }
    return *this;
  }
  MappedRange(const MappedRange&) = delete;
  MappedRange& operator=(const MappedRange&) = delete;
  ~MappedRange() { reset(); }

  std::byte* data() const { return addr_; }
  size_t size() const { return len_; }
  bool valid() const { return addr_ != nullptr; }
  void reset() {
    if (addr_ != nullptr) ::munmap(addr_, len_);
    addr_ = nullptr;
    len_ = 0;
  }

 private:
  std::byte* addr_ = nullptr;
  size_t len_ = 0;
};

}  // namespace rawdax::internal

#endif  // RAWDAX_COMMON_MAPPED_RANGE_H_

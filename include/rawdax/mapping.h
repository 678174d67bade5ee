// Mapping: one mmap()ed window onto a namespace: the mapping face.
//
// Loads and stores through data() reach the namespace's bytes directly; the
// block face (Device::read/write) sees them at once and vice versa, because
// both are views of the same shared pages (no copy, no page cache between).
// The memory is page-backed, so it may be the target of O_DIRECT reads and
// other get_user_pages users.
//
// Ownership: move-only; the destructor unmaps (also after revocation, when
// it releases the reserved range). A Mapping keeps the device's
// internals alive, so it may outlive the Device object it came from.
// Thread safety: data() may be used from any number of threads; persist() is
// thread-safe; moving or destroying a Mapping must not race with its use.
#ifndef RAWDAX_MAPPING_H_
#define RAWDAX_MAPPING_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "rawdax/export.h"
#include "rawdax/result.h"

namespace rawdax {

enum class Access { ReadOnly, ReadWrite };

namespace internal {
class OpenNamespace;
struct MappingRecord;
}  // namespace internal

class RAWDAX_EXPORT Mapping {
 public:
  // Made by Device::map(); not for direct use.
  Mapping(std::shared_ptr<internal::OpenNamespace> ns, internal::MappingRecord* record);
  Mapping(Mapping&& other) noexcept;
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  uint64_t offset() const { return offset_; }  // offset of data() in the namespace
  Access access() const { return access_; }

  // True once the device was removed (or a forced shrink cut this mapping):
  // the range is still reserved, but any access raises SIGBUS.
  bool revoked() const;

  // Makes stores in [ptr, ptr+n) durable by the media's persistence method
  // (cache-line flush + fence, msync, or nothing on volatile media). EINVAL
  // when the range is not inside this mapping.
  Status persist(const void* ptr, size_t n) const;

 private:
  void release();

  std::shared_ptr<internal::OpenNamespace> ns_;
  internal::MappingRecord* record_ = nullptr;  // in the core's registry until release()
  std::byte* data_ = nullptr;
  uint64_t offset_ = 0;
  size_t size_ = 0;
  Access access_ = Access::ReadOnly;
};

}  // namespace rawdax

#endif  // RAWDAX_MAPPING_H_

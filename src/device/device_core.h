// DeviceCore: the shared internals of an open namespace. The public Device
// and every Mapping hold it by shared_ptr, so the backing fd and the block
// face's mapping live until the last of them is gone.
//
// Thread safety: every method is thread-safe. Counters are relaxed atomics:
// they order nothing, they only count.
#ifndef RAWDAX_DEVICE_DEVICE_CORE_H_
#define RAWDAX_DEVICE_DEVICE_CORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/mapped_range.h"
#include "common/unique_fd.h"
#include "rawdax/device.h"
#include "region/catalog.h"

namespace rawdax::internal {

class DeviceCore {
 public:
  static Result<std::shared_ptr<DeviceCore>> open(std::shared_ptr<Catalog> catalog,
                                                  std::string_view name, DeviceOptions options);

  const NamespaceInfo& info() const { return info_; }
  const Capabilities& capabilities() const { return catalog_->capabilities(); }
  uint64_t size() const { return info_.size; }

  Status read(uint64_t offset, std::span<std::byte> out);
  Status write(uint64_t offset, std::span<const std::byte> data, WriteOptions options);
  Status write_zeroes(uint64_t offset, uint64_t length, ZeroOptions options, bool is_discard);
  Status flush();
  Result<Mapping> map(std::shared_ptr<DeviceCore> self, uint64_t offset, uint64_t length,
                      Access access);
  void on_unmap() { live_mappings_.fetch_sub(1, std::memory_order_relaxed); }
  DeviceStats stats() const;

 private:
  DeviceCore() = default;
  // EINVAL/ENOSPC with the namespace, operation, offset, length and size.
  Status check_range(const char* op, uint64_t offset, uint64_t length, bool is_write) const;

  std::shared_ptr<Catalog> catalog_;
  NamespaceInfo info_;
  DeviceOptions options_;
  UniqueFd fd_;
  MappedRange view_;  // the block face's own shared mapping of the whole namespace

  std::atomic<uint64_t> reads_{0}, writes_{0}, bytes_read_{0}, bytes_written_{0};
  std::atomic<uint64_t> write_zeroes_{0}, discards_{0}, flushes_{0}, maps_{0};
  std::atomic<uint64_t> live_mappings_{0};
};

}  // namespace rawdax::internal

#endif  // RAWDAX_DEVICE_DEVICE_CORE_H_

// The public Device and Mapping: thin forwarding to DeviceCore.
#include "rawdax/device.h"

#include <sys/mman.h>

#include <utility>

#include "device/device_core.h"
#include "media/persist.h"

namespace rawdax {

Device::Device(std::shared_ptr<internal::DeviceCore> core) : core_(std::move(core)) {}
Device::~Device() = default;

const std::string& Device::name() const { return core_->info().name; }
const NamespaceInfo& Device::info() const { return core_->info(); }
uint64_t Device::size() const { return core_->size(); }
const Capabilities& Device::capabilities() const { return core_->capabilities(); }

Status Device::read(uint64_t offset, std::span<std::byte> out) const {
  return core_->read(offset, out);
}
Status Device::write(uint64_t offset, std::span<const std::byte> data, WriteOptions options) {
  return core_->write(offset, data, options);
}
Status Device::write_zeroes(uint64_t offset, uint64_t length, ZeroOptions options) {
  return core_->write_zeroes(offset, length, options, /*is_discard=*/false);
}
Status Device::discard(uint64_t offset, uint64_t length) {
  return core_->write_zeroes(offset, length, ZeroOptions{}, /*is_discard=*/true);
}
Status Device::flush() { return core_->flush(); }
Result<Mapping> Device::map(uint64_t offset, uint64_t length, Access access) {
  return core_->map(core_, offset, length, access);
}
DeviceStats Device::stats() const { return core_->stats(); }

Mapping::Mapping(std::shared_ptr<internal::DeviceCore> core, std::byte* data, uint64_t offset,
                 size_t size, size_t mapped_size, Access access)
    : core_(std::move(core)),
      data_(data),
      offset_(offset),
      size_(size),
      mapped_size_(mapped_size),
      access_(access) {}

Mapping::Mapping(Mapping&& other) noexcept
    : core_(std::move(other.core_)),
      data_(std::exchange(other.data_, nullptr)),
      offset_(other.offset_),
      size_(std::exchange(other.size_, 0)),
      mapped_size_(std::exchange(other.mapped_size_, 0)),
      access_(other.access_) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    release();
    core_ = std::move(other.core_);
    data_ = std::exchange(other.data_, nullptr);
    offset_ = other.offset_;
    size_ = std::exchange(other.size_, 0);
    mapped_size_ = std::exchange(other.mapped_size_, 0);
    access_ = other.access_;
  }
  return *this;
}

Mapping::~Mapping() { release(); }

void Mapping::release() {
  if (data_ == nullptr) return;
  ::munmap(data_, mapped_size_);
  data_ = nullptr;
  core_->on_unmap();
  core_.reset();
}

Status Mapping::persist(const void* ptr, size_t n) const {
  auto p = static_cast<const std::byte*>(ptr);
  if (data_ == nullptr || p < data_ || n > size_ || p - data_ > static_cast<ptrdiff_t>(size_ - n)) {
    return Error(std::errc::invalid_argument,
                 "persist of " + std::to_string(n) + " bytes is outside the mapping at offset " +
                     std::to_string(offset_) + " of " + std::to_string(size_) + " bytes");
  }
  return persist_range(core_->capabilities().persist, ptr, n);
}

}  // namespace rawdax

// The public Device, FreezeGuard and Mapping: handles over the device core
// and its protection engine. Like Region, this facade sits above both layers.
#include "rawdax/device.h"

#include <utility>

#include "device/device_core.h"
#include "engine/protector.h"
#include "media/persist.h"
#include "snapshot/snapshot.h"

namespace rawdax {
namespace {

// The engine is installed by Region::open_device before any handle exists.
internal::Protector& engine_of(internal::DeviceCore& core) {
  return *static_cast<internal::Protector*>(core.observer());
}

}  // namespace

Device::Device(std::shared_ptr<internal::DeviceCore> core, DeviceOptions options)
    : core_(std::move(core)), read_only_(options.read_only) {}
Device::~Device() = default;

const std::string& Device::name() const { return core_->name(); }
NamespaceInfo Device::info() const { return core_->info(); }
uint64_t Device::size() const { return core_->size(); }
const Capabilities& Device::capabilities() const { return core_->capabilities(); }

Status Device::read(uint64_t offset, std::span<std::byte> out) const {
  return core_->read(offset, out);
}
Status Device::check_readable(uint64_t offset, uint64_t length) const {
  return core_->check_readable(offset, length);
}
Status Device::write(uint64_t offset, std::span<const std::byte> data, WriteOptions options) {
  return core_->write(offset, data, options, read_only_);
}
Status Device::write_zeroes(uint64_t offset, uint64_t length, ZeroOptions options) {
  return core_->write_zeroes(offset, length, options, /*is_discard=*/false, read_only_);
}
Status Device::discard(uint64_t offset, uint64_t length) {
  return core_->write_zeroes(offset, length, ZeroOptions{}, /*is_discard=*/true, read_only_);
}
Status Device::flush() { return core_->flush(); }
Result<std::vector<Extent>> Device::extents(uint64_t offset, uint64_t length,
                                            size_t max_extents) const {
  return core_->extents(offset, length, max_extents);
}
Result<bool> Device::is_hole(uint64_t offset, uint64_t length) const {
  return core_->is_hole(offset, length);
}
Result<Mapping> Device::map(uint64_t offset, uint64_t length, Access access) {
  return core_->map(offset, length, access, read_only_);
}
Status Device::resize(uint64_t new_size, ResizeOptions options) {
  if (read_only_) {
    return Error(std::errc::read_only_file_system,
                 "namespace " + name() + ": resize on a read-only device");
  }
  return core_->resize(new_size, options);
}
Status Device::remove() { return core_->remove(); }

Result<FreezeGuard> Device::freeze(FreezeOptions options) {
  RAWDAX_RETURN_IF_ERROR(engine_of(*core_).freeze(options.timeout));
  return FreezeGuard(core_);
}

Status Device::sync() {
  Status st = engine_of(*core_).sync();
  if (!st) return st.error().with_context("namespace " + name() + ": sync: ");
  return st;
}

Result<SnapshotInfo> Device::snapshot(const std::string& path, SnapshotOptions options) {
  return internal::take_snapshot(*core_, engine_of(*core_), path, options);
}

ProtectionEngine Device::engine() const { return engine_of(*core_).kind(); }

DeviceStats Device::stats() const {
  DeviceStats stats = core_->stats();
  engine_of(*core_).add_stats(stats);
  return stats;
}

FreezeGuard::FreezeGuard(FreezeGuard&& other) noexcept : core_(std::move(other.core_)) {}

FreezeGuard& FreezeGuard::operator=(FreezeGuard&& other) noexcept {
  if (this != &other) {
    thaw();
    core_ = std::move(other.core_);
  }
  return *this;
}

FreezeGuard::~FreezeGuard() { thaw(); }

void FreezeGuard::thaw() {
  if (core_ == nullptr) return;
  engine_of(*core_).thaw();
  core_.reset();
}

Mapping::Mapping(std::shared_ptr<internal::DeviceCore> core, internal::MappingRecord* record)
    : core_(std::move(core)),
      record_(record),
      data_(record->addr),
      offset_(record->offset),
      size_(static_cast<size_t>(record->length)),
      access_(record->access) {}

Mapping::Mapping(Mapping&& other) noexcept
    : core_(std::move(other.core_)),
      record_(std::exchange(other.record_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      offset_(other.offset_),
      size_(std::exchange(other.size_, 0)),
      access_(other.access_) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    release();
    core_ = std::move(other.core_);
    record_ = std::exchange(other.record_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    offset_ = other.offset_;
    size_ = std::exchange(other.size_, 0);
    access_ = other.access_;
  }
  return *this;
}

Mapping::~Mapping() { release(); }

void Mapping::release() {
  if (record_ == nullptr) return;
  core_->unmap(std::exchange(record_, nullptr));
  data_ = nullptr;
  core_.reset();
}

bool Mapping::revoked() const { return record_ != nullptr && core_->is_revoked(record_); }

Status Mapping::persist(const void* ptr, size_t n) const {
  auto p = static_cast<const std::byte*>(ptr);
  if (data_ == nullptr || p < data_ || n > size_ || p - data_ > static_cast<ptrdiff_t>(size_ - n)) {
    return Error(std::errc::invalid_argument,
                 "persist of " + std::to_string(n) + " bytes is outside the mapping at offset " +
                     std::to_string(offset_) + " of " + std::to_string(size_) + " bytes");
  }
  if (revoked()) {
    return Error(std::errc::no_such_device_or_address,
                 "namespace " + core_->name() + ": persist on a revoked mapping");
  }
  return persist_range(core_->capabilities().persist, ptr, n);
}

}  // namespace rawdax

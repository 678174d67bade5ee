// The public Device, FreezeGuard and Mapping: handles over a namespace's
// OpenNamespace (device core, protection engine, snapshot state). Like
// Region, these facades sit above every layer they reach.
#include "rawdax/device.h"

#include <utility>

#include "media/persist.h"
#include "namespace/open_namespace.h"

namespace rawdax {

Device::Device(std::shared_ptr<internal::OpenNamespace> ns, DeviceOptions options)
    : ns_(std::move(ns)), read_only_(options.read_only) {}
Device::~Device() = default;

const std::string& Device::name() const { return ns_->core().name(); }
NamespaceInfo Device::info() const { return ns_->core().info(); }
uint64_t Device::size() const { return ns_->core().size(); }
const Capabilities& Device::capabilities() const { return ns_->core().capabilities(); }

Status Device::read(uint64_t offset, std::span<std::byte> out) const {
  return ns_->core().read(offset, out);
}
Status Device::check_readable(uint64_t offset, uint64_t length) const {
  return ns_->core().check_readable(offset, length);
}
Status Device::write(uint64_t offset, std::span<const std::byte> data, WriteOptions options) {
  return ns_->core().write(offset, data, options, read_only_);
}
Status Device::write_zeroes(uint64_t offset, uint64_t length, ZeroOptions options) {
  return ns_->core().write_zeroes(offset, length, options, /*is_discard=*/false, read_only_);
}
Status Device::discard(uint64_t offset, uint64_t length) {
  return ns_->core().write_zeroes(offset, length, ZeroOptions{}, /*is_discard=*/true, read_only_);
}
Status Device::flush() { return ns_->core().flush(); }
Result<std::vector<Extent>> Device::extents(uint64_t offset, uint64_t length,
                                            size_t max_extents) const {
  return ns_->core().extents(offset, length, max_extents);
}
Result<bool> Device::is_hole(uint64_t offset, uint64_t length) const {
  return ns_->core().is_hole(offset, length);
}
Result<Mapping> Device::map(uint64_t offset, uint64_t length, Access access) {
  auto record = ns_->core().map(offset, length, access, read_only_);
  if (!record) return record.error();
  return Mapping(ns_, *record);
}
Status Device::resize(uint64_t new_size, ResizeOptions options) {
  if (read_only_) {
    return Error(std::errc::read_only_file_system,
                 "namespace " + name() + ": resize on a read-only device");
  }
  return ns_->core().resize(new_size, options);
}
Status Device::remove() { return ns_->core().remove(); }

Result<FreezeGuard> Device::freeze(FreezeOptions options) {
  RAWDAX_RETURN_IF_ERROR(ns_->engine().freeze(options.timeout));
  return FreezeGuard(ns_);
}

Status Device::sync() {
  Status st = ns_->engine().sync();
  if (!st) return st.error().with_context("namespace " + name() + ": sync: ");
  return st;
}

Result<SnapshotInfo> Device::snapshot(const std::string& path, SnapshotOptions options) {
  return ns_->snapshot(path, options);
}

ProtectionEngine Device::engine() const { return ns_->engine().kind(); }

UffdFaults Device::uffd_faults() const { return ns_->engine().uffd_faults(); }

DeviceStats Device::stats() const { return ns_->stats(); }

FreezeGuard::FreezeGuard(FreezeGuard&& other) noexcept : ns_(std::move(other.ns_)) {}

FreezeGuard& FreezeGuard::operator=(FreezeGuard&& other) noexcept {
  if (this != &other) {
    thaw();
    ns_ = std::move(other.ns_);
  }
  return *this;
}

FreezeGuard::~FreezeGuard() { thaw(); }

void FreezeGuard::thaw() {
  if (ns_ == nullptr) return;
  ns_->engine().thaw();
  ns_.reset();
}

Mapping::Mapping(std::shared_ptr<internal::OpenNamespace> ns, internal::MappingRecord* record)
    : ns_(std::move(ns)),
      record_(record),
      data_(record->addr),
      offset_(record->offset),
      size_(static_cast<size_t>(record->length)),
      access_(record->access) {}

Mapping::Mapping(Mapping&& other) noexcept
    : ns_(std::move(other.ns_)),
      record_(std::exchange(other.record_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      offset_(other.offset_),
      size_(std::exchange(other.size_, 0)),
      access_(other.access_) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    release();
    ns_ = std::move(other.ns_);
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
  ns_->core().unmap(std::exchange(record_, nullptr));
  data_ = nullptr;
  ns_.reset();
}

bool Mapping::revoked() const { return record_ != nullptr && ns_->core().is_revoked(record_); }

Status Mapping::persist(const void* ptr, size_t n) const {
  auto p = static_cast<const std::byte*>(ptr);
  if (data_ == nullptr || p < data_ || n > size_ || p - data_ > static_cast<ptrdiff_t>(size_ - n)) {
    return Error(std::errc::invalid_argument,
                 "persist of " + std::to_string(n) + " bytes is outside the mapping at offset " +
                     std::to_string(offset_) + " of " + std::to_string(size_) + " bytes");
  }
  if (revoked()) {
    return Error(std::errc::no_such_device_or_address,
                 "namespace " + ns_->core().name() + ": persist on a revoked mapping");
  }
  return internal::persist_range(ns_->core().capabilities().persist, ptr, n);
}

}  // namespace rawdax

#include "device/device_core.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "common/units.h"
#include "media/files.h"
#include "media/persist.h"
#include "media/probe.h"

namespace rawdax::internal {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

}  // namespace

Result<std::shared_ptr<DeviceCore>> DeviceCore::open(std::shared_ptr<Catalog> catalog,
                                                     std::string_view name,
                                                     DeviceOptions options) {
  auto info = catalog->find(name);
  if (!info) return info.error();
  auto fd = catalog->open_backing(name, !options.read_only);
  if (!fd) return fd.error();
  std::shared_ptr<DeviceCore> core(new DeviceCore());
  core->catalog_ = std::move(catalog);
  core->info_ = std::move(*info);
  core->options_ = options;
  core->fd_ = std::move(*fd);
  if (core->capabilities().kind != MediaKind::kDevdax) {
    auto actual = file_size(core->fd_.get());
    if (!actual) return actual.error();
    if (*actual < core->info_.size) {
      return Error(std::errc::illegal_byte_sequence,
                   "namespace " + core->info_.name + ": backing " + core->info_.path + " has " +
                       std::to_string(*actual) + " bytes, metadata says " +
                       std::to_string(core->info_.size));
    }
  }
  int prot = PROT_READ | (options.read_only ? 0 : PROT_WRITE);
  void* addr = ::mmap(nullptr, core->info_.size, prot, shared_map_flags(core->capabilities()),
                      core->fd_.get(), 0);
  if (addr == MAP_FAILED) {
    return errno_error(errno, "namespace " + core->info_.name + ": cannot map " +
                                  std::to_string(core->info_.size) + " bytes of " +
                                  core->info_.path);
  }
  core->view_ = MappedRange(addr, core->info_.size);
  return core;
}

Status DeviceCore::check_range(const char* op, uint64_t offset, uint64_t length,
                               bool is_write) const {
  if (is_write && options_.read_only) {
    return Error(std::errc::read_only_file_system,
                 "namespace " + info_.name + ": " + op + " on a read-only device");
  }
  if (range_fits(offset, length, info_.size)) return ok();
  bool overflow = length > UINT64_MAX - offset;
  std::errc code = (is_write && !overflow) ? std::errc::no_space_on_device
                                           : std::errc::invalid_argument;
  return Error(code, "namespace " + info_.name + ": " + op + " at offset " +
                         std::to_string(offset) + " length " + std::to_string(length) +
                         (overflow ? " overflows" : " is outside the namespace") + " (size " +
                         std::to_string(info_.size) + ")");
}

Status DeviceCore::read(uint64_t offset, std::span<std::byte> out) {
  RAWDAX_RETURN_IF_ERROR(check_range("read", offset, out.size(), false));
  if (!out.empty()) std::memcpy(out.data(), view_.data() + offset, out.size());
  reads_.fetch_add(1, kRelaxed);
  bytes_read_.fetch_add(out.size(), kRelaxed);
  return ok();
}

Status DeviceCore::write(uint64_t offset, std::span<const std::byte> data,
                         WriteOptions options) {
  RAWDAX_RETURN_IF_ERROR(check_range("write", offset, data.size(), true));
  if (!data.empty()) std::memcpy(view_.data() + offset, data.data(), data.size());
  writes_.fetch_add(1, kRelaxed);
  bytes_written_.fetch_add(data.size(), kRelaxed);
  if (options.fua) {
    return persist_range(capabilities().persist, view_.data() + offset, data.size());
  }
  return ok();
}

Status DeviceCore::write_zeroes(uint64_t offset, uint64_t length, ZeroOptions options,
                                bool is_discard) {
  const char* op = is_discard ? "discard" : "write-zeroes";
  RAWDAX_RETURN_IF_ERROR(check_range(op, offset, length, true));
  (is_discard ? discards_ : write_zeroes_).fetch_add(1, kRelaxed);
  std::byte* base = view_.data();
  const Capabilities& caps = capabilities();
  // Punch the aligned interior; memset the unaligned edges (or all of it).
  uint64_t hole_begin = *round_up(offset, caps.alignment);
  uint64_t hole_end = (offset + length) & ~(caps.alignment - 1);
  if (options.no_hole || !caps.punch_hole || caps.kind == MediaKind::kDevdax ||
      hole_begin >= hole_end) {
    std::memset(base + offset, 0, length);
  } else {
    auto punched = punch_hole(fd_.get(), hole_begin, hole_end - hole_begin);
    if (!punched) return punched.error().with_context("namespace " + info_.name + ": ");
    if (*punched) {
      std::memset(base + offset, 0, hole_begin - offset);
      std::memset(base + hole_end, 0, offset + length - hole_end);
    } else {
      std::memset(base + offset, 0, length);
    }
  }
  return persist_range(caps.persist, base + offset, length);
}

Status DeviceCore::flush() {
  flushes_.fetch_add(1, kRelaxed);
  Status st = persist_range(capabilities().persist, view_.data(), view_.size());
  if (!st) return st.error().with_context("namespace " + info_.name + ": flush: ");
  return st;
}

Result<Mapping> DeviceCore::map(std::shared_ptr<DeviceCore> self, uint64_t offset,
                                uint64_t length, Access access) {
  const Capabilities& caps = capabilities();
  if (length == 0) {
    return Error(std::errc::invalid_argument,
                 "namespace " + info_.name + ": map of length 0 at offset " +
                     std::to_string(offset));
  }
  if (offset % caps.alignment != 0) {
    return Error(std::errc::invalid_argument,
                 "namespace " + info_.name + ": map offset " + std::to_string(offset) +
                     " is not a multiple of the alignment " + std::to_string(caps.alignment));
  }
  RAWDAX_RETURN_IF_ERROR(check_range("map", offset, length, access == Access::ReadWrite));
  // Whole pages; the namespace size is aligned, so this stays inside it.
  size_t mapped = static_cast<size_t>(*round_up(length, caps.page_size));
  int prot = PROT_READ | (access == Access::ReadWrite ? PROT_WRITE : 0);
  void* addr = ::mmap(nullptr, mapped, prot, shared_map_flags(caps), fd_.get(),
                      static_cast<off_t>(offset));
  if (addr == MAP_FAILED) {
    return errno_error(errno, "namespace " + info_.name + ": mmap offset " +
                                  std::to_string(offset) + " length " + std::to_string(length));
  }
  maps_.fetch_add(1, kRelaxed);
  live_mappings_.fetch_add(1, kRelaxed);
  return Mapping(std::move(self), static_cast<std::byte*>(addr), offset,
                 static_cast<size_t>(length), mapped, access);
}

DeviceStats DeviceCore::stats() const {
  DeviceStats s;
  s.reads = reads_.load(kRelaxed);
  s.writes = writes_.load(kRelaxed);
  s.bytes_read = bytes_read_.load(kRelaxed);
  s.bytes_written = bytes_written_.load(kRelaxed);
  s.write_zeroes = write_zeroes_.load(kRelaxed);
  s.discards = discards_.load(kRelaxed);
  s.flushes = flushes_.load(kRelaxed);
  s.maps = maps_.load(kRelaxed);
  s.live_mappings = live_mappings_.load(kRelaxed);
  return s;
}

}  // namespace rawdax::internal

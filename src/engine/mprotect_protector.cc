#include "engine/mprotect_protector.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>

#include "engine/segv_parking.h"

namespace rawdax::internal {

Result<std::unique_ptr<Protector>> MprotectProtector::create(DeviceCore& core) {
  std::unique_ptr<MprotectProtector> engine(new MprotectProtector(core));
  if (engine->tracking()) {
    auto tracker = WriteTracker::create();
    if (tracker) engine->tracker_ = std::move(*tracker);  // else whole-range tracking
  }
  return std::unique_ptr<Protector>(std::move(engine));
}

Status MprotectProtector::protect_range(std::byte* addr, uint64_t len, int prot) const {
  const Capabilities& caps = core_.capabilities();
  auto where = [&] {
    return "media " + std::string(to_string(caps.kind)) + ", namespace " + core_.name() +
           ": mprotect of " + std::to_string(len) + " bytes at mapping address " +
           std::to_string(reinterpret_cast<uintptr_t>(addr));
  };
  // Pages are the media's alignment units (DeviceCore::page_size()), and
  // device-dax refuses any VMA split off its align with EINVAL: a range off
  // it is our bug, named here rather than left to the kernel.
  if (caps.kind == MediaKind::kDevdax &&
      (reinterpret_cast<uintptr_t>(addr) % caps.alignment != 0 || len % caps.alignment != 0)) {
    return Error(std::errc::invalid_argument,
                 where() + " is off the device alignment " + std::to_string(caps.alignment));
  }
  if (::mprotect(addr, len, prot) != 0) {
    const int err = errno;  // before where() allocates
    return errno_error(err, where());
  }
  return ok();
}

Status MprotectProtector::on_map(MappingRecord& record) {
  if (record.access != Access::ReadWrite) return ok();
  auto slot = SegvParking::register_range(record.addr, record.mapped_len);
  if (!slot) return slot.error().with_context("namespace " + core_.name() + ": ");
  std::lock_guard<std::mutex> lock(mu_);
  if (tracker_ != nullptr) {
    Status tracked = tracker_->add_range(record.addr, record.mapped_len);
    if (!tracked) {
      SegvParking::unregister_range(*slot);
      return tracked.error().with_context("namespace " + core_.name() + ": ");
    }
  }
  // Born read-only while frozen (no stores until thaw) or during a live
  // snapshot (no store before its chunk is copied).
  if (frozen_ || core_.copier() != nullptr) {
    SegvParking::set_frozen(*slot, true);
    Status protected_now = protect_range(record.addr, record.mapped_len, PROT_READ);
    if (!protected_now) {
      if (tracker_ != nullptr) tracker_->remove_range(record.addr, record.mapped_len);
      SegvParking::unregister_range(*slot);
      return protected_now;
    }
  }
  writable_[record.addr] = {&record, *slot};
  return ok();
}

void MprotectProtector::forget_locked(MappingRecord& record) {
  auto it = writable_.find(record.addr);
  if (it == writable_.end()) return;
  SegvParking::Stats s = SegvParking::stats(it->second.slot);
  gone_parked_ += s.parked;
  gone_stall_total_ns_ += s.stall_total_ns;
  gone_stall_max_ns_ = std::max(gone_stall_max_ns_, s.stall_max_ns);
  // Wakes parked stores; they retry into whatever is mapped there now.
  SegvParking::unregister_range(it->second.slot);
  if (tracker_ != nullptr) tracker_->remove_range(record.addr, record.mapped_len);
  writable_.erase(it);
}

void MprotectProtector::on_unmap(MappingRecord& record) {
  std::lock_guard<std::mutex> lock(mu_);
  forget_locked(record);
}

void MprotectProtector::on_revoked(MappingRecord& record) {
  std::lock_guard<std::mutex> lock(mu_);
  forget_locked(record);
}

Status MprotectProtector::protect_all_locked() {
  // A thaw that could not make a mapping writable again is reported here,
  // by the next freeze; its stores have stayed parked meanwhile.
  if (!release_error_) {
    Status earlier = std::exchange(release_error_, ok());
    return earlier.error().with_context("an earlier thaw failed: ");
  }
  for (auto& [addr, watched] : writable_) {
    // Frozen before read-only: a store faulting from here on finds it frozen.
    SegvParking::set_frozen(watched.slot, true);
    RAWDAX_RETURN_IF_ERROR(protect_range(watched.record->addr, watched.record->mapped_len,
                                         PROT_READ));
  }
  return ok();
}

void MprotectProtector::release_all_locked() {
  // A live snapshot keeps everything read-only; its copier releases chunks.
  if (core_.copier() != nullptr) return;
  for (auto& [addr, watched] : writable_) {
    // Writable before unfrozen: a woken store retries and lands. A mapping
    // the kernel keeps read-only stays frozen instead: its stores park
    // rather than fault for good.
    Status writable = protect_range(watched.record->addr, watched.record->mapped_len,
                                    PROT_READ | PROT_WRITE);
    if (!writable) {
      if (release_error_) release_error_ = writable;
      continue;
    }
    SegvParking::set_frozen(watched.slot, false);
  }
}

Status MprotectProtector::collect_dirty_locked() {
  const uint64_t page = core_.page_size();
  for (auto& [addr, watched] : writable_) {
    MappingRecord& record = *watched.record;
    if (tracker_ == nullptr) {  // whole-range: every mapped page may be dirty
      core_.mark_pages(record.offset / page, record.mapped_len / page);
      continue;
    }
    auto found = tracker_->scan_and_reprotect(
        record.addr, record.mapped_len, [&](void* start, size_t bytes) {
          uint64_t offset = offset_of(record, static_cast<std::byte*>(start));
          core_.mark_pages(offset / page, bytes / page);
        });
    if (!found) return found.error().with_context("namespace " + core_.name() + ": ");
    faults_.fetch_add(*found / page, std::memory_order_relaxed);
  }
  return ok();
}

uint64_t MprotectProtector::live_chunk_pages() const {
  return std::max<uint64_t>(1, (uint64_t{2} << 20) / core_.page_size());
}

Status MprotectProtector::release_copied(uint64_t first_page, uint64_t count) {
  std::lock_guard<std::mutex> lock(mu_);
  if (frozen_) return ok();  // thaw of that freeze leaves them to the copier again
  const uint64_t page = core_.page_size();
  const uint64_t lo = first_page * page, hi = (first_page + count) * page;
  for (auto& [addr, watched] : writable_) {
    MappingRecord& record = *watched.record;
    uint64_t from = std::max(lo, record.offset);
    uint64_t to = std::min(hi, record.offset + record.mapped_len);
    if (from >= to) continue;
    // Writable before the wake-up: a woken store retries and lands.
    RAWDAX_RETURN_IF_ERROR(protect_range(record.addr + (from - record.offset), to - from,
                                         PROT_READ | PROT_WRITE));
    SegvParking::wake(watched.slot);
  }
  return ok();
}

std::vector<uint64_t> MprotectProtector::take_demanded_pages() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<uint64_t> pages;
  const uint64_t page = core_.page_size();
  for (auto& [addr, watched] : writable_) {
    uintptr_t at = SegvParking::take_demand(watched.slot);
    MappingRecord& record = *watched.record;
    auto* p = reinterpret_cast<std::byte*>(at & ~uintptr_t{page - 1});
    if (at != 0 && p >= record.addr && p < record.addr + record.mapped_len) {
      pages.push_back(offset_of(record, p) / page);
    }
  }
  return pages;
}

bool MprotectProtector::demand_changed(uint32_t* seen) const {
  uint32_t now = SegvParking::demand_count();
  if (now == *seen) return false;
  *seen = now;
  return true;
}

Status MprotectProtector::end_live_copy() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!frozen_) release_all_locked();  // else that freeze's thaw does it
  return std::exchange(release_error_, ok());
}

void MprotectProtector::add_engine_stats_locked(DeviceStats& stats) const {
  uint64_t parked = gone_parked_, total = gone_stall_total_ns_, max = gone_stall_max_ns_;
  for (const auto& [addr, watched] : writable_) {
    SegvParking::Stats s = SegvParking::stats(watched.slot);
    stats.parked_writers += s.parked_now;
    parked += s.parked;
    total += s.stall_total_ns;
    max = std::max(max, s.stall_max_ns);
  }
  stats.write_faults += parked;
  stats.stall_total_ns += total;
  stats.stall_max_ns = std::max(stats.stall_max_ns, max);
}

}  // namespace rawdax::internal

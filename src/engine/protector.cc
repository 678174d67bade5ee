#include "engine/protector.h"

#include <algorithm>

#include "engine/mprotect_protector.h"
#include "engine/uffd_protector.h"

namespace rawdax::internal {

uint64_t elapsed_ns(std::chrono::steady_clock::time_point since) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now() - since)
                                   .count());
}

Result<std::unique_ptr<Protector>> Protector::create(DeviceCore& core, EngineChoice choice,
                                                     UffdFaults faults) {
  const Capabilities& caps = core.capabilities();
  bool uffd = choice == EngineChoice::kUffd ||
              (choice == EngineChoice::kAuto && caps.engine == ProtectionEngine::kUffd);
  if (uffd && !caps.uffd_wp_sync) {
    std::string why = caps.uffd_mode == UffdMode::kNone
                          ? "and this process could open no userfaultfd"
                          : "which " + caps.filesystem + " media refuses";
    return Error(std::errc::operation_not_supported,
                 "namespace " + core.name() + ": the uffd engine needs sync userfaultfd "
                 "write-protect, " + why);
  }
  if (uffd) return UffdProtector::create(core, faults);
  return MprotectProtector::create(core);
}

void Protector::record_stall(uint64_t ns) {
  stall_total_ns_.fetch_add(ns, std::memory_order_relaxed);
  uint64_t max = stall_max_ns_.load(std::memory_order_relaxed);
  while (ns > max && !stall_max_ns_.compare_exchange_weak(max, ns, std::memory_order_relaxed)) {
  }
}

Status Protector::freeze(std::chrono::nanoseconds timeout, bool persist) {
  std::lock_guard<std::mutex> serial(freeze_mu_);
  if (depth_ > 0) {
    ++depth_;
    return ok();
  }
  if (Status ahead = protect_ahead(); !ahead) {
    return ahead.error().with_context("namespace " + core_.name() + ": freeze: ");
  }
  RAWDAX_RETURN_IF_ERROR(core_.freeze_block_writes(timeout));
  {
    std::lock_guard<std::mutex> lock(mu_);
    frozen_ = true;
    Status st = protect_all_locked();
    if (st && persist) st = tracking() ? flush_dirty_locked() : core_.persist(0, core_.size());
    if (!st) {
      frozen_ = false;
      release_all_locked();
      core_.thaw_block_writes();
      return st.error().with_context("namespace " + core_.name() + ": freeze: ");
    }
  }
  depth_ = 1;
  freezes_.fetch_add(1, std::memory_order_relaxed);
  return ok();
}

Status Protector::protect_ahead() { return tracking() ? protect_before_freeze() : ok(); }

void Protector::thaw() {
  std::lock_guard<std::mutex> serial(freeze_mu_);
  if (depth_ == 0 || --depth_ > 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    frozen_ = false;
    release_all_locked();
  }
  core_.thaw_block_writes();
}

Status Protector::sync() {
  if (!tracking()) {
    uint64_t size = core_.size();
    RAWDAX_RETURN_IF_ERROR(core_.persist(0, size));
    synced_.fetch_add(size / core_.page_size(), std::memory_order_relaxed);
    return ok();
  }
  std::lock_guard<std::mutex> lock(mu_);
  // Write-protect (collect), then clear and flush (flush_dirty): a store after
  // the write-protect faults and marks its page again, so none is lost.
  RAWDAX_RETURN_IF_ERROR(collect_dirty_locked());
  return flush_dirty_locked();
}

Status Protector::collect_dirty() {
  if (!tracking()) return ok();
  std::lock_guard<std::mutex> lock(mu_);
  return collect_dirty_locked();
}

Status Protector::flush_dirty_locked() {
  const uint64_t page = core_.page_size();
  const uint64_t size = core_.size();
  Status result;
  uint64_t taken = core_.dirty()->take([&](uint64_t first, uint64_t count) {
    uint64_t begin = first * page;
    if (begin >= size || !result) return;  // a cut by shrink: nothing to persist
    uint64_t length = std::min(count * page, size - begin);
    result = core_.persist(begin, length);
    if (!result) core_.dirty()->set_range(first, count);  // still dirty: keep it
  });
  synced_.fetch_add(taken, std::memory_order_relaxed);
  return result;
}

void Protector::add_stats(DeviceStats& stats) const {
  stats.freezes = freezes_.load(std::memory_order_relaxed);
  stats.synced_pages = synced_.load(std::memory_order_relaxed);
  stats.write_faults = faults_.load(std::memory_order_relaxed);
  stats.stall_total_ns += stall_total_ns_.load(std::memory_order_relaxed);
  stats.stall_max_ns = std::max(stats.stall_max_ns, stall_max_ns_.load(std::memory_order_relaxed));
  std::lock_guard<std::mutex> lock(mu_);
  add_engine_stats_locked(stats);
}

}  // namespace rawdax::internal

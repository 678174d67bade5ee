#include "common/memory_release.h"

#include <malloc.h>

#include <atomic>

namespace rawdax::internal {

void release_free_memory(bool freed, std::chrono::milliseconds interval) {
  static std::atomic<bool> pending{false};
  static std::atomic<int64_t> last_ns{0};
  if (freed) pending.store(true, std::memory_order_relaxed);
  if (!pending.load(std::memory_order_relaxed)) return;
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t last = last_ns.load(std::memory_order_relaxed);
  if (last != 0 && now - last < std::chrono::nanoseconds(interval).count()) return;
  // Relaxed: only one caller per interval needs to win; the trim itself
  // synchronizes with malloc through glibc's arena locks.
  if (!last_ns.compare_exchange_strong(last, now, std::memory_order_relaxed)) return;
  pending.store(false, std::memory_order_relaxed);  // frees after this stay pending
  ::malloc_trim(0);
}

}  // namespace rawdax::internal

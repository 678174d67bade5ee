#include "engine/segv_parking.h"

#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <mutex>
#include <string>

#include "common/signal_chain.h"

namespace rawdax::internal {
namespace {

constexpr uint32_t kInUse = 1;      // Slot::reg bit 0
constexpr uint32_t kFrozen = 1;     // Slot::ctl bit 0
constexpr uint32_t kCountStep = 2;  // the generation/epoch counter above bit 0
constexpr long kParkSliceNs = 100 * 1000 * 1000;
constexpr uint32_t kMaxBlindRetries = 10000;

// One registered range. Everything the handler reads is an atomic in a static
// table, so a racing unregister can make it read stale values but never freed
// memory. 64-byte aligned: parked threads of one slot don't share a line with
// the futex word of another.
struct alignas(64) Slot {
  std::atomic<uint32_t> reg{0};  // kInUse | generation
  std::atomic<uint32_t> ctl{0};  // futex word: kFrozen | epoch
  std::atomic<uintptr_t> start{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<uint64_t> parked{0};
  // Threads inside park() on this slot now. Never reset by register_range():
  // each thread undoes its own increment, whatever registration it parked on.
  std::atomic<uint32_t> parked_now{0};
  std::atomic<uint64_t> stall_total_ns{0};
  std::atomic<uint64_t> stall_max_ns{0};
  std::atomic<uintptr_t> demand{0};  // an address a parked thread waits for
};
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) &&
                  std::atomic<uint32_t>::is_always_lock_free,
              "the futex syscall needs a plain 32-bit word");

Slot g_slots[SegvParking::kMaxSlots];
// Bumped whenever a thread parks: see SegvParking::demand_count().
std::atomic<uint32_t> g_demands{0};
// One past the highest slot in use: the handler scans [0, g_high_water).
// Raised before a slot is published, lowered after it is cleared.
std::atomic<int> g_high_water{0};

internal::SignalChain g_chain;  // the SIGSEGV action before ours

// Serializes register/unregister/install. Never taken by the handler.
std::mutex g_mu;
bool g_installed = false;  // guarded by g_mu

// Handler-private per-thread state; initial-exec so that reading it never
// calls __tls_get_addr (which may allocate) inside the signal handler.
[[gnu::tls_model("initial-exec")]] thread_local uint32_t t_blind_retries = 0;
[[gnu::tls_model("initial-exec")]] thread_local uintptr_t t_blind_addr = 0;

uint64_t now_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

uint32_t* futex_word(std::atomic<uint32_t>* word) { return reinterpret_cast<uint32_t*>(word); }

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, const timespec* timeout) {
  ::syscall(SYS_futex, futex_word(word), FUTEX_WAIT_PRIVATE, expected, timeout, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
  ::syscall(SYS_futex, futex_word(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

void update_max(std::atomic<uint64_t>& max, uint64_t value) {
  uint64_t seen = max.load(std::memory_order_relaxed);
  while (seen < value && !max.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
  }
}

// Sleeps while the slot is still the registration `reg` and its futex word
// still `ctl` (frozen). Any thaw, refreeze or unregister changes one of them.
//
// parked_now counts the thread from after its store faulted to before the
// handler returns to retry it, so while a reader sees the thread counted its
// store has not landed (the retry comes after the decrement).
void park(Slot& slot, uint32_t reg, uint32_t ctl) {
  const uint64_t start = now_ns();
  const timespec slice = {0, kParkSliceNs};
  slot.parked_now.fetch_add(1, std::memory_order_seq_cst);
  while (slot.reg.load(std::memory_order_acquire) == reg &&
         slot.ctl.load(std::memory_order_acquire) == ctl) {
    futex_wait(&slot.ctl, ctl, &slice);
  }
  slot.parked_now.fetch_sub(1, std::memory_order_seq_cst);
  // Unregistered meanwhile: the counters may belong to a new registration.
  if (slot.reg.load(std::memory_order_relaxed) != reg) return;
  const uint64_t stall = now_ns() - start;
  slot.parked.fetch_add(1, std::memory_order_relaxed);
  slot.stall_total_ns.fetch_add(stall, std::memory_order_relaxed);
  update_max(slot.stall_max_ns, stall);
}

enum class Verdict { kRetry, kNotOurs };

// Decides what to do with a SIGSEGV; parks first when the range is frozen.
Verdict handle_fault(const siginfo_t* info) {
  if (info->si_code != SEGV_ACCERR) return Verdict::kNotOurs;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  bool matched = false;
  const int high_water = g_high_water.load(std::memory_order_acquire);
  for (int i = 0; i < high_water; ++i) {
    Slot& slot = g_slots[i];
    const uint32_t reg = slot.reg.load(std::memory_order_acquire);
    if ((reg & kInUse) == 0) continue;
    const uintptr_t start = slot.start.load(std::memory_order_acquire);
    const uintptr_t end = slot.end.load(std::memory_order_acquire);
    if (slot.reg.load(std::memory_order_relaxed) != reg) {
      // Re-registered under us: the range is unknown. Retrying the store is
      // always safe; it faults again and is looked up afresh.
      matched = true;
      continue;
    }
    if (addr < start || addr >= end) continue;
    matched = true;
    const uint32_t ctl = slot.ctl.load(std::memory_order_acquire);
    if ((ctl & kFrozen) != 0) {
      // Posted before sleeping, so a live copier serving demands learns which
      // page this thread waits for (a later poster may overwrite it; the
      // overwritten thread posts again after its next wake-up).
      slot.demand.store(addr, std::memory_order_release);
      g_demands.fetch_add(1, std::memory_order_release);
      park(slot, reg, ctl);
      t_blind_retries = 0;
      return Verdict::kRetry;
    }
  }
  if (!matched) return Verdict::kNotOurs;
  // Ours but not frozen: a thaw restored PROT_WRITE before clearing frozen, so
  // the retry lands. Unless the caller broke that order: then don't spin forever.
  if (addr != t_blind_addr) {
    t_blind_addr = addr;
    t_blind_retries = 0;
  }
  if (++t_blind_retries > kMaxBlindRetries) {
    t_blind_retries = 0;
    return Verdict::kNotOurs;
  }
  return Verdict::kRetry;
}


void segv_handler(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;  // futex and sigaction may clobber it
  const Verdict verdict = handle_fault(info);
  errno = saved_errno;
  if (verdict == Verdict::kNotOurs) g_chain.pass(sig, info, context);
}

Status install_locked() {
  if (g_installed) return ok();
  // SA_NODEFER: a fault in a chained handler must not find SIGSEGV blocked
  // (the kernel would kill outright). SA_ONSTACK: stack overflows still land
  // on the thread's alternate stack, as ASan and friends expect.
  RAWDAX_RETURN_IF_ERROR(
      g_chain.install(SIGSEGV, segv_handler, SA_ONSTACK | SA_RESTART | SA_NODEFER, "segv parking"));
  g_installed = true;
  return ok();
}

Slot* slot_at(int slot) {
  if (slot < 0 || slot >= SegvParking::kMaxSlots) return nullptr;
  return &g_slots[slot];
}

}  // namespace

Result<int> SegvParking::register_range(void* start, size_t len) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(start);
  uintptr_t end = 0;
  if (start == nullptr || len == 0 || __builtin_add_overflow(begin, len, &end)) {
    return Error(std::errc::invalid_argument,
                 "segv parking: bad range of " + std::to_string(len) + " bytes");
  }
  std::lock_guard<std::mutex> lock(g_mu);
  RAWDAX_RETURN_IF_ERROR(install_locked());
  int index = -1;
  for (int i = 0; i < kMaxSlots; ++i) {
    if ((g_slots[i].reg.load(std::memory_order_relaxed) & kInUse) == 0) {
      index = i;
      break;
    }
  }
  if (index < 0) {
    return Error(std::errc::too_many_files_open,
                 "segv parking: all " + std::to_string(kMaxSlots) + " slots in use");
  }
  Slot& slot = g_slots[index];
  // Release, like unregister's clears: a handler still reading the previous
  // registration that sees one of these also sees `reg` changed. (C++20
  // release sequences no longer carry an earlier release to later stores.)
  slot.start.store(begin, std::memory_order_release);
  slot.end.store(end, std::memory_order_release);
  slot.parked.store(0, std::memory_order_relaxed);
  slot.stall_total_ns.store(0, std::memory_order_relaxed);
  slot.stall_max_ns.store(0, std::memory_order_relaxed);
  slot.demand.store(0, std::memory_order_relaxed);
  // Not frozen; unregister already cleared it, this only guards against a
  // stale set_frozen() on the free slot.
  slot.ctl.fetch_and(~kFrozen, std::memory_order_relaxed);
  if (g_high_water.load(std::memory_order_relaxed) <= index) {
    g_high_water.store(index + 1, std::memory_order_release);
  }
  const uint32_t reg = slot.reg.load(std::memory_order_relaxed);
  slot.reg.store((reg & ~kInUse) + kCountStep + kInUse, std::memory_order_release);
  return index;
}

void SegvParking::unregister_range(int slot_id) {
  Slot* slot = slot_at(slot_id);
  if (slot == nullptr) return;
  std::lock_guard<std::mutex> lock(g_mu);
  const uint32_t reg = slot->reg.load(std::memory_order_relaxed);
  if ((reg & kInUse) == 0) return;
  slot->reg.store((reg & ~kInUse) + kCountStep, std::memory_order_relaxed);
  // Release: a handler that reads a cleared field also sees `reg` cleared.
  slot->start.store(0, std::memory_order_release);
  slot->end.store(0, std::memory_order_release);
  // New epoch, not frozen: sleeping threads see the word change and leave.
  uint32_t ctl = slot->ctl.load(std::memory_order_relaxed);
  while (!slot->ctl.compare_exchange_weak(ctl, (ctl & ~kFrozen) + kCountStep,
                                          std::memory_order_seq_cst)) {
  }
  futex_wake_all(&slot->ctl);
  int high_water = g_high_water.load(std::memory_order_relaxed);
  while (high_water > 0 &&
         (g_slots[high_water - 1].reg.load(std::memory_order_relaxed) & kInUse) == 0) {
    --high_water;
  }
  g_high_water.store(high_water, std::memory_order_release);
}

void SegvParking::set_frozen(int slot_id, bool frozen) {
  Slot* slot = slot_at(slot_id);
  if (slot == nullptr || (slot->reg.load(std::memory_order_acquire) & kInUse) == 0) return;
  if (frozen) {
    // seq_cst, and the caller's mprotect() comes after: a store that faults
    // on the read-only page finds the slot frozen.
    uint32_t ctl = slot->ctl.load(std::memory_order_relaxed);
    while ((ctl & kFrozen) == 0 &&
           !slot->ctl.compare_exchange_weak(ctl, (ctl + kCountStep) | kFrozen,
                                            std::memory_order_seq_cst)) {
    }
    return;
  }
  if ((slot->ctl.fetch_and(~kFrozen, std::memory_order_seq_cst) & kFrozen) != 0) {
    futex_wake_all(&slot->ctl);
  }
}

void SegvParking::wake(int slot_id) {
  Slot* slot = slot_at(slot_id);
  if (slot == nullptr || (slot->reg.load(std::memory_order_acquire) & kInUse) == 0) return;
  // A new epoch, still frozen: sleepers see the word change, retry their
  // store, and park again (posting their demand anew) if it still faults.
  slot->ctl.fetch_add(kCountStep, std::memory_order_seq_cst);
  futex_wake_all(&slot->ctl);
}

uintptr_t SegvParking::take_demand(int slot_id) {
  Slot* slot = slot_at(slot_id);
  if (slot == nullptr) return 0;
  return slot->demand.exchange(0, std::memory_order_acquire);
}

uint32_t SegvParking::demand_count() { return g_demands.load(std::memory_order_acquire); }

SegvParking::Stats SegvParking::stats(int slot_id) {
  Stats stats;
  Slot* slot = slot_at(slot_id);
  if (slot == nullptr || (slot->reg.load(std::memory_order_acquire) & kInUse) == 0) return stats;
  stats.parked = slot->parked.load(std::memory_order_relaxed);
  stats.parked_now = slot->parked_now.load(std::memory_order_seq_cst);
  stats.stall_total_ns = slot->stall_total_ns.load(std::memory_order_relaxed);
  stats.stall_max_ns = slot->stall_max_ns.load(std::memory_order_relaxed);
  return stats;
}

}  // namespace rawdax::internal

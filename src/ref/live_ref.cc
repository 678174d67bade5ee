// LiveRef slow paths. The memory-ordering argument is in live_ref.h; the
// comments here name its steps ([A]..[D], "zero detection", "wake flag").
#include "ref/live_ref.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <thread>
#include <vector>

namespace rawdax::internal {

namespace live_ref_internal {
namespace {

// Slots are handed out lowest-free-first and returned at thread exit, so the
// threads alive at any time hold the slots 0..n-1: with n <= shards, no two
// live threads share a shard, however many threads came and went before.
// (A plain round-robin counter would pair a new thread with an old one
// after every `shards` thread creations.)
struct SlotTable {
  std::mutex mu;
  std::vector<bool> used;  // guarded by mu
};

SlotTable& slot_table() {
  static SlotTable* table = new SlotTable;  // never freed: threads exit late
  return *table;
}

// Returns the slot at thread exit. A separate thread_local from t_slot so
// that the hot path's t_slot stays trivially destructible (no TLS wrapper).
struct SlotLease {
  uint32_t slot = kNoSlot;
  ~SlotLease() {
    if (slot == kNoSlot) return;
    SlotTable& table = slot_table();
    std::lock_guard<std::mutex> lock(table.mu);
    table.used[slot] = false;
  }
};
thread_local SlotLease t_lease;

}  // namespace

uint32_t assign_thread_slot() {
  SlotTable& table = slot_table();
  uint32_t slot;
  {
    std::lock_guard<std::mutex> lock(table.mu);
    auto it = std::find(table.used.begin(), table.used.end(), false);
    slot = static_cast<uint32_t>(it - table.used.begin());
    if (it == table.used.end()) {
      table.used.push_back(true);
    } else {
      *it = true;
    }
  }
  t_lease.slot = slot;
  t_slot = slot;
  return slot;
}

}  // namespace live_ref_internal

namespace {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) &&
                  std::atomic<uint32_t>::is_always_lock_free,
              "futex words must be plain 32-bit atomics");

uint32_t* futex_addr(std::atomic<uint32_t>* word) { return reinterpret_cast<uint32_t*>(word); }

// Sleeps while *word == expected, at most `timeout` (nullptr: no limit).
// Spurious returns (EINTR, EAGAIN, timeout, stray wakes) are fine: every
// caller re-checks its condition in a loop.
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, const struct timespec* timeout) {
  syscall(SYS_futex, futex_addr(word), FUTEX_WAIT_PRIVATE, expected, timeout, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, futex_addr(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

// Wake words for sleeping waiters live outside any LiveRef so that a put()
// may bump one after its LiveRef was freed. Waiters pick theirs by hashing
// the LiveRef's address; collisions only cause spurious wake-ups.
struct alignas(64) WakeWord {
  std::atomic<uint32_t> seq{0};
};
constexpr int kWakeWordBits = 6;
WakeWord g_wake_words[1 << kWakeWordBits];

std::atomic<uint32_t>* wake_word_for(const void* ref) {
  const uint64_t key = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ref));
  const uint64_t hash = (key >> 6) * 0x9e3779b97f4a7c15ull;  // Fibonacci hashing
  return &g_wake_words[hash >> (64 - kWakeWordBits)].seq;
}

uint32_t next_pow2(uint32_t n) {
  uint32_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

uint32_t shard_count(int requested) {
  if (requested > 0) return next_pow2(static_cast<uint32_t>(std::min(requested, 4096)));
  // hardware_concurrency() may read /sys; ask once per process.
  static const uint32_t automatic = [] {
    unsigned ncpu = std::thread::hardware_concurrency();
    if (ncpu == 0) ncpu = 4;
    return next_pow2(std::clamp(2 * ncpu, 8u, 1024u));
  }();
  return automatic;
}

struct Deadline {
  std::chrono::steady_clock::time_point at;
  bool infinite;
};

Deadline make_deadline(std::chrono::nanoseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point now = Clock::now();
  if (timeout <= std::chrono::nanoseconds::zero()) return {now, false};
  // nanoseconds::max() (the default) and anything past the clock's range
  // mean "no limit"; adding them to now would overflow.
  if (timeout >= Clock::time_point::max() - now) return {now, true};
  return {now + std::chrono::duration_cast<Clock::duration>(timeout), false};
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "rawdax: LiveRef: %s\n", what);
  std::abort();
}

}  // namespace

LiveRef::LiveRef(int num_shards) {
  const uint32_t n = shard_count(num_shards);
  shards_ = std::make_unique<Shard[]>(n);
  mask_ = n - 1;
}

LiveRef::~LiveRef() = default;

bool LiveRef::tryget_slow(Access access, Shard& shard) {
  const int k = kind_index(access);
  for (;;) {
    // Holds the increment from [A]. Re-reading state is still step [B]: if
    // the ref was unfrozen meanwhile, the get is valid. Deciding before the
    // back-out keeps the back-out our last touch of *this when we fail.
    const uint64_t state = state_.load();
    if ((state & block_mask(access)) == 0) return true;
    const bool park = (state & kKilled) == 0;  // only a frozen writer gets here
    const uint64_t old = shard.puts[k].fetch_add(1);
    if ((old & kWakeFlag) != 0) wake_waiters(this);
    if (!park) return false;
    // Counted from before it sleeps to after it wakes: while a writer is
    // counted it holds no reference and has not returned, so its write has
    // not started (parked_writers()).
    parked_writers_.fetch_add(1);
    const bool unfrozen = wait_unfrozen();
    parked_writers_.fetch_sub(1);
    if (!unfrozen) return false;
    shard.gets[k].fetch_add(1);  // [A] again
  }
}

void LiveRef::wake_waiters(const void* self) {
  std::atomic<uint32_t>* word = wake_word_for(self);
  word->fetch_add(1);
  futex_wake_all(word);
}

bool LiveRef::wait_unfrozen() {
  for (;;) {
    // Sequence first, state second: an unfreeze/kill that lands after the
    // state load bumps the sequence, so the futex does not sleep on it.
    const uint32_t seq = gate_seq_.load();
    const uint64_t state = state_.load();
    if ((state & kKilled) != 0) return false;
    if (state == 0) return true;
    futex_wait(&gate_seq_, seq, nullptr);
  }
}

void LiveRef::kill() {
  if ((state_.fetch_or(kKilled) & kKilled) != 0) return;  // [C]; idempotent
  gate_seq_.fetch_add(1);
  futex_wake_all(&gate_seq_);  // parked writers fail
  wake_waiters(this);          // draining freezes return ENXIO
}

void LiveRef::add_waiter(Drain drain) {
  std::lock_guard<std::mutex> lock(waiters_mu_);
  ++(drain == Drain::kAll ? all_waiters_ : writer_waiters_);
  apply_wake_flags_locked();
}

void LiveRef::remove_waiter(Drain drain) {
  std::lock_guard<std::mutex> lock(waiters_mu_);
  --(drain == Drain::kAll ? all_waiters_ : writer_waiters_);
  apply_wake_flags_locked();
}

void LiveRef::apply_wake_flags_locked() {
  // Readers' puts only matter to wait_for_zero(); a freeze never wants a
  // wake-up per reader put (readers run at full speed through a freeze).
  const bool want[2] = {all_waiters_ > 0, all_waiters_ > 0 || writer_waiters_ > 0};
  for (int k = 0; k < 2; ++k) {
    // The mutex serializes flag changes, so the first shard tells the state
    // of all of them.
    const bool have = (shards_[0].puts[k].load() & kWakeFlag) != 0;
    if (have == want[k]) continue;
    for (uint32_t i = 0; i <= mask_; ++i) {
      if (want[k]) {
        shards_[i].puts[k].fetch_or(kWakeFlag);
      } else {
        shards_[i].puts[k].fetch_and(~kWakeFlag);
      }
    }
  }
}

bool LiveRef::observed_zero(Drain drain) const {
  // Zero detection: all puts first, then all gets (see live_ref.h).
  const bool readers = drain == Drain::kAll;
  uint64_t puts = 0;
  for (uint32_t i = 0; i <= mask_; ++i) {
    puts += shards_[i].puts[kind_index(Access::kWrite)].load() & ~kWakeFlag;
    if (readers) puts += shards_[i].puts[kind_index(Access::kRead)].load() & ~kWakeFlag;
  }
  uint64_t gets = 0;
  for (uint32_t i = 0; i <= mask_; ++i) {
    gets += shards_[i].gets[kind_index(Access::kWrite)].load();
    if (readers) gets += shards_[i].gets[kind_index(Access::kRead)].load();
  }
  return gets == puts;
}

Status LiveRef::drain_until_zero(Drain drain, std::chrono::steady_clock::time_point deadline,
                                 bool infinite, bool fail_if_killed) {
  std::atomic<uint32_t>* word = wake_word_for(this);
  for (;;) {
    // The wake word is read before the checks: a put or kill after them
    // bumps it, and the futex then refuses to sleep.
    const uint32_t seq = word->load();
    if (fail_if_killed && killed()) {
      return Error(std::errc::no_such_device_or_address, "live ref killed while draining");
    }
    if (observed_zero(drain)) return ok();
    struct timespec ts;
    const struct timespec* timeout = nullptr;
    if (!infinite) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        return Error(std::errc::timed_out, drain == Drain::kAll
                                               ? "live ref: references still held at timeout"
                                               : "live ref: writers still in flight at timeout");
      }
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      ts.tv_sec = static_cast<time_t>(ns / 1000000000);
      ts.tv_nsec = static_cast<long>(ns % 1000000000);
      timeout = &ts;
    }
    futex_wait(word, seq, timeout);
  }
}

Status LiveRef::wait_for_zero(std::chrono::nanoseconds timeout) {
  const Deadline deadline = make_deadline(timeout);
  if (observed_zero(Drain::kAll)) return ok();  // skips the wake-flag round trip
  add_waiter(Drain::kAll);
  Status status = drain_until_zero(Drain::kAll, deadline.at, deadline.infinite, false);
  remove_waiter(Drain::kAll);
  return status;
}

Status LiveRef::freeze(std::chrono::nanoseconds timeout) {
  const Deadline deadline = make_deadline(timeout);
  const uint64_t old = state_.fetch_add(kDepthOne);  // [C]: new writer gets park
  if ((old & kKilled) != 0) {
    drop_depth();
    return Error(std::errc::no_such_device_or_address, "live ref killed");
  }
  // A nested freeze over a drained ref returns here at once.
  if (observed_zero(Drain::kWriters)) return ok();  // [D]
  add_waiter(Drain::kWriters);
  Status status = drain_until_zero(Drain::kWriters, deadline.at, deadline.infinite, true);
  remove_waiter(Drain::kWriters);
  if (!status) drop_depth();
  return status;
}

void LiveRef::unfreeze() { drop_depth(); }

void LiveRef::drop_depth() {
  const uint64_t old = state_.fetch_sub(kDepthOne);
  const uint64_t depth = old >> kDepthShift;
  if (depth == 0) die("unfreeze() without a matching successful freeze()");
  if (depth == 1) {
    gate_seq_.fetch_add(1);
    futex_wake_all(&gate_seq_);
  }
}

int64_t LiveRef::count_slow(Access access) const {
  const int k = kind_index(access);
  uint64_t puts = 0;
  uint64_t gets = 0;
  for (uint32_t i = 0; i <= mask_; ++i) puts += shards_[i].puts[k].load() & ~kWakeFlag;
  for (uint32_t i = 0; i <= mask_; ++i) gets += shards_[i].gets[k].load();
  return static_cast<int64_t>(gets - puts);
}

int64_t LiveRef::count_slow() const {
  return count_slow(Access::kRead) + count_slow(Access::kWrite);
}

}  // namespace rawdax::internal

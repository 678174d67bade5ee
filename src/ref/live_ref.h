// LiveRef: a user-space percpu_ref plus the block layer's queue freeze.
//
// A LiveRef guards an object (a namespace, a mapping) that many threads use
// briefly and that must eventually be shut down or quiesced:
//
//   * tryget()/put() take and drop a reference. Two kinds exist: readers
//     (kRead) and writers (kWrite).
//   * kill() is the one-way shutdown switch: after it returns, every tryget()
//     fails. wait_for_zero() then waits for the references already held.
//   * freeze()/unfreeze() quiesce writers only, like blk_mq_freeze_queue():
//     new writer gets block (they park, they do not fail) and freeze() waits
//     until the writers already inside have put their references. Readers are
//     not affected. Freezes nest and may come from several threads.
//
// Typical use:
//
//   auto hold = ref.hold(rawdax::internal::LiveRef::Access::kWrite);
//   if (!hold) return rawdax::Error(std::errc::no_such_device_or_address, "...");
//   ... write; the reference is dropped when `hold` goes out of scope ...
//
// Hot path. tryget() and put() each do one atomic read-modify-write on a
// counter shard that is private to the calling thread in the common case
// (shards are cache-line sized; a thread's shard is fixed at its first use,
// lowest free slot first, so live threads spread over the shards), plus
// in tryget() one load of a read-mostly state word. Nothing is written to a
// cache line shared between threads. Everything else (kill, freeze, waits,
// count_slow) sums all shards and may sleep; those calls are slow on purpose.
//
// Counters. Each shard has, per kind, a monotonic `gets` and a monotonic
// `puts` counter. A reference is outstanding while its get increment is not
// matched by a put increment; only sums over all shards mean anything (a
// reference may be taken on one thread and put on another). A tryget() that
// fails after incrementing backs out by incrementing `puts` on the same shard,
// so a failed tryget is briefly counted; waits are therefore conservative.
//
// Memory ordering. Every access to the shard counters, the state word and
// the wake words is memory_order_seq_cst (all modifications of them too), so
// these accesses lie in one total order S that agrees with program order and
// with happens-before, and a load returns the last store before it in S.
// Three arguments rest on that:
//
//  1. get vs kill/freeze (Dekker, store->load on both sides). A getter does
//     [A] gets.fetch_add on its shard, then [B] state.load. A killer or
//     freezer does [C] a read-modify-write of state (set KILLED, or depth+1),
//     then [D] loads every shard. If B precedes C in S, then A < B < C < D,
//     so the scan counts the getter's increment (and keeps waiting for its
//     put). Otherwise B follows C and the getter sees KILLED (never cleared)
//     or the depth (unless that freeze was already undone) and backs out; a
//     writer then parks. At least one side sees the other. With weaker
//     orders (a release increment then an acquire load: the store-buffering
//     litmus test) both sides could miss each other. Hence a tryget() that
//     returns true incremented before kill()'s RMW of state, i.e. before
//     kill()'s linearization point.
//
//  2. Zero detection (wait_for_zero, and freeze's drain of writers). The
//     waiter first loads every `puts` counter, then every `gets` counter.
//     Let T be a point in S between the two phases. Every put in S before T
//     has its get before T (the get happens-before the put). Counters only
//     grow, so the puts read sum to at most P(T) and the gets read sum to at
//     least G(T), where P(T) <= G(T). If the sums are equal, G(T) = P(T): at T
//     no reference of the scanned kinds was outstanding. So a wait never
//     succeeds early, even while gets race with the scan; and after kill()
//     (or while a freeze stays in place, for writers) none can come back.
//
//  3. put vs a sleeping waiter (no lost wake-ups, no shared-line write in
//     put). A waiter that wants to be woken sets a WAKE flag bit inside the
//     `puts` counter of the relevant kind in every shard (an RMW) before it
//     scans. put()'s increment is an RMW on the same word, so in that word's
//     modification order it either follows the flag (put sees the flag in
//     the returned old value and wakes the waiter) or precedes it (the
//     waiter's flag RMW, and so its later scan, already includes the put).
//     The put then bumps a wake sequence word and futex-wakes it. The waiter
//     reads that word before scanning and futex-waits on the value read: a
//     bump after the read makes the futex return, and a bump before it is
//     read, so its put is visible to the scan. No wake-up is lost. The flag
//     costs a put a wake only while a waiter exists; it never costs a load.
//
// Lifetime. The LiveRef must outlive every call into it, as usual. put() is
// the one exception that makes teardown possible: after the put's increment
// (the moment a waiter can see the reference gone) it touches no member of
// *this; a wake goes through a static table of futex words. So the owner may
// destroy the LiveRef once kill() and then wait_for_zero() have returned,
// provided no tryget()/freeze()/unfreeze() calls are still running (they need
// the object until they return; e.g. unpublish the pointer first).
//
// Thread safety: every method may be called concurrently from any thread.
// Each put(kind) must pair with an earlier successful tryget(kind) of the
// same kind; it may run on another thread if the handover synchronizes
// (the get must happen-before the put). Each unfreeze() must pair with a
// successful freeze(). Breaking either pairing is a programming error.
#ifndef RAWDAX_REF_LIVE_REF_H_
#define RAWDAX_REF_LIVE_REF_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "rawdax/result.h"

namespace rawdax::internal {

namespace live_ref_internal {

// Slot of the calling thread, picking its shard (slot & mask) in every
// LiveRef; kNoSlot until first use. A plain constant-initialized
// thread_local, so reading it needs no TLS init call.
inline constexpr uint32_t kNoSlot = UINT32_MAX;
inline thread_local uint32_t t_slot = kNoSlot;

// Assigns t_slot, once per thread: the lowest slot no live thread holds (it
// is returned at thread exit), so live threads get distinct dense slots.
uint32_t assign_thread_slot();

inline uint32_t thread_slot() {
  const uint32_t slot = t_slot;
  if (slot != kNoSlot) [[likely]] return slot;
  return assign_thread_slot();
}

}  // namespace live_ref_internal

class LiveRef {
 public:
  enum class Access : int { kRead = 0, kWrite = 1 };

  // RAII reference: puts on destruction (or reset()). Move-only.
  class Hold {
   public:
    Hold(Hold&& other) noexcept
        : ref_(std::exchange(other.ref_, nullptr)), access_(other.access_) {}
    Hold& operator=(Hold&& other) noexcept {
      if (this != &other) {
        reset();
        ref_ = std::exchange(other.ref_, nullptr);
        access_ = other.access_;
      }
      return *this;
    }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold() { reset(); }

    // Drops the reference now; later calls and the destructor do nothing.
    void reset() {
      if (ref_ != nullptr) std::exchange(ref_, nullptr)->put(access_);
    }
    bool holds() const { return ref_ != nullptr; }
    Access access() const { return access_; }

   private:
    friend class LiveRef;
    Hold(LiveRef* ref, Access access) : ref_(ref), access_(access) {}

    LiveRef* ref_;
    Access access_;
  };

  // num_shards == 0 picks next_pow2(2 * ncpu), at least 8. Other values are
  // rounded up to a power of two (1 is allowed, e.g. for tests).
  explicit LiveRef(int num_shards = 0);
  ~LiveRef();

  LiveRef(const LiveRef&) = delete;
  LiveRef& operator=(const LiveRef&) = delete;

  // Takes a reference; false means none was taken. Every tryget() that
  // starts after kill() returned fails (one racing with kill() may go either
  // way). A writer blocks while the ref is frozen, then succeeds after the
  // last unfreeze() or fails if kill() comes first. Readers ignore freezes.
  [[nodiscard]] bool tryget(Access access);

  // Drops a reference taken by a successful tryget(access).
  void put(Access access);

  // tryget() wrapped in a Hold; std::nullopt when tryget() fails.
  [[nodiscard]] std::optional<Hold> hold(Access access) {
    if (!tryget(access)) return std::nullopt;
    return Hold(this, access);
  }

  // Makes every later tryget() fail and wakes writers parked on a freeze
  // (they fail) and freeze() calls still draining (they return ENXIO).
  // Idempotent. Does not wait for held references: see wait_for_zero().
  void kill();

  // Waits until no reference of either kind is outstanding. Returns
  // std::errc::timed_out if that was not observed within `timeout`. Without
  // kill() new gets may follow at once; success only says there was a moment
  // with none. A caller holding a reference itself waits out its timeout.
  Status wait_for_zero(std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max());

  // Blocks new writer gets, then waits until the writer references already
  // held are put. Nests: depth counts successful freezes not yet unfrozen.
  // On timeout the call's own depth increment is undone (releasing parked
  // writers if the depth returns to 0) and std::errc::timed_out is returned.
  // Returns std::errc::no_such_device_or_address if the ref is or becomes
  // killed before the drain completes (the depth increment is undone too).
  // As in the kernel, a caller holding a writer reference itself cannot
  // drain; it waits out its timeout.
  Status freeze(std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max());

  // Undoes one successful freeze(); at depth 0 parked writers resume.
  void unfreeze();

  bool killed() const { return (state_.load() & kKilled) != 0; }
  int freeze_depth() const { return static_cast<int>(state_.load() >> kDepthShift); }
  int num_shards() const { return static_cast<int>(mask_ + 1); }
  // Writers inside tryget() waiting for the last unfreeze (or a kill) now.
  // Each one counted has not started the work its reference guards.
  int64_t parked_writers() const { return parked_writers_.load(); }

  // Outstanding references (gets minus puts) summed over shards, for tests
  // and debugging. Not a snapshot: racing gets and puts may be half seen.
  int64_t count_slow() const;
  int64_t count_slow(Access access) const;

 private:
  // The state word: KILLED in bit 0, freeze depth above it. Written only by
  // kill/freeze/unfreeze, so it stays in every getter's cache.
  static constexpr uint64_t kKilled = 1;
  static constexpr int kDepthShift = 1;
  static constexpr uint64_t kDepthOne = uint64_t{1} << kDepthShift;

  // Flag inside a `puts` counter: a waiter sleeps and wants a wake-up.
  static constexpr uint64_t kWakeFlag = uint64_t{1} << 63;

  struct alignas(64) Shard {
    std::atomic<uint64_t> gets[2] = {0, 0};  // indexed by Access
    std::atomic<uint64_t> puts[2] = {0, 0};  // count | kWakeFlag
  };

  // Which kinds a drain waits for.
  enum class Drain { kWriters, kAll };

  static constexpr uint64_t block_mask(Access access) {
    return access == Access::kRead ? kKilled : ~uint64_t{0};
  }
  static constexpr int kind_index(Access access) { return static_cast<int>(access); }

  Shard& my_shard() const { return shards_[live_ref_internal::thread_slot() & mask_]; }

  bool tryget_slow(Access access, Shard& shard);
  // put()'s tail when the old `puts` value carried kWakeFlag. Static: by then
  // the LiveRef may already be gone; `self` is only a hash key.
  static void wake_waiters(const void* self);
  // Waits, without a count held, until depth is 0 (true) or killed (false).
  bool wait_unfrozen();
  // Registers/unregisters a sleeping waiter and maintains the wake flags.
  void add_waiter(Drain drain);
  void remove_waiter(Drain drain);
  void apply_wake_flags_locked();
  Status drain_until_zero(Drain drain, std::chrono::steady_clock::time_point deadline,
                          bool infinite, bool fail_if_killed);
  bool observed_zero(Drain drain) const;
  void drop_depth();

  // Read-mostly line: what the hot path reads.
  alignas(64) std::atomic<uint64_t> state_{0};
  std::unique_ptr<Shard[]> shards_;
  uint32_t mask_;

  // Slow-path state, on its own line so that it never disturbs the above.
  alignas(64) std::atomic<uint32_t> gate_seq_{0};  // futex: bumped on unfreeze-to-0/kill
  std::atomic<int64_t> parked_writers_{0};
  std::mutex waiters_mu_;
  int all_waiters_ = 0;     // guarded by waiters_mu_: wait_for_zero() sleepers
  int writer_waiters_ = 0;  // guarded by waiters_mu_: freeze() drainers
};

inline bool LiveRef::tryget(Access access) {
  Shard& shard = my_shard();
  shard.gets[kind_index(access)].fetch_add(1);  // [A] in the header comment
  if ((state_.load() & block_mask(access)) == 0) [[likely]] return true;  // [B]
  return tryget_slow(access, shard);
}

inline void LiveRef::put(Access access) {
  const uint64_t old = my_shard().puts[kind_index(access)].fetch_add(1);
  // Do not touch *this below: a waiter may have seen the put and freed us.
  if ((old & kWakeFlag) != 0) [[unlikely]] wake_waiters(this);
}

}  // namespace rawdax::internal

#endif  // RAWDAX_REF_LIVE_REF_H_

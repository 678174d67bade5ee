// SegvParking: the process-wide SIGSEGV handler that parks threads storing
// into write-frozen ranges (the mprotect protection engine, see
// mprotect_protector.h) until thaw, and passes every other SIGSEGV on to the
// handler that was installed before it.
//
// How a store is parked: the engine registers each writable mapping (a slot),
// marks the slot frozen and then mprotect()s the mapping PROT_READ. A
// user-mode store into it raises SIGSEGV/SEGV_ACCERR; the handler finds the
// slot by si_addr and sleeps on the slot's futex word until the word changes
// (thaw, or unregister). It then returns, so the faulting instruction runs
// again: after a thaw it lands; after an unregister it raises whatever the
// memory raises now (e.g. SIGBUS once a revoked namespace's pages were
// replaced). Only user-mode stores are covered: a kernel-mode write into a
// frozen mapping (read(2) into it, a syscall filling a struct there) does not
// raise SIGSEGV, it fails with EFAULT.
//
// Ordering the callers must keep (the handler relies on it):
//   freeze: set_frozen(slot, true), THEN mprotect(PROT_READ). A store that
//     faults has seen the read-only page, so the handler, running after the
//     fault, sees frozen (the mprotect syscall and the fault order the two).
//   thaw:   mprotect(PROT_READ | PROT_WRITE), THEN set_frozen(slot, false).
//     A woken store retries into a writable page and lands.
//   unregister: make the memory what later accesses should see (remap,
//     mprotect) BEFORE unregister_range(), which wakes parked threads.
// Reversing either order makes a faulting thread spin through the handler
// (it finds the range not frozen, returns, and the store faults again) until
// the other step happens; after 10000 such retries in a row on one address
// the fault is chained as not ours, which is usually fatal.
//
// A fault is "ours" when si_code is SEGV_ACCERR and si_addr lies in a
// registered range. If any registered range containing it is frozen, the
// thread parks; if none is, the handler returns at once (the race with a
// thaw). Anything else is chained to the previous action: its sa_sigaction
// or sa_handler is called; SIG_DFL (and SIG_IGN for a fault, as the kernel
// does) resets SIGSEGV to SIG_DFL and returns, so the instruction faults again
// and the process dies of SIGSEGV with its usual core dump; a SIGSEGV sent by
// kill()/raise() to a SIG_DFL process is raised again instead. The previous
// action's sa_mask and SA_RESETHAND are not emulated. A handler installed for
// SIGSEGV after ours replaces ours; nothing can detect that.
//
// Slot table protocol (a fixed static table, so the handler never touches
// memory that can be freed): each slot has `reg` (bit 0 in use, bits 1..31 a
// generation bumped on every register and unregister), the range fields, and
// the futex word `ctl` (bit 0 frozen, bits 1..31 an epoch bumped by every
// freeze and by unregister, so that no thaw+refreeze or unregister+register
// can leave the word unchanged under a sleeping thread). register_range()
// writes the range, then sets `reg` in use with a release store;
// unregister_range() clears `reg` first and then the range with release
// stores. The handler reads `reg` (acquire), the range (acquire), and `reg`
// again: if both reads agree and are in use, the range is the one published
// with that generation (a seqlock read). It sleeps only while `reg` and `ctl`
// still hold what it saw, with a 100 ms bounded FUTEX_WAIT so a missed wake
// can only delay it.
//
// Thread safety: every function is thread-safe. register_range() and
// unregister_range() take a process-wide mutex (never taken by the handler);
// set_frozen() and stats() are lock-free. Calling set_frozen() or stats()
// with a slot that is being unregistered at the same time is a caller error
// (the slot may already belong to someone else); it cannot corrupt the
// table. None of these functions is async-signal-safe; the handler is, and
// uses only atomics, clock_gettime, syscall(SYS_futex), sigaction and raise.
#ifndef RAWDAX_ENGINE_SEGV_PARKING_H_
#define RAWDAX_ENGINE_SEGV_PARKING_H_

#include <cstddef>
#include <cstdint>

#include "rawdax/result.h"

namespace rawdax::internal {

class SegvParking {
 public:
  // Registered ranges at once, process-wide.
  static constexpr int kMaxSlots = 4096;

  SegvParking() = delete;

  // Installs the SIGSEGV handler on first use (remembering the previous
  // action for chaining), then registers [start, start+len) and returns its
  // slot, not frozen. Errors: invalid_argument (null start, zero length,
  // wrap-around), too_many_files_open (table full), or sigaction's errno.
  // Ranges may overlap; a fault parks if any range holding it is frozen.
  static Result<int> register_range(void* start, size_t len);

  // Unregisters the slot and wakes the threads parked on it; they retry their
  // store against whatever the memory is now. A free or out-of-range slot is
  // ignored.
  static void unregister_range(int slot);

  // frozen=true: call BEFORE mprotect(PROT_READ). frozen=false: call AFTER
  // restoring PROT_WRITE; wakes the parked threads. Ignores free slots.
  static void set_frozen(int slot, bool frozen);

  // Live copy (a snapshot on this engine keeps slots frozen while a copier
  // makes chunks writable again one by one):
  // Wakes the slot's parked threads without thawing it; each retries its
  // store and parks again if the page is still read-only.
  static void wake(int slot);
  // The address some thread parked on this slot is waiting for, or 0; taking
  // it clears it. Parking posts the address, then bumps a process-wide
  // counter, demand_count(), which a copier polls between runs to learn that
  // some slot may have a new demand.
  static uintptr_t take_demand(int slot);
  static uint32_t demand_count();

  struct Stats {
    uint64_t parked = 0;          // stores parked and released while registered
    // Threads parked on the slot now, their stores not yet landed. A thread
    // parked on an earlier registration of the slot may still be counted
    // for the moment between its wake-up (the unregister) and its leaving.
    uint64_t parked_now = 0;
    uint64_t stall_total_ns = 0;  // time they spent parked
    uint64_t stall_max_ns = 0;
  };
  // Counters since register_range(); zeros for a free slot.
  static Stats stats(int slot);
};

// Owns one SegvParking slot: unregisters it on destruction. Move-only; not
// thread-safe itself (the calls it forwards are).
class SegvParkingRange {
 public:
  static Result<SegvParkingRange> create(void* start, size_t len) {
    Result<int> slot = SegvParking::register_range(start, len);
    if (!slot) return slot.error();
    return SegvParkingRange(*slot);
  }

  SegvParkingRange() = default;
  SegvParkingRange(SegvParkingRange&& other) noexcept : slot_(other.release()) {}
  SegvParkingRange& operator=(SegvParkingRange&& other) noexcept {
    if (this != &other) {
      reset();
      slot_ = other.release();
    }
    return *this;
  }
  SegvParkingRange(const SegvParkingRange&) = delete;
  SegvParkingRange& operator=(const SegvParkingRange&) = delete;
  ~SegvParkingRange() { reset(); }

  bool valid() const { return slot_ >= 0; }
  int slot() const { return slot_; }
  void set_frozen(bool frozen) const { SegvParking::set_frozen(slot_, frozen); }
  SegvParking::Stats stats() const { return SegvParking::stats(slot_); }
  int release() {
    int slot = slot_;
    slot_ = -1;
    return slot;
  }
  void reset() {
    if (slot_ >= 0) SegvParking::unregister_range(release());
  }

 private:
  explicit SegvParkingRange(int slot) : slot_(slot) {}
  int slot_ = -1;
};

}  // namespace rawdax::internal

#endif  // RAWDAX_ENGINE_SEGV_PARKING_H_

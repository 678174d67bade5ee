// UffdSigbus: the process-wide SIGBUS handler that hands a userfaultfd fault
// to the engine whose range it hit, on the faulting thread itself.
//
// A userfaultfd opened with UFFD_FEATURE_SIGBUS queues no message for a
// fault: the kernel raises SIGBUS (si_code BUS_ADRERR, si_addr the faulting
// address) in the thread that touched a protected page. The uffd engine in
// its faulting-thread mode (uffd_protector.h) adds each mapping it registers
// here, and the handler calls that engine's on_fault() for the page: the
// engine copies, marks or waits, unprotects, and returns, and the store is
// retried when the handler returns. That saves the handler thread's round
// trip (queue, wake the thread, answer, wake the writer): about half the
// stall of a copy-before-write on our machines (docs/benchmarks.md).
//
// What is not ours is chained to the action installed before this one
// (SignalChain, exactly as SafeCopy and SegvParking chain): a SIGBUS whose
// si_code is not BUS_ADRERR (poison: BUS_MCEERR_*), or whose address lies in
// no added range. A revoked mapping's placeholder raises BUS_ADRERR too: the
// engine removes the range when the revocation reaches it, and the retried
// access then finds no range and is chained, so the application gets its
// SIGBUS. A handler installed for SIGBUS after ours replaces ours unless it
// chains; nothing can detect that.
//
// Ordering and the engine's lifetime. add() and remove() change the range
// table under a process-wide mutex; the handler looks the address up under
// the same mutex and, still holding it, counts itself into the client's
// in-flight count before it lets go. So once remove() of a client's last
// range has returned, no handler can find the client any more, and
// quiesce() waits for those that found it before (the count falls to zero,
// std::atomic::wait/notify). The client is destroyed only after quiesce().
//
// Why a mutex and not a lock-free table as SegvParking's: the handler runs
// on the thread whose store faulted. No code of ours stores into an
// application's mapping while holding this mutex or an engine's, so the
// interrupted thread never holds a lock the handler takes; the handler
// allocates nothing (TSan's signal-unsafe check holds it to that) and saves
// and restores errno. Stores the application makes from inside its own
// SIGBUS handler while holding a lock it takes nowhere else are fine too.
//
// Thread safety: every function is thread-safe. None may be called from the
// handler's clients' on_fault().
#ifndef RAWDAX_ENGINE_UFFD_SIGBUS_H_
#define RAWDAX_ENGINE_UFFD_SIGBUS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "rawdax/result.h"

namespace rawdax::internal {

struct UffdSigbusHandler;

class UffdSigbus {
 public:
  class Client {
   public:
    // Runs on the faulting thread, inside the SIGBUS handler, for a fault at
    // `addr` (not rounded) in a range this client added. Returns true when the
    // access should be retried (resolved, waited for, or raced with a
    // removal), false to chain the signal as not ours. Must not allocate.
    virtual bool on_fault(std::byte* addr) = 0;

   protected:
    ~Client() = default;

   private:
    friend class UffdSigbus;
    friend struct UffdSigbusHandler;
    std::atomic<uint32_t> in_flight_{0};  // handlers inside on_fault()
  };

  UffdSigbus() = delete;

  // Installs the handler on first use, then routes faults on
  // [start, start+len) to `client`. Errors: sigaction's.
  static Status add(Client* client, std::byte* start, uint64_t len);
  // Stops routing the range that starts at `start` (no-op if none).
  static void remove(const std::byte* start);
  // Waits until no handler is inside `client`; call once all its ranges are
  // removed, before destroying it.
  static void quiesce(Client* client);
  // Whether `addr` lies in an added range: a SIGBUS handler installed after
  // ours that would swallow a BUS_ADRERR there must chain it instead.
  static bool owns(const void* addr);
};

}  // namespace rawdax::internal

#endif  // RAWDAX_ENGINE_UFFD_SIGBUS_H_

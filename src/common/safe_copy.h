// SafeCopy: memcpy and memset over namespace memory that survive the memory
// failing. A load from poisoned pmem/CXL memory (an uncorrectable media
// error the kernel reports) raises SIGBUS with si_code BUS_MCEERR_AR; so does
// a page the kernel has marked hwpoisoned, and a page of a backing file that
// someone else truncated (BUS_ADRERR). Without this, one client's read of a
// bad range kills the daemon and every other client with it. With it, the
// copy stops, and the caller learns where and why (MediaFault) and fails
// that one request with EIO. This is the user-space analogue of the
// kernel's copy_mc_to_kernel().
//
// How: a process-wide SIGBUS handler and a per-thread recovery point. A
// guarded copy publishes, in a thread-local, a sigjmp_buf and the range of
// namespace memory it touches (the guard), then copies. The handler recovers
// only when all of these hold: the faulting thread has a recovery point
// published, si_code is one a memory access raises (BUS_ADRERR, BUS_OBJERR,
// BUS_MCEERR_AR, BUS_MCEERR_AO), and si_addr lies in the guard. It then
// records si_code, si_addr and si_addr_lsb in the recovery point and
// siglongjmp()s back into the copy function, which returns the fault.
// Everything else is chained to the action installed before ours, exactly as
// SegvParking chains SIGSEGV: a user's load or store into a revoked Mapping
// (DeviceCore replaces its pages by a zero-length memfd: BUS_ADRERR outside
// any guard) still gets its SIGBUS, and a fault in the caller's own buffer
// (outside the guard) is not hidden either. The previous action's sa_mask
// and SA_RESETHAND are not emulated; a handler installed for SIGBUS after
// ours replaces ours, so such a handler must chain (tests/fault_catcher.h
// does).
//
// Ordering and async-signal-safety. A SIGBUS raised by an access is
// synchronous: the kernel delivers it to the thread that made the access, on
// that thread, between two of its instructions. So the handler and the copy
// it interrupts run on one thread, and the only ordering needed is the
// compiler's: the copy function stores the recovery pointer, then a
// std::atomic_signal_fence, then copies, then a fence, then clears it. The
// handler reads only that thread-local (initial-exec TLS, so no
// __tls_get_addr allocation), writes plain fields of the recovery point (on
// the copying thread's stack, alive while published), and calls
// siglongjmp; the chaining path uses only sigaction and raise. All are
// async-signal-safe. Jumping out of the handler abandons only memcpy/memset,
// which hold no locks and no state. The jump does not restore the signal
// mask (sigsetjmp(.., 0): no sigprocmask syscall per copy), which is
// correct because the handler runs with SA_NODEFER and an empty sa_mask:
// the mask inside it is the mask of the copy. BUS_MCEERR_AO (action
// optional) is only sent to processes that asked for early kill
// (PR_MCE_KILL); one that arrives while this thread copies from the
// reported page fails the copy like AR, otherwise it is chained.
//
// Thread safety: every function is thread-safe; install() takes a
// process-wide mutex the handler never touches. Copies may nest (the outer
// recovery point is restored after the inner copy).
#ifndef RAWDAX_COMMON_SAFE_COPY_H_
#define RAWDAX_COMMON_SAFE_COPY_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "rawdax/result.h"

namespace rawdax::internal {

// Why and where a guarded copy stopped.
struct MediaFault {
  int code = 0;        // si_code: BUS_MCEERR_AR, BUS_MCEERR_AO, BUS_ADRERR, BUS_OBJERR
  uintptr_t addr = 0;  // si_addr: the address whose access faulted
  // For BUS_MCEERR_*: log2 of the poisoned unit the kernel reports (12 for a
  // 4 KiB page, 21 for a 2 MiB one); 0 otherwise.
  unsigned lsb = 0;

  bool poison() const;
  // "BUS_MCEERR_AR (memory poison)", "BUS_ADRERR (backing object cut short)", ...
  std::string describe() const;
};

class SafeCopy {
 public:
  SafeCopy() = delete;

  // Installs the SIGBUS handler once (remembering the previous action for
  // chaining). The copies call it themselves; calling it early turns a
  // sigaction failure into an error at a convenient place.
  static Status install();

  // memcpy(dst, src, n) where src is namespace memory that may fail.
  static std::optional<MediaFault> copy_from(void* dst, const void* src, size_t n);
  // memcpy(dst, src, n) where dst is namespace memory that may fail.
  static std::optional<MediaFault> copy_to(void* dst, const void* src, size_t n);
  // memset(dst, byte, n) where dst is namespace memory that may fail.
  static std::optional<MediaFault> fill(void* dst, int byte, size_t n);
  // Runs fn(arg) with [guard, guard+len) guarded: other walks over namespace
  // memory (a cache-line flush loop). fn must be as safe to abandon midway
  // as memcpy: no locks taken, nothing allocated.
  static std::optional<MediaFault> run(const void* guard, size_t len, void (*fn)(void*),
                                       void* arg);

  // Guarded copies that faulted, process-wide (tests; statistics).
  static uint64_t recovered();
};

}  // namespace rawdax::internal

#endif  // RAWDAX_COMMON_SAFE_COPY_H_

#include "common/safe_copy.h"

#include <setjmp.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "common/signal_chain.h"

namespace rawdax::internal {
namespace {

// The kernel's values (asm-generic/siginfo.h), for libcs that lack them.
#ifndef BUS_MCEERR_AR
#define BUS_MCEERR_AR 4
#endif
#ifndef BUS_MCEERR_AO
#define BUS_MCEERR_AO 5
#endif

// One guarded copy in progress on this thread. Lives on the copying
// thread's stack; the fault fields are written by the handler and read
// after the jump, hence volatile.
struct Recovery {
  sigjmp_buf jump;
  uintptr_t begin = 0;
  uintptr_t end = 0;
  volatile int code = 0;
  volatile uintptr_t addr = 0;
  volatile unsigned lsb = 0;
};

// Initial-exec: reading it in the handler never calls __tls_get_addr.
[[gnu::tls_model("initial-exec")]] thread_local Recovery* t_recovery = nullptr;

SignalChain g_chain;  // the SIGBUS action before ours
std::atomic<bool> g_installed{false};
std::mutex g_install_mu;  // never taken by the handler
std::atomic<uint64_t> g_recovered{0};

bool is_access_code(int code) {
  return code == BUS_ADRERR || code == BUS_OBJERR || code == BUS_MCEERR_AR ||
         code == BUS_MCEERR_AO;
}


void bus_handler(int sig, siginfo_t* info, void* context) {
  Recovery* rec = t_recovery;
  if (rec != nullptr && is_access_code(info->si_code)) {
    const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
    if (addr >= rec->begin && addr < rec->end) {
      rec->code = info->si_code;
      rec->addr = addr;
      rec->lsb = (info->si_code == BUS_MCEERR_AR || info->si_code == BUS_MCEERR_AO)
                     ? static_cast<unsigned>(info->si_addr_lsb)
                     : 0;
      g_recovered.fetch_add(1, std::memory_order_relaxed);  // lock-free
      siglongjmp(rec->jump, 1);
    }
  }
  const int saved_errno = errno;
  g_chain.pass(sig, info, context);
  errno = saved_errno;
}

Status install_once() {
  if (g_installed.load(std::memory_order_acquire)) return ok();
  std::lock_guard<std::mutex> lock(g_install_mu);
  if (g_installed.load(std::memory_order_relaxed)) return ok();
  // SA_NODEFER and an empty mask: the handler runs with the copy's signal
  // mask, so jumping out without restoring a mask is correct (see header).
  // SA_ONSTACK: like SegvParking, for threads that run on an alternate stack.
  RAWDAX_RETURN_IF_ERROR(
      g_chain.install(SIGBUS, bus_handler, SA_ONSTACK | SA_RESTART | SA_NODEFER, "safe copy"));
  g_installed.store(true, std::memory_order_release);
  return ok();
}

enum class Op { kCopy, kFill, kRun };

struct Work {
  Op op;
  void* dst;
  const void* src;
  size_t n;
  int byte;
  void (*fn)(void*);
};

// Out of line, so the copy sits between the fences in one frame that
// sigsetjmp() saved and that stays alive until the jump.
[[gnu::noinline]] void do_work(const Work& w) {
  // An empty span may come with null pointers, which memcpy must not get.
  switch (w.op) {
    case Op::kCopy: if (w.n != 0) std::memcpy(w.dst, w.src, w.n); break;
    case Op::kFill: if (w.n != 0) std::memset(w.dst, w.byte, w.n); break;
    case Op::kRun: w.fn(w.dst); break;
  }
}

[[gnu::noinline]] std::optional<MediaFault> guarded(const void* guard, size_t len, const Work& w) {
  if (len == 0) {
    do_work(w);
    return std::nullopt;
  }
  if (!install_once()) {
    // No handler (sigaction failed: cannot happen for a valid signal): copy
    // unguarded, as before this existed.
    do_work(w);
    return std::nullopt;
  }
  Recovery rec;
  rec.begin = reinterpret_cast<uintptr_t>(guard);
  rec.end = len > UINTPTR_MAX - rec.begin ? UINTPTR_MAX : rec.begin + len;
  Recovery* const outer = t_recovery;
  if (sigsetjmp(rec.jump, 0) != 0) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    t_recovery = outer;
    return MediaFault{rec.code, rec.addr, rec.lsb};
  }
  t_recovery = &rec;
  // The handler, on this thread, must see the recovery point before the
  // copy's first access, and the copy must not be moved past the clear.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  do_work(w);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_recovery = outer;
  return std::nullopt;
}

}  // namespace

bool MediaFault::poison() const { return code == BUS_MCEERR_AR || code == BUS_MCEERR_AO; }

std::string MediaFault::describe() const {
  switch (code) {
    case BUS_MCEERR_AR: return "BUS_MCEERR_AR (memory poison consumed)";
    case BUS_MCEERR_AO: return "BUS_MCEERR_AO (memory poison reported)";
    case BUS_ADRERR: return "BUS_ADRERR (backing object cut short or unmapped)";
    case BUS_OBJERR: return "BUS_OBJERR (backing object error)";
  }
  return "SIGBUS code " + std::to_string(code);
}

Status SafeCopy::install() { return install_once(); }

std::optional<MediaFault> SafeCopy::copy_from(void* dst, const void* src, size_t n) {
  return guarded(src, n, Work{Op::kCopy, dst, src, n, 0, nullptr});
}

std::optional<MediaFault> SafeCopy::copy_to(void* dst, const void* src, size_t n) {
  return guarded(dst, n, Work{Op::kCopy, dst, src, n, 0, nullptr});
}

std::optional<MediaFault> SafeCopy::fill(void* dst, int byte, size_t n) {
  return guarded(dst, n, Work{Op::kFill, dst, nullptr, n, byte, nullptr});
}

std::optional<MediaFault> SafeCopy::run(const void* guard, size_t len, void (*fn)(void*),
                                        void* arg) {
  return guarded(guard, len, Work{Op::kRun, arg, nullptr, 0, 0, fn});
}

uint64_t SafeCopy::recovered() { return g_recovered.load(std::memory_order_relaxed); }

}  // namespace rawdax::internal

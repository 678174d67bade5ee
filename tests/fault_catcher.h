// Runs code that may raise SIGBUS and reports it instead of dying: the
// test-side equivalent of catching a revoked mapping's fault. A SIGBUS the
// uffd engine raises to resolve a fault in the faulting thread
// (engine/uffd_sigbus.h) is passed on to it, as any application's SIGBUS
// handler must. SIGSEGV is left
// alone: the mprotect engine's parking handler owns it. A SIGBUS outside
// run_catching_faults() goes to the handler installed before (rawdax's
// guarded copies, common/safe_copy.h, rely on that when it is theirs).
#ifndef RAWDAX_TESTS_FAULT_CATCHER_H_
#define RAWDAX_TESTS_FAULT_CATCHER_H_

#include <setjmp.h>
#include <signal.h>

#include <atomic>
#include <mutex>

#include "engine/uffd_sigbus.h"

namespace rawdax::testing {

inline thread_local sigjmp_buf* t_fault_jump = nullptr;
inline struct sigaction g_fault_prev = {};

inline void fault_handler(int sig, siginfo_t* info, void* context) {
  // A fault the uffd engine resolves in the faulting thread is its own, even
  // inside run_catching_faults(): chained to it below.
  const bool uffd_fault = info->si_code == BUS_ADRERR && internal::UffdSigbus::owns(info->si_addr);
  if (t_fault_jump != nullptr && !uffd_fault) siglongjmp(*t_fault_jump, sig);
  // Not ours: chain, or die as the signal would have made us.
  if ((g_fault_prev.sa_flags & SA_SIGINFO) != 0 && g_fault_prev.sa_sigaction != nullptr) {
    g_fault_prev.sa_sigaction(sig, info, context);
    return;
  }
  if (g_fault_prev.sa_handler != SIG_DFL && g_fault_prev.sa_handler != SIG_IGN) {
    g_fault_prev.sa_handler(sig);
    return;
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

inline void install_fault_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa = {};
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &g_fault_prev);
  });
}

// Returns 0 if fn() returned, or SIGBUS if it raised that.
template <typename Fn>
int run_catching_faults(Fn&& fn) {
  install_fault_handlers();
  sigjmp_buf jump;
  int sig = sigsetjmp(jump, 1);
  if (sig != 0) {
    t_fault_jump = nullptr;
    return sig;
  }
  t_fault_jump = &jump;
  // The handler reads t_fault_jump: keep the compiler from moving or
  // dropping these stores around the faulting code.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  fn();
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_fault_jump = nullptr;
  return 0;
}

}  // namespace rawdax::testing

#endif  // RAWDAX_TESTS_FAULT_CATCHER_H_

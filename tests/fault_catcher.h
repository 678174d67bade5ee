// Runs code that may raise SIGBUS and reports it instead of dying: the
// test-side equivalent of catching a revoked mapping's fault. SIGSEGV is left
// alone: the mprotect engine's parking handler owns it.
#ifndef RAWDAX_TESTS_FAULT_CATCHER_H_
#define RAWDAX_TESTS_FAULT_CATCHER_H_

#include <setjmp.h>
#include <signal.h>

#include <atomic>
#include <mutex>

namespace rawdax::testing {

inline thread_local sigjmp_buf* t_fault_jump = nullptr;

inline void fault_handler(int sig, siginfo_t*, void*) {
  if (t_fault_jump != nullptr) siglongjmp(*t_fault_jump, sig);
  ::signal(sig, SIG_DFL);  // not ours: die as the signal would have made us
  ::raise(sig);
}

inline void install_fault_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa = {};
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, nullptr);
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

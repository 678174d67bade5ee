// SignalChain: our handler for a synchronous fault signal (SIGSEGV, SIGBUS)
// in front of whatever was installed before, which gets every fault that is
// not ours. SegvParking (SIGSEGV) and SafeCopy (SIGBUS) each own one.
//
// install() swaps our action in with one sigaction() call, so no handler
// installed meanwhile is lost, and keeps the previous action. pass() hands a
// signal to it from inside our handler: its handler, or the default action
// (returning redoes the faulting access, which then takes it; a signal that
// redoing cannot raise again, one sent with kill() or a BUS_MCEERR_AO, is
// raised anew). The previous action's sa_mask and SA_RESETHAND are not
// emulated.
//
// Ordering: install() writes the previous action and then publishes it with
// a release store; pass() reads it only after an acquire load sees that.
// A fault that arrives in between (during installation) is not passed:
// returning redoes the access, by then with the previous action known.
// pass() uses only sigaction() and raise(): async-signal-safe.
//
// Thread safety: install() must be serialized by the owner (each calls it
// under its own mutex, once); pass() may run on any thread at any time.
#ifndef RAWDAX_COMMON_SIGNAL_CHAIN_H_
#define RAWDAX_COMMON_SIGNAL_CHAIN_H_

#include <signal.h>

#include <atomic>

#include "rawdax/result.h"

namespace rawdax::internal {

class SignalChain {
 public:
  constexpr SignalChain() = default;
  SignalChain(const SignalChain&) = delete;
  SignalChain& operator=(const SignalChain&) = delete;

  // Installs `handler` for `sig` with `flags` (SA_SIGINFO is added) and an
  // empty mask. The error names `who`.
  Status install(int sig, void (*handler)(int, siginfo_t*, void*), int flags, const char* who);

  // Hands the signal to the action installed before ours.
  void pass(int sig, siginfo_t* info, void* context) const;

 private:
  struct sigaction previous_ = {};
  std::atomic<bool> ready_{false};
};

}  // namespace rawdax::internal

#endif  // RAWDAX_COMMON_SIGNAL_CHAIN_H_

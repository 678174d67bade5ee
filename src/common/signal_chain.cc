#include "common/signal_chain.h"

#include <cerrno>
#include <string>

// The kernel's value (asm-generic/siginfo.h), for libcs that lack it.
#ifndef BUS_MCEERR_AO
#define BUS_MCEERR_AO 5
#endif

namespace rawdax::internal {

namespace {

void reset_to_default(int sig) {
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
}

}  // namespace

Status SignalChain::install(int sig, void (*handler)(int, siginfo_t*, void*), int flags,
                            const char* who) {
  struct sigaction action = {};
  action.sa_sigaction = handler;
  action.sa_flags = SA_SIGINFO | flags;
  sigemptyset(&action.sa_mask);
  if (::sigaction(sig, &action, &previous_) != 0) {
    return errno_error(errno, std::string(who) + ": sigaction(" + std::to_string(sig) + ")");
  }
  ready_.store(true, std::memory_order_release);
  return ok();
}

void SignalChain::pass(int sig, siginfo_t* info, void* context) const {
  if (!ready_.load(std::memory_order_acquire)) return;
  const struct sigaction& prev = previous_;
  const bool sent = info->si_code <= 0;  // kill(), sigqueue(), tgkill(): no instruction to redo
  if (prev.sa_handler == SIG_IGN && sent) return;
  if (prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN) {
    // The kernel kills on an ignored synchronous fault too. Returning redoes
    // the faulting instruction, which then takes the default action itself;
    // what redoing cannot raise again is raised here.
    reset_to_default(sig);
    if (sent || (sig == SIGBUS && info->si_code == BUS_MCEERR_AO)) ::raise(sig);
    return;
  }
  if ((prev.sa_flags & SA_SIGINFO) != 0) {
    prev.sa_sigaction(sig, info, context);
  } else {
    prev.sa_handler(sig);
  }
}

}  // namespace rawdax::internal

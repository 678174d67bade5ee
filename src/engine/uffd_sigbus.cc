#include "engine/uffd_sigbus.h"

#include <signal.h>

#include <cerrno>
#include <map>
#include <mutex>

#include "common/signal_chain.h"

namespace rawdax::internal {
namespace {

struct Range {
  uint64_t len;
  UffdSigbus::Client* client;
};

// Constant-initialized, so usable before main() (a SIGBUS handler of a
// program that runs before main may call owns()); the table is made on first
// use, by add().
constinit std::mutex g_mu;           // guards the table and g_installed
constinit bool g_installed = false;  // guarded by g_mu
constinit SignalChain g_chain;

std::map<const std::byte*, Range>& ranges() {  // by start; guarded by g_mu
  static std::map<const std::byte*, Range> table;
  return table;
}

// The range holding `addr`, or end(). g_mu held.
// Null before the first add().
Range* find_locked(const void* addr) {
  if (!g_installed) return nullptr;
  auto* a = static_cast<const std::byte*>(addr);
  auto& table = ranges();
  auto it = table.upper_bound(a);
  if (it == table.begin()) return nullptr;
  --it;
  return a < it->first + it->second.len ? &it->second : nullptr;
}

}  // namespace

// The handler's part of the client protocol; a friend of Client.
struct UffdSigbusHandler {
  static void on_sigbus(int sig, siginfo_t* info, void* context) {
    const int saved_errno = errno;
    bool retry = false;
    if (info->si_code == BUS_ADRERR) {
      auto* addr = static_cast<std::byte*>(info->si_addr);
      UffdSigbus::Client* client = nullptr;
      {
        std::lock_guard<std::mutex> lock(g_mu);
        if (Range* range = find_locked(addr)) {
          client = range->client;
          client->in_flight_.fetch_add(1, std::memory_order_relaxed);
        }
      }
      if (client != nullptr) {
        retry = client->on_fault(addr);
        // Release: what on_fault() did happens before quiesce() returns.
        if (client->in_flight_.fetch_sub(1, std::memory_order_release) == 1) {
          client->in_flight_.notify_all();
        }
      }
    }
    errno = saved_errno;
    if (!retry) g_chain.pass(sig, info, context);
  }
};

Status UffdSigbus::add(Client* client, std::byte* start, uint64_t len) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_installed) {
    // SA_NODEFER: a guarded copy (SafeCopy) under on_fault() may take its
    // own SIGBUS. SA_ONSTACK: as SafeCopy and SegvParking.
    RAWDAX_RETURN_IF_ERROR(g_chain.install(SIGBUS, UffdSigbusHandler::on_sigbus,
                                           SA_ONSTACK | SA_RESTART | SA_NODEFER,
                                           "uffd engine (faults in the faulting thread)"));
    g_installed = true;
  }
  ranges()[start] = Range{len, client};
  return ok();
}

void UffdSigbus::remove(const std::byte* start) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_installed) ranges().erase(start);
}

bool UffdSigbus::owns(const void* addr) {
  std::lock_guard<std::mutex> lock(g_mu);
  return find_locked(addr) != nullptr;
}

void UffdSigbus::quiesce(Client* client) {
  for (uint32_t n; (n = client->in_flight_.load(std::memory_order_acquire)) != 0;) {
    client->in_flight_.wait(n, std::memory_order_acquire);
  }
}

}  // namespace rawdax::internal

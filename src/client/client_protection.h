// NamespaceProtection: the write-protection of one namespace's mappings in a
// client process (ClientNamespace::map), driven by the daemon's FREEZE and
// THAW events (docs/control.md) so that a freeze taken through the daemon
// stops this process's stores too.
//
// Mechanism: the mprotect engine's pieces, usable on any raw MAP_SHARED
// mapping. Each writable mapping gets a SegvParking slot; freeze marks the
// slot frozen and then mprotect()s the mapping PROT_READ, so a store raises
// SIGSEGV and the process-wide handler parks the storing thread until thaw
// (see engine/segv_parking.h, whose ordering rules this follows). Kernel-mode
// writes into a frozen mapping (read(2) into it) fail with EFAULT instead.
//
// Tokens: every outermost freeze in the daemon has a new, larger token; THAW
// carries the token of the freeze it ends. A freeze whose token is not above
// the last thawed one is stale (a reply that crossed its THAW on the wire)
// and protects nothing.
//
// Thread safety: all methods are thread-safe (one mutex; stores never take
// it). The owner of a mapping must not store into it while removing it.
#ifndef RAWDAX_CLIENT_CLIENT_PROTECTION_H_
#define RAWDAX_CLIENT_CLIENT_PROTECTION_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>

#include "engine/segv_parking.h"
#include "rawdax/result.h"

namespace rawdax::detail {

class NamespaceProtection {
 public:
  NamespaceProtection() = default;
  NamespaceProtection(const NamespaceProtection&) = delete;
  NamespaceProtection& operator=(const NamespaceProtection&) = delete;

  // Watches the writable mapping [base, base+len) and returns its key; while
  // frozen it is write-protected before this returns. Errors: SegvParking's
  // (table full) or mprotect's errno; then nothing is watched.
  Result<uint64_t> add(void* base, size_t len);
  // Unmaps the mapping of `key` and forgets it (unmap first: threads parked on
  // it retry against what is mapped there now). Unknown keys are ignored.
  void remove_and_unmap(uint64_t key);

  // FREEZE: write-protects every watched mapping. Errors: mprotect's errno
  // (the mappings protected so far stay so until thaw()).
  Status freeze(uint64_t token);
  // THAW: writable again, parked stores resume.
  void thaw(uint64_t token);
  bool frozen() const;

 private:
  struct Entry {
    void* base = nullptr;
    size_t len = 0;
    internal::SegvParkingRange range;
  };
  static Status protect(Entry& entry);
  static void unprotect(Entry& entry);

  mutable std::mutex mu_;
  bool frozen_ = false;          // guarded by mu_
  uint64_t thawed_token_ = 0;    // guarded by mu_: the last THAW's
  std::map<uint64_t, Entry> entries_;  // guarded by mu_
  uint64_t next_key_ = 1;        // guarded by mu_
};

}  // namespace rawdax::detail

#endif  // RAWDAX_CLIENT_CLIENT_PROTECTION_H_

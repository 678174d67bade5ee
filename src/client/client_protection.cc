#include "client/client_protection.h"

#include <sys/mman.h>

#include <cerrno>

namespace rawdax::detail {

// SegvParking's order: frozen before read-only, so a store that faults finds
// its slot frozen; writable before not frozen, so a woken store lands.
Status NamespaceProtection::protect(Entry& entry) {
  entry.range.set_frozen(true);
  if (::mprotect(entry.base, entry.len, PROT_READ) != 0) {
    return errno_error(errno, "client mapping: mprotect");
  }
  return ok();
}

void NamespaceProtection::unprotect(Entry& entry) {
  // Cannot fail on a range this process mapped read-write: the VMA splits
  // that PROT_READ made are merged back, never added.
  (void)::mprotect(entry.base, entry.len, PROT_READ | PROT_WRITE);
  entry.range.set_frozen(false);
}

Result<uint64_t> NamespaceProtection::add(void* base, size_t len) {
  auto range = internal::SegvParkingRange::create(base, len);
  if (!range) return range.error();
  std::lock_guard<std::mutex> lock(mu_);
  Entry entry{base, len, std::move(*range)};
  if (frozen_) RAWDAX_RETURN_IF_ERROR(protect(entry));
  uint64_t key = next_key_++;
  entries_.emplace(key, std::move(entry));
  return key;
}

void NamespaceProtection::remove_and_unmap(uint64_t key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  ::munmap(it->second.base, it->second.len);
  entries_.erase(it);  // unregisters the slot, waking parked threads
}

Status NamespaceProtection::freeze(uint64_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  if (token <= thawed_token_) return ok();  // already thawed
  frozen_ = true;
  for (auto& [key, entry] : entries_) RAWDAX_RETURN_IF_ERROR(protect(entry));
  return ok();
}

void NamespaceProtection::thaw(uint64_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  if (token > thawed_token_) thawed_token_ = token;
  if (!frozen_) return;
  frozen_ = false;
  for (auto& [key, entry] : entries_) unprotect(entry);
}

bool NamespaceProtection::frozen() const {
  std::lock_guard<std::mutex> lock(mu_);
  return frozen_;
}

}  // namespace rawdax::detail

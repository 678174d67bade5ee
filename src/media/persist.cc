#include "media/persist.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define RAWDAX_X86 1
#endif

namespace rawdax::internal {
namespace {

constexpr uintptr_t kCacheLine = 64;

#ifdef RAWDAX_X86
FlushInstruction probe_cpu() {
  unsigned eax, ebx, ecx, edx;
  bool clwb = false, clflushopt = false, clflush = false;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    clwb = (ebx >> 24) & 1;
    clflushopt = (ebx >> 23) & 1;
  }
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) clflush = (edx >> 19) & 1;
  if (clwb) return FlushInstruction::kClwb;
  if (clflushopt) return FlushInstruction::kClflushopt;
  if (clflush) return FlushInstruction::kClflush;
  return FlushInstruction::kNone;
}

__attribute__((target("clwb"))) void flush_clwb(uintptr_t p, uintptr_t end) {
  for (; p < end; p += kCacheLine) _mm_clwb(reinterpret_cast<void*>(p));
}
__attribute__((target("clflushopt"))) void flush_clflushopt(uintptr_t p, uintptr_t end) {
  for (; p < end; p += kCacheLine) _mm_clflushopt(reinterpret_cast<void*>(p));
}
void flush_clflush(uintptr_t p, uintptr_t end) {
  for (; p < end; p += kCacheLine) _mm_clflush(reinterpret_cast<void*>(p));
}
#else
FlushInstruction probe_cpu() { return FlushInstruction::kNone; }
#endif

}  // namespace

FlushInstruction detected_flush_instruction() {
  static const FlushInstruction instruction = probe_cpu();
  return instruction;
}

void flush_cache_lines(const void* addr, size_t len) {
  if (len == 0) return;
  uintptr_t p = reinterpret_cast<uintptr_t>(addr) & ~(kCacheLine - 1);
  uintptr_t end = reinterpret_cast<uintptr_t>(addr) + len;
#ifdef RAWDAX_X86
  switch (detected_flush_instruction()) {
    case FlushInstruction::kClwb: flush_clwb(p, end); break;
    case FlushInstruction::kClflushopt: flush_clflushopt(p, end); break;
    case FlushInstruction::kClflush: flush_clflush(p, end); break;
    case FlushInstruction::kNone: break;
  }
  _mm_sfence();
#else
  (void)p;
  (void)end;
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

Status persist_range(PersistMethod method, const void* addr, size_t len) {
  if (len == 0) return ok();
  switch (method) {
    case PersistMethod::kNone:
      return ok();
    case PersistMethod::kCacheFlush:
      flush_cache_lines(addr, len);
      return ok();
    case PersistMethod::kMsync: {
      static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
      uintptr_t start = reinterpret_cast<uintptr_t>(addr) & ~(page - 1);
      uintptr_t end = reinterpret_cast<uintptr_t>(addr) + len;
      if (msync(reinterpret_cast<void*>(start), end - start, MS_SYNC) != 0) {
        return errno_error(errno, "msync");
      }
      return ok();
    }
  }
  return ok();
}

}  // namespace rawdax::internal

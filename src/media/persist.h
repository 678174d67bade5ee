// Making bytes durable on a region's media.
//
// persist_range() is the one place that knows the three persistence methods:
// msync for page-cache media, CPU cache-line flush + sfence for MAP_SYNC
// (DAX) mappings, and nothing for volatile media. The flush instruction is
// chosen once by cpuid: clwb, then clflushopt, then clflush.
// All functions are thread-safe.
#ifndef RAWDAX_MEDIA_PERSIST_H_
#define RAWDAX_MEDIA_PERSIST_H_

#include <cstddef>

#include "rawdax/capabilities.h"
#include "rawdax/result.h"

namespace rawdax::internal {

// The best cache-line write-back instruction this CPU has.
FlushInstruction detected_flush_instruction();

// Writes back the cache lines covering [addr, addr+len) with the detected
// instruction, then fences. No-op for len == 0.
void flush_cache_lines(const void* addr, size_t len);

// Persists [addr, addr+len) of a mapping by method. For kMsync the range is
// widened to whole pages. May fail only for kMsync (EIO and the like).
Status persist_range(PersistMethod method, const void* addr, size_t len);

}  // namespace rawdax::internal

#endif  // RAWDAX_MEDIA_PERSIST_H_

// Returning freed heap memory to the kernel after a burst of connections.
//
// glibc keeps what a thread freed in that thread's arena, so the buffers of
// a burst of clients (a control line near its 1 MiB limit, NBD payloads)
// stay resident after the clients are gone. The servers call this after
// they reap ended connections, so memory follows the clients still there.
//
// Thread safety: thread-safe. Cost: malloc_trim walks the arenas, so it runs
// at most once per interval (whatever the number of callers).
#ifndef RAWDAX_COMMON_MEMORY_RELEASE_H_
#define RAWDAX_COMMON_MEMORY_RELEASE_H_

#include <chrono>

namespace rawdax {

// Gives free heap pages back (malloc_trim(0)) unless that was done less than
// `interval` ago. True if it did: a caller that got false and still has
// freed memory to return calls again later.
bool release_free_memory(std::chrono::milliseconds interval = std::chrono::milliseconds(1000));

}  // namespace rawdax

#endif  // RAWDAX_COMMON_MEMORY_RELEASE_H_

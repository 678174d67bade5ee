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

namespace rawdax::internal {

// Called after connections ended: `freed` says whether any did. Gives free
// heap pages back (malloc_trim(0)) when some freeing is pending, here or
// from an earlier call, unless the last trim was less than `interval` ago;
// then it stays pending for a later call (the servers call this at least
// once a second).
void release_free_memory(bool freed,
                         std::chrono::milliseconds interval = std::chrono::milliseconds(1000));

}  // namespace rawdax::internal

#endif  // RAWDAX_COMMON_MEMORY_RELEASE_H_

// What a region's media can do, as detected when the region is opened.
//
// Nothing here is assumed from the media's name: each flag is the outcome of
// a probe (statfs, a MAP_SYNC mapping attempt, a userfaultfd registration on
// a small probe mapping, cpuid, uname). Three things are told apart: what the
// media accepts, what the kernel offers whatever the media, and what this
// process is allowed (the userfaultfd mode, which depends on its privilege).
// Plain value type; thread-safe to copy.
#ifndef RAWDAX_CAPABILITIES_H_
#define RAWDAX_CAPABILITIES_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "rawdax/export.h"
namespace rawdax {

enum class MediaKind {
  kDirectory,  // one backing file per namespace in a directory
  kMemfd,      // anonymous shared memory in this process ("memfd:")
  kDevdax,     // a device-dax character device ("devdax:/dev/daxX.Y"), carved into
               // extents; "devdax-whole:" is the older layout: one namespace, the whole device
  kFile,       // one preallocated file carved into extents ("file:PATH")
};

// How bytes stored through a mapping are made durable.
enum class PersistMethod {
  kNone,        // volatile media (tmpfs, hugetlbfs, memfd): nothing to persist to
  kMsync,       // page cache over a normal filesystem: msync(MS_SYNC)
  kCacheFlush,  // direct-mapped pmem (MAP_SYNC): cache-line flush, then sfence
};

// The CPU instruction used for kCacheFlush, picked at run time by cpuid.
enum class FlushInstruction { kNone, kClflush, kClflushopt, kClwb };

// Which engine write-protects live mappings (freeze, dirty tracking).
enum class ProtectionEngine {
  kUffd,      // sync userfaultfd write-protect works on this media (either uffd_mode)
  kMprotect,  // it does not (regular files, devdax): mprotect + SIGSEGV
};

// The reach of the userfaultfds this process can open (media/userfaultfd.h).
enum class UffdMode {
  kNone,          // none at all (no kernel support, or refused by a policy)
  kUserModeOnly,  // UFFD_USER_MODE_ONLY: user-mode faults only; what a plain
                  // user gets while vm.unprivileged_userfaultfd=0
  kFull,          // user-mode and kernel-mode faults (CAP_SYS_PTRACE, the
                  // sysctl at 1, or access to /dev/userfaultfd)
};

// What the running kernel offers, whatever the media and privilege. The
// userfaultfd bits come from UFFDIO_API and stay false when no userfaultfd
// can be opened (unknown).
struct KernelFeatures {
  std::string release;                  // uname -r
  bool uffd_wp_sync = false;            // UFFD_FEATURE_PAGEFAULT_FLAG_WP
  bool uffd_wp_async = false;           // UFFD_FEATURE_WP_ASYNC (Linux 6.7)
  bool uffd_wp_hugetlbfs_shmem = false; // WP on hugetlbfs and shmem (5.19)
  bool uffd_wp_unpopulated = false;     // WP of pages never populated (6.4)
  bool pagemap_scan = false;            // PAGEMAP_SCAN on /proc/self/pagemap (6.7)
  bool map_sync = false;                // MAP_SYNC is known (4.15); the media may still refuse it
};

struct Capabilities {
  MediaKind kind = MediaKind::kDirectory;
  std::string filesystem;  // "tmpfs", "ext4", "hugetlbfs", "devdax", "memfd", ...
  PersistMethod persist = PersistMethod::kNone;
  FlushInstruction flush_instruction = FlushInstruction::kNone;
  uint64_t page_size = 4096;       // base page size of mappings
  uint64_t huge_page_size = 0;     // PMD huge page size the media can use, 0 if none
  uint64_t alignment = 4096;       // granularity of namespace sizes and map() offsets
  bool map_sync = false;           // MAP_SYNC mappings of the media are accepted
  bool punch_hole = false;         // fallocate(PUNCH_HOLE) frees space
  bool uffd_wp_sync = false;       // sync userfaultfd write-protect registers on the media
  bool uffd_wp_async = false;      // async write-protect (WP_ASYNC) registers on the media
  // Pages come from the kernel's hugetlb pool (hugetlbfs): page_size is the
  // huge page, a namespace's pages are allocated when it is created or grown,
  // and the free space is the pool's free pages (docs/media.md).
  bool hugetlb = false;
  ProtectionEngine engine = ProtectionEngine::kMprotect;
  UffdMode uffd_mode = UffdMode::kNone;  // of the process that probed
  KernelFeatures kernel;
};

RAWDAX_EXPORT std::string_view to_string(MediaKind kind);
RAWDAX_EXPORT std::string_view to_string(PersistMethod method);
RAWDAX_EXPORT std::string_view to_string(FlushInstruction instruction);
RAWDAX_EXPORT std::string_view to_string(ProtectionEngine engine);
RAWDAX_EXPORT std::string_view to_string(UffdMode mode);  // "none", "user-mode-only", "full"

}  // namespace rawdax

#endif  // RAWDAX_CAPABILITIES_H_

// Descriptions of namespaces: what a caller asks for and what a region reports.
// Plain value types.
#ifndef RAWDAX_NAMESPACE_H_
#define RAWDAX_NAMESPACE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rawdax {

// What create_namespace() is asked for. Names are 1-63 characters of
// [A-Za-z0-9._-] ("." and ".." excepted), unique within the region. The size
// must be > 0; it is rounded up to the region's alignment (the page size, or
// the huge page size on hugetlbfs), except on a carved region (devdax:,
// file:), where a size off the alignment is refused (EINVAL).
struct NamespaceSpec {
  std::string name;
  uint64_t size = 0;
};

// A range of a namespace whose media failed: memory poison the kernel
// reported (SIGBUS BUS_MCEERR_*, EIO from read(2)), or a backing file that
// someone else cut short under the device. Reads overlapping it fail with
// EIO without touching the media; writing a whole page of it (write or
// write_zeroes) takes that page off the list. Page-granular (at least the
// region's alignment; the kernel's poison unit where it is larger).
struct BadRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const BadRange&) const = default;
};

// A lazy restore that has not filled the namespace yet
// (Region::restore_namespace with RestoreOptions::lazy; docs/snapshot.md).
// `snapshot` and `checksum` are recorded in the region's metadata until the
// fill completes, so a crash leaves a fill that the next open resumes; the
// progress fields describe the fill running in this process.
struct RestoreState {
  std::string snapshot;       // the snapshot file restored (the newest of its chain)
  std::string checksum;       // its header checksum (hex), checked when resuming
  bool filling = false;       // a fill of it runs in this process
  uint64_t pages_filled = 0;  // pages the chain stores that are in place
  uint64_t pages_total = 0;   // pages the chain stores
  std::string error = {};     // why the fill stopped, when it did
};

// A namespace as the region records it.
struct NamespaceInfo {
  std::string name;
  std::string uuid;
  uint64_t size = 0;
  std::string mode = "raw";  // both faces over the raw bytes
  std::string path;          // backing file, "memfd:NAME", or the devdax device
  // Where the namespace's bytes start in `path`: its extent's offset on a
  // carved region (devdax:, file:), 0 where each namespace has its own object.
  uint64_t offset = 0;
  // The namespace's bad-block list: sorted, disjoint, not adjacent.
  // Persisted in the region metadata on a directory region; kept for the
  // Region's lifetime on memfd, devdax and carved regions (docs/media.md).
  std::vector<BadRange> badblocks = {};
  // Set while a lazy restore of the namespace is incomplete.
  std::optional<RestoreState> restore = std::nullopt;
};

}  // namespace rawdax

#endif  // RAWDAX_NAMESPACE_H_

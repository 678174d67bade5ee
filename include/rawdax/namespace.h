// Descriptions of namespaces: what a caller asks for and what a region reports.
// Plain value types.
#ifndef RAWDAX_NAMESPACE_H_
#define RAWDAX_NAMESPACE_H_

#include <cstdint>
#include <string>

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
};

}  // namespace rawdax

#endif  // RAWDAX_NAMESPACE_H_

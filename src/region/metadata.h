// The region's metadata record and its on-disk encoding.
//
// Encoding: one header line "RAWDAXMETA <version> <xxh64-hex> <length>\n",
// then <length> bytes of JSON. The checksum covers the JSON. Only NULs may
// follow it: a filesystem without write(2) (hugetlbfs) holds the record in
// whole huge pages (see write_file_contents). A generation counter increases
// with every update, so readers can tell versions apart.
// Pure functions; thread-safe.
#ifndef RAWDAX_REGION_METADATA_H_
#define RAWDAX_REGION_METADATA_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "rawdax/namespace.h"
#include "rawdax/result.h"

namespace rawdax::internal {

struct RegionMetadata {
  uint64_t generation = 0;
  std::string region_uuid;
  std::vector<NamespaceInfo> namespaces;  // `path` is not stored; it is derived
};

std::string encode_metadata(const RegionMetadata& meta);

// Rejects bad magic, version, length, checksum, JSON, or field values, with
// a message naming `source` and what is wrong.
Result<RegionMetadata> decode_metadata(std::string_view bytes, const std::string& source);

}  // namespace rawdax::internal

#endif  // RAWDAX_REGION_METADATA_H_

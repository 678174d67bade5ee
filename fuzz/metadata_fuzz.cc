// Fuzz target: the region metadata decoder (rawdax.meta). Fuzz builds accept
// any checksum (src/region/metadata.cc), so mutated bodies reach the JSON
// decoding. Any input must be refused with an error or decoded into a record
// that encodes to bytes that decode to the same record, field by field, and
// whose encoding is stable (encoding the decoded copy gives the same bytes).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "region/metadata.h"

namespace {

// Every field the encoding stores, the bad-block list included (`path` and
// `offset` are derived, not stored).
bool same_record(const rawdax::internal::RegionMetadata& a, const rawdax::internal::RegionMetadata& b) {
  if (a.generation != b.generation || a.region_uuid != b.region_uuid ||
      a.namespaces.size() != b.namespaces.size()) {
    return false;
  }
  for (size_t i = 0; i < a.namespaces.size(); ++i) {
    const rawdax::NamespaceInfo& x = a.namespaces[i];
    const rawdax::NamespaceInfo& y = b.namespaces[i];
    if (x.name != y.name || x.uuid != y.uuid || x.size != y.size || x.mode != y.mode ||
        x.path != y.path || x.offset != y.offset || x.badblocks != y.badblocks) {
      return false;
    }
  }
  return true;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_metadata: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto meta = rawdax::internal::decode_metadata(bytes, "fuzz");
  if (!meta) return 0;
  const std::string encoded = rawdax::internal::encode_metadata(*meta);
  auto again = rawdax::internal::decode_metadata(encoded, "fuzz re-encoded");
  if (!again) fail(("the re-encoded record does not decode: " + again.error().message()).c_str());
  if (!same_record(*meta, *again)) fail("the re-encoded record decodes to another record");
  if (rawdax::internal::encode_metadata(*again) != encoded) fail("the encoding is not stable");
  return 0;
}

// Fuzz target: the region metadata decoder (rawdax.meta). Any input must be
// refused with an error or decoded into a record that encodes back to
// something that decodes to the same record.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "region/metadata.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto meta = rawdax::decode_metadata(bytes, "fuzz");
  if (!meta) return 0;
  auto again = rawdax::decode_metadata(rawdax::encode_metadata(*meta), "fuzz re-encoded");
  if (!again || again->generation != meta->generation ||
      again->namespaces.size() != meta->namespaces.size()) {
    std::abort();  // encode and decode disagree
  }
  return 0;
}

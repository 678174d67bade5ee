// Fuzz target: the label area of a carved region (devdax:, file:). Any bytes
// must be refused with an error or decoded into a state that an update
// (commit_labels with the same labels) writes back so that it decodes to the
// same namespaces. The input is the start of a 1 MiB area; the rest is zeros.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "region/label_area.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::byte> area(rawdax::internal::kMinLabelAreaBytes);
  std::memcpy(area.data(), data, std::min(size, area.size()));
  auto state = rawdax::internal::read_label_area(area, "fuzz");
  if (!state) return 0;
  auto persist = [](const std::byte*, size_t) { return rawdax::ok(); };
  std::vector<rawdax::internal::Label> labels = state->labels;
  if (!rawdax::internal::commit_labels(area.data(), *state, labels, persist, "fuzz")) return 0;
  auto again = rawdax::internal::read_label_area(area, "fuzz re-read");
  if (!again || again->labels != labels || again->seq != state->seq) {
    std::abort();  // an update did not read back as what it wrote
  }
  return 0;
}

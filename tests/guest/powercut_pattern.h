// The byte patterns of the power-cut tool (tests/guest/powercut_tool.cc and
// powercut_ops.cc): words that can be checked one at a time, and what a
// namespace filled chunk by chunk may hold after a cut; and what a carved
// region's extents must satisfy.
#ifndef RAWDAX_TESTS_GUEST_POWERCUT_PATTERN_H_
#define RAWDAX_TESTS_GUEST_POWERCUT_PATTERN_H_

#include <algorithm>
#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "rawdax/rawdax.h"

namespace rawdax_powercut {

constexpr uint64_t kChunk = uint64_t{2} << 20;
constexpr uint64_t kTrailer = 64;

// Word i of the pattern of `key` (splitmix64, so any word can be checked alone).
inline uint64_t pattern_word(uint64_t key, uint64_t i) {
  uint64_t z = key + (i + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

enum class Fill { kComplete, kInProgress, kIllegal };

struct Verdict {
  Fill fill = Fill::kIllegal;
  std::string why;  // kIllegal: the first byte that no legal state has
};

// What the bytes of a namespace are, given its key (see above).
inline Verdict classify(const std::byte* data, uint64_t size, uint64_t key) {
  const uint64_t words = size / 8, trailer_from = (size - kTrailer) / 8;
  auto word = [&](uint64_t i) {
    uint64_t w;
    std::memcpy(&w, data + i * 8, 8);
    return w;
  };
  uint64_t i = 0;
  while (i < words && word(i) == pattern_word(key, i)) ++i;
  if (i == words) return {Fill::kComplete, ""};
  auto illegal = [&](uint64_t at, const char* rule) {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "word at offset %" PRIu64 " is 0x%016" PRIx64 ", its pattern 0x%016" PRIx64
                  " (%s; the first word off the pattern is at %" PRIu64 ")",
                  at * 8, word(at), pattern_word(key, at), rule, i * 8);
    return Verdict{Fill::kIllegal, buf};
  };
  // The chunk being filled: a 2 MiB piece of the body, or the trailer.
  const uint64_t chunk_end =
      i >= trailer_from ? words : std::min(trailer_from, (i * 8 / kChunk + 1) * kChunk / 8);
  for (uint64_t j = i; j < chunk_end; ++j) {
    if (word(j) != 0 && word(j) != pattern_word(key, j)) {
      return illegal(j, "neither pattern nor zero in the chunk being filled");
    }
  }
  for (uint64_t j = chunk_end; j < words; ++j) {
    if (word(j) != 0) return illegal(j, "not zero after the chunk being filled");
  }
  return {Fill::kInProgress, ""};
}

// Everything wrong with the extents and the space accounting; empty if none.
inline std::vector<std::string> layout_errors(std::vector<rawdax::NamespaceInfo> list,
                                       const rawdax::RegionSpace& space) {
  std::vector<std::string> out;
  std::sort(list.begin(), list.end(), [](auto& a, auto& b) { return a.offset < b.offset; });
  uint64_t used = 0;
  for (size_t k = 0; k < list.size(); ++k) {
    const auto& ns = list[k];
    const std::string where = ns.name + " [" + std::to_string(ns.offset) + ", +" +
                              std::to_string(ns.size) + ")";
    if (ns.size == 0 || ns.offset % space.align != 0 || ns.size % space.align != 0) {
      out.push_back(where + " is not a non-empty extent aligned to " + std::to_string(space.align));
    }
    if (ns.offset < space.label_area_size || ns.offset + ns.size > space.device_size) {
      out.push_back(where + " is outside the data area [" + std::to_string(space.label_area_size) +
                    ", " + std::to_string(space.device_size) + ")");
    }
    if (k > 0 && list[k - 1].offset + list[k - 1].size > ns.offset) {
      out.push_back(where + " overlaps " + list[k - 1].name);
    }
    for (size_t m = 0; m < k; ++m) {
      if (list[m].name == ns.name || list[m].uuid == ns.uuid) {
        out.push_back(where + " shares its name or uuid with " + list[m].name);
      }
    }
    used += ns.size;
  }
  const uint64_t data = space.device_size - space.label_area_size;
  if (used > data || space.free != data - used) {
    out.push_back("space() reports " + std::to_string(space.free) + " bytes free, but the " +
                  std::to_string(data) + " data bytes less the namespaces' " +
                  std::to_string(used) + " leave " +
                  (used > data ? std::string("less than nothing") : std::to_string(data - used)));
  }
  if (space.largest_free > space.free) out.push_back("largest_free exceeds free");
  return out;
}

}  // namespace rawdax_powercut

#endif  // RAWDAX_TESTS_GUEST_POWERCUT_PATTERN_H_

#include "region/free_space.h"

#include <algorithm>

namespace rawdax::internal {

FreeSpace::FreeSpace(uint64_t begin, uint64_t end, std::vector<ByteRange> used) {
  std::sort(used.begin(), used.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
  uint64_t cursor = begin;  // everything below it is used or outside
  auto add_free = [&](uint64_t from, uint64_t to) {
    if (to <= from) return;
    free_.push_back({from, to - from});
    total_free_ += to - from;
    largest_free_ = std::max(largest_free_, to - from);
  };
  for (const ByteRange& range : used) {
    if (range.length == 0) continue;
    uint64_t from = std::max(range.offset, begin);
    uint64_t to = std::min(range.end(), end);
    if (from >= to) continue;
    add_free(cursor, from);
    cursor = std::max(cursor, to);
  }
  add_free(cursor, end);
}

std::optional<uint64_t> FreeSpace::best_fit(uint64_t size) const {
  const ByteRange* best = nullptr;
  for (const ByteRange& range : free_) {
    if (range.length < size) continue;
    if (best == nullptr || range.length < best->length) best = &range;
  }
  if (best == nullptr) return std::nullopt;
  return best->offset;
}

uint64_t FreeSpace::free_at(uint64_t offset) const {
  for (const ByteRange& range : free_) {
    if (range.offset <= offset && offset < range.end()) return range.end() - offset;
  }
  return 0;
}

}  // namespace rawdax::internal

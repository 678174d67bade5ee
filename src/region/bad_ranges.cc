#include "region/bad_ranges.h"

#include <algorithm>

namespace rawdax::internal {

bool add_bad_range(std::vector<BadRange>& list, uint64_t offset, uint64_t length) {
  if (length == 0) return false;
  uint64_t begin = offset, end = offset + length;
  if (auto hit = first_bad_overlap(list, offset, length);
      hit && hit->offset <= begin && hit->offset + hit->length >= end) {
    return false;
  }
  std::vector<BadRange> out;
  out.reserve(list.size() + 1);
  bool placed = false;
  for (const BadRange& r : list) {
    const uint64_t r_end = r.offset + r.length;
    if (r_end < begin) {
      out.push_back(r);
    } else if (r.offset > end) {
      if (!placed) out.push_back({begin, end - begin});
      placed = true;
      out.push_back(r);
    } else {  // overlapping or adjacent: absorb
      begin = std::min(begin, r.offset);
      end = std::max(end, r_end);
    }
  }
  if (!placed) out.push_back({begin, end - begin});
  list.swap(out);
  return true;
}

bool remove_bad_range(std::vector<BadRange>& list, uint64_t offset, uint64_t length) {
  if (length == 0 || !first_bad_overlap(list, offset, length)) return false;
  const uint64_t end = offset + length;
  std::vector<BadRange> out;
  out.reserve(list.size() + 1);
  for (const BadRange& r : list) {
    const uint64_t r_end = r.offset + r.length;
    if (r_end <= offset || r.offset >= end) {
      out.push_back(r);
      continue;
    }
    if (r.offset < offset) out.push_back({r.offset, offset - r.offset});
    if (r_end > end) out.push_back({end, r_end - end});
  }
  list.swap(out);
  return true;
}

std::optional<BadRange> first_bad_overlap(const std::vector<BadRange>& list, uint64_t offset,
                                          uint64_t length) {
  if (length == 0) return std::nullopt;
  // The first range that ends after offset; sorted, so it is the only candidate.
  auto it = std::upper_bound(list.begin(), list.end(), offset,
                             [](uint64_t at, const BadRange& r) { return at < r.offset + r.length; });
  if (it != list.end() && it->offset < offset + length) return *it;
  return std::nullopt;
}

bool valid_bad_ranges(const std::vector<BadRange>& list, uint64_t size) {
  uint64_t prev_end = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    const BadRange& r = list[i];
    if (r.length == 0 || r.offset > size || r.length > size - r.offset) return false;
    if (i > 0 && r.offset <= prev_end) return false;
    prev_end = r.offset + r.length;
  }
  return true;
}

}  // namespace rawdax::internal

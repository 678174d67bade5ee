// Operations on a namespace's bad-block list (NamespaceInfo::badblocks): a
// sorted vector of disjoint, non-adjacent byte ranges. Pure functions;
// thread-compatible (callers guard the vector).
#ifndef RAWDAX_REGION_BAD_RANGES_H_
#define RAWDAX_REGION_BAD_RANGES_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "rawdax/namespace.h"

namespace rawdax::internal {

// Adds [offset, offset+length), merging with overlapping or adjacent ranges.
// False when the list already covered it (nothing changed).
bool add_bad_range(std::vector<BadRange>& list, uint64_t offset, uint64_t length);

// Removes every byte of [offset, offset+length) from the list, splitting
// ranges it cuts. False when nothing changed.
bool remove_bad_range(std::vector<BadRange>& list, uint64_t offset, uint64_t length);

// The first listed range that overlaps [offset, offset+length), if any.
std::optional<BadRange> first_bad_overlap(const std::vector<BadRange>& list, uint64_t offset,
                                          uint64_t length);

// Whether the list is sorted, disjoint, non-adjacent, non-empty ranges that
// end at or before `size` (decoding checks a stored list with it).
bool valid_bad_ranges(const std::vector<BadRange>& list, uint64_t size);

}  // namespace rawdax::internal

#endif  // RAWDAX_REGION_BAD_RANGES_H_

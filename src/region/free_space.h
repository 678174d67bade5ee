// FreeSpace: the free extents of a carved region's data area, derived from
// the extents in use (labels, plus ranges held in memory by open devices and
// restores in progress). Nothing is stored: the labels are the truth, and
// free space is what they leave, so a destroy "coalesces" by construction.
//
// Allocation is best fit: the smallest free extent that holds the size, at
// its start (ties go to the lowest offset), which keeps large extents whole
// for large namespaces.
//
// Pure value type; not thread-safe (the Catalog builds one under its mutex).
#ifndef RAWDAX_REGION_FREE_SPACE_H_
#define RAWDAX_REGION_FREE_SPACE_H_

#include <cstdint>
#include <optional>
#include <vector>

namespace rawdax::internal {

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t end() const { return offset + length; }
  bool operator==(const ByteRange&) const = default;
};

class FreeSpace {
 public:
  // The data area is [begin, end). `used` ranges may come in any order and
  // may overlap each other (a device's view and its label); a range reaching
  // outside [begin, end) is clipped.
  FreeSpace(uint64_t begin, uint64_t end, std::vector<ByteRange> used);

  // Free extents in offset order, never adjacent (coalesced).
  const std::vector<ByteRange>& free_extents() const { return free_; }
  uint64_t total_free() const { return total_free_; }
  uint64_t largest_free() const { return largest_free_; }

  // Offset of the best-fit extent for `size` bytes; nullopt when none holds it.
  std::optional<uint64_t> best_fit(uint64_t size) const;

  // The free bytes from `offset` to the next range in use (0 when `offset` is
  // in use or outside the area): how far a range ending at `offset` grows in
  // place, when that range was left out of `used`.
  uint64_t free_at(uint64_t offset) const;

 private:
  std::vector<ByteRange> free_;
  uint64_t total_free_ = 0;
  uint64_t largest_free_ = 0;
};

}  // namespace rawdax::internal

#endif  // RAWDAX_REGION_FREE_SPACE_H_

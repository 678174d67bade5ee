// The label area of a carved region (devdax:, file:): the on-media record of
// which namespaces exist and which extent of the device each one owns.
//
// Layout, at the start of the device (all integers little-endian):
//
//   [0, 4K)       index block 0
//   [4K, 8K)      index block 1
//   [8K, ...)     label slots, 256 bytes each
//   [.., area)    unused; the area is 1 MiB rounded up to the device align,
//                 so the first extent starts aligned
//   [area, size)  namespace extents
//
// An index block holds a sequence number, the geometry the labels were made
// for (device size, align, area size, slot count), the region's uuid, a
// bitmap of the slots in use and a checksum. A slot holds one namespace's
// uuid, name, offset, size, mode and state, with its own checksum. The valid
// index block with the highest sequence number whose every used slot is
// valid wins; the other one is the previous state.
//
// Update (commit): each label that changed is written to a slot that neither
// index block uses, and persisted; then the index block that is not current
// is overwritten with the next sequence number and the new bitmap, and
// persisted. Until that last persist completes, the current index (and the
// slots it names, which are never written) describes the old state; after
// it, the new one. A torn index block fails its checksum and loses to the
// other. So a crash at any point opens to the old or the new state, and a
// corrupt block or label costs at most the last update.
//
// Functions are pure over the bytes they are given, except that commit() and
// format() write the area and call `persist` on what they wrote.
// Not thread-safe; the Catalog serializes updates.
#ifndef RAWDAX_REGION_LABEL_AREA_H_
#define RAWDAX_REGION_LABEL_AREA_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "rawdax/result.h"

namespace rawdax::internal {

inline constexpr uint64_t kIndexBlockBytes = 4096;
inline constexpr uint64_t kLabelSlotBytes = 256;
inline constexpr uint64_t kLabelSlotsOffset = 2 * kIndexBlockBytes;
inline constexpr uint64_t kMinLabelAreaBytes = uint64_t{1} << 20;

// The label area size for a device of this align (a power of two).
uint64_t label_area_bytes(uint64_t align);

// One namespace as its label records it.
struct Label {
  std::string uuid;
  std::string name;
  uint64_t offset = 0;  // byte offset of the extent in the device
  uint64_t size = 0;
  std::string mode = "raw";
  bool operator==(const Label&) const = default;
};

struct LabelGeometry {
  uint64_t device_size = 0;
  uint64_t align = 0;
  uint64_t area_size = 0;
  uint32_t slot_count = 0;
};

// What a label area holds, and what commit() needs to update it.
struct LabelState {
  std::string region_uuid;
  LabelGeometry geometry;
  uint64_t seq = 0;
  int current_block = 0;
  std::vector<Label> labels;
  std::vector<uint32_t> slots;           // slots[i] holds labels[i]
  std::vector<uint32_t> previous_slots;  // slots the other index block names
  // Set when an index block was unusable and the other one's state won: the
  // newest one (a slot it names is bad), or one that does not decode at all
  // (which may have been the newest). What was wrong with it; empty otherwise.
  std::string recovered_from;
};

// True when both index blocks are all zero: no label area was ever written.
// `area` must hold at least the two index blocks.
bool label_area_blank(std::span<const std::byte> area);

// Decodes the label area. EILSEQ naming `device` and what is wrong with each
// index block when neither describes a valid state (including a blank area).
Result<LabelState> read_label_area(std::span<const std::byte> area, const std::string& device);

using PersistFn = std::function<Status(const std::byte*, size_t)>;

// Zeroes the area's index blocks and slots, then writes index block 0 with
// no namespaces. `area` spans geometry.area_size bytes. A crash in between
// leaves a blank area.
Result<LabelState> format_label_area(std::byte* area, const LabelGeometry& geometry,
                                     const std::string& region_uuid, const PersistFn& persist);

// Makes `next` the labels of the area, as described above, and updates
// `state`. ENOSPC when the slots run out (naming how many there are). On
// failure `state` still describes the area.
Status commit_labels(std::byte* area, LabelState& state, const std::vector<Label>& next,
                     const PersistFn& persist, const std::string& device);

}  // namespace rawdax::internal

#endif  // RAWDAX_REGION_LABEL_AREA_H_

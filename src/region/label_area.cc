#include "region/label_area.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <set>

#include "common/crash_point.h"
#include "common/units.h"
#include "common/uuid.h"
#include "region/names.h"

namespace rawdax::internal {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the label area is read and written in host byte order");

constexpr char kIndexMagic[16] = {'R', 'A', 'W', 'D', 'A', 'X', '-', 'L',
                                  'A', 'B', 'E', 'L', '-', 'I', 'D', 'X'};
constexpr char kSlotMagic[8] = {'R', 'D', 'X', 'L', 'A', 'B', 'E', 'L'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kStateActive = 1;

// Index block fields.
constexpr size_t kIdxVersion = 16, kIdxSlotSize = 20, kIdxSeq = 24, kIdxDeviceSize = 32,
                 kIdxAlign = 40, kIdxAreaSize = 48, kIdxSlotCount = 56, kIdxUuid = 64,
                 kIdxChecksum = 104, kIdxBitmap = 128;
constexpr uint32_t kMaxSlots = (kIndexBlockBytes - kIdxBitmap) * 8;
// Slot fields.
constexpr size_t kSlotVersion = 8, kSlotState = 12, kSlotOffset = 16, kSlotSize = 24,
                 kSlotSeq = 32, kSlotUuid = 40, kSlotName = 80, kSlotMode = 144,
                 kSlotChecksum = 248;
constexpr size_t kUuidField = 40, kNameField = 64, kModeField = 16;

template <typename T>
T load(const std::byte* p, size_t at) {
  T v;
  std::memcpy(&v, p + at, sizeof v);
  return v;
}
template <typename T>
void store(std::byte* p, size_t at, T v) {
  std::memcpy(p + at, &v, sizeof v);
}
std::string load_text(const std::byte* p, size_t at, size_t field) {
  const char* s = reinterpret_cast<const char*>(p + at);
  return std::string(s, strnlen(s, field));
}
void store_text(std::byte* p, size_t at, size_t field, const std::string& text) {
  std::memset(p + at, 0, field);
  std::memcpy(p + at, text.data(), std::min(text.size(), field - 1));
}
// A fuzzing build accepts any checksum, so that the fuzzer reaches the
// decoding behind it (as the snapshot reader does).
bool checksum_ok(uint64_t stored, uint64_t computed) {
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  (void)stored;
  (void)computed;
  return true;
#else
  return stored == computed;
#endif
}

uint64_t checksum(const std::byte* block, size_t len, size_t checksum_at) {
  XXH64_state_t* st = XXH64_createState();
  XXH64_reset(st, 0);
  XXH64_update(st, block, checksum_at);
  const uint64_t zero = 0;
  XXH64_update(st, &zero, sizeof zero);
  XXH64_update(st, block + checksum_at + 8, len - checksum_at - 8);
  uint64_t h = XXH64_digest(st);
  XXH64_freeState(st);
  return h;
}

const std::byte* slot_at(std::span<const std::byte> area, uint32_t slot) {
  return area.data() + kLabelSlotsOffset + uint64_t{slot} * kLabelSlotBytes;
}

bool block_blank(std::span<const std::byte> area, int block) {
  const std::byte* p = area.data() + block * kIndexBlockBytes;
  return std::all_of(p, p + kIndexBlockBytes, [](std::byte b) { return b == std::byte{0}; });
}

struct DecodedIndex {
  uint64_t seq = 0;
  LabelGeometry geometry;
  std::string region_uuid;
  std::vector<uint32_t> used;
};

Result<DecodedIndex> decode_index(std::span<const std::byte> area, int block) {
  const std::byte* p = area.data() + block * kIndexBlockBytes;
  auto bad = [](const std::string& why) { return Error(std::errc::illegal_byte_sequence, why); };
  if (block_blank(area, block)) return bad("blank");
  if (std::memcmp(p, kIndexMagic, sizeof kIndexMagic) != 0) return bad("bad magic");
  if (!checksum_ok(load<uint64_t>(p, kIdxChecksum), checksum(p, kIndexBlockBytes, kIdxChecksum))) {
    return bad("bad checksum");
  }
  if (load<uint32_t>(p, kIdxVersion) != kVersion) {
    return bad("version " + std::to_string(load<uint32_t>(p, kIdxVersion)) + ", expected " +
               std::to_string(kVersion));
  }
  DecodedIndex out;
  out.seq = load<uint64_t>(p, kIdxSeq);
  out.geometry.device_size = load<uint64_t>(p, kIdxDeviceSize);
  out.geometry.align = load<uint64_t>(p, kIdxAlign);
  out.geometry.area_size = load<uint64_t>(p, kIdxAreaSize);
  out.geometry.slot_count = load<uint32_t>(p, kIdxSlotCount);
  out.region_uuid = load_text(p, kIdxUuid, kUuidField);
  const LabelGeometry& g = out.geometry;
  if (load<uint32_t>(p, kIdxSlotSize) != kLabelSlotBytes || g.align == 0 ||
      !std::has_single_bit(g.align) || g.area_size % g.align != 0 || g.slot_count == 0 ||
      g.slot_count > kMaxSlots ||
      kLabelSlotsOffset + uint64_t{g.slot_count} * kLabelSlotBytes > g.area_size ||
      g.area_size > g.device_size || g.area_size > area.size() || !is_uuid(out.region_uuid)) {
    return bad("impossible geometry");
  }
  for (uint32_t s = 0; s < g.slot_count; ++s) {
    if ((static_cast<uint8_t>(p[kIdxBitmap + s / 8]) >> (s % 8)) & 1) out.used.push_back(s);
  }
  return out;
}

Result<Label> decode_slot(std::span<const std::byte> area, uint32_t slot,
                          const LabelGeometry& g) {
  const std::byte* p = slot_at(area, slot);
  auto bad = [&](const std::string& why) {
    return Error(std::errc::illegal_byte_sequence, "label slot " + std::to_string(slot) + ": " + why);
  };
  if (std::memcmp(p, kSlotMagic, sizeof kSlotMagic) != 0) return bad("bad magic");
  if (!checksum_ok(load<uint64_t>(p, kSlotChecksum), checksum(p, kLabelSlotBytes, kSlotChecksum))) {
    return bad("bad checksum");
  }
  if (load<uint32_t>(p, kSlotVersion) != kVersion) return bad("unknown version");
  if (load<uint32_t>(p, kSlotState) != kStateActive) return bad("not active");
  Label label;
  label.offset = load<uint64_t>(p, kSlotOffset);
  label.size = load<uint64_t>(p, kSlotSize);
  label.uuid = load_text(p, kSlotUuid, kUuidField);
  label.name = load_text(p, kSlotName, kNameField);
  label.mode = load_text(p, kSlotMode, kModeField);
  if (!validate_namespace_name(label.name)) return bad("invalid name");
  if (!is_uuid(label.uuid)) return bad("invalid uuid");
  if (label.size == 0 || label.offset % g.align != 0 || label.size % g.align != 0 ||
      label.offset < g.area_size || label.offset > g.device_size ||
      label.size > g.device_size - label.offset) {
    return bad("extent at " + std::to_string(label.offset) + " size " +
               std::to_string(label.size) + " is outside the data area or misaligned");
  }
  return label;
}

// The state index block `block` describes, if every slot it names is valid
// and the extents neither overlap nor repeat a name or uuid.
Result<LabelState> decode_state(std::span<const std::byte> area, int block,
                                const DecodedIndex& index) {
  LabelState state;
  state.region_uuid = index.region_uuid;
  state.geometry = index.geometry;
  state.seq = index.seq;
  state.current_block = block;
  std::set<std::string> names, uuids;
  for (uint32_t slot : index.used) {
    auto label = decode_slot(area, slot, index.geometry);
    if (!label) return label.error();
    if (!names.insert(label->name).second || !uuids.insert(label->uuid).second) {
      return Error(std::errc::illegal_byte_sequence,
                   "label slot " + std::to_string(slot) + " repeats namespace " + label->name);
    }
    state.labels.push_back(std::move(*label));
    state.slots.push_back(slot);
  }
  std::vector<std::pair<uint64_t, uint64_t>> extents;
  for (const Label& l : state.labels) extents.emplace_back(l.offset, l.offset + l.size);
  std::sort(extents.begin(), extents.end());
  for (size_t i = 1; i < extents.size(); ++i) {
    if (extents[i].first < extents[i - 1].second) {
      return Error(std::errc::illegal_byte_sequence,
                   "two namespaces overlap at offset " + std::to_string(extents[i].first));
    }
  }
  return state;
}

void encode_index(std::byte* p, const LabelState& state, const std::vector<uint32_t>& used) {
  std::memset(p, 0, kIndexBlockBytes);
  std::memcpy(p, kIndexMagic, sizeof kIndexMagic);
  store<uint32_t>(p, kIdxVersion, kVersion);
  store<uint32_t>(p, kIdxSlotSize, kLabelSlotBytes);
  store<uint64_t>(p, kIdxSeq, state.seq);
  store<uint64_t>(p, kIdxDeviceSize, state.geometry.device_size);
  store<uint64_t>(p, kIdxAlign, state.geometry.align);
  store<uint64_t>(p, kIdxAreaSize, state.geometry.area_size);
  store<uint32_t>(p, kIdxSlotCount, state.geometry.slot_count);
  store_text(p, kIdxUuid, kUuidField, state.region_uuid);
  for (uint32_t s : used) {
    p[kIdxBitmap + s / 8] |= static_cast<std::byte>(1u << (s % 8));
  }
  store<uint64_t>(p, kIdxChecksum, checksum(p, kIndexBlockBytes, kIdxChecksum));
}

void encode_slot(std::byte* p, const Label& label, uint64_t seq) {
  std::memset(p, 0, kLabelSlotBytes);
  std::memcpy(p, kSlotMagic, sizeof kSlotMagic);
  store<uint32_t>(p, kSlotVersion, kVersion);
  store<uint32_t>(p, kSlotState, kStateActive);
  store<uint64_t>(p, kSlotOffset, label.offset);
  store<uint64_t>(p, kSlotSize, label.size);
  store<uint64_t>(p, kSlotSeq, seq);
  store_text(p, kSlotUuid, kUuidField, label.uuid);
  store_text(p, kSlotName, kNameField, label.name);
  store_text(p, kSlotMode, kModeField, label.mode);
  store<uint64_t>(p, kSlotChecksum, checksum(p, kLabelSlotBytes, kSlotChecksum));
}

}  // namespace

uint64_t label_area_bytes(uint64_t align) {
  return *round_up(kMinLabelAreaBytes, std::max<uint64_t>(align, 1));
}

bool label_area_blank(std::span<const std::byte> area) {
  size_t n = std::min<size_t>(area.size(), 2 * kIndexBlockBytes);
  return std::all_of(area.begin(), area.begin() + static_cast<ptrdiff_t>(n),
                     [](std::byte b) { return b == std::byte{0}; });
}

Result<LabelState> read_label_area(std::span<const std::byte> area, const std::string& device) {
  if (area.size() < kLabelSlotsOffset) {
    return Error(std::errc::illegal_byte_sequence,
                 device + ": " + std::to_string(area.size()) + " bytes cannot hold a label area");
  }
  Result<DecodedIndex> index[2] = {decode_index(area, 0), decode_index(area, 1)};
  // Newest first.
  int order[2] = {0, 1};
  if (index[1] && (!index[0] || index[1]->seq > index[0]->seq)) std::swap(order[0], order[1]);
  std::string why[2];
  for (int i = 0; i < 2; ++i) {
    int block = order[i];
    if (!index[block]) {
      why[block] = index[block].error().message();
      continue;
    }
    auto state = decode_state(area, block, *index[block]);
    if (!state) {
      why[block] = state.error().message();
      continue;
    }
    int other = 1 - block;
    if (index[other]) state->previous_slots = index[other]->used;
    if (i == 1 && index[other]) {
      state->recovered_from = "index block " + std::to_string(other) + " (sequence " +
                              std::to_string(index[other]->seq) + ") was unusable: " + why[other];
    } else if (!index[other] && !block_blank(area, other)) {
      // A block that does not decode has no sequence to compare: it may
      // have held the newest state (a corrupt or torn update), so the
      // fallback is reported, never silent.
      state->recovered_from = "index block " + std::to_string(other) + " was unusable (" +
                              index[other].error().message() + "); opened from index block " +
                              std::to_string(block) + " (sequence " +
                              std::to_string(state->seq) + "), an update after it may be lost";
    }
    return state;
  }
  return Error(std::errc::illegal_byte_sequence,
               device + ": no valid rawdax label index: index block 0: " + why[0] +
                   "; index block 1: " + why[1]);
}

Result<LabelState> format_label_area(std::byte* area, const LabelGeometry& geometry,
                                     const std::string& region_uuid, const PersistFn& persist) {
  LabelState state;
  state.region_uuid = region_uuid;
  state.geometry = geometry;
  state.geometry.slot_count = static_cast<uint32_t>(std::min<uint64_t>(
      kMaxSlots, (geometry.area_size - kLabelSlotsOffset) / kLabelSlotBytes));
  const size_t used_bytes = kLabelSlotsOffset + state.geometry.slot_count * kLabelSlotBytes;
  std::memset(area, 0, used_bytes);
  RAWDAX_RETURN_IF_ERROR(persist(area, used_bytes));
  crash_point("label area zeroed");
  state.seq = 1;
  state.current_block = 0;
  encode_index(area, state, {});
  RAWDAX_RETURN_IF_ERROR(persist(area, kIndexBlockBytes));
  crash_point("label area formatted");
  return state;
}

Status commit_labels(std::byte* area, LabelState& state, const std::vector<Label>& next,
                     const PersistFn& persist, const std::string& device) {
  const uint32_t slot_count = state.geometry.slot_count;
  std::vector<bool> taken(slot_count, false);  // not to be written
  for (uint32_t s : state.slots) taken[s] = true;
  std::vector<bool> previous(slot_count, false);
  // The other block may have been written for another geometry (or be a
  // stray that decodes): only slots this area has count.
  for (uint32_t s : state.previous_slots) {
    if (s < slot_count) previous[s] = true;
  }

  std::vector<uint32_t> slots;
  std::vector<std::pair<uint32_t, const Label*>> to_write;
  for (const Label& label : next) {
    auto same = std::find(state.labels.begin(), state.labels.end(), label);
    if (same != state.labels.end()) {
      slots.push_back(state.slots[static_cast<size_t>(same - state.labels.begin())]);
      continue;
    }
    // A slot the previous index does not name either keeps that state
    // readable as a fallback; take one of those when there is one.
    std::optional<uint32_t> pick;
    for (int pass = 0; pass < 2 && !pick; ++pass) {
      for (uint32_t s = 0; s < slot_count; ++s) {
        if (!taken[s] && (pass == 1 || !previous[s])) {
          pick = s;
          break;
        }
      }
    }
    if (!pick) {
      return Error(std::errc::no_space_on_device,
                   device + ": the label area is full (" + std::to_string(slot_count) +
                       " label slots)");
    }
    taken[*pick] = true;
    slots.push_back(*pick);
    to_write.emplace_back(*pick, &label);
  }
  const uint64_t seq = state.seq + 1;
  for (const auto& [slot, label] : to_write) {
    std::byte* p = area + kLabelSlotsOffset + uint64_t{slot} * kLabelSlotBytes;
    encode_slot(p, *label, seq);
    RAWDAX_RETURN_IF_ERROR(persist(p, kLabelSlotBytes));
  }
  crash_point("label slots written");
  LabelState updated = state;
  updated.seq = seq;
  updated.current_block = 1 - state.current_block;
  updated.labels = next;
  updated.slots = slots;
  updated.previous_slots = state.slots;
  updated.recovered_from.clear();
  std::byte* block = area + uint64_t(updated.current_block) * kIndexBlockBytes;
  encode_index(block, updated, slots);
  RAWDAX_RETURN_IF_ERROR(persist(block, kIndexBlockBytes));
  crash_point("label index written");
  state = std::move(updated);
  return ok();
}

}  // namespace rawdax::internal

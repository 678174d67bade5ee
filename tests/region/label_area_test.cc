// The label area's encoding and its update protocol, over bytes in memory:
// which index wins, what a corrupt or torn block costs, and what runs out.
#include "region/label_area.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "common/uuid.h"

namespace rawdax {

// Failure messages show labels, not their bytes.
void PrintTo(const internal::Label& l, std::ostream* os) {
  *os << l.name << "@" << l.offset << "+" << l.size << " " << l.mode << " " << l.uuid;
}

namespace {

// Labels in name order: the area keeps them in slot order, which is not
// the order they were committed in.
std::vector<internal::Label> by_name(std::vector<internal::Label> labels) {
  std::sort(labels.begin(), labels.end(),
            [](const internal::Label& a, const internal::Label& b) { return a.name < b.name; });
  return labels;
}

constexpr uint64_t kAlign = 4096;
constexpr uint64_t kDeviceSize = uint64_t{64} << 20;
const std::string kDevice = "file:/test/label-area-device";

using Area = std::vector<std::byte>;

struct PersistCall {
  uint64_t offset;  // in the area
  size_t length;
};

class LabelAreaTest : public ::testing::Test {
 protected:
  LabelAreaTest() : area_(internal::label_area_bytes(kAlign)) {}

  internal::LabelGeometry geometry() const { return {kDeviceSize, kAlign, area_.size(), 0}; }

  internal::PersistFn recorder() {
    return [this](const std::byte* p, size_t n) {
      calls_.push_back({static_cast<uint64_t>(p - area_.data()), n});
      return ok();
    };
  }

  internal::LabelState format() {
    auto state = internal::format_label_area(area_.data(), geometry(), internal::new_uuid(), recorder());
    EXPECT_TRUE(state) << state.error().message();
    return state ? *state : internal::LabelState{};
  }

  internal::Label label(const std::string& name, uint64_t offset, uint64_t size) const {
    return {internal::new_uuid(), name, offset, size, "raw"};
  }

  void flip(Area& area, uint64_t at) { area[at] ^= std::byte{0x5a}; }

  // Two commits on a formatted area: `older`, then `newer`, which keeps one
  // label and replaces the other. `state` is the area's state afterwards.
  struct TwoStates {
    std::vector<internal::Label> older, newer;
    internal::LabelState state;
  };
  TwoStates two_commits() {
    TwoStates out;
    out.state = format();
    const uint64_t data = area_.size();
    out.older = {label("keep", data, 8192), label("old", data + 8192, 4096)};
    EXPECT_TRUE(internal::commit_labels(area_.data(), out.state, out.older, recorder(), kDevice));
    out.newer = {out.older[0], label("new", data + 16384, 4096)};
    EXPECT_TRUE(internal::commit_labels(area_.data(), out.state, out.newer, recorder(), kDevice));
    return out;
  }

  Area area_;
  std::vector<PersistCall> calls_;
};

TEST_F(LabelAreaTest, RoundTripKeepsEveryField) {
  internal::LabelState state = format();
  const uint64_t data = area_.size();
  std::vector<internal::Label> labels = {
      label("a", data, 4096),
      label(std::string(63, 'n'), data + (uint64_t{8} << 20), uint64_t{16} << 20),
      label("vm-1.disk_0", kDeviceSize - 4096, 4096),
  };
  labels[1].mode = "block";
  ASSERT_TRUE(internal::commit_labels(area_.data(), state, labels, recorder(), kDevice));

  auto read = internal::read_label_area(area_, kDevice);
  ASSERT_TRUE(read) << read.error().message();
  EXPECT_EQ(by_name(read->labels), by_name(labels));
  EXPECT_EQ(read->region_uuid, state.region_uuid);
  EXPECT_EQ(read->geometry.device_size, kDeviceSize);
  EXPECT_EQ(read->geometry.align, kAlign);
  EXPECT_EQ(read->geometry.area_size, area_.size());
  EXPECT_EQ(read->geometry.slot_count, state.geometry.slot_count);
  EXPECT_GT(read->geometry.slot_count, labels.size());
  EXPECT_EQ(read->seq, state.seq);
  EXPECT_EQ(read->current_block, state.current_block);
  EXPECT_EQ(read->slots, state.slots);
  EXPECT_TRUE(read->recovered_from.empty()) << read->recovered_from;
  // An empty state round-trips too.
  ASSERT_TRUE(internal::commit_labels(area_.data(), state, {}, recorder(), kDevice));
  read = internal::read_label_area(area_, kDevice);
  ASSERT_TRUE(read) << read.error().message();
  EXPECT_TRUE(read->labels.empty());
}

TEST_F(LabelAreaTest, CommitPersistsNewSlotsBeforeTheOtherIndexBlock) {
  internal::LabelState state = format();
  const uint64_t data = area_.size();
  ASSERT_TRUE(internal::commit_labels(area_.data(), state, {label("a", data, 4096)}, recorder(), kDevice));
  const int before = state.current_block;
  calls_.clear();
  std::vector<internal::Label> next = state.labels;
  next.push_back(label("b", data + 4096, 4096));
  ASSERT_TRUE(internal::commit_labels(area_.data(), state, next, recorder(), kDevice));
  // Only the new label's slot is written (the unchanged one keeps its slot),
  // then the index block that was not current, last.
  ASSERT_EQ(calls_.size(), 2u);
  EXPECT_GE(calls_[0].offset, internal::kLabelSlotsOffset);
  EXPECT_EQ(calls_[0].length, internal::kLabelSlotBytes);
  EXPECT_EQ(calls_[1].offset, uint64_t(1 - before) * internal::kIndexBlockBytes);
  EXPECT_EQ(calls_[1].length, internal::kIndexBlockBytes);
  EXPECT_EQ(state.current_block, 1 - before);
}

// The other index block may decode with another geometry (a stray block, or
// one written before a reformat) and name slots this area does not have: an
// update must pick its slots among this area's only (fuzz_label_area found
// the overflow; ASan runs this test in CI).
TEST_F(LabelAreaTest, OtherBlockNamingSlotsBeyondThisAreaIsHarmless) {
  internal::LabelState state = format();
  const uint32_t slots = state.geometry.slot_count;
  state.previous_slots = {0, slots, slots + 7, 31743};
  const uint64_t data = area_.size();
  std::vector<internal::Label> next = {label("a", data, 4096)};
  ASSERT_TRUE(internal::commit_labels(area_.data(), state, next, recorder(), kDevice));
  ASSERT_EQ(state.slots.size(), 1u);
  EXPECT_LT(state.slots[0], slots);
  EXPECT_NE(state.slots[0], 0u) << "a slot the other block names is avoided while others are free";
  auto read = internal::read_label_area(area_, kDevice);
  ASSERT_TRUE(read) << read.error().message();
  EXPECT_EQ(read->labels, next);
}

TEST_F(LabelAreaTest, NewestValidIndexWinsInEitherBlock) {
  internal::LabelState state = format();
  const uint64_t data = area_.size();
  std::vector<internal::Label> labels;
  for (int i = 0; i < 5; ++i) {
    labels.push_back(label("ns" + std::to_string(i), data + uint64_t(i) * 4096, 4096));
    ASSERT_TRUE(internal::commit_labels(area_.data(), state, labels, recorder(), kDevice));
    auto read = internal::read_label_area(area_, kDevice);
    ASSERT_TRUE(read) << read.error().message();
    // Both blocks are valid after the first commit; the higher sequence wins,
    // whichever block holds it.
    EXPECT_EQ(by_name(read->labels), by_name(labels)) << "after commit " << i;
    EXPECT_EQ(read->current_block, state.current_block);
    EXPECT_EQ(read->seq, uint64_t(i) + 2);
    EXPECT_TRUE(read->recovered_from.empty());
  }
}

TEST_F(LabelAreaTest, CorruptNewestIndexFallsBackToTheOlderAndSaysWhy) {
  TwoStates two = two_commits();
  const int newest = two.state.current_block;
  const Area good = area_;
  // Magic, sequence, checksum, a bitmap byte, and the zero tail of the block.
  for (uint64_t at : {uint64_t{0}, uint64_t{24}, uint64_t{104}, uint64_t{128}, uint64_t{4000}}) {
    Area area = good;
    flip(area, uint64_t(newest) * internal::kIndexBlockBytes + at);
    auto read = internal::read_label_area(area, kDevice);
    ASSERT_TRUE(read) << "byte " << at << ": " << read.error().message();
    EXPECT_EQ(by_name(read->labels), by_name(two.older)) << "byte " << at;
    EXPECT_EQ(read->current_block, 1 - newest);
    EXPECT_NE(read->recovered_from.find("index block " + std::to_string(newest)),
              std::string::npos)
        << "byte " << at << ": " << read->recovered_from;
    EXPECT_TRUE(read->recovered_from.find("bad checksum") != std::string::npos ||
                read->recovered_from.find("bad magic") != std::string::npos)
        << "byte " << at << ": " << read->recovered_from;
  }
  // The older index block alone corrupt: the newest still wins. A block that
  // does not decode cannot tell its sequence, so it is reported all the same.
  Area area = good;
  flip(area, uint64_t(1 - newest) * internal::kIndexBlockBytes + 24);
  auto read = internal::read_label_area(area, kDevice);
  ASSERT_TRUE(read) << read.error().message();
  EXPECT_EQ(by_name(read->labels), by_name(two.newer));
  EXPECT_NE(read->recovered_from.find("index block " + std::to_string(1 - newest)),
            std::string::npos)
      << read->recovered_from;
  // Nothing is reported for the blank second block of a new area.
  format();
  read = internal::read_label_area(area_, kDevice);
  ASSERT_TRUE(read) << read.error().message();
  EXPECT_TRUE(read->recovered_from.empty()) << read->recovered_from;
}

TEST_F(LabelAreaTest, CorruptSlotOfTheNewestIndexFallsBackToTheOlder) {
  TwoStates two = two_commits();
  // The slot written by the last commit: named by the newest index only.
  std::vector<uint32_t> fresh;
  for (uint32_t s : two.state.slots) {
    if (std::find(two.state.previous_slots.begin(), two.state.previous_slots.end(), s) ==
        two.state.previous_slots.end()) {
      fresh.push_back(s);
    }
  }
  ASSERT_EQ(fresh.size(), 1u);
  // Magic, a size byte, a name byte, the checksum.
  for (uint64_t at : {uint64_t{0}, uint64_t{24}, uint64_t{80}, uint64_t{250}}) {
    Area area = area_;
    flip(area, internal::kLabelSlotsOffset + uint64_t{fresh[0]} * internal::kLabelSlotBytes + at);
    auto read = internal::read_label_area(area, kDevice);
    ASSERT_TRUE(read) << read.error().message();
    EXPECT_EQ(by_name(read->labels), by_name(two.older)) << "byte " << at;
    EXPECT_NE(read->recovered_from.find("label slot " + std::to_string(fresh[0])),
              std::string::npos)
        << read->recovered_from;
  }
}

TEST_F(LabelAreaTest, BothIndexBlocksCorruptIsAnErrorNamingTheDevice) {
  two_commits();
  flip(area_, 24);
  flip(area_, internal::kIndexBlockBytes + 24);
  auto read = internal::read_label_area(area_, kDevice);
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().code(), std::errc::illegal_byte_sequence);
  const std::string& msg = read.error().message();
  EXPECT_NE(msg.find(kDevice), std::string::npos) << msg;
  EXPECT_NE(msg.find("index block 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("index block 1"), std::string::npos) << msg;
}

TEST_F(LabelAreaTest, BlankAreaIsBlankAndHasNoState) {
  EXPECT_TRUE(internal::label_area_blank(area_));
  auto read = internal::read_label_area(area_, kDevice);
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().code(), std::errc::illegal_byte_sequence);
  EXPECT_NE(read.error().message().find(kDevice), std::string::npos) << read.error().message();
  EXPECT_NE(read.error().message().find("blank"), std::string::npos) << read.error().message();
  // Any byte in the index blocks makes it not blank; a slot byte alone does not.
  Area area = area_;
  area[internal::kIndexBlockBytes + 17] = std::byte{1};
  EXPECT_FALSE(internal::label_area_blank(area));
  area = area_;
  area[internal::kLabelSlotsOffset + 3] = std::byte{1};
  EXPECT_TRUE(internal::label_area_blank(area));
  // A formatted area is not blank and holds no namespaces.
  format();
  EXPECT_FALSE(internal::label_area_blank(area_));
  auto formatted = internal::read_label_area(area_, kDevice);
  ASSERT_TRUE(formatted) << formatted.error().message();
  EXPECT_TRUE(formatted->labels.empty());
}

TEST_F(LabelAreaTest, SlotExhaustionIsENOSPCAndChangesNothing) {
  // A tiny area: two index blocks and four slots.
  const uint64_t align = 1024;
  Area area(internal::kLabelSlotsOffset + 4 * internal::kLabelSlotBytes);
  ASSERT_EQ(area.size() % align, 0u);
  auto formatted = internal::format_label_area(area.data(), {uint64_t{1} << 20, align, area.size(), 0},
                                     internal::new_uuid(), [](const std::byte*, size_t) { return ok(); });
  ASSERT_TRUE(formatted) << formatted.error().message();
  internal::LabelState state = *formatted;
  ASSERT_EQ(state.geometry.slot_count, 4u);
  auto nop = [](const std::byte*, size_t) { return ok(); };
  std::vector<internal::Label> four;
  for (uint64_t i = 0; i < 4; ++i) {
    four.push_back(label("n" + std::to_string(i), area.size() + i * align, align));
  }
  ASSERT_TRUE(internal::commit_labels(area.data(), state, four, nop, kDevice));

  // Changing one label needs a slot the current index does not use: none.
  const Area before = area;
  const internal::LabelState state_before = state;
  std::vector<internal::Label> next = four;
  next[3].size = 2 * align;
  Status full = internal::commit_labels(area.data(), state, next, nop, kDevice);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code(), std::errc::no_space_on_device);
  EXPECT_NE(full.error().message().find("4 label slots"), std::string::npos)
      << full.error().message();
  EXPECT_NE(full.error().message().find(kDevice), std::string::npos) << full.error().message();
  EXPECT_TRUE(area == before) << "a refused commit wrote to the area";
  EXPECT_EQ(state.seq, state_before.seq);
  EXPECT_EQ(state.labels, state_before.labels);
  EXPECT_EQ(state.slots, state_before.slots);

  // Once an update has dropped a namespace, its slot serves the next change
  // (the dropping update itself writes no slot).
  std::vector<internal::Label> three(four.begin() + 1, four.end());
  ASSERT_TRUE(internal::commit_labels(area.data(), state, three, nop, kDevice));
  next.erase(next.begin());
  ASSERT_TRUE(internal::commit_labels(area.data(), state, next, nop, kDevice));
  auto read = internal::read_label_area(area, kDevice);
  ASSERT_TRUE(read) << read.error().message();
  EXPECT_EQ(by_name(read->labels), by_name(next));
}

// A torn index write: the new block only partly reached the media. Either
// part may be the one that landed.
TEST_F(LabelAreaTest, TornIndexWriteOpensToTheOldState) {
  internal::LabelState state = format();
  const uint64_t data = area_.size();
  std::vector<internal::Label> old_labels = {label("a", data, 4096), label("b", data + 4096, 4096)};
  ASSERT_TRUE(internal::commit_labels(area_.data(), state, old_labels, recorder(), kDevice));
  std::vector<internal::Label> newer_prep = old_labels;
  newer_prep[1].size = 8192;
  ASSERT_TRUE(internal::commit_labels(area_.data(), state, newer_prep, recorder(), kDevice));
  old_labels = newer_prep;  // both blocks now valid: the torn one held a real state
  const Area before = area_;
  std::vector<internal::Label> new_labels = {old_labels[0], label("c", data + 16384, 4096)};
  ASSERT_TRUE(internal::commit_labels(area_.data(), state, new_labels, recorder(), kDevice));
  const Area after = area_;
  const uint64_t block = uint64_t(state.current_block) * internal::kIndexBlockBytes;

  int old_seen = 0;
  for (uint64_t cut = 8; cut < internal::kIndexBlockBytes; cut += 8) {
    for (bool prefix_landed : {true, false}) {
      Area torn = after;  // the new slots are written and persisted before the index
      for (uint64_t i = 0; i < internal::kIndexBlockBytes; ++i) {
        bool landed = prefix_landed ? i < cut : i >= cut;
        torn[block + i] = landed ? after[block + i] : before[block + i];
      }
      auto read = internal::read_label_area(torn, kDevice);
      ASSERT_TRUE(read) << "cut " << cut << ": " << read.error().message();
      // Where the bytes that did not land equal the new ones, the block is
      // whole and the new state is right; otherwise only the old one is.
      bool whole = std::equal(torn.begin() + block, torn.begin() + block + internal::kIndexBlockBytes,
                              after.begin() + block);
      if (whole) {
        EXPECT_EQ(by_name(read->labels), by_name(new_labels)) << "cut " << cut;
      } else {
        EXPECT_EQ(by_name(read->labels), by_name(old_labels))
            << "cut " << cut << (prefix_landed ? " prefix" : " suffix");
        ++old_seen;
      }
    }
  }
  EXPECT_GT(old_seen, 0);
  // Slots written but no index at all: the old state.
  Area slots_only = after;
  std::copy(before.begin() + block, before.begin() + block + internal::kIndexBlockBytes,
            slots_only.begin() + block);
  auto read = internal::read_label_area(slots_only, kDevice);
  ASSERT_TRUE(read) << read.error().message();
  EXPECT_EQ(by_name(read->labels), by_name(old_labels));
}

}  // namespace
}  // namespace rawdax

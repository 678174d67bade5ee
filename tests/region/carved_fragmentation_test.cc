// Fragmentation of a carved region: random creates, destroys and resizes on
// a file: region on tmpfs, each checked against an independent model of the
// data area (one owner per align unit). The model decides where best fit
// must place a namespace, when a create must fail with ENOSPC, and how far a
// namespace can grow in place; the region must agree on every operation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchDir;

constexpr uint64_t kRegionBytes = uint64_t{256} << 20;
constexpr int kOperations = 1000;
constexpr uint32_t kDefaultSeed = 20240611;

uint32_t test_seed() {
  const char* env = std::getenv("RAWDAX_TEST_SEED");
  return env != nullptr && *env != '\0' ? static_cast<uint32_t>(std::strtoul(env, nullptr, 0))
                                        : kDefaultSeed;
}

// The data area as a map of units, each free or owned by one namespace.
class SpaceModel {
 public:
  struct Run {
    uint64_t offset, length;  // bytes
  };
  struct Extent {
    uint64_t offset, size;  // bytes
  };

  SpaceModel(uint64_t begin, uint64_t end, uint64_t unit)
      : begin_(begin), unit_(unit), owner_((end - begin) / unit, kFree) {}

  // Free runs in offset order, maximal.
  std::vector<Run> runs() const {
    std::vector<Run> out;
    for (size_t i = 0; i < owner_.size();) {
      if (owner_[i] != kFree) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < owner_.size() && owner_[j] == kFree) ++j;
      out.push_back({begin_ + i * unit_, (j - i) * unit_});
      i = j;
    }
    return out;
  }
  uint64_t free_bytes() const {
    uint64_t n = 0;
    for (int o : owner_) n += o == kFree ? unit_ : 0;
    return n;
  }
  uint64_t largest_run() const {
    uint64_t best = 0;
    for (const Run& r : runs()) best = std::max(best, r.length);
    return best;
  }
  // Smallest run that holds `size`, lowest offset among equals.
  std::optional<uint64_t> best_fit(uint64_t size) const {
    std::optional<Run> best;
    for (const Run& r : runs()) {
      if (r.length >= size && (!best || r.length < best->length)) best = r;
    }
    if (!best) return std::nullopt;
    return best->offset;
  }
  // Free bytes right after the namespace's end.
  uint64_t room_after(const std::string& name) const {
    const Extent& e = extents_.at(name);
    size_t i = index(e.offset + e.size);
    uint64_t room = 0;
    while (i < owner_.size() && owner_[i] == kFree) {
      room += unit_;
      ++i;
    }
    return room;
  }

  void take(const std::string& name, uint64_t offset, uint64_t size) {
    int id = next_id_++;
    ids_[name] = id;
    extents_[name] = {offset, size};
    for (uint64_t u = index(offset); u < index(offset + size); ++u) owner_[u] = id;
  }
  void release(const std::string& name) {
    const Extent& e = extents_.at(name);
    for (uint64_t u = index(e.offset); u < index(e.offset + e.size); ++u) owner_[u] = kFree;
    extents_.erase(name);
    ids_.erase(name);
  }
  void resize(const std::string& name, uint64_t size) {
    Extent& e = extents_.at(name);
    const int id = ids_.at(name);
    for (uint64_t u = index(e.offset); u < index(e.offset + e.size); ++u) owner_[u] = kFree;
    e.size = size;
    for (uint64_t u = index(e.offset); u < index(e.offset + e.size); ++u) owner_[u] = id;
  }
  const std::map<std::string, Extent>& extents() const { return extents_; }

 private:
  static constexpr int kFree = -1;
  size_t index(uint64_t offset) const { return (offset - begin_) / unit_; }
  uint64_t begin_, unit_;
  std::vector<int> owner_;
  std::map<std::string, Extent> extents_;
  std::map<std::string, int> ids_;
  int next_id_ = 0;
};

// Compares the region with the model and checks the layout's invariants.
void expect_matches(const Region& region, const SpaceModel& model, uint64_t align) {
  std::map<std::string, SpaceModel::Extent> listed;
  for (const auto& ns : region.list()) {
    listed[ns.name] = {ns.offset, ns.size};
    EXPECT_EQ(ns.offset % align, 0u) << ns.name << " at " << ns.offset;
    EXPECT_EQ(ns.size % align, 0u) << ns.name << " of " << ns.size;
  }
  ASSERT_EQ(listed.size(), model.extents().size());
  for (const auto& [name, e] : model.extents()) {
    auto it = listed.find(name);
    ASSERT_NE(it, listed.end()) << name << " missing";
    EXPECT_EQ(it->second.offset, e.offset) << name;
    EXPECT_EQ(it->second.size, e.size) << name;
  }
  // No overlap, judged from the region's own answer.
  std::vector<SpaceModel::Extent> sorted;
  for (const auto& [name, e] : listed) sorted.push_back(e);
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    EXPECT_LE(sorted[i - 1].offset + sorted[i - 1].size, sorted[i].offset) << "overlap";
  }
  RegionSpace space = region.space();
  EXPECT_EQ(space.free, model.free_bytes());
  EXPECT_EQ(space.largest_free, model.largest_run());
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(CarvedFragmentationTest, RandomOperationsMatchAnIndependentModel) {
  const uint32_t seed = test_seed();
  std::printf("carved fragmentation: seed %" PRIu32 " (set RAWDAX_TEST_SEED to repeat one)\n",
              seed);
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);

  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  const std::string spec = "file:" + dir.path() + "/region.img";
  auto opened = Region::open(spec, {.create = true, .file_size = kRegionBytes});
  ASSERT_TRUE(opened) << opened.error().message();
  Region& region = **opened;
  const RegionSpace initial = region.space();
  ASSERT_TRUE(initial.carved);
  const uint64_t align = initial.align;
  ASSERT_GT(align, 0u);
  ASSERT_EQ(initial.device_size, kRegionBytes);
  ASSERT_EQ(initial.label_area_size % align, 0u);
  SpaceModel model(initial.label_area_size, initial.device_size, align);
  expect_matches(region, model, align);

  // Sizes from one unit to 4 MiB, a third of them small, so that holes of
  // every size appear; creates outnumber destroys, so the region fills up
  // and then runs fragmented, with creates refused while the free total
  // would hold them.
  auto random_size = [&] {
    const uint64_t max_units = std::max<uint64_t>(1, (uint64_t{4} << 20) / align);
    std::uniform_int_distribution<uint64_t> small(1, std::min<uint64_t>(16, max_units));
    std::uniform_int_distribution<uint64_t> any(1, max_units);
    return (rng() % 3 == 0 ? small(rng) : any(rng)) * align;
  };
  auto pick = [&]() -> std::string {
    auto it = model.extents().begin();
    std::advance(it, rng() % model.extents().size());
    return it->first;
  };

  int created = 0, refused_creates = 0, refused_fragmented = 0, destroyed = 0, grown = 0,
      refused_grows = 0, shrunk = 0;
  int next_name = 0;
  for (int op = 0; op < kOperations; ++op) {
    SCOPED_TRACE("operation " + std::to_string(op));
    const uint64_t generation = region.generation();
    const unsigned dice = rng() % 100;
    if (model.extents().empty() || dice < 60) {
      const std::string name = "ns" + std::to_string(next_name++);
      const uint64_t size = random_size();
      const auto expected = model.best_fit(size);
      auto info = region.create_namespace({.name = name, .size = size});
      if (!expected) {
        ASSERT_FALSE(info) << "create of " << size << " succeeded; the model has no run for it";
        EXPECT_EQ(info.error().code(), std::errc::no_space_on_device) << info.error().message();
        EXPECT_TRUE(contains(info.error().message(),
                             "the largest free extent has " + std::to_string(model.largest_run())))
            << info.error().message();
        EXPECT_EQ(region.generation(), generation);
        ++refused_creates;
        refused_fragmented += model.free_bytes() >= size;
      } else {
        ASSERT_TRUE(info) << "create of " << size << ": " << info.error().message();
        EXPECT_EQ(info->offset, *expected) << "not the best fit for " << size;
        EXPECT_EQ(info->size, size);
        model.take(name, info->offset, info->size);
        ++created;
        // A new namespace reads as zeros, whatever its extent held before.
        auto dev = region.open_device(name);
        ASSERT_TRUE(dev) << dev.error().message();
        std::vector<std::byte> page(align);
        ASSERT_TRUE((*dev)->read(size - align, page));
        EXPECT_EQ(std::count(page.begin(), page.end(), std::byte{0}), ptrdiff_t(align))
            << name << " does not read as zeros";
        std::fill(page.begin(), page.end(), std::byte{0xa5});
        ASSERT_TRUE((*dev)->write(size - align, page));  // leaves data for the next tenant
      }
    } else if (dice < 78) {
      const std::string name = pick();
      ASSERT_TRUE(region.destroy_namespace(name)) << name;
      model.release(name);
      ++destroyed;
    } else {
      const std::string name = pick();
      const uint64_t old_size = model.extents().at(name).size;
      uint64_t new_size = random_size();
      if (new_size == old_size) new_size += align;
      const uint64_t room = model.room_after(name);
      auto dev = region.open_device(name);
      ASSERT_TRUE(dev) << dev.error().message();
      Status resized = (*dev)->resize(new_size);
      if (new_size < old_size) {
        ASSERT_TRUE(resized) << "shrink " << old_size << " -> " << new_size << ": "
                             << resized.error().message();
        model.resize(name, new_size);
        ++shrunk;
      } else if (new_size - old_size <= room) {
        ASSERT_TRUE(resized) << "grow " << old_size << " -> " << new_size << " with " << room
                             << " free after it: " << resized.error().message();
        model.resize(name, new_size);
        ++grown;
        // The grown part was free space: it reads as zeros.
        std::vector<std::byte> grown_bytes(new_size - old_size);
        ASSERT_TRUE((*dev)->read(old_size, grown_bytes));
        EXPECT_EQ(std::count(grown_bytes.begin(), grown_bytes.end(), std::byte{0}),
                  ptrdiff_t(grown_bytes.size()))
            << "grown part of " << name << " does not read as zeros";
      } else {
        ASSERT_FALSE(resized) << "grow " << old_size << " -> " << new_size << " succeeded with "
                              << room << " free after it";
        EXPECT_EQ(resized.error().code(), std::errc::no_space_on_device);
        EXPECT_TRUE(contains(resized.error().message(),
                             "the largest size that fits in place is " +
                                 std::to_string(old_size + room)))
            << resized.error().message();
        EXPECT_EQ(region.generation(), generation);
        EXPECT_EQ((*dev)->size(), old_size);
        ++refused_grows;
      }
      // Closed before the check: an open device keeps a shrunk tail held.
    }
    expect_matches(region, model, align);
    if (HasFatalFailure() || HasFailure()) break;
  }
  std::printf("carved fragmentation: %d created, %d refused (ENOSPC; %d of them with enough "
              "free space in all), %d destroyed, %d grown, %d grows refused, %d shrunk; %zu "
              "namespaces, %" PRIu64 " bytes free at the end\n",
              created, refused_creates, refused_fragmented, destroyed, grown, refused_grows,
              shrunk,
              model.extents().size(), model.free_bytes());
  // Every outcome the model predicts was exercised at least once.
  EXPECT_GT(created, 0);
  EXPECT_GT(refused_creates, 0);
  EXPECT_GT(refused_fragmented, 0);
  EXPECT_GT(destroyed, 0);
  EXPECT_GT(grown, 0);
  EXPECT_GT(refused_grows, 0);
  EXPECT_GT(shrunk, 0);

  // The layout is the labels': a reopened region shows the same.
  opened->reset();
  auto reopened = Region::open(spec);
  ASSERT_TRUE(reopened) << reopened.error().message();
  expect_matches(**reopened, model, align);
}

}  // namespace
}  // namespace rawdax

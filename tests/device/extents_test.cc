// Device::extents: data and hole runs from the backing file, on every media.
#include <gtest/gtest.h>

#include <vector>

#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

constexpr uint64_t kSize = 4 << 20;
constexpr uint64_t kPage = 4096;

class DeviceExtentsTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  void SetUp() override {
    auto region = Region::open(scratch_.spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
    ASSERT_TRUE(region_->create_namespace({.name = "dev", .size = kSize}));
    auto dev = region_->open_device("dev");
    ASSERT_TRUE(dev) << dev.error().message();
    dev_ = std::move(*dev);
  }
  void write_ones(uint64_t offset, size_t n) {
    std::vector<std::byte> ones(n, std::byte{1});
    ASSERT_TRUE(dev_->write(offset, ones));
  }

  ScratchRegion scratch_{GetParam()};
  std::unique_ptr<Region> region_;
  std::unique_ptr<Device> dev_;
};

// Media whose namespaces are sparse: unwritten and discarded ranges are holes.
using SparseExtentsTest = DeviceExtentsTest;

TEST_P(SparseExtentsTest, RunsFollowWritesAndDiscards) {
  auto fresh = dev_->extents(0, kSize);
  ASSERT_TRUE(fresh) << fresh.error().message();
  ASSERT_EQ(fresh->size(), 1u);
  EXPECT_TRUE((*fresh)[0].hole);
  EXPECT_EQ((*fresh)[0].length, kSize);

  write_ones(kPage, 2 * kPage);     // data at [4K, 12K)
  write_ones(1 << 20, kPage);       // data at [1M, 1M+4K)
  auto runs = dev_->extents(0, kSize);
  ASSERT_TRUE(runs) << runs.error().message();
  std::vector<Extent> want = {{0, kPage, true},
                              {kPage, 2 * kPage, false},
                              {3 * kPage, (1 << 20) - 3 * kPage, true},
                              {1 << 20, kPage, false},
                              {(1 << 20) + kPage, kSize - (1 << 20) - kPage, true}};
  ASSERT_EQ(runs->size(), want.size());
  uint64_t covered = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ((*runs)[i].offset, want[i].offset) << i;
    EXPECT_EQ((*runs)[i].length, want[i].length) << i;
    EXPECT_EQ((*runs)[i].hole, want[i].hole) << i;
    covered += (*runs)[i].length;
  }
  EXPECT_EQ(covered, kSize);

  // A sub-range is clipped to itself; max_extents stops early.
  auto inner = dev_->extents(kPage + 100, kPage);
  ASSERT_TRUE(inner);
  ASSERT_EQ(inner->size(), 1u);
  EXPECT_FALSE((*inner)[0].hole);
  EXPECT_EQ((*inner)[0].offset, kPage + 100);
  EXPECT_EQ((*inner)[0].length, kPage);
  auto one = dev_->extents(0, kSize, 1);
  ASSERT_TRUE(one);
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].length, kPage);

  auto hole = dev_->is_hole(3 * kPage, (1 << 20) - 3 * kPage);
  ASSERT_TRUE(hole);
  EXPECT_TRUE(*hole);
  auto not_hole = dev_->is_hole(0, 2 * kPage);
  ASSERT_TRUE(not_hole);
  EXPECT_FALSE(*not_hole);
  EXPECT_FALSE(*dev_->is_hole((1 << 20) - kPage, 2 * kPage));
  EXPECT_TRUE(*dev_->is_hole(kSize - kPage, kPage));

  ASSERT_TRUE(dev_->discard(kPage, 2 * kPage));
  auto after = dev_->extents(0, 1 << 20);
  ASSERT_TRUE(after);
  ASSERT_EQ(after->size(), 1u);
  EXPECT_TRUE((*after)[0].hole);
}

TEST_P(DeviceExtentsTest, BoundsAndRemoval) {
  auto past = dev_->extents(kSize - kPage, 2 * kPage);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code(), std::errc::invalid_argument);
  EXPECT_NE(past.error().message().find("dev"), std::string::npos);
  auto empty = dev_->extents(0, 0);
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
  ASSERT_TRUE(dev_->remove());
  EXPECT_FALSE(dev_->is_hole(kSize, 1));
  auto gone = dev_->extents(0, kPage);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), std::errc::no_such_device_or_address);
}

INSTANTIATE_TEST_SUITE_P(Media, DeviceExtentsTest, RAWDAX_ALL_MEDIA,
                         ::rawdax::testing::param_name);
// Not on hugetlbfs: its namespaces have every page allocated and never punch
// one, and it has no SEEK_DATA/SEEK_HOLE, so they are one data run
// (HugetlbfsTest.DiscardKeepsTheHugePages checks that instead).
INSTANTIATE_TEST_SUITE_P(Media, SparseExtentsTest,
                         ::testing::ValuesIn(::rawdax::testing::media_except(
                             ::rawdax::testing::all_media(), {TestMedia::kHugetlbfs})),
                         ::rawdax::testing::param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(SparseExtentsTest);

}  // namespace
}  // namespace rawdax

#include "region/bad_ranges.h"

#include <gtest/gtest.h>

namespace rawdax::internal {
namespace {

using List = std::vector<BadRange>;

TEST(BadRanges, AddMergesOverlappingAndAdjacentRanges) {
  List list;
  EXPECT_TRUE(add_bad_range(list, 8192, 4096));
  EXPECT_TRUE(add_bad_range(list, 0, 4096));
  EXPECT_EQ(list, (List{{0, 4096}, {8192, 4096}}));
  EXPECT_FALSE(add_bad_range(list, 8192, 100)) << "already covered";
  EXPECT_TRUE(add_bad_range(list, 4096, 4096));  // fills the gap: one range
  EXPECT_EQ(list, (List{{0, 12288}}));
  EXPECT_TRUE(add_bad_range(list, 20480, 4096));
  EXPECT_TRUE(add_bad_range(list, 10000, 12000));  // overlaps both
  EXPECT_EQ(list, (List{{0, 24576}}));
  EXPECT_FALSE(add_bad_range(list, 0, 0));
}

TEST(BadRanges, RemoveSplitsWhatItCuts) {
  List list = {{0, 16384}, {32768, 4096}};
  EXPECT_TRUE(remove_bad_range(list, 4096, 4096));
  EXPECT_EQ(list, (List{{0, 4096}, {8192, 8192}, {32768, 4096}}));
  EXPECT_FALSE(remove_bad_range(list, 20000, 4096));
  EXPECT_TRUE(remove_bad_range(list, 0, 1 << 20));
  EXPECT_TRUE(list.empty());
}

TEST(BadRanges, FirstOverlapFindsOnlyRealOverlaps) {
  List list = {{4096, 4096}, {16384, 4096}};
  EXPECT_FALSE(first_bad_overlap(list, 0, 4096));
  EXPECT_FALSE(first_bad_overlap(list, 8192, 8192));
  EXPECT_EQ(first_bad_overlap(list, 8191, 10000), (BadRange{4096, 4096}));
  EXPECT_EQ(first_bad_overlap(list, 8192, 10000), (BadRange{16384, 4096}));
  EXPECT_EQ(first_bad_overlap(list, 0, 4097), (BadRange{4096, 4096}));
  EXPECT_EQ(first_bad_overlap(list, 20479, 1), (BadRange{16384, 4096}));
  EXPECT_FALSE(first_bad_overlap(list, 4096, 0));
}

TEST(BadRanges, ValidityMeansSortedDisjointNonAdjacentInside) {
  EXPECT_TRUE(valid_bad_ranges({}, 0));
  EXPECT_TRUE(valid_bad_ranges({{0, 4096}, {8192, 4096}}, 12288));
  EXPECT_FALSE(valid_bad_ranges({{0, 4096}, {4096, 4096}}, 12288));  // adjacent
  EXPECT_FALSE(valid_bad_ranges({{8192, 4096}, {0, 4096}}, 12288));
  EXPECT_FALSE(valid_bad_ranges({{8192, 8192}}, 12288));
  EXPECT_FALSE(valid_bad_ranges({{0, 0}}, 12288));
  EXPECT_FALSE(valid_bad_ranges({{UINT64_MAX, 2}}, UINT64_MAX));
}

}  // namespace
}  // namespace rawdax::internal

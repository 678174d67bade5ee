// FreeSpace: free extents derived from the ranges in use, best fit and the
// room a range has to grow in place.
#include "region/free_space.h"

#include <gtest/gtest.h>

#include <vector>

namespace rawdax {
namespace {

TEST(FreeSpaceTest, EmptyAreaIsOneFreeExtent) {
  internal::FreeSpace space(100, 1100, {});
  EXPECT_EQ(space.free_extents(), (std::vector<internal::ByteRange>{{100, 1000}}));
  EXPECT_EQ(space.total_free(), 1000u);
  EXPECT_EQ(space.largest_free(), 1000u);
  EXPECT_EQ(space.best_fit(1000), 100u);
  EXPECT_FALSE(space.best_fit(1001));
}

TEST(FreeSpaceTest, FullAreaHasNothingFree) {
  internal::FreeSpace space(0, 100, {{0, 60}, {60, 40}});
  EXPECT_TRUE(space.free_extents().empty());
  EXPECT_EQ(space.total_free(), 0u);
  EXPECT_EQ(space.largest_free(), 0u);
  EXPECT_FALSE(space.best_fit(1));
  EXPECT_EQ(space.free_at(0), 0u);
  EXPECT_EQ(space.free_at(100), 0u);
}

TEST(FreeSpaceTest, UnsortedOverlappingAndClippedRangesLeaveCoalescedGaps) {
  // A device's view overlapping its own label, ranges out of order, one
  // reaching below the area and one past its end, and an empty one.
  internal::FreeSpace space(100, 1000, {{700, 100},
                              {0, 150},
                              {300, 100},
                              {350, 100},
                              {950, 500},
                              {500, 0}});
  EXPECT_EQ(space.free_extents(),
            (std::vector<internal::ByteRange>{{150, 150}, {450, 250}, {800, 150}}));
  EXPECT_EQ(space.total_free(), 550u);
  EXPECT_EQ(space.largest_free(), 250u);
}

TEST(FreeSpaceTest, AdjacentRangesLeaveNoEmptyExtent) {
  internal::FreeSpace space(0, 300, {{100, 100}, {0, 100}});
  EXPECT_EQ(space.free_extents(), (std::vector<internal::ByteRange>{{200, 100}}));
}

TEST(FreeSpaceTest, BestFitTakesTheSmallestSufficientExtentLowestFirst) {
  // Free: [0,50) [100,130) [200,230) [300,1000)
  internal::FreeSpace space(0, 1000, {{50, 50}, {130, 70}, {230, 70}});
  ASSERT_EQ(space.free_extents().size(), 4u);
  EXPECT_EQ(space.best_fit(10), 100u);   // two of 30 tie: the lower one
  EXPECT_EQ(space.best_fit(30), 100u);
  EXPECT_EQ(space.best_fit(31), 0u);     // only 50 and 700 hold it: 50
  EXPECT_EQ(space.best_fit(50), 0u);
  EXPECT_EQ(space.best_fit(51), 300u);
  EXPECT_EQ(space.best_fit(700), 300u);
  EXPECT_FALSE(space.best_fit(701));
}

TEST(FreeSpaceTest, FreeAtIsTheRoomUpToTheNextUsedRange) {
  internal::FreeSpace space(0, 1000, {{0, 100}, {400, 100}});
  EXPECT_EQ(space.free_at(100), 300u);  // the end of the first range: grows to 400
  EXPECT_EQ(space.free_at(250), 150u);
  EXPECT_EQ(space.free_at(500), 500u);
  EXPECT_EQ(space.free_at(50), 0u);     // inside a used range
  EXPECT_EQ(space.free_at(400), 0u);
  EXPECT_EQ(space.free_at(1000), 0u);   // the end of the area
  EXPECT_EQ(space.free_at(5000), 0u);
}

}  // namespace
}  // namespace rawdax

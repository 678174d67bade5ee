#include "device/dirty_bitmap.h"

#include <gtest/gtest.h>

#include <thread>
#include <utility>
#include <vector>

namespace rawdax::internal {
namespace {

using Runs = std::vector<std::pair<uint64_t, uint64_t>>;

Runs take_runs(DirtyBitmap& bitmap) {
  Runs runs;
  bitmap.take([&](uint64_t first, uint64_t count) { runs.emplace_back(first, count); });
  return runs;
}

TEST(DirtyBitmap, SetsRunsAndTakesThemOnce) {
  DirtyBitmap bitmap;
  bitmap.set(0);
  bitmap.set_range(5, 3);
  bitmap.set_range(60, 10);       // crosses a word boundary
  bitmap.set(DirtyBitmap::kMaxPages - 1);
  bitmap.set_range((1u << 18) - 1, 2);  // crosses a chunk boundary
  EXPECT_TRUE(bitmap.test(6));
  EXPECT_FALSE(bitmap.test(8));
  EXPECT_EQ(bitmap.count(), 1u + 3 + 10 + 1 + 2);
  Runs runs = take_runs(bitmap);
  Runs want = {{0, 1}, {5, 3}, {60, 10}, {(1u << 18) - 1, 2}, {DirtyBitmap::kMaxPages - 1, 1}};
  EXPECT_EQ(runs, want);
  EXPECT_EQ(bitmap.count(), 0u);
  EXPECT_TRUE(take_runs(bitmap).empty());
}

TEST(DirtyBitmap, IgnoresPagesPastTheCapacity) {
  DirtyBitmap bitmap;
  bitmap.set_range(DirtyBitmap::kMaxPages - 2, 10);
  EXPECT_EQ(bitmap.count(), 2u);
  EXPECT_FALSE(bitmap.test(DirtyBitmap::kMaxPages));
}

TEST(DirtyBitmap, ConcurrentSetsAreNeverLostByTake) {
  DirtyBitmap bitmap;
  constexpr uint64_t kPages = 1 << 20;
  std::vector<uint8_t> seen(kPages, 0);
  std::thread setter([&] {
    for (uint64_t p = 0; p < kPages; p += 3) bitmap.set(p);
  });
  for (int i = 0; i < 50; ++i) {
    bitmap.take([&](uint64_t first, uint64_t count) {
      for (uint64_t p = first; p < first + count; ++p) seen[p] = 1;
    });
  }
  setter.join();
  bitmap.take([&](uint64_t first, uint64_t count) {
    for (uint64_t p = first; p < first + count; ++p) seen[p] = 1;
  });
  for (uint64_t p = 0; p < kPages; ++p) ASSERT_EQ(seen[p], p % 3 == 0 ? 1 : 0) << p;
}

}  // namespace
}  // namespace rawdax::internal

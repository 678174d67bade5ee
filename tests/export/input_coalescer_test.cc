// The NBD session's input coalescing policy: when it pauses before waiting
// for requests, and how it backs off when pauses do not pay.
#include "export/input_coalescer.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace rawdax::nbd {
namespace {

// Counts the waits, out of `waits`, that the coalescer pauses before, when
// every wait is followed by `served` requests.
int pauses(InputCoalescer& c, uint64_t served, int waits) {
  int n = 0;
  for (int i = 0; i < waits; ++i) n += c.pause_before_wait(served) ? 1 : 0;
  return n;
}

TEST(NbdInputCoalescer, KeepsPausingWhilePausesGatherBatches) {
  InputCoalescer c;
  EXPECT_TRUE(c.pause_before_wait(0));  // a new session tries it first
  // A depth-32 client's first burst, then batches of 16 while it still has
  // requests in flight.
  EXPECT_FALSE(c.pause_before_wait(32));
  pauses(c, 32, 1);
  EXPECT_EQ(pauses(c, 16, 100), 100);
  EXPECT_EQ(pauses(c, InputCoalescer::kMinBatch, 100), 100);
}

TEST(NbdInputCoalescer, BacksOffWhenTheClientRunsDryDuringAPause) {
  InputCoalescer c;
  ASSERT_TRUE(c.pause_before_wait(0));
  // A depth-8 client: every pause gathers all 8 of its requests, so it was
  // waiting for us.
  EXPECT_FALSE(c.pause_before_wait(8));
  EXPECT_TRUE(c.pause_before_wait(8));
  EXPECT_FALSE(c.pause_before_wait(8));
  EXPECT_FALSE(c.pause_before_wait(8));
  EXPECT_TRUE(c.pause_before_wait(8));
  pauses(c, 8, 100000);
  EXPECT_EQ(pauses(c, 8, 10 * static_cast<int>(InputCoalescer::kMaxBackoff + 1)), 10);
}

TEST(NbdInputCoalescer, BacksOffDoublingWhilePausesFail) {
  InputCoalescer c;
  ASSERT_TRUE(c.pause_before_wait(0));
  // Each failed pause skips 1, 2, 4, ... waits before the next try.
  const uint64_t few = InputCoalescer::kMinBatch - 1;
  for (uint64_t skip = 1; skip <= 8; skip *= 2) {
    for (uint64_t i = 0; i < skip; ++i) {
      EXPECT_FALSE(c.pause_before_wait(few)) << "skip " << skip << " wait " << i;
    }
    EXPECT_TRUE(c.pause_before_wait(few)) << "after skipping " << skip;
  }
}

TEST(NbdInputCoalescer, BackoffIsCappedSoALowDepthClientPaysRarely) {
  InputCoalescer c;
  // A queue-depth-1 client: one request per wait, forever.
  pauses(c, 1, 100000);  // the backoff has reached its cap
  const int window = 10 * static_cast<int>(InputCoalescer::kMaxBackoff + 1);
  EXPECT_EQ(pauses(c, 1, window), 10);
}

TEST(NbdInputCoalescer, ASuccessfulPauseResetsTheBackoff) {
  InputCoalescer c;
  pauses(c, 1, 100000);
  // The client deepens its queue: a burst of 32 at the next pause is a
  // failure (all its requests), but shows its depth; a batch of 16 is not.
  while (!c.pause_before_wait(1)) {
  }
  EXPECT_FALSE(c.pause_before_wait(32));
  while (!c.pause_before_wait(1)) {
  }
  EXPECT_TRUE(c.pause_before_wait(16));
  EXPECT_TRUE(c.pause_before_wait(16));
  // A single failure now skips one wait, not the capped run.
  EXPECT_FALSE(c.pause_before_wait(1));
  EXPECT_TRUE(c.pause_before_wait(1));
}

}  // namespace
}  // namespace rawdax::nbd

#include "ref/live_ref.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace rawdax {
namespace {

using Access = internal::LiveRef::Access;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Generous bound for "this should happen": only reached when it never does.
constexpr milliseconds kEventually{5000};
// How long a blocked call is watched to confirm it stays blocked.
constexpr milliseconds kStaysBlocked{100};

template <typename Pred>
bool WaitFor(Pred pred, milliseconds limit = kEventually) {
  const Clock::time_point end = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() >= end) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

// Runs a callable at scope exit, so a failed ASSERT still joins threads.
template <typename F>
class Cleanup {
 public:
  explicit Cleanup(F f) : f_(std::move(f)) {}
  ~Cleanup() { f_(); }
  Cleanup(const Cleanup&) = delete;
  Cleanup& operator=(const Cleanup&) = delete;

 private:
  F f_;
};

void JoinIfJoinable(std::thread& thread) {
  if (thread.joinable()) thread.join();
}

// Runs ref.tryget(access) on its own thread. result(): -1 while it has not
// returned, else 0/1. If the test fails with the call still blocked, the
// destructor kills the ref to release it (and, should kill() fail to wake
// it, drops the freezes), so a failing test ends instead of hanging.
class AsyncGet {
 public:
  AsyncGet(internal::LiveRef& ref, Access access)
      : ref_(ref), thread_([this, access] { result_.store(ref_.tryget(access) ? 1 : 0); }) {}
  ~AsyncGet() {
    if (result_.load() < 0) {
      ref_.kill();
      if (!Finished(milliseconds(1000))) {
        ADD_FAILURE() << "kill() did not release a parked writer";
        while (ref_.freeze_depth() > 0) ref_.unfreeze();
      }
    }
    thread_.join();
  }
  int result() const { return result_.load(); }
  bool Finished(milliseconds limit = kEventually) const {
    return WaitFor([this] { return result_.load() >= 0; }, limit);
  }

 private:
  internal::LiveRef& ref_;
  std::atomic<int> result_{-1};
  std::thread thread_;
};

bool IsError(const Status& status, std::errc code) {
  return !status && status.error().code() == std::make_error_code(code);
}

TEST(LiveRefTest, GetPutCounts) {
  internal::LiveRef ref;
  EXPECT_GE(ref.num_shards(), 8);
  EXPECT_EQ(ref.num_shards() & (ref.num_shards() - 1), 0);
  EXPECT_FALSE(ref.killed());
  EXPECT_EQ(ref.freeze_depth(), 0);
  ASSERT_TRUE(ref.tryget(Access::kRead));
  ASSERT_TRUE(ref.tryget(Access::kWrite));
  ASSERT_TRUE(ref.tryget(Access::kWrite));
  EXPECT_EQ(ref.count_slow(), 3);
  EXPECT_EQ(ref.count_slow(Access::kRead), 1);
  EXPECT_EQ(ref.count_slow(Access::kWrite), 2);
  EXPECT_TRUE(IsError(ref.wait_for_zero(milliseconds(0)), std::errc::timed_out));
  ref.put(Access::kWrite);
  ref.put(Access::kRead);
  ref.put(Access::kWrite);
  EXPECT_EQ(ref.count_slow(), 0);
  EXPECT_TRUE(ref.wait_for_zero(milliseconds(0)));
}

TEST(LiveRefTest, ShardCountIsRoundedToPowerOfTwo) {
  EXPECT_EQ(internal::LiveRef(1).num_shards(), 1);
  EXPECT_EQ(internal::LiveRef(3).num_shards(), 4);
  EXPECT_EQ(internal::LiveRef(64).num_shards(), 64);
}

TEST(LiveRefTest, KillFailsEveryLaterGet) {
  internal::LiveRef ref;
  ASSERT_TRUE(ref.tryget(Access::kRead));
  ref.kill();
  EXPECT_TRUE(ref.killed());
  EXPECT_FALSE(ref.tryget(Access::kRead));
  EXPECT_FALSE(ref.tryget(Access::kWrite));
  ref.kill();  // idempotent
  EXPECT_TRUE(ref.killed());
  EXPECT_FALSE(ref.tryget(Access::kWrite));
  // Failed gets back out; only the reference taken before kill remains.
  EXPECT_EQ(ref.count_slow(), 1);
  ref.put(Access::kRead);
  EXPECT_TRUE(ref.wait_for_zero(milliseconds(0)));
  EXPECT_TRUE(IsError(ref.freeze(), std::errc::no_such_device_or_address));
  EXPECT_EQ(ref.freeze_depth(), 0);
}

TEST(LiveRefTest, HoldPutsOnDestructionAndMoves) {
  internal::LiveRef ref;
  {
    std::optional<internal::LiveRef::Hold> hold = ref.hold(Access::kWrite);
    ASSERT_TRUE(hold);
    EXPECT_TRUE(hold->holds());
    EXPECT_EQ(hold->access(), Access::kWrite);
    EXPECT_EQ(ref.count_slow(Access::kWrite), 1);

    internal::LiveRef::Hold moved = std::move(*hold);
    EXPECT_FALSE(hold->holds());
    EXPECT_TRUE(moved.holds());
    EXPECT_EQ(ref.count_slow(), 1);

    std::optional<internal::LiveRef::Hold> reader = ref.hold(Access::kRead);
    ASSERT_TRUE(reader);
    moved = std::move(*reader);  // drops the writer, keeps the reader
    EXPECT_EQ(moved.access(), Access::kRead);
    EXPECT_EQ(ref.count_slow(Access::kWrite), 0);
    EXPECT_EQ(ref.count_slow(Access::kRead), 1);
    moved.reset();
    EXPECT_EQ(ref.count_slow(), 0);
    moved.reset();  // no double put
    EXPECT_EQ(ref.count_slow(), 0);
  }
  EXPECT_EQ(ref.count_slow(), 0);
  ref.kill();
  EXPECT_FALSE(ref.hold(Access::kRead));
  EXPECT_FALSE(ref.hold(Access::kWrite));
}

TEST(LiveRefTest, PutOnAnotherThread) {
  internal::LiveRef ref(8);
  ASSERT_TRUE(ref.tryget(Access::kWrite));
  std::thread([&ref] { ref.put(Access::kWrite); }).join();
  EXPECT_EQ(ref.count_slow(), 0);
  EXPECT_TRUE(ref.wait_for_zero(milliseconds(0)));
}

// Live threads must not share a shard because of threads that came before:
// an exited thread's slot goes to the next new thread.
TEST(LiveRefTest, ThreadSlotsAreReusedAndDistinct) {
  auto slot_of_new_thread = [] {
    uint32_t slot = 0;
    std::thread([&slot] { slot = internal::live_ref_internal::thread_slot(); }).join();
    return slot;
  };
  const uint32_t first = slot_of_new_thread();
  for (int i = 0; i < 20; ++i) EXPECT_LE(slot_of_new_thread(), first) << "thread " << i;

  std::atomic<uint32_t> a{0}, b{0};
  std::atomic<int> ready{0};
  auto body = [&ready](std::atomic<uint32_t>& out) {
    out.store(internal::live_ref_internal::thread_slot());
    ready.fetch_add(1);
    WaitFor([&ready] { return ready.load() == 2; });  // both alive at once
  };
  std::thread ta(body, std::ref(a));
  std::thread tb(body, std::ref(b));
  ta.join();
  tb.join();
  EXPECT_NE(a.load(), b.load());
  EXPECT_EQ(internal::live_ref_internal::thread_slot(), internal::live_ref_internal::thread_slot());
}

TEST(LiveRefTest, ReadersPassFreeze) {
  internal::LiveRef ref;
  ASSERT_TRUE(ref.freeze());
  EXPECT_EQ(ref.freeze_depth(), 1);
  AsyncGet reader(ref, Access::kRead);
  ASSERT_TRUE(reader.Finished());
  EXPECT_EQ(reader.result(), 1);
  ref.put(Access::kRead);
  ref.unfreeze();
}

TEST(LiveRefTest, WriterBlocksDuringFreezeAndResumesAfterUnfreeze) {
  internal::LiveRef ref;
  ASSERT_TRUE(ref.freeze(kEventually));
  AsyncGet writer(ref, Access::kWrite);
  EXPECT_FALSE(writer.Finished(kStaysBlocked)) << "writer got through a freeze";
  EXPECT_EQ(ref.count_slow(Access::kWrite), 0);  // a parked writer holds nothing
  ref.unfreeze();
  ASSERT_TRUE(writer.Finished());
  EXPECT_EQ(writer.result(), 1);
  EXPECT_EQ(ref.count_slow(Access::kWrite), 1);
  ref.put(Access::kWrite);
}

TEST(LiveRefTest, FreezeWaitsForWritersInFlight) {
  internal::LiveRef ref;
  ASSERT_TRUE(ref.tryget(Access::kWrite));
  std::atomic<int> frozen{-1};
  std::thread freezer([&] { frozen.store(ref.freeze(kEventually) ? 1 : 0); });
  EXPECT_FALSE(WaitFor([&] { return frozen.load() >= 0; }, kStaysBlocked))
      << "freeze returned with a writer in flight";
  ref.put(Access::kWrite);
  EXPECT_TRUE(WaitFor([&] { return frozen.load() >= 0; }));
  freezer.join();
  EXPECT_EQ(frozen.load(), 1);
  EXPECT_EQ(ref.freeze_depth(), 1);
  ref.unfreeze();
}

TEST(LiveRefTest, NestedFreeze) {
  internal::LiveRef ref;
  ASSERT_TRUE(ref.freeze(kEventually));
  // Already frozen and drained: returns at once even with a zero timeout.
  ASSERT_TRUE(ref.freeze(milliseconds(0)));
  EXPECT_EQ(ref.freeze_depth(), 2);
  // A reader held across freezes does not matter to a freeze.
  ASSERT_TRUE(ref.tryget(Access::kRead));
  std::thread([&ref] { EXPECT_TRUE(ref.freeze(milliseconds(0))); }).join();
  EXPECT_EQ(ref.freeze_depth(), 3);
  ref.put(Access::kRead);

  AsyncGet writer(ref, Access::kWrite);
  ref.unfreeze();
  ref.unfreeze();
  EXPECT_EQ(ref.freeze_depth(), 1);
  EXPECT_FALSE(writer.Finished(kStaysBlocked)) << "writer got through a nested freeze";
  ref.unfreeze();
  EXPECT_EQ(ref.freeze_depth(), 0);
  ASSERT_TRUE(writer.Finished());
  EXPECT_EQ(writer.result(), 1);
  ref.put(Access::kWrite);
}

TEST(LiveRefTest, FreezeTimeoutUndoesItsDepth) {
  internal::LiveRef ref;
  std::atomic<bool> held{false};
  std::atomic<bool> release{false};
  std::thread holder([&] {
    if (!ref.tryget(Access::kWrite)) return;
    held.store(true);
    WaitFor([&] { return release.load(); });
    ref.put(Access::kWrite);
  });
  Cleanup join_holder([&] {
    release.store(true);
    JoinIfJoinable(holder);
  });
  ASSERT_TRUE(WaitFor([&] { return held.load(); }));

  constexpr milliseconds kTimeout{300};
  std::atomic<int> freeze_result{-1};  // 0 ok, 1 timed_out, 2 other
  std::atomic<int64_t> freeze_ms{0};
  std::thread freezer([&] {
    const Clock::time_point start = Clock::now();
    Status status = ref.freeze(kTimeout);
    freeze_ms.store(std::chrono::duration_cast<milliseconds>(Clock::now() - start).count());
    freeze_result.store(status ? 0 : IsError(status, std::errc::timed_out) ? 1 : 2);
  });
  Cleanup join_freezer([&] { JoinIfJoinable(freezer); });
  ASSERT_TRUE(WaitFor([&] { return ref.freeze_depth() == 1; }));
  // A writer arriving during the doomed freeze parks, then resumes when the
  // timeout undoes the freeze.
  AsyncGet parked(ref, Access::kWrite);
  freezer.join();
  EXPECT_EQ(freeze_result.load(), 1);
  EXPECT_GE(freeze_ms.load(), kTimeout.count());
  EXPECT_EQ(ref.freeze_depth(), 0);
  ASSERT_TRUE(parked.Finished());
  EXPECT_EQ(parked.result(), 1);
  ref.put(Access::kWrite);

  // Left unfrozen: writers get straight through.
  AsyncGet next(ref, Access::kWrite);
  ASSERT_TRUE(next.Finished());
  EXPECT_EQ(next.result(), 1);
  ref.put(Access::kWrite);
  release.store(true);
  JoinIfJoinable(holder);
  EXPECT_TRUE(ref.wait_for_zero(milliseconds(0)));
}

TEST(LiveRefTest, KillWakesParkedWritersWhichFail) {
  internal::LiveRef ref;
  ASSERT_TRUE(ref.freeze(kEventually));
  std::vector<std::unique_ptr<AsyncGet>> writers;
  for (int i = 0; i < 4; ++i) writers.push_back(std::make_unique<AsyncGet>(ref, Access::kWrite));
  for (auto& writer : writers) EXPECT_FALSE(writer->Finished(milliseconds(10)));
  ref.kill();
  for (auto& writer : writers) {
    ASSERT_TRUE(writer->Finished());
    EXPECT_EQ(writer->result(), 0);
  }
  EXPECT_EQ(ref.count_slow(), 0);
  ref.unfreeze();
  EXPECT_FALSE(ref.tryget(Access::kWrite));  // unfrozen but killed
}

TEST(LiveRefTest, KillFailsDrainingFreeze) {
  internal::LiveRef ref;
  ASSERT_TRUE(ref.tryget(Access::kWrite));
  std::atomic<int> result{-1};  // 0 ok, 1 ENXIO, 2 other
  std::thread freezer([&] {
    Status status = ref.freeze(kEventually);
    result.store(status ? 0 : IsError(status, std::errc::no_such_device_or_address) ? 1 : 2);
  });
  EXPECT_TRUE(WaitFor([&] { return ref.freeze_depth() == 1; }));
  ref.kill();
  EXPECT_TRUE(WaitFor([&] { return result.load() >= 0; }));
  ref.put(Access::kWrite);  // also lets a freezer that missed the kill finish
  freezer.join();
  EXPECT_EQ(result.load(), 1);
  EXPECT_EQ(ref.freeze_depth(), 0);
}

TEST(LiveRefTest, WaitForZeroTimesOut) {
  internal::LiveRef ref;
  ASSERT_TRUE(ref.tryget(Access::kRead));
  constexpr milliseconds kTimeout{50};
  const Clock::time_point start = Clock::now();
  Status status = ref.wait_for_zero(kTimeout);
  EXPECT_GE(Clock::now() - start, kTimeout);
  EXPECT_TRUE(IsError(status, std::errc::timed_out));
  ref.put(Access::kRead);
  EXPECT_TRUE(ref.wait_for_zero(kTimeout));
}

TEST(LiveRefTest, WaitForZeroWokenByPutOnAnotherThread) {
  internal::LiveRef ref;
  ASSERT_TRUE(ref.tryget(Access::kRead));
  ASSERT_TRUE(ref.tryget(Access::kWrite));
  ref.kill();
  std::atomic<int> result{-1};
  // The waiter's own limit exceeds kEventually: a lost wake-up must show as a
  // failure below, not as a late success.
  std::thread waiter([&] { result.store(ref.wait_for_zero(2 * kEventually) ? 1 : 0); });
  std::thread([&ref] { ref.put(Access::kRead); }).join();
  EXPECT_FALSE(WaitFor([&] { return result.load() >= 0; }, kStaysBlocked))
      << "wait_for_zero returned with a writer held";
  std::thread([&ref] { ref.put(Access::kWrite); }).join();
  EXPECT_TRUE(WaitFor([&] { return result.load() >= 0; }));
  waiter.join();
  EXPECT_EQ(result.load(), 1);
}

// put() must not touch the LiveRef once its decrement is visible, so the
// owner may free it right after wait_for_zero(). ASan flags a violation.
TEST(LiveRefTest, OwnerMayFreeRightAfterWaitForZero) {
  const Clock::time_point start = Clock::now();
  for (int round = 0; round < 200; ++round) {
    // Liveness bound: each round takes microseconds unless a wake-up is lost.
    ASSERT_LT(Clock::now() - start, kEventually) << "round " << round;
    auto ref = std::make_unique<internal::LiveRef>();
    ASSERT_TRUE(ref->tryget(Access::kWrite));
    std::thread putter([r = ref.get()] { r->put(Access::kWrite); });
    Cleanup join_putter([&] { putter.join(); });
    ref->kill();
    ASSERT_TRUE(ref->wait_for_zero(kEventually));
    ref.reset();
  }
}

TEST(LiveRefDeathTest, UnfreezeWithoutFreezeAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  internal::LiveRef ref;
  EXPECT_DEATH(ref.unfreeze(), "without a matching");
}

// Stress: getters of both kinds, freezers and a final kill, over several
// rounds. Checks the three promises that matter to callers:
//  - no tryget that starts after kill() returned succeeds;
//  - wait_for_zero() success means nobody holds a reference, and (since
//    kill() came first) nobody will: a getter that succeeds and then sees
//    the "zero observed" flag proves a get counted after the kill;
//  - between freeze() success and unfreeze(), no writer is inside.
TEST(LiveRefStressTest, GetsFreezesAndKill) {
  constexpr int kGetters = 4;
  constexpr int kFreezers = 2;
  constexpr int kMaxRounds = 40;
  constexpr milliseconds kRunPerRound{15};
  constexpr milliseconds kBudget{4000};

  int64_t total_gets = 0;
  int64_t total_freezes = 0;
  const Clock::time_point test_start = Clock::now();
  int rounds = 0;
  for (; rounds < kMaxRounds && (rounds < 2 || Clock::now() - test_start < kBudget); ++rounds) {
    internal::LiveRef ref(rounds % 2 == 0 ? 0 : 2);  // also exercise threads sharing a shard
    std::atomic<bool> kill_done{false};
    std::atomic<bool> zero_seen{false};
    std::atomic<int64_t> gets_after_zero{0};
    std::atomic<bool> stop{false};
    std::atomic<int> writers_inside{0};
    std::atomic<int64_t> late_gets{0};  // succeeded though started after kill
    std::atomic<int64_t> frozen_violations{0};
    std::atomic<int64_t> freeze_errors{0};  // neither ok, timed_out nor ENXIO
    std::atomic<int64_t> gets{0};
    std::atomic<int64_t> freezes{0};
    std::atomic<bool> holding[kGetters] = {};

    std::vector<std::thread> threads;
    for (int t = 0; t < kGetters; ++t) {
      threads.emplace_back([&, t] {
        std::minstd_rand rng(static_cast<unsigned>(t * 7919 + rounds));
        while (!stop.load(std::memory_order_relaxed)) {
          const Access access = (rng() % 2 == 0) ? Access::kRead : Access::kWrite;
          const bool after_kill = kill_done.load();
          if (!ref.tryget(access)) continue;
          if (after_kill) late_gets.fetch_add(1);
          if (zero_seen.load()) gets_after_zero.fetch_add(1);
          holding[t].store(true);
          if (access == Access::kWrite) writers_inside.fetch_add(1);
          if (rng() % 8 == 0) std::this_thread::yield();
          if (access == Access::kWrite) writers_inside.fetch_sub(1);
          holding[t].store(false);
          gets.fetch_add(1, std::memory_order_relaxed);
          ref.put(access);
        }
      });
    }
    for (int f = 0; f < kFreezers; ++f) {
      threads.emplace_back([&] {
        while (!stop.load(std::memory_order_relaxed)) {
          Status status = ref.freeze(milliseconds(200));
          if (!status) {
            if (!IsError(status, std::errc::timed_out) &&
                !IsError(status, std::errc::no_such_device_or_address)) {
              freeze_errors.fetch_add(1);
            }
            if (ref.killed()) std::this_thread::sleep_for(milliseconds(1));
            continue;
          }
          freezes.fetch_add(1, std::memory_order_relaxed);
          for (int i = 0; i < 20; ++i) {
            if (writers_inside.load() != 0 || ref.freeze_depth() < 1) {
              frozen_violations.fetch_add(1);
            }
            std::this_thread::yield();
          }
          ref.unfreeze();
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
      });
    }

    std::this_thread::sleep_for(kRunPerRound);
    ref.kill();
    kill_done.store(true);
    Status zero = ref.wait_for_zero(std::chrono::seconds(10));
    EXPECT_TRUE(zero) << "round " << rounds;
    if (zero) {
      zero_seen.store(true);
      for (int t = 0; t < kGetters; ++t) {
        EXPECT_FALSE(holding[t].load()) << "wait_for_zero returned early, round " << rounds;
      }
    }
    // Let the threads keep trying after the kill for a moment.
    std::this_thread::sleep_for(milliseconds(5));
    stop.store(true);
    for (std::thread& thread : threads) thread.join();

    EXPECT_EQ(late_gets.load(), 0) << "round " << rounds;
    EXPECT_EQ(gets_after_zero.load(), 0) << "round " << rounds;
    EXPECT_EQ(frozen_violations.load(), 0) << "round " << rounds;
    EXPECT_EQ(freeze_errors.load(), 0) << "round " << rounds;
    EXPECT_EQ(ref.count_slow(), 0) << "round " << rounds;
    EXPECT_EQ(ref.freeze_depth(), 0) << "round " << rounds;
    total_gets += gets.load();
    total_freezes += freezes.load();
  }
  // The checks above mean little unless the race actually ran.
  EXPECT_GT(total_gets, 0);
  EXPECT_GT(total_freezes, 0);
  std::printf("stress: %d rounds, %lld gets, %lld freezes\n", rounds,
              static_cast<long long>(total_gets), static_cast<long long>(total_freezes));
}

}  // namespace
}  // namespace rawdax

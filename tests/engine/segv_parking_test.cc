// Tests of the SIGSEGV parking handler: stores into frozen ranges park until
// thaw, unregister releases them into the memory's new fault, and every other
// SIGSEGV reaches the previous handler or kills as it would have.
//
// The handler is installed once per process, so the chaining tests run in a
// fresh process each (threadsafe death tests re-execute the binary).
#include "engine/segv_parking.h"

#include <gtest/gtest.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/mapped_range.h"
#include "common/unique_fd.h"
#include "fault_catcher.h"
#include "test_util.h"

namespace rawdax::internal {
namespace {

using ::rawdax::testing::eventually;

using std::chrono::milliseconds;

size_t page_size() {
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

internal::MappedRange map_anonymous(size_t bytes, int prot, int extra_flags = 0) {
  void* addr = ::mmap(nullptr, bytes, prot, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
  if (addr == MAP_FAILED) return internal::MappedRange();
  return internal::MappedRange(addr, bytes);
}

// Runs a function at scope exit. Declared after the threads of a test, it
// thaws before they are joined, so a failed assertion can't hang the join.
class Cleanup {
 public:
  template <typename Fn>
  explicit Cleanup(Fn fn) : fn_(std::move(fn)) {}
  Cleanup(const Cleanup&) = delete;
  Cleanup& operator=(const Cleanup&) = delete;
  ~Cleanup() { fn_(); }

 private:
  std::function<void()> fn_;
};

// True when thread `tid` of this process sleeps in futex(2): parked.
bool in_futex_wait(pid_t tid) {
  std::ifstream file("/proc/self/task/" + std::to_string(tid) + "/syscall");
  std::string number;
  file >> number;
  return number == std::to_string(SYS_futex);
}

// Registered anonymous pages, frozen and thawed in the documented order. Ends
// thawed and unregistered (before it unmaps) whatever the test asserted.
class ParkedPages {
 public:
  explicit ParkedPages(size_t pages) : map_(map_anonymous(pages * page_size(), kReadWrite)) {
    if (!map_.valid()) return;
    auto range = SegvParkingRange::create(map_.data(), map_.size());
    if (range) range_ = std::move(*range);
  }
  ~ParkedPages() { thaw(); }

  bool ok() const { return map_.valid() && range_.valid(); }
  void freeze() {
    range_.set_frozen(true);  // before read-only
    EXPECT_EQ(::mprotect(map_.data(), map_.size(), PROT_READ), 0);
  }
  void thaw() {
    EXPECT_EQ(::mprotect(map_.data(), map_.size(), kReadWrite), 0);
    range_.set_frozen(false);  // after writable
  }
  void unregister() { range_.reset(); }
  std::byte* data() const { return map_.data(); }
  uint64_t* word(size_t i) const { return reinterpret_cast<uint64_t*>(map_.data()) + i; }
  int slot() const { return range_.slot(); }
  SegvParking::Stats stats() const { return range_.stats(); }

 private:
  static constexpr int kReadWrite = PROT_READ | PROT_WRITE;
  internal::MappedRange map_;
  SegvParkingRange range_;  // after map_: unregistered before the unmap
};

uint64_t load(const uint64_t* word) {
  return std::atomic_ref<uint64_t>(*const_cast<uint64_t*>(word)).load(std::memory_order_relaxed);
}

// A thread storing one value into `word`. Atomic (relaxed) so that the test
// may read the word while the store is parked without a TSan race report.
class Writer {
 public:
  Writer(uint64_t* word, uint64_t value)
      : thread_([this, word, value] {
          tid_.store(::gettid());
          std::atomic_ref<uint64_t>(*word).store(value, std::memory_order_relaxed);
          done_.store(true);
        }) {}

  bool done() const { return done_.load(); }
  // Waits until the thread sleeps in the handler's futex wait.
  bool wait_parked() const {
    return eventually([this] { return tid_.load() != 0 && in_futex_wait(tid_.load()); });
  }
  bool wait_done() const {
    return eventually([this] { return done(); });
  }

 private:
  std::atomic<pid_t> tid_{0};
  std::atomic<bool> done_{false};
  std::jthread thread_;  // last: starts once the flags exist
};

TEST(SegvParkingTest, StoreIntoFrozenRangeParksUntilThaw) {
  ParkedPages pages(1);
  ASSERT_TRUE(pages.ok());
  pages.freeze();
  Writer writer(pages.word(0), 0xfeed);
  Cleanup thaw_first([&] { pages.thaw(); });

  ASSERT_TRUE(writer.wait_parked());
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_FALSE(writer.done());
  EXPECT_EQ(load(pages.word(0)), 0u);
  EXPECT_EQ(pages.stats().parked, 0u);  // counted on release

  pages.thaw();
  ASSERT_TRUE(writer.wait_done());
  EXPECT_EQ(load(pages.word(0)), 0xfeedu);
  SegvParking::Stats stats = pages.stats();
  EXPECT_EQ(stats.parked, 1u);
  EXPECT_GT(stats.stall_total_ns, 0u);
  EXPECT_EQ(stats.stall_max_ns, stats.stall_total_ns);
}

// The live-copy protocol: a parked store posts its address; waking without
// making the page writable parks it again (posting anew); making only its
// page writable and waking lets it land while the range stays frozen.
TEST(SegvParkingTest, ParkedStorePostsItsDemandAndLandsWhenItsPageIsReleased) {
  ParkedPages pages(4);
  ASSERT_TRUE(pages.ok());
  EXPECT_EQ(SegvParking::take_demand(pages.slot()), 0u);
  const uint32_t before = SegvParking::demand_count();
  pages.freeze();
  uint64_t* target = pages.word(2 * page_size() / 8 + 3);  // page 2
  Writer writer(target, 0xabc);
  Cleanup thaw_first([&] { pages.thaw(); });
  ASSERT_TRUE(writer.wait_parked());
  EXPECT_NE(SegvParking::demand_count(), before);
  EXPECT_EQ(SegvParking::take_demand(pages.slot()), reinterpret_cast<uintptr_t>(target));
  EXPECT_EQ(SegvParking::take_demand(pages.slot()), 0u);  // taking clears it

  const uint32_t seen = SegvParking::demand_count();
  SegvParking::wake(pages.slot());  // still read-only: it parks again
  ASSERT_TRUE(eventually([&] { return SegvParking::demand_count() != seen; }));
  ASSERT_TRUE(writer.wait_parked());
  EXPECT_FALSE(writer.done());
  EXPECT_EQ(SegvParking::take_demand(pages.slot()), reinterpret_cast<uintptr_t>(target));

  std::byte* page2 = pages.data() + 2 * page_size();
  ASSERT_EQ(::mprotect(page2, page_size(), PROT_READ | PROT_WRITE), 0);
  SegvParking::wake(pages.slot());
  ASSERT_TRUE(writer.wait_done());
  EXPECT_EQ(load(target), 0xabcu);
  EXPECT_EQ(load(pages.word(0)), 0u);
}

TEST(SegvParkingTest, SharedMemfdMappingParksToo) {
  internal::UniqueFd fd(::memfd_create("segv-parking-test", MFD_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(page_size())), 0);
  void* addr = ::mmap(nullptr, page_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(addr, MAP_FAILED);
  internal::MappedRange map(addr, page_size());
  auto range = SegvParkingRange::create(map.data(), map.size());
  ASSERT_TRUE(range);
  uint64_t* word = reinterpret_cast<uint64_t*>(map.data());

  range->set_frozen(true);
  ASSERT_EQ(::mprotect(map.data(), map.size(), PROT_READ), 0);
  auto thaw = [&] {
    ::mprotect(map.data(), map.size(), PROT_READ | PROT_WRITE);
    range->set_frozen(false);
  };
  Writer writer(word, 77);
  Cleanup thaw_first(thaw);
  ASSERT_TRUE(writer.wait_parked());
  EXPECT_FALSE(writer.done());
  thaw();
  ASSERT_TRUE(writer.wait_done());
  uint64_t from_file = 0;
  ASSERT_EQ(::pread(fd.get(), &from_file, sizeof(from_file), 0),
            static_cast<ssize_t>(sizeof(from_file)));
  EXPECT_EQ(from_file, 77u);  // landed in the shared page itself
  EXPECT_EQ(range->stats().parked, 1u);
}

TEST(SegvParkingTest, ThawOfOneSlotWakesOnlyItsThreads) {
  constexpr int kSlots = 3, kPerSlot = 2;
  std::vector<std::unique_ptr<ParkedPages>> pages;
  for (int s = 0; s < kSlots; ++s) {
    pages.push_back(std::make_unique<ParkedPages>(1));
    ASSERT_TRUE(pages.back()->ok());
    pages.back()->freeze();
  }
  std::vector<std::unique_ptr<Writer>> writers;  // writers[s * kPerSlot + w]
  for (int s = 0; s < kSlots; ++s) {
    for (int w = 0; w < kPerSlot; ++w) {
      writers.push_back(std::make_unique<Writer>(pages[s]->word(w * 8), 100 * s + w + 1));
    }
  }
  Cleanup thaw_first([&] {
    for (auto& p : pages) p->thaw();
  });
  for (auto& writer : writers) ASSERT_TRUE(writer->wait_parked());

  pages[1]->thaw();
  for (int w = 0; w < kPerSlot; ++w) ASSERT_TRUE(writers[kPerSlot + w]->wait_done());
  std::this_thread::sleep_for(milliseconds(100));
  for (int s : {0, 2}) {
    for (int w = 0; w < kPerSlot; ++w) {
      EXPECT_FALSE(writers[s * kPerSlot + w]->done()) << "slot " << s << " writer " << w;
      EXPECT_EQ(load(pages[s]->word(w * 8)), 0u);
    }
    EXPECT_EQ(pages[s]->stats().parked, 0u);
  }
  EXPECT_EQ(pages[1]->stats().parked, static_cast<uint64_t>(kPerSlot));

  pages[0]->thaw();
  pages[2]->thaw();
  for (int s = 0; s < kSlots; ++s) {
    for (int w = 0; w < kPerSlot; ++w) {
      ASSERT_TRUE(writers[s * kPerSlot + w]->wait_done());
      EXPECT_EQ(load(pages[s]->word(w * 8)), static_cast<uint64_t>(100 * s + w + 1));
    }
    EXPECT_EQ(pages[s]->stats().parked, static_cast<uint64_t>(kPerSlot));
  }
}

// Stores `value` into `word`; returns false when the store raised SIGBUS
// (the shared catcher, which passes other SIGBUSes on to rawdax's guarded
// copies).
bool store_catching_sigbus(volatile uint64_t* word, uint64_t value) {
  return ::rawdax::testing::run_catching_faults([&] { *word = value; }) == 0;
}

TEST(SegvParkingTest, UnregisterReleasesParkedStoreIntoNewFault) {
  ParkedPages pages(1);
  ASSERT_TRUE(pages.ok());
  pages.freeze();
  enum Outcome { kRunning, kStored, kSigbus };
  std::atomic<int> outcome{kRunning};
  std::atomic<pid_t> tid{0};
  std::jthread writer([&] {
    tid.store(::gettid());
    outcome.store(store_catching_sigbus(pages.word(0), 5) ? kStored : kSigbus);
  });
  Cleanup thaw_first([&] { pages.thaw(); });
  ASSERT_TRUE(eventually([&] { return tid.load() != 0 && in_futex_wait(tid.load()); }));

  // Revoke: the page becomes a shared mapping past the end of an empty file,
  // where any access raises SIGBUS. The slot still says frozen: still parked.
  internal::UniqueFd empty(::memfd_create("segv-parking-empty", MFD_CLOEXEC));
  ASSERT_TRUE(empty.valid());
  ASSERT_EQ(::mmap(pages.data(), page_size(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                   empty.get(), 0),
            static_cast<void*>(pages.data()));
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(outcome.load(), kRunning);

  pages.unregister();
  ASSERT_TRUE(eventually([&] { return outcome.load() != kRunning; }));
  EXPECT_EQ(outcome.load(), kSigbus);
}

TEST(SegvParkingTest, KernelModeWriteIntoFrozenRangeFailsWithEfault) {
  // The documented limit: read(2) into a frozen mapping is not a user-mode
  // store, so it is not parked; the kernel's copy fails instead.
  ParkedPages pages(1);
  ASSERT_TRUE(pages.ok());
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  internal::UniqueFd read_end(fds[0]), write_end(fds[1]);
  ASSERT_EQ(::write(write_end.get(), "abcdefgh", 8), 8);
  pages.freeze();
  Cleanup thaw([&] { pages.thaw(); });
  errno = 0;
  EXPECT_EQ(::read(read_end.get(), pages.data(), 8), -1);
  EXPECT_EQ(errno, EFAULT);
  EXPECT_EQ(pages.stats().parked, 0u);
}

TEST(SegvParkingTest, RejectsBadRangesAndIgnoresBadSlots) {
  char byte = 0;
  auto null_start = SegvParking::register_range(nullptr, 4096);
  ASSERT_FALSE(null_start);
  EXPECT_EQ(null_start.error().code(), std::errc::invalid_argument);
  auto empty = SegvParking::register_range(&byte, 0);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code(), std::errc::invalid_argument);
  auto wraps = SegvParking::register_range(reinterpret_cast<void*>(UINTPTR_MAX - 10), 100);
  ASSERT_FALSE(wraps);
  EXPECT_EQ(wraps.error().code(), std::errc::invalid_argument);

  // Out-of-range and free slots are ignored, and a free slot reads as zeros.
  SegvParking::unregister_range(-1);
  SegvParking::unregister_range(SegvParking::kMaxSlots);
  SegvParking::set_frozen(SegvParking::kMaxSlots + 7, true);
  SegvParking::set_frozen(-3, false);
  SegvParking::Stats none = SegvParking::stats(SegvParking::kMaxSlots - 1);
  EXPECT_EQ(none.parked, 0u);
  EXPECT_EQ(none.stall_total_ns, 0u);
}

TEST(SegvParkingTest, FullTableFailsAndFreedSlotsAreReused) {
  // Fake ranges are fine: registering never touches the memory. One reserved
  // page each keeps them distinct.
  const size_t page = page_size();
  internal::MappedRange reserve =
      map_anonymous((SegvParking::kMaxSlots + 1) * page, PROT_NONE, MAP_NORESERVE);
  ASSERT_TRUE(reserve.valid());
  std::vector<SegvParkingRange> ranges;
  for (int i = 0; i < SegvParking::kMaxSlots; ++i) {
    auto range = SegvParkingRange::create(reserve.data() + i * page, page);
    ASSERT_TRUE(range) << "slot " << i << ": " << range.error().message();
    ranges.push_back(std::move(*range));
  }
  std::byte* extra = reserve.data() + SegvParking::kMaxSlots * page;
  auto full = SegvParking::register_range(extra, page);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code(), std::errc::too_many_files_open);

  const int freed = ranges[100].slot();
  ranges[100].reset();
  auto again = SegvParkingRange::create(extra, page);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->slot(), freed);
  EXPECT_FALSE(SegvParking::register_range(extra, page));  // full again
}

TEST(SegvParkingTest, StressFreezeThawLosesNoStore) {
  constexpr int kRanges = 2, kWritersPerRange = 2, kWriters = kRanges * kWritersPerRange;
  std::vector<std::unique_ptr<ParkedPages>> ranges;
  for (int r = 0; r < kRanges; ++r) {
    ranges.push_back(std::make_unique<ParkedPages>(1));
    ASSERT_TRUE(ranges.back()->ok());
  }
  std::atomic<bool> stop_freezer{false}, stop_writers{false};
  std::vector<uint64_t> last(kWriters, 0);
  std::vector<std::jthread> writers;
  for (int i = 0; i < kWriters; ++i) {
    // Plain stores, as an application makes them; one cache line per writer.
    volatile uint64_t* word = ranges[i / kWritersPerRange]->word((i % kWritersPerRange) * 8);
    writers.emplace_back([&, i, word] {
      uint64_t value = 0;
      while (!stop_writers.load(std::memory_order_relaxed)) *word = ++value;
      last[i] = value;
    });
  }
  std::atomic<uint64_t> cycles{0};
  std::jthread freezer([&] {
    while (!stop_freezer.load()) {
      for (auto& range : ranges) {
        range->freeze();
        std::this_thread::sleep_for(std::chrono::microseconds(300));
        range->thaw();
      }
      cycles.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  Cleanup stop_all([&] {
    stop_freezer.store(true);
    if (freezer.joinable()) freezer.join();  // ends with every range thawed
    stop_writers.store(true);
  });

  std::this_thread::sleep_for(milliseconds(1000));
  stop_freezer.store(true);
  freezer.join();
  stop_writers.store(true);
  for (auto& writer : writers) writer.join();

  uint64_t parked = 0;
  for (int i = 0; i < kWriters; ++i) {
    const uint64_t* word = ranges[i / kWritersPerRange]->word((i % kWritersPerRange) * 8);
    EXPECT_GT(last[i], 0u) << "writer " << i;
    EXPECT_EQ(*word, last[i]) << "writer " << i << " lost a store";
  }
  for (auto& range : ranges) parked += range->stats().parked;
  RecordProperty("freeze_cycles", std::to_string(cycles.load()));
  RecordProperty("parked_stores", std::to_string(parked));
  EXPECT_GT(cycles.load(), 0u);
  EXPECT_GT(parked, 0u);  // the test did exercise parking
}

// ---- Chaining. Each runs in a fresh process: the handler installs once.

// Every death-test child starts here: no core files, and a handler that spins
// or parks forever fails the test (SIGALRM) instead of hanging it.
void start_death_child() {
  struct rlimit none = {0, 0};
  ::setrlimit(RLIMIT_CORE, &none);
  ::alarm(30);
}

// The fault the child's own handler expects.
void* g_foreign_page = nullptr;
int g_foreign_code = SEGV_ACCERR;

void foreign_siginfo_handler(int, siginfo_t* info, void*) {
  ::_exit(info->si_code == g_foreign_code && info->si_addr == g_foreign_page ? 42 : 41);
}

void foreign_plain_handler(int) { ::_exit(43); }

void set_sigsegv_action(void (*handler)(int), void (*siginfo)(int, siginfo_t*, void*)) {
  struct sigaction action = {};
  if (siginfo != nullptr) {
    action.sa_sigaction = siginfo;
    action.sa_flags = SA_SIGINFO;
  } else {
    action.sa_handler = handler;
  }
  sigemptyset(&action.sa_mask);
  if (::sigaction(SIGSEGV, &action, nullptr) != 0) ::_exit(2);
}

// Registers an unrelated range (installing our handler over whatever was
// there), checks that ours is now the action, then touches an unregistered
// PROT_NONE page. Exits 3..5 on setup failures; the fault decides the rest.
[[noreturn]] void fault_outside_registered_ranges(void* previous_handler) {
  internal::MappedRange ours = map_anonymous(page_size(), PROT_READ | PROT_WRITE);
  internal::MappedRange foreign = map_anonymous(page_size(), PROT_NONE);
  if (!ours.valid() || !foreign.valid()) ::_exit(3);
  g_foreign_page = foreign.data();
  auto range = SegvParkingRange::create(ours.data(), ours.size());
  if (!range) ::_exit(4);
  struct sigaction now = {};
  ::sigaction(SIGSEGV, nullptr, &now);
  if (reinterpret_cast<void*>(now.sa_sigaction) == previous_handler) ::_exit(5);
  *static_cast<volatile char*>(g_foreign_page) = 1;
  ::_exit(0);
}

TEST(SegvParkingDeathTest, ForeignFaultReachesPreviousSiginfoHandler) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        start_death_child();
        set_sigsegv_action(nullptr, foreign_siginfo_handler);
        fault_outside_registered_ranges(reinterpret_cast<void*>(foreign_siginfo_handler));
      },
      ::testing::ExitedWithCode(42), "");
}

TEST(SegvParkingDeathTest, ForeignFaultReachesPreviousPlainHandler) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        start_death_child();
        set_sigsegv_action(foreign_plain_handler, nullptr);
        fault_outside_registered_ranges(reinterpret_cast<void*>(foreign_plain_handler));
      },
      ::testing::ExitedWithCode(43), "");
}

TEST(SegvParkingDeathTest, ForeignFaultWithDefaultActionKillsWithSigsegv) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // Set explicitly: under ASan the inherited action is ASan's handler.
  EXPECT_EXIT(
      {
        start_death_child();
        set_sigsegv_action(SIG_DFL, nullptr);
        fault_outside_registered_ranges(nullptr);
      },
      ::testing::KilledBySignal(SIGSEGV), "");
}

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define RAWDAX_SANITIZER_HANDLES_SEGV 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RAWDAX_SANITIZER_HANDLES_SEGV 1
#endif

TEST(SegvParkingDeathTest, ForeignFaultWithInheritedActionDiesAsBefore) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // Nothing set by the test: the process default, or a sanitizer's SEGV
  // reporter, which must still get to report the fault.
#ifdef RAWDAX_SANITIZER_HANDLES_SEGV
  EXPECT_EXIT(
      {
        start_death_child();
        fault_outside_registered_ranges(nullptr);
      },
      // Sanitizers exit 1 (ASan) or 66 (TSan) after the report; 2..5 are ours.
      [](int status) {
        return WIFEXITED(status) && (WEXITSTATUS(status) == 1 || WEXITSTATUS(status) > 5);
      },
      "SEGV on unknown address");
#else
  EXPECT_EXIT(
      {
        start_death_child();
        fault_outside_registered_ranges(nullptr);
      },
      ::testing::KilledBySignal(SIGSEGV), "");
#endif
}

TEST(SegvParkingDeathTest, ForeignFaultWithIgnoredSigsegvStillKills) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // The kernel does not let a fault be ignored; neither does the chain.
  EXPECT_EXIT(
      {
        start_death_child();
        set_sigsegv_action(SIG_IGN, nullptr);
        fault_outside_registered_ranges(reinterpret_cast<void*>(SIG_IGN));
      },
      ::testing::KilledBySignal(SIGSEGV), "");
}

TEST(SegvParkingDeathTest, RaisedSigsegvWithDefaultActionKills) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        start_death_child();
        set_sigsegv_action(SIG_DFL, nullptr);
        internal::MappedRange ours = map_anonymous(page_size(), PROT_READ | PROT_WRITE);
        auto range = SegvParkingRange::create(ours.data(), ours.size());
        if (!range) ::_exit(4);
        ::raise(SIGSEGV);  // no faulting instruction to redo: must be re-raised
        ::_exit(0);
      },
      ::testing::KilledBySignal(SIGSEGV), "");
}

TEST(SegvParkingDeathTest, ReadOnlyButNeverFrozenRangeIsNotRetriedForever) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // Protocol broken on purpose: read-only without set_frozen(true). The
  // handler retries a bounded number of times, then chains the fault.
  EXPECT_EXIT(
      {
        start_death_child();
        set_sigsegv_action(nullptr, foreign_siginfo_handler);
        internal::MappedRange ours = map_anonymous(page_size(), PROT_READ | PROT_WRITE);
        auto range = SegvParkingRange::create(ours.data(), ours.size());
        if (!range) ::_exit(4);
        g_foreign_page = ours.data();
        if (::mprotect(ours.data(), ours.size(), PROT_READ) != 0) ::_exit(3);
        *static_cast<volatile char*>(g_foreign_page) = 1;
        ::_exit(0);
      },
      ::testing::ExitedWithCode(42), "");
}

TEST(SegvParkingDeathTest, UnmappedHoleInFrozenRangeIsNotOurs) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // SEGV_MAPERR inside a frozen range is a real bug (the mapping is gone):
  // it must reach the previous handler instead of parking.
  EXPECT_EXIT(
      {
        start_death_child();
        set_sigsegv_action(nullptr, foreign_siginfo_handler);
        internal::MappedRange ours = map_anonymous(2 * page_size(), PROT_READ | PROT_WRITE);
        auto range = SegvParkingRange::create(ours.data(), ours.size());
        if (!range) ::_exit(4);
        g_foreign_page = ours.data() + page_size();
        g_foreign_code = SEGV_MAPERR;
        if (::munmap(g_foreign_page, page_size()) != 0) ::_exit(3);
        range->set_frozen(true);
        if (::mprotect(ours.data(), page_size(), PROT_READ) != 0) ::_exit(3);
        *static_cast<volatile char*>(g_foreign_page) = 1;
        ::_exit(0);
      },
      ::testing::ExitedWithCode(42), "");
}

}  // namespace
}  // namespace rawdax::internal

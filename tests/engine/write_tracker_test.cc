// Tests of WriteTracker (async uffd-wp + PAGEMAP_SCAN dirty tracking) on the
// three media it is used on: a file on a disk filesystem (ext4 here, where
// sync uffd-wp is refused), a file on tmpfs (/dev/shm) and a memfd.
#include "engine/write_tracker.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/mapped_range.h"
#include "common/unique_fd.h"
#include "media/uffd_compat.h"
#include "media/userfaultfd.h"
#include "test_util.h"

namespace rawdax::internal {
namespace {

using ::rawdax::testing::disk_parent;
using Clock = std::chrono::steady_clock;
using Runs = std::vector<std::pair<size_t, size_t>>;  // [first page, end page)

const size_t kPage = static_cast<size_t>(::sysconf(_SC_PAGESIZE));

enum class Media { kDisk, kTmpfs, kMemfd };

const char* media_name(Media media) {
  switch (media) {
    case Media::kDisk: return "disk";
    case Media::kTmpfs: return "tmpfs";
    case Media::kMemfd: return "memfd";
  }
  return "?";
}


std::string fs_name(const std::string& dir) {
  struct statfs fs;
  if (::statfs(dir.c_str(), &fs) != 0) return "unknown (statfs failed)";
  switch (static_cast<unsigned long>(fs.f_type)) {
    case EXT4_SUPER_MAGIC: return "ext4";
    case TMPFS_MAGIC: return "tmpfs";
    case XFS_SUPER_MAGIC: return "xfs";
    case BTRFS_SUPER_MAGIC: return "btrfs";
    default: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "fs-0x%lx", static_cast<unsigned long>(fs.f_type));
      return buf;
    }
  }
}

void store(std::byte* p, uint64_t value) {
  __atomic_store_n(reinterpret_cast<uint64_t*>(p), value, __ATOMIC_RELAXED);
}
uint64_t load(const std::byte* p) {
  return __atomic_load_n(reinterpret_cast<const uint64_t*>(p), __ATOMIC_RELAXED);
}

// One backing object of `pages` pages on `media`, never touched (so its pages
// are unpopulated), and MAP_SHARED mappings of it.
class Backing {
 public:
  Backing(Media media, size_t pages) : size_(pages * kPage) {
    if (media == Media::kMemfd) {
      fd_.reset(::memfd_create("write-tracker-test", MFD_CLOEXEC));
    } else {
      static std::atomic<int> counter{0};
      std::string parent = media == Media::kDisk ? disk_parent() : "/dev/shm";
      std::filesystem::create_directories(parent);
      dir_ = parent + "/rawdax-wt-" + std::to_string(::getpid()) + "-" +
             std::to_string(counter.fetch_add(1));
      std::filesystem::create_directories(dir_);
      fd_.reset(::open((dir_ + "/data").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    }
    if (fd_.valid() && ::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) fd_.reset();
  }
  ~Backing() {
    fd_.reset();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }
  Backing(const Backing&) = delete;
  Backing& operator=(const Backing&) = delete;

  bool valid() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }
  size_t size() const { return size_; }
  const std::string& dir() const { return dir_; }
  internal::MappedRange map() const {
    void* addr = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    return addr == MAP_FAILED ? internal::MappedRange() : internal::MappedRange(addr, size_);
  }

 private:
  internal::UniqueFd fd_;
  size_t size_;
  std::string dir_;
};

// Runs (in pages relative to `base`) of one scan; fails the test on error.
Runs scan_runs(WriteTracker& tracker, std::byte* base, size_t len) {
  Runs runs;
  uint64_t seen = 0;
  auto result = tracker.scan_and_reprotect(base, len, [&](void* start, size_t bytes) {
    auto first = static_cast<size_t>(static_cast<std::byte*>(start) - base) / kPage;
    runs.emplace_back(first, first + bytes / kPage);
    seen += bytes;
  });
  EXPECT_TRUE(result.has_value()) << (result ? "" : result.error().message());
  if (result) {
    EXPECT_EQ(*result, seen);
  }
  return runs;
}

std::string runs_text(const Runs& runs) {
  std::string text;
  for (auto [first, end] : runs) {
    text += "[" + std::to_string(first) + "," + std::to_string(end) + ") ";
  }
  return text.empty() ? "(none)" : text;
}

class WriteTrackerTest : public ::testing::TestWithParam<Media> {
 protected:
  static constexpr size_t kPages = 512;  // 2 MiB

  void SetUp() override {
    auto tracker = WriteTracker::create();
    ASSERT_TRUE(tracker) << tracker.error().message();
    tracker_ = std::move(*tracker);
    backing_ = std::make_unique<Backing>(GetParam(), kPages);
    ASSERT_TRUE(backing_->valid()) << "cannot create the " << media_name(GetParam())
                                   << " backing: " << std::strerror(errno);
    if (GetParam() == Media::kDisk) {
      static bool printed = false;
      if (!printed) {
        std::printf("[ disk media ] %s is %s\n", disk_parent().c_str(),
                    fs_name(backing_->dir()).c_str());
        printed = true;
      }
    }
    map_ = backing_->map();
    ASSERT_TRUE(map_.valid()) << std::strerror(errno);
  }

  std::byte* base() const { return map_.data(); }
  std::byte* page(size_t i) const { return map_.data() + i * kPage; }
  size_t len() const { return map_.size(); }
  Runs scan() { return scan_runs(*tracker_, base(), len()); }
  // Touches every page so that tracking starts from populated pages.
  void populate() {
    for (size_t i = 0; i < kPages; ++i) store(page(i), 1);
  }

  std::unique_ptr<WriteTracker> tracker_;
  std::unique_ptr<Backing> backing_;
  internal::MappedRange map_;
};

TEST(WriteTrackerSupport, SupportedMatchesCreate) {
  auto tracker = WriteTracker::create();
  EXPECT_EQ(write_tracker_supported(), tracker.has_value());
  EXPECT_EQ(write_tracker_supported(), tracker.has_value());  // cached, same answer
  if (!tracker) {
    EXPECT_EQ(tracker.error().code(), std::errc::operation_not_supported)
        << tracker.error().message();
  }
}

TEST_P(WriteTrackerTest, ReportsExactlyTheWrittenRuns) {
  populate();
  ASSERT_TRUE(tracker_->add_range(base(), len()));
  EXPECT_EQ(scan(), Runs{}) << "nothing written since add_range";

  for (size_t i : {0, 5, 6, 7, 100}) store(page(i), 2);
  Runs runs = scan();
  EXPECT_EQ(runs, (Runs{{0, 1}, {5, 8}, {100, 101}})) << runs_text(runs);

  runs = scan();
  EXPECT_EQ(runs, Runs{}) << "second scan, no writes: " << runs_text(runs);

  store(page(5), 3);
  runs = scan();
  EXPECT_EQ(runs, (Runs{{5, 6}})) << runs_text(runs);
}

TEST_P(WriteTrackerTest, ReportsWritesToUnpopulatedPagesButNotReads) {
  ASSERT_TRUE(tracker_->add_range(base(), len()));
  uint64_t sum = 0;
  for (size_t i = 10; i < 20; ++i) sum += load(page(i));  // read faults keep the protection
  EXPECT_EQ(sum, 0u);
  EXPECT_EQ(scan(), Runs{}) << "reads are not writes";

  store(page(3), 7);
  store(page(200), 7);
  store(page(kPages - 1), 7);
  Runs runs = scan();
  EXPECT_EQ(runs, (Runs{{3, 4}, {200, 201}, {kPages - 1, kPages}})) << runs_text(runs);
  EXPECT_EQ(scan(), Runs{});
}

TEST_P(WriteTrackerTest, AddingAgainForgetsUnreportedWrites) {
  populate();
  ASSERT_TRUE(tracker_->add_range(base(), len()));
  store(page(4), 2);
  ASSERT_TRUE(tracker_->add_range(base(), len()));
  EXPECT_EQ(scan(), Runs{});
  store(page(6), 3);
  EXPECT_EQ(scan(), (Runs{{6, 7}}));
}

// The mprotect engine freezes by mprotect(PROT_READ) and thaws with
// PROT_READ|PROT_WRITE, scanning in between: tracking must survive both.
TEST_P(WriteTrackerTest, TrackingSurvivesMprotectCycles) {
  populate();
  ASSERT_TRUE(tracker_->add_range(base(), len()));
  store(page(1), 2);
  ASSERT_EQ(::mprotect(base(), len(), PROT_READ), 0);
  EXPECT_EQ(scan(), (Runs{{1, 2}})) << "scan while read-only";
  ASSERT_EQ(::mprotect(base(), len(), PROT_READ | PROT_WRITE), 0);
  EXPECT_EQ(scan(), Runs{}) << "making it writable again is not a write";

  store(page(2), 3);
  ASSERT_EQ(::mprotect(base(), len(), PROT_READ), 0);
  ASSERT_EQ(::mprotect(base(), len(), PROT_READ | PROT_WRITE), 0);
  store(page(3), 3);
  store(page(9), 3);
  Runs runs = scan();
  EXPECT_EQ(runs, (Runs{{2, 4}, {9, 10}})) << runs_text(runs);
  EXPECT_EQ(scan(), Runs{});
}

// The kernel itself storing into the mapping (copy_to_user from read(2))
// takes the same async write-protect fault, so it is reported.
TEST_P(WriteTrackerTest, ReportsKernelModeWritesIntoTheMapping) {
  populate();
  ASSERT_TRUE(tracker_->add_range(base(), len()));
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  internal::UniqueFd reader(pipe_fds[0]);
  internal::UniqueFd writer(pipe_fds[1]);
  std::vector<char> bytes(kPage, 'k');
  ASSERT_EQ(::write(writer.get(), bytes.data(), kPage), static_cast<ssize_t>(kPage));
  ASSERT_EQ(::read(reader.get(), page(12), kPage), static_cast<ssize_t>(kPage));
  Runs runs = scan();
  EXPECT_EQ(runs, (Runs{{12, 13}})) << runs_text(runs);
}

// Tracking lives in this mapping's page tables: a store through a second
// mapping of the same file changes the shared page but not our entries, so it
// is NOT reported for the first mapping (observed on all three media).
TEST_P(WriteTrackerTest, WritesThroughAnotherMappingAreNotReported) {
  populate();
  internal::MappedRange other = backing_->map();
  ASSERT_TRUE(other.valid());
  ASSERT_TRUE(tracker_->add_range(base(), len()));

  store(other.data() + 7 * kPage, 0x77);  // populated page
  EXPECT_EQ(load(page(7)), 0x77u) << "same file page, seen through both mappings";
  Runs runs = scan();
  EXPECT_EQ(runs, Runs{}) << "a write via the second mapping: " << runs_text(runs);

  store(page(8), 0x88);  // the tracked mapping still reports its own writes
  runs = scan();
  EXPECT_EQ(runs, (Runs{{8, 9}})) << runs_text(runs);
}

// pwrite(2) changes the page cache without touching any mapping's page
// table: NOT reported. This is why the device keeps a block-face bitmap.
TEST_P(WriteTrackerTest, PwriteToTheFileIsNotReported) {
  for (size_t i = 0; i < 64; ++i) store(page(i), 1);  // pages 64.. stay unpopulated
  ASSERT_TRUE(tracker_->add_range(base(), len()));

  uint64_t value = 0x99;
  ASSERT_EQ(::pwrite(backing_->fd(), &value, sizeof value, 9 * kPage),
            static_cast<ssize_t>(sizeof value));  // populated in the mapping
  ASSERT_EQ(::pwrite(backing_->fd(), &value, sizeof value, 300 * kPage),
            static_cast<ssize_t>(sizeof value));  // not populated in the mapping
  EXPECT_EQ(load(page(9)), 0x99u);
  EXPECT_EQ(load(page(300)), 0x99u);
  Runs runs = scan();
  EXPECT_EQ(runs, Runs{}) << "pwrite: " << runs_text(runs);
}

// Many runs: more than one ioctl's output vector (512 entries), so the scan
// must loop on walk_end; runs cut at a vector boundary must still come out
// whole and in order.
TEST_P(WriteTrackerTest, LoopsOverAFullOutputVector) {
  Backing big(GetParam(), 4096);  // 16 MiB
  ASSERT_TRUE(big.valid());
  internal::MappedRange map = big.map();
  ASSERT_TRUE(map.valid());
  ASSERT_TRUE(tracker_->add_range(map.data(), map.size()));

  Runs expected;
  for (size_t i = 0; i < 4096; i += 2) {
    store(map.data() + i * kPage, i + 1);
    expected.emplace_back(i, i + 1);
  }
  Runs runs = scan_runs(*tracker_, map.data(), map.size());
  EXPECT_EQ(runs.size(), 2048u);
  EXPECT_EQ(runs, expected);

  for (size_t i = 0; i < 4096; ++i) store(map.data() + i * kPage, i + 2);
  runs = scan_runs(*tracker_, map.data(), map.size());
  EXPECT_EQ(runs, (Runs{{0, 4096}})) << "one run, however many ioctls it took";
  EXPECT_EQ(scan_runs(*tracker_, map.data(), map.size()), Runs{});
}

// Scans of overlapping ranges from two threads: each written page goes to
// exactly one of them (test-and-protect is atomic per page).
TEST_P(WriteTrackerTest, ConcurrentScansReportEachWriteOnce) {
  populate();
  ASSERT_TRUE(tracker_->add_range(base(), len()));
  for (int round = 0; round < 20; ++round) {
    for (size_t i = 0; i < kPages; ++i) store(page(i), static_cast<uint64_t>(round) + 2);
    std::vector<int> counts[2] = {std::vector<int>(kPages), std::vector<int>(kPages)};
    std::vector<uint64_t> bytes(2);
    auto scanner = [&](int t) {
      // Thread 1 starts half-way in so the two walks really overlap.
      std::byte* start = t == 0 ? base() : page(kPages / 4);
      size_t span = t == 0 ? len() : len() - kPages / 4 * kPage;
      auto result = tracker_->scan_and_reprotect(start, span, [&](void* run, size_t n) {
        size_t first = static_cast<size_t>(static_cast<std::byte*>(run) - base()) / kPage;
        for (size_t i = first; i < first + n / kPage; ++i) counts[t][i]++;
      });
      bytes[t] = result ? *result : ~0ull;
    };
    std::thread other(scanner, 1);
    scanner(0);
    other.join();
    ASSERT_EQ(bytes[0] + bytes[1], kPages * kPage) << "round " << round;
    for (size_t i = 0; i < kPages; ++i) {
      ASSERT_EQ(counts[0][i] + counts[1][i], 1) << "page " << i << ", round " << round;
    }
  }
}

// A writer thread stores increasing sequence numbers into random pages while
// this thread scans over and over, copying every reported page to a mirror
// (as the device copies/persists dirty pages). In rounds: the writer runs a
// burst while the scans go on, then stops and says so; one more scan, and
// every page is checked:
//  - the last report of the page came after its last write began (every
//    write is reported by a scan that ran after it), and
//  - the mirror equals the page (the copy taken when reporting saw it).
// Neither can fail on a correct tracker however the threads interleave: a
// write either precedes the scan's look at its page (reported now, copied
// after the ioctl), or follows the re-protect (faults, reported by a later
// scan, at the latest the one after the burst). Many checkpoints a second
// make a lost write show up even when the window that loses it is small.
TEST_P(WriteTrackerTest, ConcurrentWritesAreNeverLost) {
  constexpr size_t kTracked = 64;
  ASSERT_TRUE(tracker_->add_range(base(), kTracked * kPage));

  std::atomic<uint64_t> announced{0};  // sequence of the write about to happen
  std::atomic<uint64_t> go_round{0};   // the writer may write in this round...
  std::atomic<uint64_t> stop_round{0};  // ...until this says the same round
  std::atomic<uint64_t> started_in{0};  // last round the writer has written in
  std::atomic<uint64_t> paused_in{0};   // last round the writer finished
  std::atomic<bool> stop{false};
  std::vector<uint64_t> last_write(kTracked, 0);  // writer's; read when it pauses
  std::thread writer([&] {
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    uint64_t seq = 0;
    uint64_t done = 0;
    while (!stop.load()) {
      uint64_t round = go_round.load();
      if (round == done) {
        std::this_thread::yield();
        continue;
      }
      while (stop_round.load(std::memory_order_relaxed) != round) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        size_t p = rng % kTracked;
        announced.store(++seq, std::memory_order_seq_cst);
        store(page(p), seq);
        last_write[p] = seq;
        started_in.store(round, std::memory_order_relaxed);
      }
      done = round;
      paused_in.store(round, std::memory_order_release);
    }
  });
  // Joins the writer on every way out, failed assertions included.
  auto join_writer = [&] {
    stop.store(true);
    if (writer.joinable()) writer.join();
  };
  struct Joiner {
    std::function<void()> fn;
    ~Joiner() { fn(); }
  } joiner{join_writer};

  std::vector<uint64_t> mirror(kTracked, 0);
  std::vector<uint64_t> reported_after(kTracked, 0);  // `announced` when last reported
  uint64_t pages_reported = 0;
  auto on_run = [&](void* run, size_t bytes) {
    size_t first = static_cast<size_t>(static_cast<std::byte*>(run) - base()) / kPage;
    for (size_t i = first; i < first + bytes / kPage; ++i) {
      reported_after[i] = announced.load(std::memory_order_seq_cst);
      mirror[i] = load(page(i));
      ++pages_reported;
    }
  };
  auto scan_tracked = [&] {
    auto result = tracker_->scan_and_reprotect(base(), kTracked * kPage, on_run);
    EXPECT_TRUE(result.has_value()) << result.error().message();
    return result.has_value();
  };

  auto deadline = Clock::now() + std::chrono::seconds(1);
  uint64_t rounds = 0;
  int scans = 0;
  size_t lost = 0;
  while (Clock::now() < deadline && lost == 0) {
    uint64_t round = ++rounds;
    go_round.store(round);
    // Scans race writes only once the writer is at it.
    auto wait_until = Clock::now() + std::chrono::seconds(5);
    while (started_in.load() != round && Clock::now() < wait_until) {
      std::this_thread::yield();
    }
    ASSERT_EQ(started_in.load(), round) << "writer never started";
    for (uint64_t i = 0; i <= round % 2; ++i) {  // 1-2 scans racing the writer
      // Back-to-back scans would starve the writer: its faulting store is
      // retried after the scan re-protected the page again, and faults again.
      // A short spin, not a sleep: more rounds, more chances to catch a loss.
      auto resume = Clock::now() + std::chrono::microseconds(5 + 10 * (round % 3));
      while (Clock::now() < resume) {
      }
      if (!scan_tracked()) break;
      ++scans;
    }
    // Right after a racing scan, so that writes that raced it are often the
    // last ones to their page in this round.
    stop_round.store(round);
    wait_until = Clock::now() + std::chrono::seconds(5);
    while (paused_in.load(std::memory_order_acquire) != round && Clock::now() < wait_until) {
      std::this_thread::yield();
    }
    ASSERT_EQ(paused_in.load(std::memory_order_acquire), round) << "writer stuck";
    if (!scan_tracked()) break;
    ++scans;
    for (size_t i = 0; i < kTracked; ++i) {
      if (last_write[i] == 0) continue;
      if (reported_after[i] >= last_write[i] && mirror[i] == last_write[i] &&
          load(page(i)) == last_write[i]) {
        continue;
      }
      ++lost;
      ADD_FAILURE() << "round " << round << ", page " << i << ": last write #" << last_write[i]
                    << ", last reported when #" << reported_after[i]
                    << " was announced, mirror " << mirror[i] << ", page " << load(page(i));
    }
  }
  join_writer();

  uint64_t writes = announced.load();
  std::printf("[ %s ] %llu writes, %llu rounds, %d scans, %llu pages reported\n",
              media_name(GetParam()), static_cast<unsigned long long>(writes),
              static_cast<unsigned long long>(rounds), scans,
              static_cast<unsigned long long>(pages_reported));
  EXPECT_EQ(lost, 0u);
  EXPECT_GT(writes, 0u);
  EXPECT_GT(pages_reported, 0u);
}

// After remove_range the range is no longer tracked: a scan of it fails with
// a clear EPERM (the kernel's PM_SCAN_CHECK_WPASYNC answer) rather than
// reporting stale state; adding it again resumes tracking.
TEST_P(WriteTrackerTest, RemoveRangeThenScan) {
  populate();
  ASSERT_TRUE(tracker_->add_range(base(), len()));
  store(page(1), 5);
  tracker_->remove_range(base(), len());
  store(page(2), 5);

  bool called = false;
  auto result = tracker_->scan_and_reprotect(base(), len(), [&](void*, size_t) { called = true; });
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code(), std::errc::operation_not_permitted);
  EXPECT_NE(result.error().message().find("not registered"), std::string::npos)
      << result.error().message();
  EXPECT_FALSE(called);

  tracker_->remove_range(base(), len());  // twice: harmless
  ASSERT_TRUE(tracker_->add_range(base(), len()));
  EXPECT_EQ(scan(), Runs{}) << "writes before add_range do not count";
  store(page(3), 6);
  EXPECT_EQ(scan(), (Runs{{3, 4}}));
}

// remove_range after the mapping went away (unmapped, or replaced by an
// unregistered mapping at the same address) must not crash; scanning an
// unmapped range reports nothing, a replaced one is not registered (EPERM).
TEST_P(WriteTrackerTest, RemoveRangeToleratesUnmappedAndReplacedRanges) {
  ASSERT_TRUE(tracker_->add_range(base(), len()));
  store(page(0), 1);
  // Replace the first half with a fresh anonymous shared mapping.
  void* replaced = ::mmap(base(), len() / 2, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(replaced, base());
  store(page(1), 1);
  auto result = tracker_->scan_and_reprotect(base(), len() / 2, [](void*, size_t) {});
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code(), std::errc::operation_not_permitted);
  tracker_->remove_range(base(), len());

  std::byte* addr = base();
  size_t size = len();
  map_.reset();  // unmapped
  tracker_->remove_range(addr, size);
  bool called = false;
  result = tracker_->scan_and_reprotect(addr, size, [&](void*, size_t) { called = true; });
  ASSERT_TRUE(result.has_value()) << result.error().message();
  EXPECT_EQ(*result, 0u);
  EXPECT_FALSE(called);
}

TEST_P(WriteTrackerTest, RejectsUnalignedRanges) {
  auto status = tracker_->add_range(base() + 1, kPage);
  ASSERT_FALSE(status.has_value());
  EXPECT_EQ(status.error().code(), std::errc::invalid_argument);
  status = tracker_->add_range(base(), kPage + 1);
  ASSERT_FALSE(status.has_value());
  EXPECT_EQ(status.error().code(), std::errc::invalid_argument);
  status = tracker_->add_range(base(), 0);
  ASSERT_FALSE(status.has_value());
  auto result = tracker_->scan_and_reprotect(base() + 8, kPage, [](void*, size_t) {});
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code(), std::errc::invalid_argument);
  tracker_->remove_range(base() + 1, kPage);  // ignored, no crash
}

// A range belongs to one userfaultfd at a time: a second tracker gets EBUSY
// until the first is destroyed (closing its fd unregisters everything).
TEST_P(WriteTrackerTest, OneTrackerPerRangeAndDestructionUnregisters) {
  populate();
  ASSERT_TRUE(tracker_->add_range(base(), len()));
  auto second = WriteTracker::create();
  ASSERT_TRUE(second.has_value());
  auto status = (*second)->add_range(base(), len());
  ASSERT_FALSE(status.has_value());
  EXPECT_EQ(status.error().code(), std::errc::device_or_resource_busy)
      << status.error().message();

  tracker_.reset();
  ASSERT_TRUE((*second)->add_range(base(), len()));
  store(page(42), 1);
  Runs runs = scan_runs(**second, base(), len());
  EXPECT_EQ(runs, (Runs{{42, 43}})) << runs_text(runs);
}

// Registered only where the kernel has async uffd-wp and PAGEMAP_SCAN
// (Linux 6.7+): on older kernels (Debian 12's 6.1) there is no tracker to
// test, and WriteTrackerSupport checks that create() says so.
std::vector<Media> tracker_media() {
  if (!write_tracker_supported()) return {};
  return {Media::kDisk, Media::kTmpfs, Media::kMemfd};
}
INSTANTIATE_TEST_SUITE_P(Media, WriteTrackerTest, ::testing::ValuesIn(tracker_media()),
                         [](const ::testing::TestParamInfo<Media>& info) {
                           return media_name(info.param);
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(WriteTrackerTest);

// Costs on a 1 GiB memfd with 64K written pages (every 4th page). Printed, not
// asserted; the assertions check that the scan reported exactly those pages.
class WriteTrackerBench : public ::testing::TestWithParam<const char*> {};
TEST_P(WriteTrackerBench, PrintCosts) {
  auto created = WriteTracker::create();
  ASSERT_TRUE(created) << created.error().message();
  WriteTracker& tracker = **created;
  constexpr size_t kBytes = size_t{1} << 30;
  constexpr size_t kTargets = 64 * 1024;
  const size_t pages = kBytes / kPage;
  const size_t stride = pages / kTargets;  // 4 with 4 KiB pages
  internal::UniqueFd fd(::memfd_create("write-tracker-bench", MFD_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(::ftruncate(fd.get(), kBytes), 0);
  void* addr = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(addr, MAP_FAILED);
  internal::MappedRange map(addr, kBytes);
  std::byte* base = map.data();
  auto target = [&](size_t i) { return base + i * stride * kPage; };
  auto ns_since = [](Clock::time_point start) {
    return static_cast<double>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
  };
  auto write_targets = [&](uint64_t value) {
    auto start = Clock::now();
    for (size_t i = 0; i < kTargets; ++i) store(target(i), value);
    return ns_since(start);
  };

  write_targets(1);  // populate the targets, so later faults allocate nothing
  auto start = Clock::now();
  ASSERT_TRUE(tracker.add_range(base, kBytes));
  double add_ns = ns_since(start);

  double fault_ns = write_targets(2);  // first write after protection: async-WP fault
  double plain_ns = write_targets(3);  // now writable: plain stores

  size_t runs = 0;
  bool runs_ok = true;
  start = Clock::now();
  auto reported = tracker.scan_and_reprotect(base, kBytes, [&](void* run, size_t bytes) {
    runs_ok = runs_ok && bytes == kPage && static_cast<std::byte*>(run) == target(runs);
    ++runs;
  });
  double scan_ns = ns_since(start);
  ASSERT_TRUE(reported.has_value()) << reported.error().message();
  EXPECT_EQ(*reported, kTargets * kPage);
  EXPECT_EQ(runs, kTargets);
  EXPECT_TRUE(runs_ok) << "every run is exactly one written page, in order";

  start = Clock::now();
  reported = tracker.scan_and_reprotect(base, kBytes, [](void*, size_t) {});
  double clean_scan_ns = ns_since(start);
  ASSERT_TRUE(reported.has_value());
  EXPECT_EQ(*reported, 0u);

  double fault2_ns = write_targets(4);  // second sample of the async-WP fault
  // The same 64K pages written once more, then one contiguous 64K-page run.
  for (size_t i = 0; i < kTargets; ++i) store(base + i * kPage, 5);
  runs = 0;
  start = Clock::now();
  reported = tracker.scan_and_reprotect(base, kBytes, [&](void*, size_t) { ++runs; });
  double mixed_scan_ns = ns_since(start);
  ASSERT_TRUE(reported.has_value());
  EXPECT_GT(*reported, kTargets * kPage);
  size_t mixed_runs = runs;

  for (size_t i = 0; i < kTargets; ++i) store(base + i * kPage, 6);
  runs = 0;
  start = Clock::now();
  reported = tracker.scan_and_reprotect(base, kBytes, [&](void*, size_t) { ++runs; });
  double contiguous_scan_ns = ns_since(start);
  ASSERT_TRUE(reported.has_value());
  EXPECT_EQ(*reported, kTargets * kPage);
  EXPECT_EQ(runs, 1u);

  // The alternative: re-protect the whole range blindly with UFFDIO_WRITEPROTECT
  // (which reports nothing). Same mapping, own async-WP userfaultfd.
  tracker.remove_range(base, kBytes);
  auto opened = internal::open_userfaultfd(O_CLOEXEC | O_NONBLOCK,
                                 UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED |
                                     UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
  ASSERT_TRUE(opened) << opened.error().message();
  internal::UniqueFd uffd = std::move(opened->fd);
  uffdio_register reg{};
  reg.range = {reinterpret_cast<uint64_t>(base), kBytes};
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  ASSERT_EQ(::ioctl(uffd.get(), UFFDIO_REGISTER, &reg), 0);
  uffdio_writeprotect wp{};
  wp.range = {reinterpret_cast<uint64_t>(base), kBytes};
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  ASSERT_EQ(::ioctl(uffd.get(), UFFDIO_WRITEPROTECT, &wp), 0);
  write_targets(7);
  start = Clock::now();
  ASSERT_EQ(::ioctl(uffd.get(), UFFDIO_WRITEPROTECT, &wp), 0);
  double wp_written_ns = ns_since(start);
  start = Clock::now();
  ASSERT_EQ(::ioctl(uffd.get(), UFFDIO_WRITEPROTECT, &wp), 0);
  double wp_clean_ns = ns_since(start);

  // For scale: an ordinary minor write fault, no tracking at all (the pages
  // stay in the memfd, only this mapping's page-table entries are dropped).
  uffd.reset();
  ASSERT_EQ(::madvise(base, kBytes, MADV_DONTNEED), 0);
  double minor_fault_ns = write_targets(8);
  EXPECT_EQ(load(target(kTargets - 1)), 8u);

  std::printf("\n  WriteTracker costs, 1 GiB memfd, %zu KiB pages, 64K = %zu pages\n",
              kPage / 1024, kTargets);
  std::printf("  %-58s %12s\n", "operation", "time");
  auto row_ms = [](const char* what, double ns) {
    std::printf("  %-58s %9.2f ms\n", what, ns / 1e6);
  };
  auto row_ns = [&](const char* what, double ns) {
    std::printf("  %-58s %9.0f ns/page\n", what, ns / static_cast<double>(kTargets));
  };
  row_ms("add_range (register + write-protect 1 GiB)", add_ns);
  row_ms("scan_and_reprotect, 64K written pages (64K runs)", scan_ns);
  row_ms("scan_and_reprotect, 64K written pages (1 run)", contiguous_scan_ns);
  char mixed[96];
  std::snprintf(mixed, sizeof mixed, "scan_and_reprotect, ~112K written pages (%zu runs)",
                mixed_runs);
  row_ms(mixed, mixed_scan_ns);
  row_ms("scan_and_reprotect, nothing written", clean_scan_ns);
  row_ms("UFFDIO_WRITEPROTECT 1 GiB, 64K written pages", wp_written_ns);
  row_ms("UFFDIO_WRITEPROTECT 1 GiB, nothing written", wp_clean_ns);
  row_ns("first write to a protected page (async-WP fault)", fault_ns);
  row_ns("  same, second sample", fault2_ns);
  row_ns("plain store to a writable page (TLB miss included)", plain_ns);
  row_ns("minor write fault, untracked (entry dropped by DONTNEED)", minor_fault_ns);
  std::printf("\n");
}

std::vector<const char*> tracker_kernel() {
  if (!write_tracker_supported()) return {};
  return {"async_wp"};
}
INSTANTIATE_TEST_SUITE_P(Kernel, WriteTrackerBench, ::testing::ValuesIn(tracker_kernel()),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param);
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(WriteTrackerBench);

}  // namespace
}  // namespace rawdax::internal

// Device::freeze(), dirty tracking and sync(), on each engine the media
// allows: freeze really stops stores, the image is one cut, nothing is lost.
// What kernel-mode writes get is in kernel_write_test.cc.
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <algorithm>
#include <cstring>
#include <future>
#include <gtest/gtest.h>
#include <thread>
#include <vector>

#include "common/mapped_range.h"
#include "common/unique_fd.h"
#include "engine/write_tracker.h"
#include "fault_catcher.h"
#include "media/uffd_compat.h"
#include "media/userfaultfd.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::eventually;

using namespace std::chrono_literals;
using ::rawdax::testing::run_catching_faults;
using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

// An anonymous page, for the stuck-source test.
constexpr uint64_t kAnonPage = 4096;

struct EngineCase {
  TestMedia media;
  EngineChoice engine;
  UffdFaults faults = UffdFaults::kHandlerThread;  // the uffd engine's mode
};

// Each selected media with the engines it allows: uffd where sync uffd-wp
// registers (tmpfs, memfd, hugetlbfs, and carved, whose file is on tmpfs),
// in both of its fault modes, and mprotect everywhere but memfd, whose
// regions are this process's own and gain nothing from a second engine.
std::vector<EngineCase> engine_cases() {
  std::vector<EngineCase> out;
  for (TestMedia media : ::rawdax::testing::all_media()) {
    switch (media) {
      case TestMedia::kTmpfs:
      case TestMedia::kHugetlbfs:
      case TestMedia::kCarved:
        out.push_back({media, EngineChoice::kUffd});
        out.push_back({media, EngineChoice::kUffd, UffdFaults::kFaultingThread});
        out.push_back({media, EngineChoice::kMprotect});
        break;
      case TestMedia::kDisk:
      case TestMedia::kFsdax:
        out.push_back({media, EngineChoice::kMprotect});
        break;
      case TestMedia::kMemfd:
        out.push_back({media, EngineChoice::kUffd});
        out.push_back({media, EngineChoice::kUffd, UffdFaults::kFaultingThread});
        break;
    }
  }
  return out;
}

std::string case_name(const ::testing::TestParamInfo<EngineCase>& info) {
  if (info.param.engine == EngineChoice::kMprotect) {
    return std::string(::rawdax::testing::media_name(info.param.media)) + "_mprotect";
  }
  return std::string(::rawdax::testing::media_name(info.param.media)) +
         (info.param.faults == UffdFaults::kFaultingThread ? "_uffd_faulting_thread" : "_uffd");
}

class FreezeTest : public ::testing::TestWithParam<EngineCase> {
 protected:
  void open(bool track_dirty = false) {
    auto region = Region::open(scratch_.spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
    page_ = region_->capabilities().page_size;
    size_ = std::max<uint64_t>(4 << 20, 64 * page_);
    ASSERT_TRUE(region_->create_namespace({.name = "f", .size = size_}));
    const bool uffd = GetParam().engine == EngineChoice::kUffd;
    auto dev = region_->open_device("f", {.track_dirty = track_dirty,
                                          .engine = GetParam().engine,
                                          .uffd_faults = uffd ? GetParam().faults : UffdFaults::kAuto});
    ASSERT_TRUE(dev) << dev.error().message();
    dev_ = std::move(*dev);
    ASSERT_EQ(dev_->engine(), uffd ? ProtectionEngine::kUffd : ProtectionEngine::kMprotect);
    ASSERT_EQ(dev_->uffd_faults(), uffd ? GetParam().faults : UffdFaults::kAuto);
  }
  uint64_t read_u64(uint64_t offset) {
    uint64_t v = 0;
    EXPECT_TRUE(dev_->read(offset, std::as_writable_bytes(std::span(&v, 1))));
    return v;
  }
  bool uffd() const { return GetParam().engine == EngineChoice::kUffd; }
  // Waits until at least `n` writers wait on the freeze, as the device
  // counts them: a counted writer has not written yet. The limit only bounds
  // a failing run.
  bool writers_parked(uint64_t n) {
    return eventually([&] { return dev_->stats().parked_writers >= n; }, 60s);
  }

  ScratchRegion scratch_{GetParam().media};
  std::unique_ptr<Region> region_;
  std::unique_ptr<Device> dev_;
  // The media's page (a huge page on hugetlbfs): the unit of write-protection
  // and dirty tracking. The namespace is 4 MiB, and at least 64 pages.
  uint64_t page_ = 0;
  uint64_t size_ = 0;
};

// Two threads store sequence numbers through mappings, one through the block
// face. Each freeze's image holds every acknowledged write and stays still.
TEST_P(FreezeTest, EveryFreezeIsOneStableCut) {
  open();
  auto m1 = dev_->map(0, size_ / 2, Access::ReadWrite);
  auto m2 = dev_->map(size_ / 2, size_ / 2, Access::ReadWrite);
  ASSERT_TRUE(m1 && m2);
  const uint64_t slot[3] = {10 * page_, size_ / 2 + 20 * page_, 30 * page_};
  std::atomic<uint64_t> acked[3] = {0, 0, 0};
  std::atomic<bool> stop{false};
  auto store_writer = [&](int w, std::byte* base, uint64_t offset_in_map) {
    auto* word = reinterpret_cast<volatile uint64_t*>(base + offset_in_map);
    for (uint64_t seq = 1; !stop.load(std::memory_order_relaxed); ++seq) {
      *word = seq;
      acked[w].store(seq, std::memory_order_release);
    }
  };
  std::thread w0(store_writer, 0, m1->data(), slot[0]);
  std::thread w1(store_writer, 1, m2->data(), slot[1] - size_ / 2);
  std::thread w2([&] {
    for (uint64_t seq = 1; !stop.load(std::memory_order_relaxed); ++seq) {
      ASSERT_TRUE(dev_->write(slot[2], std::as_bytes(std::span(&seq, 1))));
      acked[2].store(seq, std::memory_order_release);
    }
  });
  ASSERT_TRUE(eventually([&] { return acked[0] > 0 && acked[1] > 0 && acked[2] > 0; }));

  auto deadline = std::chrono::steady_clock::now() + 20s;
  int freezes = 0;
  uint64_t last[3] = {0, 0, 0};
  for (; freezes < 1000 && std::chrono::steady_clock::now() < deadline; ++freezes) {
    auto frozen = dev_->freeze();
    ASSERT_TRUE(frozen) << frozen.error().message();
    uint64_t image[3], ack[3];
    for (int w = 0; w < 3; ++w) {
      ack[w] = acked[w].load(std::memory_order_acquire);
      image[w] = read_u64(slot[w]);
      ASSERT_GE(image[w], ack[w]) << "freeze " << freezes << " writer " << w
                                  << ": an acknowledged write is missing from the image";
    }
    for (int spin = 0; spin < 20; ++spin) std::this_thread::yield();
    for (int w = 0; w < 3; ++w) {
      ASSERT_EQ(read_u64(slot[w]), image[w]) << "freeze " << freezes << " writer " << w
                                             << ": the image changed while frozen";
      ASSERT_GE(image[w], last[w]);
      last[w] = image[w];
    }
    frozen->thaw();
    if (freezes % 50 == 0) {  // writers resume after thaw
      for (int w = 0; w < 3; ++w) {
        uint64_t before = acked[w].load();
        ASSERT_TRUE(eventually([&] { return acked[w].load() > before; }))
            << "writer " << w << " did not resume";
      }
    }
  }
  stop.store(true);
  w0.join();
  w1.join();
  w2.join();
  for (int w = 0; w < 3; ++w) EXPECT_EQ(read_u64(slot[w]), acked[w].load()) << "writer " << w;
  EXPECT_GE(freezes, 100);
  DeviceStats stats = dev_->stats();
  EXPECT_EQ(stats.freezes, static_cast<uint64_t>(freezes));
  EXPECT_GT(stats.write_faults, 0u);
  std::printf("%d freezes; writer stall total %.1f ms, max %.3f ms\n", freezes,
              stats.stall_total_ns / 1e6, stats.stall_max_ns / 1e6);
}

TEST_P(FreezeTest, StoresWaitLoadsAndBlockReadsGoOn) {
  open();
  auto m = dev_->map(0, size_, Access::ReadWrite);
  ASSERT_TRUE(m);
  auto* words = reinterpret_cast<volatile uint64_t*>(m->data());
  words[0] = 1;
  auto frozen = dev_->freeze();
  ASSERT_TRUE(frozen);
  std::atomic<bool> stored{false};
  std::thread writer([&] {
    words[page_ / 8] = 42;  // page 1
    stored.store(true);
  });
  std::atomic<uint64_t> loads{0};
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop.load()) {
      if (words[0] == 1) loads.fetch_add(1);
    }
  });
  EXPECT_TRUE(writers_parked(1)) << "the store neither landed nor parked";
  EXPECT_FALSE(stored.load()) << "a store landed while frozen";
  EXPECT_EQ(read_u64(page_), 0u);
  EXPECT_TRUE(eventually([&] { return loads.load() > 1000; })) << "loads stalled while frozen";
  std::vector<std::byte> buf(page_);
  EXPECT_TRUE(dev_->read(0, buf));
  frozen->thaw();
  ASSERT_TRUE(eventually([&] { return stored.load(); }));
  writer.join();
  stop.store(true);
  reader.join();
  EXPECT_EQ(read_u64(page_), 42u);
  DeviceStats stats = dev_->stats();
  EXPECT_GT(stats.stall_max_ns, 0u);
  EXPECT_EQ(stats.parked_writers, 0u);
}

TEST_P(FreezeTest, FreezesNestAcrossThreads) {
  open();
  auto m = dev_->map(0, size_, Access::ReadWrite);
  ASSERT_TRUE(m);
  auto outer = dev_->freeze();
  ASSERT_TRUE(outer);
  auto inner = std::async(std::launch::async, [&] { return dev_->freeze(); }).get();
  ASSERT_TRUE(inner);
  std::atomic<bool> stored{false};
  std::thread writer([&] {
    m->data()[3 * page_] = std::byte{5};
    stored.store(true);
  });
  EXPECT_TRUE(writers_parked(1));
  outer->thaw();
  // A thaw that released the store would have cleared the uffd engine's
  // parked faults before returning, and woken the mprotect engine's thread.
  EXPECT_GE(dev_->stats().parked_writers, 1u) << "thawed while an inner freeze was still held";
  EXPECT_FALSE(stored.load()) << "thawed while an inner freeze was still held";
  EXPECT_EQ(read_u64(3 * page_) & 0xff, 0u);
  inner->thaw();
  ASSERT_TRUE(eventually([&] { return stored.load(); }));
  writer.join();
  EXPECT_EQ(read_u64(3 * page_) & 0xff, 5u);
  EXPECT_EQ(dev_->stats().freezes, 1u);
}

TEST_P(FreezeTest, NewMappingsWhileFrozenStartProtected) {
  open();
  auto frozen = dev_->freeze();
  ASSERT_TRUE(frozen);
  auto m = dev_->map(page_, page_, Access::ReadWrite);
  ASSERT_TRUE(m) << m.error().message();
  std::atomic<bool> stored{false};
  std::thread writer([&] {
    m->data()[7] = std::byte{7};
    stored.store(true);
  });
  EXPECT_TRUE(writers_parked(1)) << "the store neither landed nor parked";
  EXPECT_FALSE(stored.load());
  EXPECT_EQ(read_u64(page_), 0u);
  frozen->thaw();
  ASSERT_TRUE(eventually([&] { return stored.load(); }));
  writer.join();
  std::byte b{};
  ASSERT_TRUE(dev_->read(page_ + 7, std::span(&b, 1)));
  EXPECT_EQ(b, std::byte{7});
}

TEST_P(FreezeTest, BlockWritesWaitForThaw) {
  open();
  auto frozen = dev_->freeze();
  ASSERT_TRUE(frozen);
  uint64_t v = 99;
  auto writer = std::async(std::launch::async,
                           [&] { return dev_->write(0, std::as_bytes(std::span(&v, 1))); });
  EXPECT_TRUE(writers_parked(1)) << "the block write neither finished nor waited";
  EXPECT_EQ(writer.wait_for(0s), std::future_status::timeout);
  EXPECT_EQ(read_u64(0), 0u);
  frozen->thaw();
  EXPECT_TRUE(writer.get());
  EXPECT_EQ(read_u64(0), 99u);
  EXPECT_EQ(dev_->stats().parked_writers, 0u);
}

TEST_P(FreezeTest, RemoveWhileFrozenWakesEveryWriter) {
  open();
  auto m = dev_->map(0, size_, Access::ReadWrite);
  ASSERT_TRUE(m);
  auto frozen = dev_->freeze();
  ASSERT_TRUE(frozen);
  auto storer = std::async(std::launch::async, [&] {
    return run_catching_faults([&] { m->data()[page_] = std::byte{1}; });
  });
  uint64_t v = 1;
  auto block = std::async(std::launch::async,
                          [&] { return dev_->write(0, std::as_bytes(std::span(&v, 1))); });
  // Both parked before the removal, so that it is what wakes them.
  EXPECT_TRUE(writers_parked(2));
  ASSERT_TRUE(dev_->remove());
  ASSERT_EQ(storer.wait_for(5s), std::future_status::ready) << "parked store not woken";
  ASSERT_EQ(block.wait_for(5s), std::future_status::ready) << "parked block write not woken";
  EXPECT_EQ(storer.get(), SIGBUS);
  Status written = block.get();
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code(), std::errc::no_such_device_or_address);
  frozen->thaw();  // thawing a removed device is harmless
}

// A block write stuck in flight (its source page faults on a userfaultfd we
// never answer) makes a timed freeze give up and leave the device unfrozen.
TEST_P(FreezeTest, FreezeTimesOutAndLeavesTheDeviceUnfrozen) {
  open();
  // Non-blocking, or poll() reports only POLLERR; the fault still waits. The
  // block write's copy from `src` is a user-mode access: it faults on a
  // user-mode-only userfaultfd too.
  auto opened = internal::open_userfaultfd(O_CLOEXEC | O_NONBLOCK, 0);
  ASSERT_TRUE(opened) << opened.error().message();
  int uffd = opened->fd.get();
  void* src =
      ::mmap(nullptr, kAnonPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(src, MAP_FAILED);
  internal::MappedRange src_owner(src, kAnonPage);
  uffdio_register reg{};
  reg.range = {reinterpret_cast<uint64_t>(src), kAnonPage};
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  ASSERT_EQ(::ioctl(uffd, UFFDIO_REGISTER, &reg), 0);
  auto stuck = std::async(std::launch::async, [&] {
    return dev_->write(0, std::span(static_cast<const std::byte*>(src), kAnonPage));
  });
  // However the test ends, the stuck write is let go before `stuck` is
  // waited for (its destructor would wait for ever).
  struct LetGo {
    int uffd;
    void* src;
    ~LetGo() {
      uffdio_zeropage zero{};
      zero.range = {reinterpret_cast<uint64_t>(src), kAnonPage};
      ::ioctl(uffd, UFFDIO_ZEROPAGE, &zero);  // EEXIST once the test did it
    }
  } let_go{uffd, src};
  // In flight once its source page has faulted, however busy the machine.
  pollfd faulted{uffd, POLLIN, 0};
  ASSERT_EQ(::poll(&faulted, 1, 10000), 1) << "the block write never reached its source page";
  ASSERT_EQ(faulted.revents, POLLIN);
  auto t0 = std::chrono::steady_clock::now();
  auto frozen = dev_->freeze({.timeout = 100ms});
  ASSERT_FALSE(frozen);
  EXPECT_EQ(frozen.error().code(), std::errc::timed_out);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  // Not frozen: other writes and stores go through at once.
  uint64_t v = 7;
  EXPECT_TRUE(dev_->write(page_, std::as_bytes(std::span(&v, 1))));
  auto m = dev_->map(0, size_, Access::ReadWrite);
  ASSERT_TRUE(m);
  m->data()[2 * page_] = std::byte{1};
  EXPECT_EQ(dev_->stats().freezes, 0u);
  uffdio_zeropage zero{};
  zero.range = {reinterpret_cast<uint64_t>(src), kAnonPage};
  ASSERT_EQ(::ioctl(uffd, UFFDIO_ZEROPAGE, &zero), 0);
  EXPECT_TRUE(stuck.get());
}

INSTANTIATE_TEST_SUITE_P(Engines, FreezeTest, ::testing::ValuesIn(engine_cases()), case_name);

// Exact tracking: the uffd engine's own faults, or on the mprotect engine
// async uffd-wp + PAGEMAP_SCAN (Linux 6.7+). Where the kernel lacks those
// (Debian 12's 6.1), the mprotect engine tracks whole ranges instead, and
// these cases are WholeRangeTrackingTest's.
bool tracks_exactly(const EngineCase& c) {
  return c.engine == EngineChoice::kUffd || internal::write_tracker_supported();
}
std::vector<EngineCase> engine_cases_where(bool exact) {
  std::vector<EngineCase> out;
  for (const EngineCase& c : engine_cases()) {
    if (tracks_exactly(c) == exact) out.push_back(c);
  }
  return out;
}

class ExactTrackingTest : public FreezeTest {};
class WholeRangeTrackingTest : public FreezeTest {};

TEST_P(ExactTrackingTest, SyncPersistsExactlyTheDirtyPages) {
  open(/*track_dirty=*/true);
  auto m = dev_->map(0, size_, Access::ReadWrite);
  ASSERT_TRUE(m);
  ASSERT_TRUE(dev_->sync());  // a clean start
  uint64_t before = dev_->stats().synced_pages;
  for (uint64_t page : {1, 2, 10}) std::memset(m->data() + page * page_, int(page), 100);
  std::vector<std::byte> block(2 * page_, std::byte{0x77});
  ASSERT_TRUE(dev_->write(20 * page_, block));
  EXPECT_GE(dev_->stats().dirty_pages, 2u);
  ASSERT_TRUE(dev_->sync());
  EXPECT_EQ(dev_->stats().synced_pages - before, 5u);
  EXPECT_EQ(dev_->stats().dirty_pages, 0u);
  ASSERT_TRUE(dev_->sync());
  EXPECT_EQ(dev_->stats().synced_pages - before, 5u) << "a sync with nothing written persisted pages";
  m->data()[10 * page_ + 1] = std::byte{1};  // re-armed: the next store is seen again
  ASSERT_TRUE(dev_->sync());
  EXPECT_EQ(dev_->stats().synced_pages - before, 6u);

  if (GetParam().media == TestMedia::kDisk || GetParam().media == TestMedia::kFsdax) {
    // The namespace starts at info().offset of its backing file (0 unless carved).
    const off_t base = static_cast<off_t>(dev_->info().offset);
    int fd = ::open(dev_->info().path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    std::vector<char> got(100);
    ASSERT_EQ(::pread(fd, got.data(), got.size(), base + 2 * page_), 100);
    EXPECT_EQ(got, std::vector<char>(100, 2));
    ASSERT_EQ(::pread(fd, got.data(), got.size(), base + 20 * page_), 100);
    EXPECT_EQ(got, std::vector<char>(100, 0x77));
    ::close(fd);
  }
}

// Without a kernel tracker, sync() persists every page of every writable
// mapping, written or not, and as often as it is called: the documented
// cost of the fallback (docs/engine.md). Block writes stay exact (the
// block-face bitmap).
TEST_P(WholeRangeTrackingTest, SyncPersistsEveryMappedPage) {
  open(/*track_dirty=*/true);
  ASSERT_TRUE(dev_->sync());
  uint64_t before = dev_->stats().synced_pages;
  std::vector<std::byte> block(2 * page_, std::byte{0x77});
  ASSERT_TRUE(dev_->write(20 * page_, block));
  ASSERT_TRUE(dev_->sync());
  EXPECT_EQ(dev_->stats().synced_pages - before, 2u) << "block writes are tracked exactly";

  const uint64_t mapped = size_ / 2;
  {
    auto m = dev_->map(0, mapped, Access::ReadWrite);
    ASSERT_TRUE(m);
    m->data()[3 * page_] = std::byte{1};
    before = dev_->stats().synced_pages;
    ASSERT_TRUE(dev_->sync());
    EXPECT_EQ(dev_->stats().synced_pages - before, mapped / page_);
    before = dev_->stats().synced_pages;
    ASSERT_TRUE(dev_->sync());
    EXPECT_EQ(dev_->stats().synced_pages - before, mapped / page_)
        << "with nothing written, a whole-range sync still persists the mapping";
  }
  before = dev_->stats().synced_pages;
  ASSERT_TRUE(dev_->sync());
  EXPECT_EQ(dev_->stats().synced_pages - before, 0u) << "no mapping, nothing to persist";
}

INSTANTIATE_TEST_SUITE_P(Engines, ExactTrackingTest,
                         ::testing::ValuesIn(engine_cases_where(true)), case_name);
INSTANTIATE_TEST_SUITE_P(Engines, WholeRangeTrackingTest,
                         ::testing::ValuesIn(engine_cases_where(false)), case_name);
// One of the two is empty on any given kernel.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ExactTrackingTest);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(WholeRangeTrackingTest);

// Forcing the uffd engine follows the probe: refused (ENOTSUP, naming uffd)
// where the media refuses sync write-protect, as ext4 does, and granted
// where the probe found it works. Either way the probe and the open agree.
TEST(EngineChoice, UffdIsRefusedWhereTheMediaRefusesSyncWriteProtect) {
  ScratchRegion scratch(TestMedia::kDisk);
  auto region = Region::open(scratch.spec(), {.create = true});
  ASSERT_TRUE(region);
  ASSERT_TRUE((*region)->create_namespace({.name = "e", .size = 4 << 20}));
  if ((*region)->capabilities().uffd_wp_sync) {
    auto granted = (*region)->open_device("e", {.engine = EngineChoice::kUffd});
    ASSERT_TRUE(granted) << granted.error().message();
    return;
  }
  auto dev = (*region)->open_device("e", {.engine = EngineChoice::kUffd});
  ASSERT_FALSE(dev);
  EXPECT_EQ(dev.error().code(), std::errc::operation_not_supported);
  EXPECT_NE(dev.error().message().find("uffd"), std::string::npos);
  auto fine = (*region)->open_device("e");
  ASSERT_TRUE(fine);
  EXPECT_EQ((*fine)->engine(), ProtectionEngine::kMprotect);
}

}  // namespace
}  // namespace rawdax

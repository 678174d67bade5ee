// Device::resize(): grow under load, refuse or revoke on shrink, clean errors
// past the end, crash-consistent metadata, and a resize storm at the boundary.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <gtest/gtest.h>
#include <random>
#include <thread>
#include <vector>

#include "fault_catcher.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::run_catching_faults;
using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

constexpr uint64_t kMiB = uint64_t{1} << 20;

class ResizeTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  void SetUp() override {
    auto region = Region::open(scratch_.spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
    page_ = region_->capabilities().page_size;
    unit_ = std::max(kMiB, page_);
    ASSERT_TRUE(region_->create_namespace({.name = "r", .size = 4 * unit_}));
    auto dev = region_->open_device("r");
    ASSERT_TRUE(dev);
    dev_ = std::move(*dev);
  }
  bool all_zero(uint64_t off, size_t len) {
    std::vector<std::byte> buf(len);
    EXPECT_TRUE(dev_->read(off, buf));
    for (auto b : buf) {
      if (b != std::byte{0}) return false;
    }
    return true;
  }

  ScratchRegion scratch_{GetParam()};
  std::unique_ptr<Region> region_;
  std::unique_ptr<Device> dev_;
  uint64_t page_ = 0;  // the media's page (a huge page on hugetlbfs)
  uint64_t unit_ = 0;  // sizes below are multiples of it: 1 MiB, or a larger page
};

TEST_P(ResizeTest, GrowKeepsDataAndServesTheNewRange) {
  std::vector<std::byte> data(4 * unit_, std::byte{0x5c});
  ASSERT_TRUE(dev_->write(0, data));
  auto old_map = dev_->map(0, 4 * unit_, Access::ReadWrite);
  ASSERT_TRUE(old_map);
  ASSERT_TRUE(dev_->resize(8 * unit_));
  EXPECT_EQ(dev_->size(), 8 * unit_);
  EXPECT_EQ(region_->find("r")->size, 8 * unit_);
  EXPECT_TRUE(all_zero(4 * unit_, 4 * unit_));
  std::vector<std::byte> got(4 * unit_);
  ASSERT_TRUE(dev_->read(0, got));
  EXPECT_EQ(got, data);
  auto new_map = dev_->map(6 * unit_, 2 * unit_, Access::ReadWrite);
  ASSERT_TRUE(new_map) << new_map.error().message();
  new_map->data()[5] = std::byte{9};
  std::byte b{};
  ASSERT_TRUE(dev_->read(6 * unit_ + 5, std::span(&b, 1)));
  EXPECT_EQ(b, std::byte{9});
  EXPECT_EQ(old_map->data()[0], std::byte{0x5c});
}

TEST_P(ResizeTest, GrowPastTheViewCapacityStaysCoherent) {
  // The first view covers max(2 x size, 1 GiB), or exactly the size on
  // hugetlbfs (a mapping past its end would grow the file): this forces a
  // second one.
  const uint64_t big =
      region_->capabilities().hugetlb ? 8 * unit_ : (1ull << 30) + 64 * kMiB;
  auto m = dev_->map(0, unit_, Access::ReadWrite);
  ASSERT_TRUE(m);
  ASSERT_TRUE(dev_->resize(big)) << "grow to " << big;
  std::vector<std::byte> tail(4096, std::byte{3});
  ASSERT_TRUE(dev_->write(big - 4096, tail));
  m->data()[10] = std::byte{4};
  std::byte b{};
  ASSERT_TRUE(dev_->read(10, std::span(&b, 1)));
  EXPECT_EQ(b, std::byte{4});
  ASSERT_TRUE(dev_->write(11, std::vector<std::byte>(1, std::byte{6})));
  EXPECT_EQ(m->data()[11], std::byte{6});
}

TEST_P(ResizeTest, ShrinkUnderAMappingIsRefusedUnlessForced) {
  auto cut = dev_->map(2 * unit_, 2 * unit_, Access::ReadWrite);
  auto kept = dev_->map(0, unit_, Access::ReadWrite);
  ASSERT_TRUE(cut && kept);
  auto busy = dev_->resize(3 * unit_);
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code(), std::errc::device_or_resource_busy);
  EXPECT_NE(busy.error().message().find("offset " + std::to_string(2 * unit_)), std::string::npos)
      << busy.error().message();
  EXPECT_EQ(dev_->size(), 4 * unit_);
  EXPECT_FALSE(cut->revoked());
  cut->data()[0] = std::byte{1};  // still a live mapping

  ASSERT_TRUE(dev_->resize(3 * unit_, {.force = true}));
  EXPECT_EQ(dev_->size(), 3 * unit_);
  EXPECT_TRUE(cut->revoked());
  EXPECT_FALSE(kept->revoked());
  EXPECT_EQ(run_catching_faults([&] { cut->data()[0] = std::byte{2}; }), SIGBUS);
  kept->data()[0] = std::byte{2};  // outside the cut: untouched

  std::vector<std::byte> buf(4096);
  auto past = dev_->write(3 * unit_, buf);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code(), std::errc::no_space_on_device);
  EXPECT_NE(past.error().message().find("size " + std::to_string(3 * unit_)), std::string::npos);
  EXPECT_FALSE(dev_->read(3 * unit_ - 1, buf));
  EXPECT_FALSE(dev_->map(3 * unit_, 4096, Access::ReadOnly));
}

TEST_P(ResizeTest, ShrinkThenGrowExposesZeros) {
  ASSERT_TRUE(dev_->write(0, std::vector<std::byte>(4 * unit_, std::byte{0xff})));
  ASSERT_TRUE(dev_->resize(unit_ + page_));
  ASSERT_TRUE(dev_->resize(4 * unit_));
  EXPECT_TRUE(all_zero(unit_ + page_, 3 * unit_ - page_));
  std::byte b{};
  ASSERT_TRUE(dev_->read(unit_, std::span(&b, 1)));
  EXPECT_EQ(b, std::byte{0xff});
}

TEST_P(ResizeTest, BadSizesChangeNothing) {
  uint64_t gen = region_->generation();
  EXPECT_EQ(dev_->resize(0).error().code(), std::errc::invalid_argument);
  EXPECT_FALSE(dev_->resize(UINT64_MAX));
  auto huge = dev_->resize(uint64_t{1} << 60);
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code(), std::errc::no_space_on_device);
  EXPECT_EQ(dev_->size(), 4 * unit_);
  EXPECT_EQ(region_->generation(), gen);
  ASSERT_TRUE(dev_->remove());
  EXPECT_EQ(dev_->resize(8 * unit_).error().code(), std::errc::no_such_device_or_address);
}

// A freeze promises a stable image: a resize while one is held is refused,
// and a freeze that races a resize is granted only after it, so the size
// never moves inside a freeze.
TEST_P(ResizeTest, RefusedWhileFrozenAndNeverInsideAFreeze) {
  std::vector<std::byte> data(4096, std::byte{7});
  ASSERT_TRUE(dev_->write(3 * unit_, data));
  uint64_t gen = region_->generation();
  {
    auto frozen = dev_->freeze();
    ASSERT_TRUE(frozen);
    for (uint64_t size : {8 * unit_, 2 * unit_}) {
      Status st = dev_->resize(size, {.force = true});
      ASSERT_FALSE(st) << size;
      EXPECT_EQ(st.error().code(), std::errc::device_or_resource_busy);
      EXPECT_NE(st.error().message().find("namespace r: cannot resize to " + std::to_string(size) +
                                          " while the namespace is frozen"),
                std::string::npos)
          << st.error().message();
    }
    EXPECT_EQ(dev_->size(), 4 * unit_);
    EXPECT_EQ(region_->generation(), gen);
  }
  std::vector<std::byte> back(4096);
  ASSERT_TRUE(dev_->read(3 * unit_, back));
  EXPECT_EQ(back, data);
  ASSERT_TRUE(dev_->resize(8 * unit_));

  std::atomic<bool> stop{false};
  std::atomic<int> resized{0}, refused{0}, moved{0}, freezes{0};
  std::thread resizer([&] {
    for (int i = 0; !stop.load(); ++i) {
      Status st = dev_->resize(i % 2 == 0 ? 4 * unit_ : 8 * unit_, {.force = true});
      if (st) {
        resized.fetch_add(1);
      } else if (st.error().code() == std::errc::device_or_resource_busy) {
        refused.fetch_add(1);
      } else {
        ADD_FAILURE() << st.error().message();
      }
    }
  });
  // At least 500 ms, and until the resizer got through a few times (on a
  // loaded machine a freeze that persists to disk may hold it off a while).
  auto now = std::chrono::steady_clock::now;
  auto until = now() + std::chrono::milliseconds(500), cap = now() + std::chrono::seconds(20);
  while (now() < cap && (now() < until || resized.load() < 3)) {
    {
      auto frozen = dev_->freeze();
      ASSERT_TRUE(frozen);
      uint64_t at_freeze = dev_->size();
      std::this_thread::yield();
      if (dev_->size() != at_freeze) moved.fetch_add(1);
      freezes.fetch_add(1);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));  // a window for the resizer
  }
  stop.store(true);
  resizer.join();
  EXPECT_EQ(moved.load(), 0) << "the size changed inside " << moved.load() << " of "
                             << freezes.load() << " freezes";
  EXPECT_GE(resized.load(), 3);
}

// The seed left resize during a fault unprotected. Here one thread resizes in a
// loop while others do block I/O and map/unmap at the moving boundary.
TEST_P(ResizeTest, ResizeStormAtTheBoundary) {
  const std::vector<uint64_t> sizes = {2 * unit_, 5 * unit_, 3 * unit_, 8 * unit_,
                                       2 * unit_ + page_};
  std::atomic<bool> stop{false};
  std::atomic<int> unexpected{0};
  std::atomic<uint64_t> io_ok{0}, io_refused{0}, maps_ok{0}, resizes_ok{0}, resizes_busy{0};
  auto expected_error = [&](const Error& e) {
    bool known = e.code() == std::errc::no_space_on_device ||
                 e.code() == std::errc::invalid_argument ||
                 e.code() == std::errc::device_or_resource_busy;
    if (!known || e.message().find("namespace r") == std::string::npos) {
      ADD_FAILURE() << "unexpected error: " << e.message();
      unexpected.fetch_add(1);
    }
  };
  std::thread io([&] {
    std::mt19937_64 rng(1);
    std::vector<std::byte> buf(8192), stamp(4096);
    for (uint64_t i = 0; !stop.load(); ++i) {
      // [0, 1M) is always inside: its contents must survive the storm intact.
      std::memset(stamp.data(), static_cast<int>(i & 0xff), stamp.size());
      uint64_t home = (i % 256) * 4096;
      if (!dev_->write(home, stamp) || !dev_->read(home, std::span(buf).subspan(0, 4096))) {
        ADD_FAILURE() << "I/O inside the minimum size failed";
        unexpected.fetch_add(1);
      } else if (std::memcmp(buf.data(), stamp.data(), 4096) != 0) {
        ADD_FAILURE() << "torn read at " << home;
        unexpected.fetch_add(1);
      }
      uint64_t off = dev_->size() - 4096 + (rng() % 3) * 4096 - 4096;
      Status st = (i % 2) ? dev_->write(off, buf) : dev_->read(off, buf);
      if (st) {
        io_ok.fetch_add(1);
      } else {
        expected_error(st.error());
        io_refused.fetch_add(1);
      }
    }
  });
  std::thread mapper([&] {
    for (uint64_t i = 0; !stop.load(); ++i) {
      uint64_t off = (dev_->size() / unit_ - 1) * unit_;
      auto m = dev_->map(off, unit_, Access::ReadWrite);
      if (!m) {
        expected_error(m.error());
        continue;
      }
      maps_ok.fetch_add(1);
      // Not forced, so no shrink can cut this mapping while it is held.
      for (size_t j = 0; j < unit_; j += 4096) m->data()[j] = std::byte{static_cast<uint8_t>(i)};
    }
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  for (size_t i = 0; std::chrono::steady_clock::now() < deadline; ++i) {
    Status st = dev_->resize(sizes[i % sizes.size()]);
    if (st) {
      resizes_ok.fetch_add(1);
    } else {
      expected_error(st.error());
      resizes_busy.fetch_add(1);
    }
  }
  stop.store(true);
  io.join();
  mapper.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_GT(resizes_ok.load(), 0u);
  EXPECT_GT(io_ok.load(), 0u);
  EXPECT_GT(maps_ok.load(), 0u);
  EXPECT_EQ(region_->find("r")->size, dev_->size());
  std::printf("resize storm: %llu resizes ok, %llu refused busy; %llu I/O ok, %llu refused; %llu maps\n",
              (unsigned long long)resizes_ok.load(), (unsigned long long)resizes_busy.load(),
              (unsigned long long)io_ok.load(), (unsigned long long)io_refused.load(),
              (unsigned long long)maps_ok.load());
}

INSTANTIATE_TEST_SUITE_P(AllMedia, ResizeTest, RAWDAX_ALL_MEDIA, testing::param_name);

// On a carved region a namespace is an extent of one file: it grows in place
// or not at all, and the bytes a shrink cut off stay out of other
// namespaces' reach while a view of the device still covers them.
using CarvedResizeTest = ResizeTest;

TEST_P(CarvedResizeTest, GrowIsInPlaceOnly) {
  const NamespaceInfo r = *region_->find("r");
  std::vector<std::byte> data(4 * unit_, std::byte{0x3c});
  ASSERT_TRUE(dev_->write(0, data));
  // The only free extent starts right after r: best fit puts n there.
  auto n = region_->create_namespace({.name = "n", .size = unit_});
  ASSERT_TRUE(n) << n.error().message();
  ASSERT_EQ(n->offset, r.offset + r.size);
  uint64_t gen = region_->generation();
  auto blocked = dev_->resize(5 * unit_);
  ASSERT_FALSE(blocked);
  EXPECT_EQ(blocked.error().code(), std::errc::no_space_on_device);
  EXPECT_NE(blocked.error().message().find("in place is " + std::to_string(4 * unit_)),
            std::string::npos)
      << blocked.error().message();
  EXPECT_EQ(dev_->size(), 4 * unit_);
  EXPECT_EQ(region_->find("r")->size, 4 * unit_);
  EXPECT_EQ(region_->generation(), gen);

  ASSERT_TRUE(region_->destroy_namespace("n"));
  ASSERT_TRUE(dev_->resize(5 * unit_));
  EXPECT_EQ(region_->find("r")->offset, r.offset) << "a namespace is never moved";
  std::vector<std::byte> got(4 * unit_);
  ASSERT_TRUE(dev_->read(0, got));
  EXPECT_EQ(got, data);
  EXPECT_TRUE(all_zero(4 * unit_, unit_)) << "the grown part shows what n held";
}

TEST_P(CarvedResizeTest, CutBytesStayHeldWhileTheDeviceMapsThem) {
  const NamespaceInfo r = *region_->find("r");
  ASSERT_TRUE(dev_->write(0, std::vector<std::byte>(4 * unit_, std::byte{0xff})));
  ASSERT_TRUE(dev_->resize(2 * unit_));
  EXPECT_EQ(region_->find("r")->size, 2 * unit_);
  // dev_'s view still covers [2u, 4u) of r: nothing new may be placed there.
  auto x = region_->create_namespace({.name = "x", .size = 2 * unit_});
  ASSERT_TRUE(x) << x.error().message();
  EXPECT_GE(x->offset, r.offset + 4 * unit_) << "a new namespace took bytes a view still covers";

  dev_.reset();  // the last handle: its views go, and with them the hold
  auto y = region_->create_namespace({.name = "y", .size = 2 * unit_});
  ASSERT_TRUE(y) << y.error().message();
  EXPECT_EQ(y->offset, r.offset + 2 * unit_) << "best fit: the freed cut is an exact fit";
  auto dev = region_->open_device("y");
  ASSERT_TRUE(dev) << dev.error().message();
  std::vector<std::byte> got(2 * unit_);
  ASSERT_TRUE((*dev)->read(0, got));
  EXPECT_EQ(got, std::vector<std::byte>(2 * unit_)) << "y shows the bytes r held there";
}

INSTANTIATE_TEST_SUITE_P(Carved, CarvedResizeTest,
                         ::testing::ValuesIn(::rawdax::testing::media_among({TestMedia::kCarved})),
                         testing::param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CarvedResizeTest);

TEST(ResizePersistence, NewSizeSurvivesReopenAndACrashedGrowIsTrimmed) {
  ScratchRegion scratch(TestMedia::kDisk);
  std::string path;
  {
    auto region = Region::open(scratch.spec(), {.create = true});
    ASSERT_TRUE(region);
    ASSERT_TRUE((*region)->create_namespace({.name = "p", .size = 2 * kMiB}));
    auto dev = (*region)->open_device("p");
    ASSERT_TRUE(dev);
    ASSERT_TRUE((*dev)->resize(6 * kMiB));
    ASSERT_TRUE((*dev)->resize(5 * kMiB));
    path = (*dev)->info().path;
  }
  EXPECT_EQ(std::filesystem::file_size(path), 5 * kMiB);  // trimmed when released
  // A grow that crashed after sizing the file but before the metadata.
  std::filesystem::resize_file(path, 9 * kMiB);
  auto region = Region::open(scratch.spec());
  ASSERT_TRUE(region);
  EXPECT_EQ((*region)->find("p")->size, 5 * kMiB);
  auto dev = (*region)->open_device("p");
  ASSERT_TRUE(dev);
  EXPECT_EQ((*dev)->size(), 5 * kMiB);
  EXPECT_EQ(std::filesystem::file_size(path), 5 * kMiB);
}

}  // namespace
}  // namespace rawdax

// PageFill (device/page_fill.h): each pending page is written exactly once
// however many threads race for it, a failed fill gives its pages back, and
// a device core with an incomplete fill fills before it reads, writes or
// maps, zeroes without holes and refuses a resize; with the userfaultfd
// engine, a mapping is made at once and its faults fill the pages they miss.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <gtest/gtest.h>
#include <memory>
#include <thread>
#include <vector>

#include "device/device_core.h"
#include "device/page_fill.h"
#include "engine/uffd_protector.h"
#include "fault_catcher.h"
#include "media/files.h"
#include "region/catalog.h"
#include "test_util.h"

namespace rawdax::internal {
namespace {

constexpr uint64_t kPage = 4096;

std::byte pattern(uint64_t page, uint64_t i) {
  return std::byte(static_cast<uint8_t>(page * 7 + i % 13 + 1));
}

// Counts reads per page; fails page `fail_page` once when asked.
class CountingSource final : public PageSource {
 public:
  explicit CountingSource(uint64_t pages) : reads_(new std::atomic<int>[pages]) {
    for (uint64_t p = 0; p < pages; ++p) reads_[p].store(0);
  }
  Status read_page(uint64_t page, std::span<std::byte> out) const override {
    reads_[page].fetch_add(1);
    uint64_t expected = page;
    if (fail_once_.compare_exchange_strong(expected, UINT64_MAX)) {
      return Error(std::errc::io_error, "source: page " + std::to_string(page) + " failed");
    }
    for (uint64_t i = 0; i < out.size(); ++i) out[i] = pattern(page, i);
    return ok();
  }
  int reads(uint64_t page) const { return reads_[page].load(); }
  void fail_once(uint64_t page) { fail_once_.store(page); }

 private:
  std::unique_ptr<std::atomic<int>[]> reads_;
  mutable std::atomic<uint64_t> fail_once_{UINT64_MAX};
};

UniqueFd memfd(uint64_t size) {
  int fd = ::memfd_create("page-fill-test", MFD_CLOEXEC);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
  return UniqueFd(fd);
}

bool page_ok(int fd, uint64_t page) {
  std::vector<std::byte> buf(kPage);
  if (::pread(fd, buf.data(), kPage, static_cast<off_t>(page * kPage)) != kPage) return false;
  for (uint64_t i = 0; i < kPage; ++i) {
    if (buf[i] != pattern(page, i)) return false;
  }
  return true;
}

TEST(PageFill, EachPendingPageIsWrittenOnceWhateverRacesForIt) {
  constexpr uint64_t kPages = 1024;
  auto source = std::make_shared<CountingSource>(kPages);
  UniqueFd fd = memfd(kPages * kPage);
  const int raw = fd.get();
  UniqueFd own(::fcntl(raw, F_DUPFD_CLOEXEC, 0));
  std::vector<uint8_t> pending(kPages, 1);
  for (uint64_t p = 0; p < kPages; p += 5) pending[p] = 0;  // already in place
  PageFill fill(source, std::move(own), 0, kPages * kPage, kPage, pending, "t");
  EXPECT_EQ(fill.pages_total(), kPages - (kPages + 4) / 5);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t p = static_cast<uint64_t>(t); p + 3 < kPages; p += 3) {
        EXPECT_TRUE(fill.fill(p * kPage + 100, 2 * kPage));
      }
    });
  }
  threads.emplace_back([&] {
    uint64_t cursor = 0;
    for (;;) {
      auto more = fill.fill_next(&cursor, 64);
      ASSERT_TRUE(more);
      if (!*more) break;
    }
  });
  for (auto& t : threads) t.join();
  ASSERT_TRUE(fill.fill(0, kPages * kPage));
  EXPECT_TRUE(fill.complete());
  EXPECT_EQ(fill.pages_filled(), fill.pages_total());
  for (uint64_t p = 0; p < kPages; ++p) {
    EXPECT_EQ(source->reads(p), pending[p] ? 1 : 0) << "page " << p;
    if (pending[p]) {
      EXPECT_TRUE(page_ok(raw, p)) << "page " << p;
    }
  }
}

TEST(PageFill, AFailedFillGivesItsPagesBack) {
  auto source = std::make_shared<CountingSource>(8);
  UniqueFd fd = memfd(8 * kPage);
  UniqueFd own(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
  PageFill fill(source, std::move(own), 0, 8 * kPage, kPage, std::vector<uint8_t>(8, 1), "t");
  source->fail_once(2);
  Status failed = fill.fill(0, 4 * kPage);
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message().find("namespace t"), std::string::npos);
  EXPECT_FALSE(fill.is_filled(2));
  EXPECT_FALSE(fill.complete());
  ASSERT_TRUE(fill.fill(0, 8 * kPage));
  EXPECT_TRUE(fill.complete());
  for (uint64_t p = 0; p < 8; ++p) EXPECT_TRUE(page_ok(fd.get(), p)) << p;
}

// A device core over namespace "n" of a tmpfs region (its holes are what a
// resumed fill goes by), with a fill from a CountingSource installed.
class PageFillOnACore : public ::testing::Test {
 protected:
  static constexpr uint64_t kPages = 64;

  // `pending`: one byte per page, nonzero for a page the fill must write.
  void install_fill(const std::vector<uint8_t>& pending) {
    auto catalog = Catalog::open(dir_.path() + "/region", true);
    ASSERT_TRUE(catalog) << catalog.error().message();
    shared_ = std::move(*catalog);
    ASSERT_TRUE(shared_->create({.name = "n", .size = kPages * kPage}));
    auto core = DeviceCore::open(shared_, "n", DeviceOptions{});
    ASSERT_TRUE(core) << core.error().message();
    core_ = std::move(*core);
    auto fd = shared_->open_backing("n", true);
    ASSERT_TRUE(fd) << fd.error().message();
    fill_ = std::make_shared<PageFill>(source_, std::move(*fd), 0, kPages * kPage, kPage, pending,
                                       "n");
    core_->set_fill(fill_);
  }

  ::rawdax::testing::ScratchDir dir_{::rawdax::testing::tmpfs_parent()};
  std::shared_ptr<Catalog> shared_;
  std::unique_ptr<DeviceCore> core_;
  std::shared_ptr<CountingSource> source_ = std::make_shared<CountingSource>(kPages);
  std::shared_ptr<PageFill> fill_;
};

TEST_F(PageFillOnACore, FillsBeforeEveryAccessAndHoldsResizesBack) {
  ASSERT_NO_FATAL_FAILURE(install_fill(std::vector<uint8_t>(kPages, 1)));
  EXPECT_TRUE(core_->filling());

  Status resized = core_->resize(2 * kPages * kPage, {});
  ASSERT_FALSE(resized);
  EXPECT_EQ(resized.error().code(), std::errc::device_or_resource_busy);
  auto runs = core_->extents(0, kPages * kPage, 100);
  ASSERT_TRUE(runs);
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_FALSE(runs->front().hole) << "unfilled pages are holes of the file, not of the image";

  std::vector<std::byte> buf(kPage);
  ASSERT_TRUE(core_->read(10 * kPage, buf));
  EXPECT_EQ(buf[5], pattern(10, 5));
  EXPECT_EQ(source_->reads(10), 1);
  EXPECT_EQ(source_->reads(11), 0) << "a read fills only what it touches";
  std::vector<std::byte> two(2, std::byte{0xEE});
  ASSERT_TRUE(core_->write(20 * kPage + 10, two, WriteOptions{}, false));
  ASSERT_TRUE(core_->read(20 * kPage, buf));
  EXPECT_EQ(buf[9], pattern(20, 9)) << "a partial write lands on the filled page";
  EXPECT_EQ(buf[10], std::byte{0xEE});
  ASSERT_TRUE(core_->check_readable(30 * kPage, kPage));
  EXPECT_EQ(source_->reads(30), 1) << "a sendfile's check fills the range";
  auto map = core_->map(40 * kPage, 2 * kPage, Access::ReadOnly, false);
  ASSERT_TRUE(map);
  EXPECT_EQ((*map)->addr[kPage + 3], pattern(41, 3));
  core_->unmap(*map);
  ASSERT_TRUE(core_->write_zeroes(50 * kPage, 2 * kPage, ZeroOptions{}, true, false));
  EXPECT_EQ(source_->reads(50), 1) << "a discard fills first";
  // Zeroed without a hole: a resumed fill would take a hole for unfilled.
  // (Looked at before the read below: a read fault on a tmpfs hole through
  // a shared mapping allocates the page.)
  auto ro = shared_->open_backing("n", false);
  ASSERT_TRUE(ro);
  EXPECT_EQ(::lseek(ro->get(), static_cast<off_t>(50 * kPage), SEEK_DATA),
            static_cast<off_t>(50 * kPage));
  ASSERT_TRUE(core_->read(50 * kPage, buf));
  EXPECT_EQ(buf[0], std::byte{0});

  // Complete, but not recorded so: a crash now would resume the fill, so
  // still no holes and no resize.
  ASSERT_TRUE(fill_->fill(0, kPages * kPage));
  EXPECT_TRUE(fill_->complete());
  EXPECT_TRUE(core_->filling());
  ASSERT_TRUE(core_->write_zeroes(60 * kPage, kPage, ZeroOptions{}, true, false));
  EXPECT_EQ(::lseek(ro->get(), static_cast<off_t>(60 * kPage), SEEK_DATA),
            static_cast<off_t>(60 * kPage));
  EXPECT_FALSE(core_->resize(2 * kPages * kPage, {}));
  fill_->settle();
  EXPECT_FALSE(core_->filling());
  EXPECT_TRUE(core_->resize(2 * kPages * kPage, {}));
}

TEST_F(PageFillOnACore, TheUffdEngineFillsTheMissingPagesAMappingFaultsOn) {
  // Pages 0-31 pending; 32-63 are holes the image does not store.
  std::vector<uint8_t> pending(kPages, 0);
  std::fill(pending.begin(), pending.begin() + 32, 1);
  ASSERT_NO_FATAL_FAILURE(install_fill(pending));
  auto engine = UffdProtector::create(*core_, UffdFaults::kHandlerThread);
  ASSERT_TRUE(engine) << engine.error().message();
  core_->set_observer(engine->get());

  auto map = core_->map(0, kPages * kPage, Access::ReadWrite, false);
  ASSERT_TRUE(map) << map.error().message();
  auto ro = core_->map(0, kPages * kPage, Access::ReadOnly, false);
  ASSERT_TRUE(ro) << ro.error().message();
  EXPECT_EQ(fill_->pages_filled(), 0u) << "map() returned without filling its range";

  std::byte* rw = (*map)->addr;
  EXPECT_EQ(rw[10 * kPage + 5], pattern(10, 5)) << "a load fetches its page";
  EXPECT_EQ(source_->reads(10), 1);
  EXPECT_EQ(source_->reads(11), 0) << "and only its page";
  EXPECT_EQ((*ro)->addr[12 * kPage + 7], pattern(12, 7)) << "through a read-only mapping too";
  EXPECT_EQ(source_->reads(12), 1);
  rw[20 * kPage + 10] = std::byte{0xEE};  // a store to an unfilled page
  std::vector<std::byte> buf(kPage);
  ASSERT_TRUE(core_->read(20 * kPage, buf));
  EXPECT_EQ(buf[9], pattern(20, 9)) << "the store landed on the filled page";
  EXPECT_EQ(buf[10], std::byte{0xEE});
  EXPECT_EQ(source_->reads(20), 1);
  EXPECT_EQ(rw[40 * kPage], std::byte{0}) << "a hole the image does not store reads as zeros";
  rw[41 * kPage + 1] = std::byte{0x5A};
  EXPECT_EQ((*ro)->addr[41 * kPage + 1], std::byte{0x5A});
  EXPECT_EQ(fill_->pages_filled(), 3u);

  // A page the source cannot give raises SIGBUS where it is touched; the
  // other pages keep working.
  source_->fail_once(30);
  volatile std::byte seen{};
  EXPECT_EQ(::rawdax::testing::run_catching_faults([&] { seen = (*ro)->addr[30 * kPage]; }),
            SIGBUS);
  EXPECT_FALSE(fill_->is_filled(30));
  EXPECT_EQ((*ro)->addr[31 * kPage + 2], pattern(31, 2));

  core_->unmap(*ro);
  core_->unmap(*map);
  core_->set_observer(nullptr);
}

}  // namespace
}  // namespace rawdax::internal

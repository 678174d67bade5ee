// Media errors on the block face and in snapshots, made real by the kernel:
// the test truncates a namespace's backing file under the open device (as
// someone else could), so every access past the cut raises SIGBUS
// (BUS_ADRERR), as a poisoned page raises BUS_MCEERR_AR. The request that
// meets it fails with EIO naming the namespace and offset; the page joins
// the bad-block list, which persists, shows in list(), reads as data in
// extents(), and clears when written whole; the process and every other
// request go on. Snapshots that meet it fail and leave no file.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <gtest/gtest.h>
#include <random>
#include <vector>

#include "common/safe_copy.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

constexpr uint64_t kPages = 16;
constexpr uint64_t kCutPage = 8;  // the backing file is cut here

using ::rawdax::testing::pattern;

// On the media whose namespaces are files someone else can truncate.
class PoisonTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  void SetUp() override {
    open_region();
    page_ = region_->capabilities().alignment;
    size_ = kPages * page_;
    for (const char* name : {"a", "b"}) {
      auto made = region_->create_namespace({.name = name, .size = size_});
      ASSERT_TRUE(made) << made.error().message();
    }
    open_devices();
    ASSERT_TRUE(a_->write(0, pattern(size_, 1)));
    ASSERT_TRUE(b_->write(0, pattern(size_, 2)));
  }

  void open_region() {
    auto region = Region::open(scratch_.spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
  }
  void open_devices(bool track_dirty = false) {
    auto a = region_->open_device("a", {.track_dirty = track_dirty});
    ASSERT_TRUE(a) << a.error().message();
    a_ = std::move(*a);
    auto b = region_->open_device("b", {.track_dirty = track_dirty});
    ASSERT_TRUE(b) << b.error().message();
    b_ = std::move(*b);
  }
  void close_all() {
    a_.reset();
    b_.reset();
    region_.reset();
  }

  // Someone else truncates (or re-extends) namespace `name`'s backing file.
  void set_backing_size(const std::string& name, uint64_t bytes) {
    auto info = region_->find(name);
    ASSERT_TRUE(info) << info.error().message();
    ASSERT_EQ(::truncate(info->path.c_str(), static_cast<off_t>(bytes)), 0) << info->path;
  }

  std::vector<BadRange> listed(const std::string& name) {
    for (const NamespaceInfo& ns : region_->list()) {
      if (ns.name == name) return ns.badblocks;
    }
    ADD_FAILURE() << "namespace " << name << " is not listed";
    return {};
  }

  // b is untouched by a's trouble.
  void expect_b_whole() {
    std::vector<std::byte> all(size_);
    Status st = b_->read(0, all);
    ASSERT_TRUE(st) << st.error().message();
    EXPECT_EQ(all, pattern(size_, 2));
  }

  ScratchRegion scratch_{GetParam()};
  ScratchDir out_{::rawdax::testing::tmpfs_parent()};
  std::unique_ptr<Region> region_;
  std::unique_ptr<Device> a_, b_;
  uint64_t page_ = 0, size_ = 0;
};

TEST_P(PoisonTest, ReadPastACutFailsWithEioForThatRequestOnly) {
  set_backing_size("a", kCutPage * page_);
  const uint64_t bad = 10 * page_;
  std::vector<std::byte> out(1000);
  const uint64_t recovered = internal::SafeCopy::recovered();
  Status st = a_->read(bad + 100, out);
  ASSERT_FALSE(st) << "a read of a page past the cut succeeded";
  EXPECT_EQ(st.error().code(), std::errc::io_error);
  EXPECT_NE(st.error().message().find("namespace a"), std::string::npos) << st.error().message();
  EXPECT_NE(st.error().message().find("offset " + std::to_string(bad + 100)), std::string::npos)
      << st.error().message();
  EXPECT_NE(st.error().message().find("BUS_ADRERR"), std::string::npos) << st.error().message();
  EXPECT_EQ(internal::SafeCopy::recovered(), recovered + 1);
  const std::vector<BadRange> one = {{bad, page_}};
  EXPECT_EQ(a_->info().badblocks, one);
  EXPECT_EQ(listed("a"), one);
  EXPECT_TRUE(listed("b").empty());
  EXPECT_EQ(a_->stats().media_errors, 1u);
  EXPECT_EQ(a_->stats().bad_ranges, 1u);

  // A listed range fails again without touching the media.
  st = a_->read(bad, out);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), std::errc::io_error);
  EXPECT_NE(st.error().message().find("bad-block list"), std::string::npos) << st.error().message();
  EXPECT_EQ(internal::SafeCopy::recovered(), recovered + 1);
  EXPECT_EQ(a_->stats().media_errors, 2u);

  // The good part of a, and all of b, read as before; the device is whole.
  std::vector<std::byte> head(kCutPage * page_);
  ASSERT_TRUE(a_->read(0, head));
  auto expect = pattern(size_, 1);
  EXPECT_TRUE(std::equal(head.begin(), head.end(), expect.begin()));
  expect_b_whole();
  EXPECT_TRUE(a_->flush()) << "a flush must skip the listed range";
}

TEST_P(PoisonTest, ExtentsShowTheBadRangeAsDataNeverAsAHole) {
  set_backing_size("a", kCutPage * page_);
  std::vector<std::byte> out(page_);
  ASSERT_FALSE(a_->read(10 * page_, out));
  auto runs = a_->extents(kCutPage * page_, (kPages - kCutPage) * page_);
  ASSERT_TRUE(runs) << runs.error().message();
  // Past the cut the file has no data: holes, but for the listed page.
  ASSERT_EQ(runs->size(), 3u);
  EXPECT_TRUE((*runs)[0].hole);
  EXPECT_EQ((*runs)[1].offset, 10 * page_);
  EXPECT_EQ((*runs)[1].length, page_);
  EXPECT_FALSE((*runs)[1].hole);
  EXPECT_TRUE((*runs)[2].hole);
  EXPECT_FALSE(*a_->is_hole(10 * page_, page_));
  EXPECT_TRUE(*a_->is_hole(12 * page_, page_));
}

TEST_P(PoisonTest, ListPersistsAndWritingTheWholeRangeClearsIt) {
  set_backing_size("a", kCutPage * page_);
  std::vector<std::byte> out(page_);
  ASSERT_FALSE(a_->read(10 * page_, out));
  ASSERT_FALSE(a_->read(12 * page_, out));
  // A write into the cut fails too, and lists the page it met.
  Status w = a_->write(13 * page_, pattern(page_, 3));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code(), std::errc::io_error);
  const std::vector<BadRange> three = {{10 * page_, page_}, {12 * page_, 2 * page_}};
  EXPECT_EQ(a_->info().badblocks, three);

  // The owner of the file puts its size back; the list outlives the region.
  set_backing_size("a", size_);
  close_all();
  open_region();
  EXPECT_EQ(listed("a"), three);
  open_devices();
  ASSERT_FALSE(a_->read(10 * page_, out)) << "a listed range read fine after a reopen";

  // Part of a page does not clear it; the whole page does.
  ASSERT_TRUE(a_->write(10 * page_, pattern(page_ / 2, 4)));
  EXPECT_EQ(a_->info().badblocks, three);
  auto fresh = pattern(page_, 5);
  ASSERT_TRUE(a_->write(10 * page_, fresh));
  ASSERT_TRUE(a_->read(10 * page_, out)) << "the rewritten page still fails";
  EXPECT_EQ(out, fresh);
  // write_zeroes clears too (here a hole punch on most media).
  ASSERT_TRUE(a_->write_zeroes(12 * page_, 2 * page_));
  EXPECT_TRUE(a_->info().badblocks.empty());
  ASSERT_TRUE(a_->read(13 * page_, out));
  EXPECT_EQ(out, std::vector<std::byte>(page_));
  EXPECT_EQ(a_->stats().bad_ranges, 0u);
  close_all();
  open_region();
  EXPECT_TRUE(listed("a").empty()) << "the cleared list was not recorded";
  open_devices();
  expect_b_whole();
}

// No snapshot stores garbage or leaves a partial file: a full one that meets
// the cut fails naming the namespace and the first bad offset, both when
// the copy finds it and when the list already holds it.
TEST_P(PoisonTest, FullSnapshotMeetingACutFailsNamingTheOffsetAndLeavesNoFile) {
  set_backing_size("a", kCutPage * page_);
  const std::string path = out_.path() + "/a.snap";
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto snap = a_->snapshot(path);
    ASSERT_FALSE(snap) << "a snapshot over a cut-short file succeeded (attempt " << attempt << ")";
    EXPECT_EQ(snap.error().code(), std::errc::io_error);
    const std::string& msg = snap.error().message();
    EXPECT_NE(msg.find("namespace a"), std::string::npos) << msg;
    EXPECT_NE(msg.find("offset " + std::to_string(kCutPage * page_)), std::string::npos) << msg;
    EXPECT_TRUE(std::filesystem::is_empty(out_.path())) << "a snapshot file was left behind";
  }
  auto b_snap = b_->snapshot(out_.path() + "/b.snap");
  EXPECT_TRUE(b_snap) << b_snap.error().message();
}

TEST_P(PoisonTest, IncrementalSnapshotMeetingACutFailsAndLeavesNoFile) {
  close_all();
  open_region();
  open_devices(/*track_dirty=*/true);
  const std::string base = out_.path() + "/base.snap", inc = out_.path() + "/inc.snap";
  auto full = a_->snapshot(base);
  ASSERT_TRUE(full) << full.error().message();
  ASSERT_TRUE(a_->write(11 * page_, pattern(page_, 6)));
  set_backing_size("a", kCutPage * page_);
  auto snap = a_->snapshot(inc, {.base = base});
  ASSERT_FALSE(snap) << "an incremental snapshot of a page past the cut succeeded";
  EXPECT_EQ(snap.error().code(), std::errc::io_error);
  EXPECT_NE(snap.error().message().find("offset " + std::to_string(11 * page_)),
            std::string::npos)
      << snap.error().message();
  EXPECT_FALSE(std::filesystem::exists(inc));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(out_.path()),
                          std::filesystem::directory_iterator()),
            1)
      << "only the base snapshot may be there";
}

// Directory media: a namespace is a file that someone else can truncate
// (memfd namespaces have no path; a carved region's namespaces share one).
INSTANTIATE_TEST_SUITE_P(Media, PoisonTest, RAWDAX_DIRECTORY_MEDIA,
                         ::rawdax::testing::param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(PoisonTest);

}  // namespace
}  // namespace rawdax

// SnapshotImage: a snapshot chain read as a block image (what a snapshot
// export serves): stored pages from the newest file that has them, unstored
// ones as zeros, allocation and dirty runs, checksums on every read, and a
// chain whose file is deleted or replaced reported broken. The files are
// written with SnapshotWriter, page by page, so every expectation is exact.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <gtest/gtest.h>
#include <vector>

#include "rawdax/rawdax.h"
#include "snapshot/snapshot_file.h"
#include "snapshot/snapshot_image.h"
#include "test_util.h"

namespace rawdax {
namespace {

using internal::ImageExtent;
using internal::SnapshotFile;
using internal::SnapshotHeader;
using internal::SnapshotImage;
using internal::SnapshotWriter;
using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kPages = 16;

class SnapshotImageTest : public ::testing::Test {
 protected:
  std::string file(const std::string& name) const { return dir_.path() + "/" + name; }

  // Writes a snapshot storing `pages` (each filled with its `fill` byte);
  // an incremental of `base` when given. `named`: with the namespace and
  // time fields (files from before them have neither).
  SnapshotHeader write(const std::string& name, const std::vector<std::pair<uint64_t, int>>& pages,
                       const SnapshotHeader* base = nullptr, bool named = true) {
    SnapshotHeader h;
    h.id = name + "-id";
    h.source_uuid = "uuid-of-vm1";
    h.namespace_size = kPages * kPage;
    h.page_size = kPage;
    if (named) {
      h.namespace_name = "vm1";
      h.taken_at = "2026-12-05T10:00:00Z";
    }
    if (base != nullptr) {
      h.base_id = base->id;
      h.base_checksum = base->header_checksum;
      h.base_path = "s1.snap";  // relative: beside this file
    }
    auto w = SnapshotWriter::create(file(name), h);
    EXPECT_TRUE(w) << w.error().message();
    for (const auto& [page, fill] : pages) {
      std::vector<std::byte> data(kPage, std::byte(fill));
      EXPECT_TRUE(w->write_pages(page, data));
    }
    auto done = w->finish();
    EXPECT_TRUE(done) << done.error().message();
    return *done;
  }

  // s1: pages 0 and 2 (0x11, 0x22); s2 on s1: pages 2 and 5 (0x33, 0x55).
  void write_chain() {
    s1_ = write("s1.snap", {{0, 0x11}, {2, 0x22}});
    write("s2.snap", {{2, 0x33}, {5, 0x55}}, &s1_);
  }

  std::vector<std::byte> expected_s2() const {
    std::vector<std::byte> out(kPages * kPage, std::byte{0});
    std::memset(out.data() + 0 * kPage, 0x11, kPage);
    std::memset(out.data() + 2 * kPage, 0x33, kPage);
    std::memset(out.data() + 5 * kPage, 0x55, kPage);
    return out;
  }

  static void flip_byte(const std::string& path, uint64_t offset) {
    int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char c;
    ASSERT_EQ(::pread(fd, &c, 1, static_cast<off_t>(offset)), 1);
    c = static_cast<char>(c ^ 0xff);
    ASSERT_EQ(::pwrite(fd, &c, 1, static_cast<off_t>(offset)), 1);
    ::close(fd);
  }

  ScratchDir dir_{::rawdax::testing::tmpfs_parent()};
  SnapshotHeader s1_;
};

TEST_F(SnapshotImageTest, ReadsNewestStoredPagesAndZerosElsewhere) {
  write_chain();
  auto image = SnapshotImage::open(file("s2.snap"));
  ASSERT_TRUE(image) << image.error().message();
  EXPECT_EQ((*image)->size(), kPages * kPage);
  EXPECT_TRUE((*image)->incremental());
  ASSERT_EQ((*image)->chain().size(), 2u);
  std::vector<std::byte> all(kPages * kPage, std::byte{0x7f});
  ASSERT_TRUE((*image)->read(0, all));
  EXPECT_TRUE(all == expected_s2());
  // Unaligned, across a stored and an unstored page.
  std::vector<std::byte> part(kPage + 100);
  ASSERT_TRUE((*image)->read(2 * kPage + 50, part));
  EXPECT_TRUE(std::equal(part.begin(), part.end(), expected_s2().begin() + 2 * kPage + 50));
  // Past the end.
  std::vector<std::byte> one(1);
  auto past = (*image)->read(kPages * kPage, one);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code(), std::errc::invalid_argument);
  // The base alone is s1's image.
  auto base = SnapshotImage::open(file("s1.snap"));
  ASSERT_TRUE(base) << base.error().message();
  EXPECT_FALSE((*base)->incremental());
  ASSERT_TRUE((*base)->read(0, all));
  EXPECT_EQ(all[2 * kPage], std::byte{0x22});
  EXPECT_EQ(all[5 * kPage], std::byte{0});
}

TEST_F(SnapshotImageTest, AllocationAndDirtyRuns) {
  write_chain();
  auto image = SnapshotImage::open(file("s2.snap"));
  ASSERT_TRUE(image) << image.error().message();
  auto runs = [](const std::vector<ImageExtent>& v) {
    std::vector<std::pair<uint64_t, bool>> out;
    for (const auto& e : v) out.emplace_back(e.length / kPage, e.set);
    return out;
  };
  using Runs = std::vector<std::pair<uint64_t, bool>>;
  // Stored by some file: 0 (s1), 2 (s2 over s1), 5 (s2).
  EXPECT_EQ(runs((*image)->allocation(0, kPages * kPage, 100)),
            (Runs{{1, true}, {1, false}, {1, true}, {2, false}, {1, true}, {10, false}}));
  // Dirty: only what s2 stores.
  EXPECT_EQ(runs((*image)->dirty(0, kPages * kPage, 100)),
            (Runs{{2, false}, {1, true}, {2, false}, {1, true}, {10, false}}));
  // At most `max` runs; a range starting mid-page; a range past the end clipped.
  EXPECT_EQ(runs((*image)->allocation(0, kPages * kPage, 2)), (Runs{{1, true}, {1, false}}));
  auto mid = (*image)->dirty(2 * kPage + 512, kPage, 10);
  ASSERT_EQ(mid.size(), 2u);
  EXPECT_EQ(mid[0].length, kPage - 512);
  EXPECT_TRUE(mid[0].set);
  EXPECT_EQ(mid[1].length, 512u);
  EXPECT_FALSE(mid[1].set);
  auto tail = (*image)->allocation(14 * kPage, 100 * kPage, 10);
  ASSERT_EQ(tail.size(), 1u);
  EXPECT_EQ(tail[0].length, 2 * kPage);
  EXPECT_TRUE((*image)->unstored(6 * kPage, 10 * kPage));
  EXPECT_FALSE((*image)->unstored(4 * kPage, 2 * kPage));
}

TEST_F(SnapshotImageTest, RefusesAChainThatFailsVerify) {
  write_chain();
  auto opened = SnapshotFile::open(file("s1.snap"));
  ASSERT_TRUE(opened);
  const uint64_t at = opened->header().data_offset() + 2 * kPage + 7;  // page 2 of the base
  flip_byte(file("s1.snap"), at);
  auto image = SnapshotImage::open(file("s2.snap"));
  ASSERT_FALSE(image);
  EXPECT_NE(image.error().message().find("s1.snap"), std::string::npos) << image.error().message();
  EXPECT_NE(image.error().message().find("fails its checksum"), std::string::npos);
}

TEST_F(SnapshotImageTest, PageCorruptedAfterOpenFailsItsRead) {
  write_chain();
  auto image = SnapshotImage::open(file("s2.snap"));
  ASSERT_TRUE(image) << image.error().message();
  auto opened = SnapshotFile::open(file("s2.snap"));
  ASSERT_TRUE(opened);
  flip_byte(file("s2.snap"), opened->header().data_offset() + 5 * kPage);
  std::vector<std::byte> buf(kPage);
  auto bad = (*image)->read(5 * kPage, buf);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), std::errc::illegal_byte_sequence);
  EXPECT_NE(bad.error().message().find("s2.snap"), std::string::npos);
  EXPECT_NE(bad.error().message().find("offset " + std::to_string(5 * kPage)), std::string::npos)
      << bad.error().message();
  // The other pages still read.
  EXPECT_TRUE((*image)->read(0, buf));
}

TEST_F(SnapshotImageTest, DeletedOrReplacedFileMakesItBroken) {
  write_chain();
  auto image = SnapshotImage::open(file("s2.snap"));
  ASSERT_TRUE(image) << image.error().message();
  EXPECT_TRUE((*image)->check());
  // The base deleted: every read fails, even of pages the newest file stores.
  std::filesystem::remove(file("s1.snap"));
  Status broken = (*image)->check();
  ASSERT_FALSE(broken);
  EXPECT_EQ(broken.error().code(), std::errc::io_error);
  EXPECT_NE(broken.error().message().find("s1.snap"), std::string::npos);
  std::vector<std::byte> buf(kPage);
  auto read = (*image)->read(5 * kPage, buf);
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().code(), std::errc::io_error);

  // Replaced under its name by another file: broken too.
  write_chain();
  auto again = SnapshotImage::open(file("s1.snap"));
  ASSERT_TRUE(again) << again.error().message();
  std::filesystem::rename(file("s2.snap"), file("s1.snap"));
  EXPECT_FALSE((*again)->check());
}

TEST_F(SnapshotImageTest, HeaderNamesNamespaceAndTimeAndOldFilesStillOpen) {
  write("new.snap", {{1, 1}});
  write("old.snap", {{1, 1}}, nullptr, /*named=*/false);
  auto fresh = SnapshotFile::open(file("new.snap"));
  ASSERT_TRUE(fresh) << fresh.error().message();
  EXPECT_EQ(fresh->header().namespace_name, "vm1");
  EXPECT_EQ(fresh->header().taken_at, "2026-12-05T10:00:00Z");
  auto old = SnapshotFile::open(file("old.snap"));
  ASSERT_TRUE(old) << old.error().message();
  EXPECT_EQ(old->header().namespace_name, "");
  EXPECT_EQ(old->header().taken_at, "");
  EXPECT_FALSE(internal::utc_timestamp_of_mtime(old->fd()).empty());
}

// A snapshot taken of a namespace records its name and a UTC time.
TEST(SnapshotHeaderFields, TakenSnapshotRecordsNamespaceAndTime) {
  ScratchRegion scratch(TestMedia::kMemfd);
  ScratchDir files(::rawdax::testing::tmpfs_parent());
  auto region = Region::open(scratch.spec(), {.create = true});
  ASSERT_TRUE(region) << region.error().message();
  ASSERT_TRUE((*region)->create_namespace({.name = "vm7", .size = 1 << 20}));
  auto dev = (*region)->open_device("vm7");
  ASSERT_TRUE(dev) << dev.error().message();
  const std::string path = files.path() + "/s.snap";
  ASSERT_TRUE((*dev)->snapshot(path));
  auto file = SnapshotFile::open(path);
  ASSERT_TRUE(file) << file.error().message();
  EXPECT_EQ(file->header().namespace_name, "vm7");
  const std::string& t = file->header().taken_at;
  ASSERT_EQ(t.size(), 20u) << t;  // 2026-12-05T11:12:48Z
  EXPECT_EQ(t[4], '-');
  EXPECT_EQ(t[10], 'T');
  EXPECT_EQ(t.back(), 'Z');
}

}  // namespace
}  // namespace rawdax

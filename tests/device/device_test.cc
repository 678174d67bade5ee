// Both faces of a device, on every media: coherence, bounds, zeroing,
// durability, O_DIRECT into a mapping.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <gtest/gtest.h>
#include <numeric>
#include <random>
#include <vector>

#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

// The namespace: 4 MiB, and at least 8 of the media's pages (huge pages on
// hugetlbfs), so that page-granular offsets below fit on every media.
uint64_t namespace_size(uint64_t page) { return std::max<uint64_t>(4 << 20, 8 * page); }

using ::rawdax::testing::pattern;

class DeviceTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  void SetUp() override {
    auto region = Region::open(scratch_.spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
    page_ = region_->capabilities().page_size;
    size_ = namespace_size(page_);
    ASSERT_TRUE(region_->create_namespace({.name = "dev", .size = size_}));
    auto dev = region_->open_device("dev");
    ASSERT_TRUE(dev) << dev.error().message();
    dev_ = std::move(*dev);
  }
  std::vector<std::byte> read_block(uint64_t off, size_t n) {
    std::vector<std::byte> out(n);
    Status st = dev_->read(off, out);
    EXPECT_TRUE(st) << st.error().message();
    return out;
  }

  ScratchRegion scratch_{GetParam()};
  std::unique_ptr<Region> region_;
  std::unique_ptr<Device> dev_;
  uint64_t page_ = 0;  // the media's page: mapping offsets are multiples of it
  uint64_t size_ = 0;  // namespace_size(page_)
};

TEST_P(DeviceTest, BlockWriteIsVisibleThroughAMapping) {
  auto m = dev_->map(0, size_, Access::ReadWrite);
  ASSERT_TRUE(m) << m.error().message();
  for (auto [off, len] : {std::pair<uint64_t, size_t>{1, 1}, {4095, 2}, {12345, 7777},
                          {size_ - 3, 3}, {65536, 65536}}) {
    auto data = pattern(len, static_cast<uint32_t>(off));
    ASSERT_TRUE(dev_->write(off, data));
    EXPECT_EQ(std::memcmp(m->data() + off, data.data(), len), 0) << "offset " << off;
  }
}

TEST_P(DeviceTest, MappingStoreIsVisibleToBlockReads) {
  auto m = dev_->map(0, size_, Access::ReadWrite);
  ASSERT_TRUE(m);
  for (auto [off, len] : {std::pair<uint64_t, size_t>{3, 5}, {8191, 3}, {100001, 4099},
                          {size_ - 1, 1}}) {
    auto data = pattern(len, static_cast<uint32_t>(off) + 1);
    std::memcpy(m->data() + off, data.data(), len);
    EXPECT_EQ(read_block(off, len), data) << "offset " << off;
  }
}

TEST_P(DeviceTest, TwoMappingsOfOneRangeSeeEachOther) {
  const uint64_t at = 2 * page_, len = 4 * page_;
  auto a = dev_->map(at, len, Access::ReadWrite);
  auto b = dev_->map(0, size_, Access::ReadWrite);
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->data(), b->data() + at);
  a->data()[5] = std::byte{0x5a};
  EXPECT_EQ(b->data()[at + 5], std::byte{0x5a});
  b->data()[at + len - 1] = std::byte{0xa5};
  EXPECT_EQ(a->data()[len - 1], std::byte{0xa5});
  EXPECT_EQ(a->offset(), at);
  EXPECT_EQ(dev_->stats().live_mappings, 2u);
}

TEST_P(DeviceTest, OutOfRangeRequestsFailAndWriteNothing) {
  auto before = read_block(size_ - 4096, 4096);
  auto data = pattern(8192, 9);
  auto w = dev_->write(size_ - 4096, data);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code(), std::errc::no_space_on_device);
  for (const std::string& part :
       {std::string("dev"), std::to_string(size_ - 4096), std::string("8192"),
        std::to_string(size_)}) {
    EXPECT_NE(w.error().message().find(part), std::string::npos) << w.error().message();
  }
  EXPECT_EQ(read_block(size_ - 4096, 4096), before);

  std::vector<std::byte> buf(16);
  auto r = dev_->read(size_ - 8, buf);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), std::errc::invalid_argument);
  auto overflow = dev_->write(UINT64_MAX - 4, data);
  ASSERT_FALSE(overflow);
  EXPECT_NE(overflow.error().message().find("overflows"), std::string::npos);
  EXPECT_FALSE(dev_->read(size_ + 1, std::span<std::byte>()));
  EXPECT_TRUE(dev_->read(size_, std::span<std::byte>()));  // empty read at the end is fine
  EXPECT_FALSE(dev_->write_zeroes(size_ - 1, 2));
  EXPECT_FALSE(dev_->discard(UINT64_MAX, 2));
  EXPECT_EQ(read_block(size_ - 4096, 4096), before);
}

TEST_P(DeviceTest, BadMapRequestsAreRefused) {
  uint64_t align = dev_->capabilities().alignment;
  struct Case {
    uint64_t off, len;
    std::string text;
  } cases[] = {{1, 4096, "alignment " + std::to_string(align)},
               {0, 0, "length 0"},
               {0, size_ + 1, "outside"},
               {size_, align, "outside"},
               {align, UINT64_MAX, "overflows"}};
  for (const auto& c : cases) {
    auto m = dev_->map(c.off, c.len, Access::ReadWrite);
    ASSERT_FALSE(m) << c.off << "+" << c.len;
    EXPECT_NE(m.error().message().find(c.text), std::string::npos) << m.error().message();
    EXPECT_NE(m.error().message().find("dev"), std::string::npos);
  }
  EXPECT_EQ(dev_->stats().maps, 0u);
}

TEST_P(DeviceTest, WriteZeroesAndDiscardReadBackZero) {
  auto data = pattern(size_, 3);
  ASSERT_TRUE(dev_->write(0, data));
  ASSERT_TRUE(dev_->write_zeroes(1000, 3 * 4096 + 17));
  ASSERT_TRUE(dev_->discard(1 << 20, (1 << 20) + 5));
  auto m = dev_->map(0, size_, Access::ReadOnly);
  ASSERT_TRUE(m);
  auto zero_in = [&](uint64_t b, uint64_t e) {
    for (uint64_t i = b; i < e; ++i) {
      if (m->data()[i] != std::byte{0}) return false;
    }
    return true;
  };
  EXPECT_TRUE(zero_in(1000, 1000 + 3 * 4096 + 17));
  EXPECT_TRUE(zero_in(1 << 20, (2 << 20) + 5));
  EXPECT_EQ(m->data()[999], data[999]);
  EXPECT_EQ(m->data()[1000 + 3 * 4096 + 17], data[1000 + 3 * 4096 + 17]);
  EXPECT_EQ(m->data()[(2 << 20) + 5], data[(2 << 20) + 5]);
  EXPECT_EQ(dev_->stats().write_zeroes, 1u);
  EXPECT_EQ(dev_->stats().discards, 1u);
}

using FileDeviceTest = DeviceTest;  // media with a backing file path to stat

TEST_P(FileDeviceTest, DiscardFreesSpaceWhereTheMediaCan) {
  ASSERT_TRUE(dev_->capabilities().punch_hole);
  ASSERT_TRUE(dev_->write(0, pattern(size_, 4), {.fua = true}));
  struct stat before, after;
  ASSERT_EQ(::stat(dev_->info().path.c_str(), &before), 0);
  ASSERT_TRUE(dev_->discard(0, size_));
  ASSERT_EQ(::stat(dev_->info().path.c_str(), &after), 0);
  EXPECT_LT(after.st_blocks, before.st_blocks);
  ASSERT_TRUE(dev_->write(0, pattern(size_, 4)));
  ASSERT_TRUE(dev_->write_zeroes(0, size_, {.no_hole = true}));
  ASSERT_EQ(::stat(dev_->info().path.c_str(), &after), 0);
  EXPECT_GE(after.st_blocks, before.st_blocks);  // NO_HOLE keeps the space
}

TEST_P(DeviceTest, ReadOnlyDeviceRefusesWrites) {
  auto ro = region_->open_device("dev", {.read_only = true});
  ASSERT_TRUE(ro) << ro.error().message();
  auto w = (*ro)->write(0, pattern(10, 1));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code(), std::errc::read_only_file_system);
  EXPECT_FALSE((*ro)->map(0, 4096, Access::ReadWrite));
  auto m = (*ro)->map(0, 4096, Access::ReadOnly);
  ASSERT_TRUE(m);
  ASSERT_TRUE(dev_->write(0, pattern(10, 2)));
  EXPECT_EQ(std::memcmp(m->data(), pattern(10, 2).data(), 10), 0);
}

TEST_P(DeviceTest, DirectIoReadsIntoAMapping) {
  ScratchDir dir(::rawdax::testing::disk_parent());
  std::string path = dir.path() + "/direct";
  auto data = pattern(1 << 20, 11);
  {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  auto m = dev_->map(0, 2 << 20, Access::ReadWrite);
  ASSERT_TRUE(m);
  ssize_t n = ::pread(fd, m->data() + 4096, data.size(), 0);
  int err = errno;
  ::close(fd);
  ASSERT_EQ(n, static_cast<ssize_t>(data.size())) << std::strerror(err);
  EXPECT_EQ(read_block(4096, data.size()), data);
}

TEST_P(DeviceTest, MappingOutlivesDeviceAndBlocksDestroy) {
  {
    auto m = dev_->map(0, 4096, Access::ReadWrite);
    ASSERT_TRUE(m);
    dev_.reset();
    m->data()[0] = std::byte{42};
    Mapping moved = std::move(*m);
    EXPECT_EQ(m->data(), nullptr);
    EXPECT_EQ(moved.data()[0], std::byte{42});
    auto busy = region_->destroy_namespace("dev");
    ASSERT_FALSE(busy);
    EXPECT_EQ(busy.error().code(), std::errc::device_or_resource_busy);
  }
  EXPECT_TRUE(region_->destroy_namespace("dev"));
}

TEST_P(DeviceTest, PersistRejectsRangesOutsideTheMapping) {
  auto m = dev_->map(page_, 2 * page_, Access::ReadWrite);
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->persist(m->data(), 2 * page_));
  EXPECT_TRUE(m->persist(m->data() + 100, 1));
  EXPECT_FALSE(m->persist(m->data() - 1, 2));
  EXPECT_FALSE(m->persist(m->data() + 2 * page_ - 192, 200));
}

TEST_P(DeviceTest, StatsCount) {
  ASSERT_TRUE(dev_->write(0, pattern(100, 1)));
  read_block(0, 50);
  ASSERT_TRUE(dev_->flush());
  DeviceStats s = dev_->stats();
  EXPECT_EQ(s.writes, 1u);
  EXPECT_EQ(s.bytes_written, 100u);
  EXPECT_EQ(s.reads, 1u);
  EXPECT_EQ(s.bytes_read, 50u);
  EXPECT_EQ(s.flushes, 1u);
}

INSTANTIATE_TEST_SUITE_P(AllMedia, DeviceTest, RAWDAX_ALL_MEDIA, testing::param_name);
// Not on hugetlbfs: a hugetlbfs namespace keeps its huge pages on discard
// (HugetlbfsTest.DiscardKeepsTheHugePages checks that instead).
INSTANTIATE_TEST_SUITE_P(FileMedia, FileDeviceTest,
                         ::testing::ValuesIn(::rawdax::testing::media_except(
                             ::rawdax::testing::file_media(), {TestMedia::kHugetlbfs})),
                         testing::param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(FileDeviceTest);

// Durability on the disk media: what FUA writes and persist() cover is in
// the backing file, seen by a separate pread and after reopening the region.
TEST(Durability, FuaAndPersistReachTheBackingFile) {
  ScratchRegion scratch(TestMedia::kDisk);
  auto data = pattern(10000, 21);
  auto stored = pattern(3000, 22);
  std::string path;
  {
    auto region = Region::open(scratch.spec(), {.create = true});
    ASSERT_TRUE(region);
    ASSERT_TRUE((*region)->create_namespace({.name = "d", .size = 1 << 20}));
    auto dev = (*region)->open_device("d");
    ASSERT_TRUE(dev);
    path = (*dev)->info().path;
    ASSERT_TRUE((*dev)->write(777, data, {.fua = true}));
    auto m = (*dev)->map(65536, 65536, Access::ReadWrite);
    ASSERT_TRUE(m);
    std::memcpy(m->data() + 5, stored.data(), stored.size());
    ASSERT_TRUE(m->persist(m->data() + 5, stored.size()));

    int fd = ::open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    std::vector<std::byte> got(data.size());
    ASSERT_EQ(::pread(fd, got.data(), got.size(), 777), static_cast<ssize_t>(got.size()));
    EXPECT_EQ(got, data);
    got.resize(stored.size());
    ASSERT_EQ(::pread(fd, got.data(), got.size(), 65536 + 5), static_cast<ssize_t>(got.size()));
    EXPECT_EQ(got, stored);
    ::close(fd);
  }
  auto region = Region::open(scratch.spec());
  ASSERT_TRUE(region);
  auto dev = (*region)->open_device("d");
  ASSERT_TRUE(dev);
  std::vector<std::byte> got(data.size());
  ASSERT_TRUE((*dev)->read(777, got));
  EXPECT_EQ(got, data);
  got.resize(stored.size());
  ASSERT_TRUE((*dev)->read(65536 + 5, got));
  EXPECT_EQ(got, stored);
}

}  // namespace
}  // namespace rawdax

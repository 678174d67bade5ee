// Device::remove() and forced destroy: refuse, revoke, drain (the seed's
// percpu_ref contract), under load.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <gtest/gtest.h>
#include <sstream>
#include <thread>
#include <utility>

#include "fault_catcher.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::run_catching_faults;
using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

constexpr uint64_t kSize = 4 << 20;

bool range_is_reserved(void* addr) {
  void* probe = ::mmap(addr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                       -1, 0);
  if (probe == MAP_FAILED) return errno == EEXIST;
  ::munmap(probe, 4096);
  return false;
}

// Whether this process maps any of bytes [begin, end) of the file `path`
// (/proc/self/maps: "start-end perms offset dev inode path").
bool maps_bytes_of(const std::string& path, uint64_t begin, uint64_t end) {
  std::ifstream in("/proc/self/maps");
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string range, perms, offset, dev, inode, file;
    fields >> range >> perms >> offset >> dev >> inode;
    std::getline(fields >> std::ws, file);
    if (file != path && file != path + " (deleted)") continue;
    const size_t dash = range.find('-');
    const uint64_t length = std::stoull(range.substr(dash + 1), nullptr, 16) -
                            std::stoull(range.substr(0, dash), nullptr, 16);
    const uint64_t at = std::stoull(offset, nullptr, 16);
    if (at < end && begin < at + length) return true;
  }
  return false;
}

// The bytes of a namespace's backing file that are its own: all of it, or
// its extent of a carved region's one file (which the region itself maps,
// for its label area).
std::pair<uint64_t, uint64_t> own_bytes(const NamespaceInfo& info, TestMedia media) {
  if (media == TestMedia::kCarved) return {info.offset, info.offset + info.size};
  return {0, UINT64_MAX};
}

class TeardownTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  void SetUp() override {
    auto region = Region::open(scratch_.spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
  }
  std::unique_ptr<Device> make_device(const std::string& name) {
    auto info = region_->create_namespace({.name = name, .size = kSize});
    EXPECT_TRUE(info) << info.error().message();
    auto dev = region_->open_device(name);
    EXPECT_TRUE(dev) << dev.error().message();
    return dev ? std::move(*dev) : nullptr;
  }

  ScratchRegion scratch_{GetParam()};
  std::unique_ptr<Region> region_;
};

// One thread writes through the block face, another stores through a
// mapping, while remove() runs. The writer must end with ENXIO, the storer
// with SIGBUS, and nothing else may fail.
TEST_P(TeardownTest, RemoveUnderLoadRefusesRevokesAndDrains) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int rounds = 0;
  for (; rounds < 100 && std::chrono::steady_clock::now() < deadline; ++rounds) {
    std::string name = "t" + std::to_string(rounds);
    auto dev = make_device(name);
    ASSERT_TRUE(dev);
    auto mapping = dev->map(0, kSize, Access::ReadWrite);
    ASSERT_TRUE(mapping);
    auto* words = reinterpret_cast<volatile uint64_t*>(mapping->data());
    std::atomic<uint64_t> writes{0}, stores{0};
    std::atomic<bool> stop{false};

    auto writer = std::async(std::launch::async, [&]() -> std::error_code {
      std::vector<std::byte> buf(4096, std::byte{1});
      for (uint64_t i = 0; !stop.load(); ++i) {
        Status st = dev->write((i * 4096) % kSize, buf);
        if (!st) return st.error().code();
        writes.fetch_add(1);
      }
      return {};
    });
    auto storer = std::async(std::launch::async, [&]() {
      return run_catching_faults([&] {
        for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
          words[(i * 513) % (kSize / 8)] = i;
          stores.fetch_add(1, std::memory_order_relaxed);
        }
      });
    });
    while (writes.load() < 10 || stores.load() < 10) std::this_thread::yield();

    Status removed = dev->remove();
    ASSERT_TRUE(removed) << removed.error().message();

    bool writer_done = writer.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
    bool storer_done = storer.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
    stop.store(true);
    ASSERT_TRUE(writer_done) << "round " << rounds << ": block writer still running";
    ASSERT_TRUE(storer_done) << "round " << rounds << ": mapping stores still landing";
    EXPECT_EQ(writer.get(), std::errc::no_such_device_or_address) << "round " << rounds;
    EXPECT_EQ(storer.get(), SIGBUS) << "round " << rounds;

    // Refuse: new work fails fast with ENXIO.
    std::vector<std::byte> buf(16);
    EXPECT_EQ(dev->read(0, buf).error().code(), std::errc::no_such_device_or_address);
    EXPECT_EQ(dev->map(0, 4096, Access::ReadOnly).error().code(),
              std::errc::no_such_device_or_address);
    // Revoke: loads fault too; the range stays reserved until the Mapping goes.
    EXPECT_TRUE(mapping->revoked());
    EXPECT_EQ(run_catching_faults([&] { (void)words[1]; }), SIGBUS);
    void* addr = mapping->data();
    EXPECT_TRUE(range_is_reserved(addr));
    // Release: no view of the namespace's bytes is left in this process.
    const NamespaceInfo info = dev->info();
    if (GetParam() != TestMedia::kMemfd) {
      auto [begin, end] = own_bytes(info, GetParam());
      EXPECT_FALSE(maps_bytes_of(info.path, begin, end)) << info.path;
    }
    mapping = Error(std::errc::operation_canceled, "destroys the Mapping");
    EXPECT_FALSE(range_is_reserved(addr));
    dev.reset();
    ASSERT_TRUE(region_->destroy_namespace(name));
    if (HasFailure()) break;
  }
  EXPECT_GE(rounds, 100);
}

TEST_P(TeardownTest, ForcedDestroyWithTwoLiveMappings) {
  auto dev = make_device("busy");
  ASSERT_TRUE(dev);
  // 1 MiB each, or a page where pages are larger (hugetlbfs).
  const uint64_t part = std::max<uint64_t>(1 << 20, region_->capabilities().page_size);
  auto first = dev->map(0, part, Access::ReadWrite);
  auto second = dev->map(part, part, Access::ReadOnly);
  ASSERT_TRUE(first && second);
  first->data()[0] = std::byte{7};
  const std::string path = dev->info().path;
  const uint64_t offset = dev->info().offset;

  auto refused = region_->destroy_namespace("busy");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::device_or_resource_busy);
  EXPECT_FALSE(first->revoked());
  EXPECT_EQ(first->data()[0], std::byte{7});  // a refusal changes nothing

  ASSERT_TRUE(region_->destroy_namespace("busy", {.force = true}));
  EXPECT_TRUE(first->revoked());
  EXPECT_TRUE(second->revoked());
  EXPECT_EQ(run_catching_faults([&] { first->data()[0] = std::byte{1}; }), SIGBUS);
  EXPECT_EQ(run_catching_faults([&] { (void)*(volatile std::byte*)second->data(); }), SIGBUS);
  EXPECT_EQ(dev->write(0, std::vector<std::byte>(8)).error().code(),
            std::errc::no_such_device_or_address);
  EXPECT_FALSE(region_->find("busy"));
  if (GetParam() == TestMedia::kCarved) {
    // The region's file stays (other namespaces live in it); the freed
    // extent is punched, so whoever still maps it reads zeros.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << path;
    std::byte first{1};
    EXPECT_EQ(::pread(fd, &first, 1, static_cast<off_t>(offset)), 1);
    ::close(fd);
    EXPECT_EQ(first, std::byte{0});
  } else if (GetParam() != TestMedia::kMemfd) {
    EXPECT_FALSE(std::filesystem::exists(path));
  }
  EXPECT_EQ(dev->stats().revoked_mappings, 2u);
  EXPECT_TRUE(dev->remove());  // idempotent
}

TEST_P(TeardownTest, AllHandlesOfANamespaceShareItsRemoval) {
  auto dev = make_device("shared");
  ASSERT_TRUE(dev);
  auto other = region_->open_device("shared", {.read_only = true});
  ASSERT_TRUE(other);
  ASSERT_TRUE(dev->remove());
  std::vector<std::byte> buf(8);
  EXPECT_EQ((*other)->read(0, buf).error().code(), std::errc::no_such_device_or_address);
  // After removal the namespace can be opened afresh.
  auto again = region_->open_device("shared");
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_TRUE((*again)->read(0, buf));
}

INSTANTIATE_TEST_SUITE_P(AllMedia, TeardownTest, RAWDAX_ALL_MEDIA, testing::param_name);

}  // namespace
}  // namespace rawdax

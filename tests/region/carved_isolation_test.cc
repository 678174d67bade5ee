// Isolation of adjacent namespaces in a carved (file:) region: a | b | c lie
// back to back in one file, so every bound is checked against the file's
// bytes themselves. Writes at the boundaries land exactly; writes past an
// end fail and change nothing; a mapping sees its own extent only; and
// freezing, snapshotting and force-destroying b while a and c are written
// through both faces leaves a and c exactly as their writers left them.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchDir;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kRegionBytes = 64 * kMiB;

std::vector<std::byte> pattern(char tag, uint64_t size) {
  std::vector<std::byte> out(size);
  for (uint64_t i = 0; i < size; ++i) {
    out[i] = std::byte(static_cast<uint8_t>(tag * 31 + (i / 4096) * 7 + i % 251));
  }
  return out;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class CarvedIsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Region::open(spec(), {.create = true, .file_size = kRegionBytes});
    ASSERT_TRUE(r) << r.error().message();
    region_ = std::move(*r);
    for (const char* name : {"a", "b", "c"}) {
      auto info = region_->create_namespace({.name = name, .size = kMiB});
      ASSERT_TRUE(info) << info.error().message();
      info_.push_back(*info);
      auto dev = region_->open_device(name);
      ASSERT_TRUE(dev) << dev.error().message();
      ASSERT_TRUE((*dev)->write(0, pattern(name[0], kMiB)));
    }
    // Adjacent: nothing but the bounds checks lies between them.
    ASSERT_EQ(info_[1].offset, info_[0].offset + info_[0].size);
    ASSERT_EQ(info_[2].offset, info_[1].offset + info_[1].size);
  }

  std::string image() const { return dir_.path() + "/region.img"; }
  std::string spec() const { return "file:" + image(); }

  // The file's bytes from a's start to c's end.
  std::vector<std::byte> extents() const { return read_file(info_[0].offset, 3 * kMiB); }
  std::vector<std::byte> read_file(uint64_t offset, uint64_t size) const {
    return ::rawdax::testing::read_file_range(image(), offset, size);
  }

  ScratchDir dir_{::rawdax::testing::tmpfs_parent()};
  std::unique_ptr<Region> region_;
  std::vector<NamespaceInfo> info_;  // a, b, c
};

TEST_F(CarvedIsolationTest, BoundaryWritesLandExactlyInTheirNamespace) {
  auto a = region_->open_device("a");
  auto b = region_->open_device("b");
  auto c = region_->open_device("c");
  ASSERT_TRUE(a && b && c);
  std::vector<std::byte> expected = extents();
  // Each write at a boundary changes one byte of the file: its own.
  struct Case {
    Device* dev;
    uint64_t offset;  // in the namespace
    uint64_t file_at; // in the extents read above
    uint8_t value;
  };
  const std::vector<Case> cases = {{a->get(), kMiB - 1, kMiB - 1, 0x11},
                                   {b->get(), 0, kMiB, 0x22},
                                   {b->get(), kMiB - 1, 2 * kMiB - 1, 0x33},
                                   {c->get(), 0, 2 * kMiB, 0x44}};
  for (const Case& k : cases) {
    std::byte v{k.value};
    ASSERT_TRUE(k.dev->write(k.offset, std::span<const std::byte>(&v, 1)))
        << k.dev->name() << " at " << k.offset;
    expected[k.file_at] = v;
    ASSERT_TRUE(extents() == expected) << k.dev->name() << " at " << k.offset;
  }
  // The block face reads them back where they were written.
  std::byte got{};
  ASSERT_TRUE((*b)->read(0, std::span<std::byte>(&got, 1)));
  EXPECT_EQ(got, std::byte{0x22});
  ASSERT_TRUE((*a)->read(kMiB - 1, std::span<std::byte>(&got, 1)));
  EXPECT_EQ(got, std::byte{0x11});
}

TEST_F(CarvedIsolationTest, OutOfBoundsWritesFailNamingTheRangeAndWriteNothing) {
  const std::vector<std::byte> before = extents();
  const std::vector<std::byte> two(2, std::byte{0x77}), one(1, std::byte{0x77});
  for (const char* name : {"a", "b", "c"}) {
    auto dev = region_->open_device(name);
    ASSERT_TRUE(dev);
    struct Case {
      uint64_t offset;
      std::span<const std::byte> data;
      std::errc code;
    };
    const uint64_t size = (*dev)->size();
    const uint64_t huge = std::numeric_limits<uint64_t>::max() - 1;
    for (const Case& k : {Case{size - 1, two, std::errc::no_space_on_device},
                          Case{size, one, std::errc::no_space_on_device},
                          Case{size + 4096, one, std::errc::no_space_on_device},
                          Case{huge, two, std::errc::invalid_argument}}) {
      Status w = (*dev)->write(k.offset, k.data);
      ASSERT_FALSE(w) << name << " at " << k.offset;
      EXPECT_EQ(w.error().code(), k.code) << w.error().message();
      const std::string& msg = w.error().message();
      EXPECT_TRUE(contains(msg, std::string("namespace ") + name)) << msg;
      EXPECT_TRUE(contains(msg, "offset " + std::to_string(k.offset))) << msg;
      if (k.offset != huge) {
        EXPECT_TRUE(contains(msg, "size " + std::to_string(size))) << msg;
      }
    }
    Status z = (*dev)->write_zeroes(size - 4096, 8192);
    ASSERT_FALSE(z);
    EXPECT_TRUE(contains(z.error().message(), std::string("namespace ") + name))
        << z.error().message();
    // A map past the end is refused as well.
    auto m = (*dev)->map(size, 4096, Access::ReadWrite);
    ASSERT_FALSE(m);
    EXPECT_TRUE(contains(m.error().message(), std::string("namespace ") + name))
        << m.error().message();
  }
  EXPECT_TRUE(extents() == before) << "a refused write changed the file";
  // Nor did the refused writes leave anything past c.
  EXPECT_TRUE(read_file(info_[2].offset + kMiB, kMiB) == std::vector<std::byte>(kMiB))
      << "bytes after c changed";
}

TEST_F(CarvedIsolationTest, MappingsCoverTheirOwnExtentOnly) {
  auto b = region_->open_device("b");
  ASSERT_TRUE(b);
  auto whole = (*b)->map(0, kMiB, Access::ReadWrite);
  ASSERT_TRUE(whole) << whole.error().message();
  const std::vector<std::byte> b_bytes = pattern('b', kMiB);
  ASSERT_EQ(std::memcmp(whole->data(), b_bytes.data(), kMiB), 0)
      << "a mapping of b does not show b's bytes";
  auto page = (*b)->map(4096, 4096, Access::ReadOnly);
  ASSERT_TRUE(page) << page.error().message();
  EXPECT_EQ(std::memcmp(page->data(), b_bytes.data() + 4096, 4096), 0);
  auto last = (*b)->map(kMiB - 4096, 4096, Access::ReadOnly);
  ASSERT_TRUE(last) << last.error().message();
  EXPECT_EQ(std::memcmp(last->data(), b_bytes.data() + kMiB - 4096, 4096), 0);

  // Stores at b's first and last byte land there in the file, nowhere else.
  std::vector<std::byte> expected = extents();
  whole->data()[0] = std::byte{0x5e};
  whole->data()[kMiB - 1] = std::byte{0x6f};
  expected[kMiB] = std::byte{0x5e};
  expected[2 * kMiB - 1] = std::byte{0x6f};
  EXPECT_TRUE(extents() == expected);
  // And a's and c's block faces do not see them.
  auto a = region_->open_device("a");
  auto c = region_->open_device("c");
  ASSERT_TRUE(a && c);
  std::vector<std::byte> got(kMiB);
  ASSERT_TRUE((*a)->read(0, got));
  EXPECT_TRUE(got == pattern('a', kMiB));
  ASSERT_TRUE((*c)->read(0, got));
  EXPECT_TRUE(got == pattern('c', kMiB));
}

// One writer of half a namespace: through a mapping or the block face, it
// fills its half with a byte that changes each pass, and records the last
// pass it completed.
class Writer {
 public:
  Writer(uint8_t tag, std::byte* mapped, Device* dev, uint64_t offset, uint64_t length)
      : tag_(tag), mapped_(mapped), dev_(dev), offset_(offset), length_(length) {}
  void start() {
    thread_ = std::thread([this] { run(); });
  }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  uint64_t passes() const { return passes_.load(); }
  std::byte value(uint64_t pass) const { return std::byte(static_cast<uint8_t>(tag_ + pass * 3)); }
  bool failed() const { return failed_.load(); }

 private:
  void run() {
    std::vector<std::byte> buf(length_);
    for (uint64_t pass = 1; !stop_.load(); ++pass) {
      if (mapped_ != nullptr) {
        std::memset(mapped_ + offset_, static_cast<int>(value(pass)), length_);
      } else {
        std::fill(buf.begin(), buf.end(), value(pass));
        if (!dev_->write(offset_, buf)) {
          failed_.store(true);
          return;
        }
      }
      passes_.store(pass);
    }
  }
  uint8_t tag_;
  std::byte* mapped_;
  Device* dev_;
  uint64_t offset_, length_;
  std::thread thread_;
  std::atomic<bool> stop_{false}, failed_{false};
  std::atomic<uint64_t> passes_{0};
};

TEST_F(CarvedIsolationTest, NeighboursOfAFrozenSnapshottedDestroyedNamespaceCarryOn) {
  auto a = region_->open_device("a");
  auto b = region_->open_device("b");
  auto c = region_->open_device("c");
  ASSERT_TRUE(a && b && c);
  const uint64_t half = kMiB / 2;
  auto map_a = (*a)->map(0, half, Access::ReadWrite);
  auto map_c = (*c)->map(0, half, Access::ReadWrite);
  auto map_b = (*b)->map(0, kMiB, Access::ReadWrite);
  ASSERT_TRUE(map_a && map_c && map_b);
  // Mapping halves through the mapping, other halves through the block face.
  Writer writers[] = {{0x10, map_a->data(), nullptr, 0, half},
                      {0x20, nullptr, a->get(), half, half},
                      {0x30, map_c->data(), nullptr, 0, half},
                      {0x40, nullptr, c->get(), half, half}};
  for (Writer& w : writers) w.start();
  auto all_progress_past = [&](const std::vector<uint64_t>& marks) {
    return ::rawdax::testing::eventually([&] {
      for (size_t i = 0; i < marks.size(); ++i) {
        if (writers[i].passes() <= marks[i] && !writers[i].failed()) return false;
      }
      return true;
    });
  };
  auto marks = [&] {
    std::vector<uint64_t> out;
    for (Writer& w : writers) out.push_back(w.passes());
    return out;
  };
  ASSERT_TRUE(all_progress_past({0, 0, 0, 0}));

  {
    auto frozen = (*b)->freeze();
    ASSERT_TRUE(frozen) << frozen.error().message();
    // b frozen: a and c are not.
    EXPECT_TRUE(all_progress_past(marks())) << "writers of a or c stalled while b was frozen";
  }
  const std::string snap = dir_.path() + "/b.snap";
  auto snapshot = (*b)->snapshot(snap);
  ASSERT_TRUE(snapshot) << snapshot.error().message();
  EXPECT_TRUE(all_progress_past(marks()));
  ASSERT_TRUE(region_->destroy_namespace("b", {.force = true}));
  EXPECT_TRUE(map_b->revoked());
  EXPECT_TRUE(all_progress_past(marks())) << "writers of a or c stalled after b was destroyed";
  for (Writer& w : writers) w.stop();

  for (Writer& w : writers) EXPECT_FALSE(w.failed()) << "a block write to a or c failed";
  // Each half holds exactly its writer's last pass.
  auto expect_half = [&](const Writer& w, uint64_t file_offset, const char* what) {
    std::vector<std::byte> got = read_file(file_offset, half);
    EXPECT_EQ(std::count(got.begin(), got.end(), w.value(w.passes())), ptrdiff_t(half))
        << what << " does not hold its writer's last pass " << w.passes();
  };
  expect_half(writers[0], info_[0].offset, "a's mapped half");
  expect_half(writers[1], info_[0].offset + half, "a's block half");
  expect_half(writers[2], info_[2].offset, "c's mapped half");
  expect_half(writers[3], info_[2].offset + half, "c's block half");
  for (auto* dev : {a->get(), c->get()}) {
    DeviceStats stats = dev->stats();
    EXPECT_EQ(stats.revoked_mappings, 0u) << dev->name();
    EXPECT_EQ(stats.live_mappings, 1u) << dev->name();
  }
  EXPECT_FALSE(map_a->revoked());
  EXPECT_FALSE(map_c->revoked());
  EXPECT_EQ((*b)->stats().revoked_mappings, 1u);

  // b is gone, a and c stayed where they were, and the snapshot holds b's
  // bytes (never written after the setup).
  auto listed = region_->list();
  ASSERT_EQ(listed.size(), 2u);
  for (const auto& ns : listed) {
    EXPECT_EQ(ns.offset, ns.name == "a" ? info_[0].offset : info_[2].offset) << ns.name;
    EXPECT_EQ(ns.size, kMiB) << ns.name;
  }
  auto restored = region_->restore_namespace("b2", snap);
  ASSERT_TRUE(restored) << restored.error().message();
  auto b2 = region_->open_device("b2");
  ASSERT_TRUE(b2);
  std::vector<std::byte> got(kMiB);
  ASSERT_TRUE((*b2)->read(0, got));
  EXPECT_TRUE(got == pattern('b', kMiB)) << "the snapshot of b does not hold b's bytes";
}

}  // namespace
}  // namespace rawdax

// device-dax on a real device: the suite DevdaxTest runs against the device
// named by RAWDAX_TEST_DEVDAX (or RAWDAX_GUEST_DEVDAX, which tests/guest/run
// sets) and is not registered at all when neither names one. Our hosts have
// no device-dax; the guest runner has one (docs/guest.md):
//   tests/guest/run -- build/tests/rawdax_tests --gtest_filter='DevdaxTest.*'
// The tests share the one device and run one after another: each formats it
// (Region::init with force) as a carved region and creates the namespaces it
// uses, so none depends on what an earlier one left. Two tests cover the
// layout before carving (devdax-whole:, the whole device as one namespace)
// and a device that holds data but no label area. The error paths for what
// is not a device-dax instance run everywhere (DevdaxRegion).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "fault_catcher.h"
#include "rawdax/rawdax.h"
#include "test_util.h"

namespace rawdax {
namespace {

using std::chrono_literals::operator""s;

std::string devdax_under_test() {
  for (const char* name : {"RAWDAX_TEST_DEVDAX", "RAWDAX_GUEST_DEVDAX"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && value[0] != '\0') return value;
  }
  return "";
}

std::vector<std::byte> pattern(size_t n, uint32_t seed) {
  std::vector<std::byte> out(n);
  std::mt19937 gen(seed);
  for (auto& b : out) b = static_cast<std::byte>(gen());
  return out;
}

// The state letter of a thread of this process (R, S, D, ...); '?' if gone.
char thread_state(pid_t tid) {
  std::string stat = testing::read_text("/proc/self/task/" + std::to_string(tid) + "/stat");
  size_t paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() ? '?' : stat[paren + 2];
}

// The namespace every test gets: sixteen units of the align (32 MiB at
// 2 MiB), room for the live snapshot's sixteen chunks and, beside it, a
// second copy (a restore) and a few more namespaces.
constexpr uint64_t kUnits = 16;

class DevdaxTest : public ::testing::Test {
 public:
  using Body = std::function<void(DevdaxTest&)>;
  DevdaxTest(std::string device, Body body) : device_(std::move(device)), body_(std::move(body)) {}

  void SetUp() override {
    auto init = Region::init(spec(), {.force = true});
    ASSERT_TRUE(init) << init.error().message();
    ASSERT_NO_FATAL_FAILURE(open_region());
    EXPECT_TRUE(region_->list().empty()) << "init left namespaces";
    align_ = region_->capabilities().alignment;
    auto info = region_->create_namespace({.name = name_, .size = kUnits * align_});
    ASSERT_TRUE(info) << info.error().message();
    info_ = *info;
  }
  void TestBody() override { body_(*this); }

  std::string spec() const { return "devdax:" + device_; }
  void open_region() {
    auto region = Region::open(spec());
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
  }

  std::unique_ptr<Device> open_device(const std::string& name = "") {
    auto dev = region_->open_device(name.empty() ? name_ : name);
    EXPECT_TRUE(dev) << dev.error().message();
    return dev ? std::move(*dev) : nullptr;
  }

  std::string device_;
  Body body_;
  std::unique_ptr<Region> region_;
  std::string name_ = "tenant";
  NamespaceInfo info_;
  uint64_t align_ = 0;
};

// The device's bytes [offset, offset + length), through a mapping of the
// device itself: what a namespace's extent really holds.
std::vector<std::byte> raw_bytes(const std::string& device, uint64_t offset, uint64_t length,
                                 uint64_t align) {
  const uint64_t start = offset - offset % align;
  const uint64_t span = (offset + length - start + align - 1) / align * align;
  int fd = ::open(device.c_str(), O_RDWR | O_CLOEXEC);
  EXPECT_GE(fd, 0) << device << ": " << std::strerror(errno);
  if (fd < 0) return {};
  void* addr = ::mmap(nullptr, span, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(start));
  ::close(fd);
  EXPECT_NE(addr, MAP_FAILED) << std::strerror(errno);
  if (addr == MAP_FAILED) return {};
  const auto* p = static_cast<const std::byte*>(addr) + (offset - start);
  std::vector<std::byte> out(p, p + length);
  ::munmap(addr, span);
  return out;
}

bool all_zero(std::span<const std::byte> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
}

// --- The tests, registered below only when a device is named ---

void capabilities_are_the_devices(DevdaxTest& t) {
  const Capabilities& caps = t.region_->capabilities();
  EXPECT_EQ(caps.kind, MediaKind::kDevdax);
  EXPECT_EQ(caps.persist, PersistMethod::kCacheFlush);
  EXPECT_EQ(caps.engine, ProtectionEngine::kMprotect);  // device-dax refuses sync uffd-wp
  EXPECT_FALSE(caps.uffd_wp_sync);
  struct stat st;
  ASSERT_EQ(::stat(t.device_.c_str(), &st), 0);
  std::string sysfs = "/sys/dev/char/" + std::to_string(major(st.st_rdev)) + ":" +
                      std::to_string(minor(st.st_rdev));
  uint64_t size = std::stoull(testing::read_text(sysfs + "/size"));
  uint64_t align = std::stoull(testing::read_text(sysfs + "/align"));
  EXPECT_EQ(caps.alignment, align);
  // The device is carved: a label area, then the extents, in units of the align.
  const RegionSpace space = t.region_->space();
  EXPECT_TRUE(space.carved);
  EXPECT_EQ(space.device_size, size - size % align);
  EXPECT_EQ(space.align, align);
  EXPECT_GT(space.label_area_size, 0u);
  EXPECT_EQ(space.label_area_size % align, 0u);
  EXPECT_EQ(t.info_.path, t.device_);
  EXPECT_EQ(t.info_.size, kUnits * align);
  EXPECT_GE(t.info_.offset, space.label_area_size);
  EXPECT_EQ(t.info_.offset % align, 0u);
  const uint64_t data = space.device_size - space.label_area_size;
  EXPECT_EQ(space.free, data - t.info_.size);
  // More namespaces fit beside it, each its own aligned extent; a destroy
  // gives the space back.
  auto second = t.region_->create_namespace({.name = "second", .size = 3 * align});
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(second->offset % align, 0u);
  EXPECT_TRUE(second->offset >= t.info_.offset + t.info_.size ||
              second->offset + second->size <= t.info_.offset)
      << "extents overlap: " << t.info_.offset << "+" << t.info_.size << " and "
      << second->offset << "+" << second->size;
  EXPECT_LE(second->offset + second->size, space.device_size);
  EXPECT_EQ(t.region_->space().free, data - t.info_.size - 3 * align);
  EXPECT_EQ(t.region_->list().size(), 2u);
  ASSERT_TRUE(t.region_->destroy_namespace("second"));
  EXPECT_EQ(t.region_->space().free, data - t.info_.size);
  // What does not fit is refused, naming the largest free extent.
  auto too_big = t.region_->create_namespace({.name = "big", .size = data});
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error().code(), std::errc::no_space_on_device);
  EXPECT_NE(too_big.error().message().find("largest free extent"), std::string::npos)
      << too_big.error().message();
}

void map_is_aligned_and_coherent_with_the_block_face(DevdaxTest& t) {
  auto dev = t.open_device();
  ASSERT_TRUE(dev);
  const uint64_t len = 2 * t.align_;
  auto m = dev->map(t.align_, len, Access::ReadWrite);
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(m->data()) % t.align_, 0u) << "mapped off the alignment";
  auto bytes = pattern(len, 1);
  std::memcpy(m->data(), bytes.data(), len);
  ASSERT_TRUE(m->persist(m->data(), len));
  std::vector<std::byte> back(len);
  ASSERT_TRUE(dev->read(t.align_, back));
  EXPECT_EQ(back, bytes);
  // The block face needs no alignment: it copies through the device's view.
  auto small = pattern(777, 2);
  ASSERT_TRUE(dev->write(t.align_ + 12345, small, {.fua = true}));
  EXPECT_EQ(std::memcmp(m->data() + 12345, small.data(), small.size()), 0);
  std::vector<std::byte> odd(777);
  ASSERT_TRUE(dev->read(t.align_ + 12345, odd));
  EXPECT_EQ(odd, small);
  // Both faces are the namespace's extent of the device, nothing else.
  std::memcpy(bytes.data() + 12345, small.data(), small.size());
  EXPECT_EQ(raw_bytes(t.device_, t.info_.offset + t.align_, len, t.align_), bytes);
}

// What is persisted through a mapping is there for the next Region, named
// by the labels: the namespace, at the same extent.
void persisted_bytes_survive_reopen(DevdaxTest& t) {
  auto other = t.region_->create_namespace({.name = "other", .size = 2 * t.align_});
  ASSERT_TRUE(other) << other.error().message();
  const auto mine = pattern(t.info_.size, 21), theirs = pattern(other->size, 22);
  for (auto [name, bytes] : {std::pair{t.name_, &mine}, std::pair{std::string("other"), &theirs}}) {
    auto dev = t.open_device(name);
    ASSERT_TRUE(dev);
    auto m = dev->map(0, bytes->size(), Access::ReadWrite);
    ASSERT_TRUE(m) << m.error().message();
    std::memcpy(m->data(), bytes->data(), bytes->size());
    ASSERT_TRUE(m->persist(m->data(), bytes->size()));
  }
  const uint64_t generation = t.region_->generation();
  t.region_.reset();
  ASSERT_NO_FATAL_FAILURE(t.open_region());
  EXPECT_EQ(t.region_->generation(), generation);
  auto listed = t.region_->list();
  ASSERT_EQ(listed.size(), 2u);
  for (auto [name, bytes, offset] :
       {std::tuple{t.name_, &mine, t.info_.offset},
        std::tuple{std::string("other"), &theirs, other->offset}}) {
    auto found = t.region_->find(name);
    ASSERT_TRUE(found) << found.error().message();
    EXPECT_EQ(found->offset, offset) << name;
    EXPECT_EQ(found->size, bytes->size()) << name;
    auto dev = t.open_device(name);
    ASSERT_TRUE(dev);
    std::vector<std::byte> back(bytes->size());
    ASSERT_TRUE(dev->read(0, back));
    EXPECT_TRUE(back == *bytes) << name << " lost bytes across the reopen";
  }
}

// Why every mprotect on devdax covers whole units: the kernel refuses to
// split a device-dax mapping anywhere else (dev_dax_may_split).
void kernel_refuses_splits_off_the_alignment(DevdaxTest& t) {
  int fd = ::open(t.device_.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  void* addr = ::mmap(nullptr, 2 * t.align_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(addr, MAP_FAILED) << std::strerror(errno);
  auto* base = static_cast<std::byte*>(addr);
  errno = 0;
  EXPECT_EQ(::mprotect(base + 4096, 4096, PROT_READ), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(::mprotect(base + t.align_, t.align_, PROT_READ), 0) << std::strerror(errno);
  ::munmap(addr, 2 * t.align_);
}

void misaligned_map_is_a_clear_error_and_changes_nothing(DevdaxTest& t) {
  auto dev = t.open_device();
  ASSERT_TRUE(dev);
  const uint64_t maps_before = dev->stats().maps;
  struct Case {
    uint64_t offset, length;
  };
  for (Case c : {Case{4096, t.align_}, Case{0, 4096}, Case{t.align_, t.align_ + 4096}}) {
    auto m = dev->map(c.offset, c.length, Access::ReadWrite);
    ASSERT_FALSE(m) << "map " << c.offset << "+" << c.length << " succeeded";
    const std::string msg = m.error().message();
    EXPECT_EQ(m.error().code(), std::errc::invalid_argument) << msg;
    for (const std::string& part : {std::string("media devdax"), t.name_,
                                    "offset " + std::to_string(c.offset),
                                    "length " + std::to_string(c.length),
                                    std::to_string(t.align_)}) {
      EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' missing in: " << msg;
    }
  }
  EXPECT_EQ(dev->stats().maps, maps_before);
  EXPECT_EQ(dev->stats().live_mappings, 0u);
}

void freeze_parks_stores_until_thaw(DevdaxTest& t) {
  auto dev = t.open_device();
  ASSERT_TRUE(dev);
  auto m = dev->map(0, t.align_, Access::ReadWrite);
  ASSERT_TRUE(m) << m.error().message();
  auto* word = reinterpret_cast<volatile uint64_t*>(m->data() + 4096);
  *word = 1;
  std::atomic<bool> stored{false};
  std::atomic<pid_t> writer_tid{0};
  const uint64_t faults = dev->stats().write_faults;
  std::jthread writer;
  {
    auto frozen = dev->freeze({.timeout = 30s});
    ASSERT_TRUE(frozen) << frozen.error().message();
    writer = std::jthread([&] {
      writer_tid = ::gettid();
      *word = 2;
      stored = true;
    });
    // The writer does nothing but store: sleeping, it is parked on the fault.
    ASSERT_TRUE(testing::eventually([&] {
      return writer_tid.load() != 0 && thread_state(writer_tid.load()) == 'S';
    })) << "the writer never parked";
    EXPECT_FALSE(stored.load());
    uint64_t seen = 0;
    ASSERT_TRUE(dev->read(4096, std::as_writable_bytes(std::span(&seen, 1))));
    EXPECT_EQ(seen, 1u) << "a store landed while frozen";  // and loads go on
  }
  writer.join();
  EXPECT_TRUE(stored.load());
  EXPECT_EQ(*word, 2u);
  EXPECT_GT(dev->stats().write_faults, faults) << "the store was not counted as parked";
  EXPECT_GT(dev->stats().stall_total_ns, 0u);
}

// A writer stores into every chunk in order, over and over, while a live
// snapshot runs. The image must be one instant: chunks [0, k) hold some v
// and the rest v - 1. Each chunk the copier releases is an mprotect of part
// of the mapping, a VMA split that device-dax allows only on its alignment;
// a refused one fails the snapshot.
void live_snapshot_while_a_writer_stores(DevdaxTest& t) {
  testing::ScratchDir scratch("/tmp");
  auto dev = t.open_device();
  ASSERT_TRUE(dev);
  const uint64_t chunks = std::min<uint64_t>(16, dev->size() / t.align_);
  ASSERT_GE(chunks, 4u);
  auto m = dev->map(0, chunks * t.align_, Access::ReadWrite);
  ASSERT_TRUE(m) << m.error().message();
  auto slot = [&](uint64_t c) {
    return reinterpret_cast<std::atomic<uint64_t>*>(m->data() + c * t.align_ + 64);
  };
  for (uint64_t c = 0; c < chunks; ++c) slot(c)->store(0);
  std::atomic<uint64_t> rounds{0};
  std::atomic<bool> stop{false};
  std::jthread writer([&] {
    for (uint64_t v = 1; !stop.load(std::memory_order_relaxed); ++v) {
      for (uint64_t c = 0; c < chunks; ++c) slot(c)->store(v, std::memory_order_relaxed);
      rounds.store(v);
    }
  });
  ASSERT_TRUE(testing::eventually([&] { return rounds.load() >= 2; }));
  const std::string path = scratch.path() + "/live.snap";
  auto snap = dev->snapshot(path);
  const uint64_t rounds_after_snapshot = rounds.load();
  ASSERT_TRUE(testing::eventually([&] { return rounds.load() > rounds_after_snapshot + 1; }))
      << "the writer stopped making progress after the snapshot";
  stop = true;
  writer.join();
  ASSERT_TRUE(snap) << snap.error().message();
  std::cout << "live snapshot: writer rounds " << rounds.load() << ", parked stores "
            << dev->stats().write_faults << "\n";

  auto mem = Region::open("memfd:");
  ASSERT_TRUE(mem);
  auto restored = (*mem)->restore_namespace("image", path);
  ASSERT_TRUE(restored) << restored.error().message();
  auto image = (*mem)->open_device("image");
  ASSERT_TRUE(image);
  std::vector<uint64_t> v(chunks);
  for (uint64_t c = 0; c < chunks; ++c) {
    ASSERT_TRUE((*image)->read(c * t.align_ + 64, std::as_writable_bytes(std::span(&v[c], 1))));
  }
  const uint64_t top = v.front();
  EXPECT_GE(top, 2u);
  bool dropped = false;
  for (uint64_t c = 0; c < chunks; ++c) {
    if (v[c] == top && !dropped) continue;
    if (v[c] + 1 == top && top > 0) {
      dropped = true;
      continue;
    }
    ADD_FAILURE() << "chunk " << c << " holds " << v[c] << " in an image whose chunk 0 holds "
                  << top << ": not one instant";
  }
}

// A restore into an existing namespace: refused while it is open, then its
// bytes are the snapshot's (in a new extent; the old one is free again).
void restore_into_the_namespace(DevdaxTest& t) {
  testing::ScratchDir scratch("/tmp");
  const std::string path = scratch.path() + "/before.snap";
  const uint64_t len = 2 * t.align_;
  auto before = pattern(len, 3);
  {
    auto dev = t.open_device();
    ASSERT_TRUE(dev);
    ASSERT_TRUE(dev->write(t.align_, before));
    auto snap = dev->snapshot(path);
    ASSERT_TRUE(snap) << snap.error().message();
    auto after = pattern(len, 4);
    ASSERT_TRUE(dev->write(t.align_, after));
    // Restore refuses an open namespace.
    auto busy = t.region_->restore_namespace(t.name_, path);
    ASSERT_FALSE(busy);
    EXPECT_EQ(busy.error().code(), std::errc::device_or_resource_busy);
  }
  const uint64_t free_before = t.region_->space().free;
  auto restored = t.region_->restore_namespace(t.name_, path);
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(restored->path, t.device_);
  EXPECT_EQ(restored->size, t.info_.size);
  EXPECT_EQ(t.region_->space().free, free_before) << "the replaced extent was not freed";
  auto dev = t.open_device();
  ASSERT_TRUE(dev);
  std::vector<std::byte> back(len);
  ASSERT_TRUE(dev->read(t.align_, back));
  EXPECT_EQ(back, before);
  std::vector<std::byte> rest(t.align_);
  ASSERT_TRUE(dev->read(0, rest));
  EXPECT_TRUE(all_zero(rest)) << "bytes the snapshot holds as zeros are not";
}

// The scenario: three namespaces side by side, each written through
// a mapping; the middle one is destroyed and created again (in the same
// extent, which still holds its old bytes on the device: the new namespace
// must read as zeros), then a snapshot taken of it earlier is restored into
// it. Every byte of all three is checked, then again after a reopen.
void destroyed_namespace_comes_back_zeroed_and_restores(DevdaxTest& t) {
  testing::ScratchDir scratch(testing::tmpfs_parent());
  const std::string snap_path = scratch.path() + "/b.snap";
  struct Ns {
    std::string name;
    uint64_t units;
    uint32_t seed;
    NamespaceInfo info;
    std::vector<std::byte> bytes;
  };
  std::vector<Ns> ns = {{"a", 3, 31, {}, {}}, {"b", 5, 32, {}, {}}, {"c", 2, 33, {}, {}}};
  for (Ns& n : ns) {
    auto info = t.region_->create_namespace({.name = n.name, .size = n.units * t.align_});
    ASSERT_TRUE(info) << info.error().message();
    n.info = *info;
    n.bytes = pattern(info->size, n.seed);
    auto dev = t.open_device(n.name);
    ASSERT_TRUE(dev);
    auto m = dev->map(0, info->size, Access::ReadWrite);
    ASSERT_TRUE(m) << m.error().message();
    std::memcpy(m->data(), n.bytes.data(), info->size);
    ASSERT_TRUE(m->persist(m->data(), info->size));
  }
  // b is between a and c: destroying it leaves a hole only it fits best.
  ASSERT_LT(ns[0].info.offset, ns[1].info.offset);
  ASSERT_LT(ns[1].info.offset, ns[2].info.offset);
  {
    auto dev = t.open_device("b");
    ASSERT_TRUE(dev);
    auto snap = dev->snapshot(snap_path);
    ASSERT_TRUE(snap) << snap.error().message();
  }
  ASSERT_TRUE(t.region_->destroy_namespace("b"));
  EXPECT_FALSE(t.region_->find("b"));
  auto again = t.region_->create_namespace({.name = "b", .size = ns[1].info.size});
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_NE(again->uuid, ns[1].info.uuid);
  // Best fit puts it back in its old extent: the zeroing is what is tested.
  EXPECT_EQ(again->offset, ns[1].info.offset);
  {
    auto dev = t.open_device("b");
    ASSERT_TRUE(dev);
    auto m = dev->map(0, again->size, Access::ReadOnly);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_TRUE(all_zero(std::span(m->data(), m->size())))
        << "the new namespace b shows bytes of the destroyed one (mapping face)";
    std::vector<std::byte> block(again->size);
    ASSERT_TRUE(dev->read(0, block));
    EXPECT_TRUE(all_zero(block)) << "the new namespace b shows old bytes (block face)";
  }
  EXPECT_TRUE(all_zero(raw_bytes(t.device_, again->offset, again->size, t.align_)))
      << "the extent of the new b still holds old bytes on the device";
  auto restored = t.region_->restore_namespace("b", snap_path);
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(restored->size, ns[1].info.size);

  auto check_all = [&](const char* when) {
    for (const Ns& n : ns) {
      auto dev = t.open_device(n.name);
      ASSERT_TRUE(dev);
      ASSERT_EQ(dev->size(), n.bytes.size()) << n.name;
      auto m = dev->map(0, n.bytes.size(), Access::ReadOnly);
      ASSERT_TRUE(m) << m.error().message();
      EXPECT_EQ(std::memcmp(m->data(), n.bytes.data(), n.bytes.size()), 0)
          << "namespace " << n.name << " differs from what was written " << when;
      std::vector<std::byte> block(n.bytes.size());
      ASSERT_TRUE(dev->read(0, block));
      EXPECT_TRUE(block == n.bytes) << "namespace " << n.name << " (block face) " << when;
    }
  };
  check_all("after the restore");
  t.region_.reset();
  ASSERT_NO_FATAL_FAILURE(t.open_region());
  check_all("after a reopen");
}

void remove_revokes_mappings(DevdaxTest& t) {
  auto dev = t.open_device();
  ASSERT_TRUE(dev);
  auto m = dev->map(0, t.align_, Access::ReadWrite);
  ASSERT_TRUE(m) << m.error().message();
  m->data()[0] = std::byte{7};
  ASSERT_TRUE(dev->remove());
  EXPECT_EQ(testing::run_catching_faults([&] {
              *reinterpret_cast<volatile std::byte*>(m->data()) = std::byte{8};
            }),
            SIGBUS);
  auto again = dev->map(0, t.align_, Access::ReadWrite);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), std::errc::no_such_device_or_address);
  std::byte b{};
  EXPECT_FALSE(dev->read(0, std::span(&b, 1)));
  // The device itself stays: a new open finds the last store before remove.
  auto reopened = t.open_device();
  ASSERT_TRUE(reopened);
  ASSERT_TRUE(reopened->read(0, std::span(&b, 1)));
  EXPECT_EQ(b, std::byte{7});
}

// The layout of rawdax before carving: devdax-whole: opens the whole device,
// label area and all, as one namespace named after it (to copy it out). It
// creates and destroys nothing.
void whole_device_layout_is_one_namespace(DevdaxTest& t) {
  const auto bytes = pattern(3 * t.align_, 41);
  {
    auto dev = t.open_device();
    ASSERT_TRUE(dev);
    ASSERT_TRUE(dev->write(0, bytes, {.fua = true}));
  }
  const uint64_t offset = t.info_.offset;
  const uint64_t device_size = t.region_->space().device_size;
  t.region_.reset();  // the carved region holds the device's lock
  auto whole = Region::open("devdax-whole:" + t.device_);
  ASSERT_TRUE(whole) << whole.error().message();
  auto list = (*whole)->list();
  ASSERT_EQ(list.size(), 1u);
  const NamespaceInfo& ns = list.front();
  EXPECT_EQ(ns.name, std::filesystem::path(t.device_).filename().string());
  EXPECT_EQ(ns.path, t.device_);
  EXPECT_EQ(ns.offset, 0u);
  EXPECT_GE(ns.size, device_size);
  EXPECT_EQ((*whole)->capabilities().kind, MediaKind::kDevdax);
  EXPECT_FALSE((*whole)->space().carved);
  auto second = (*whole)->create_namespace({.name = "second", .size = t.align_});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), std::errc::operation_not_supported);
  auto destroyed = (*whole)->destroy_namespace(ns.name);
  ASSERT_FALSE(destroyed);
  EXPECT_EQ(destroyed.error().code(), std::errc::operation_not_supported);
  auto dev = (*whole)->open_device(ns.name);
  ASSERT_TRUE(dev) << dev.error().message();
  EXPECT_EQ((*dev)->size(), ns.size);
  // Its offset 0 is the device's: the carved namespace's bytes are at their
  // extent's offset.
  std::vector<std::byte> back(bytes.size());
  ASSERT_TRUE((*dev)->read(offset, back));
  EXPECT_TRUE(back == bytes) << "devdax-whole: does not see the device's bytes at their offset";
  auto m = (*dev)->map(offset, t.align_, Access::ReadOnly);
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(std::memcmp(m->data(), bytes.data(), t.align_), 0);
}

// A device of the layout before carving holds data and no label area: open
// with create refuses it (ENOTEMPTY), naming the first byte of data and
// devdax-whole: to copy it out; init without force refuses too; init with
// force formats it. A device that reads as zeros is formatted by open with
// create.
void unlabelled_device_with_data_is_refused(DevdaxTest& t) {
  const uint64_t data_at = t.info_.offset + 5 * t.align_ + 4321;
  t.region_.reset();
  {
    auto whole = Region::open("devdax-whole:" + t.device_);
    ASSERT_TRUE(whole) << whole.error().message();
    auto dev = (*whole)->open_device(std::filesystem::path(t.device_).filename().string());
    ASSERT_TRUE(dev) << dev.error().message();
    // All zeros, labels included: what a new device holds.
    ASSERT_TRUE((*dev)->write_zeroes(0, (*dev)->size()));
  }
  {
    auto blank = Region::open(t.spec());
    ASSERT_FALSE(blank) << "a blank device opened without create";
    EXPECT_EQ(blank.error().code(), std::errc::no_such_file_or_directory) << blank.error().message();
    auto made = Region::open(t.spec(), {.create = true});
    ASSERT_TRUE(made) << made.error().message();
    EXPECT_TRUE((*made)->list().empty());
    EXPECT_TRUE((*made)->space().carved);
  }
  {
    auto whole = Region::open("devdax-whole:" + t.device_);
    ASSERT_TRUE(whole) << whole.error().message();
    auto dev = (*whole)->open_device(std::filesystem::path(t.device_).filename().string());
    ASSERT_TRUE(dev) << dev.error().message();
    // No labels again, and one byte of data.
    ASSERT_TRUE((*dev)->write_zeroes(0, t.info_.offset));
    const std::byte one{0x5a};
    ASSERT_TRUE((*dev)->write(data_at, std::span(&one, 1), {.fua = true}));
  }
  auto refused = Region::open(t.spec(), {.create = true});
  ASSERT_FALSE(refused) << "a device with data and no labels was formatted";
  EXPECT_EQ(refused.error().code(), std::errc::directory_not_empty);
  const std::string msg = refused.error().message();
  for (const std::string& part : {"devdax-whole:" + t.device_, std::to_string(data_at),
                                  std::string("no rawdax label area")}) {
    EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' missing in: " << msg;
  }
  auto init = Region::init(t.spec());
  ASSERT_FALSE(init) << "init without force erased data";
  EXPECT_EQ(init.error().code(), std::errc::file_exists);
  EXPECT_NE(init.error().message().find("devdax-whole:" + t.device_), std::string::npos)
      << init.error().message();
  auto forced = Region::init(t.spec(), {.force = true});
  ASSERT_TRUE(forced) << forced.error().message();
  EXPECT_FALSE(forced->erased.empty());
  auto formatted = Region::open(t.spec());
  ASSERT_TRUE(formatted) << formatted.error().message();
  EXPECT_TRUE((*formatted)->list().empty());
}

struct Registered {
  const char* name;
  void (*body)(DevdaxTest&);
};

bool register_devdax_tests() {
  const std::string device = devdax_under_test();
  if (device.empty()) return false;
  static const Registered tests[] = {
      {"CapabilitiesAreTheDevices", capabilities_are_the_devices},
      {"MapIsAlignedAndCoherentWithTheBlockFace", map_is_aligned_and_coherent_with_the_block_face},
      {"KernelRefusesSplitsOffTheAlignment", kernel_refuses_splits_off_the_alignment},
      {"MisalignedMapIsAClearErrorAndChangesNothing",
       misaligned_map_is_a_clear_error_and_changes_nothing},
      {"FreezeParksStoresUntilThaw", freeze_parks_stores_until_thaw},
      {"LiveSnapshotWhileAWriterStores", live_snapshot_while_a_writer_stores},
      {"PersistedBytesSurviveReopen", persisted_bytes_survive_reopen},
      {"RestoreIntoTheNamespace", restore_into_the_namespace},
      {"RemoveRevokesMappings", remove_revokes_mappings},
      {"DestroyedNamespaceComesBackZeroedAndRestores",
       destroyed_namespace_comes_back_zeroed_and_restores},
      {"WholeDeviceLayoutIsOneNamespace", whole_device_layout_is_one_namespace},
      {"UnlabelledDeviceWithDataIsRefused", unlabelled_device_with_data_is_refused},
  };
  for (const Registered& test : tests) {
    ::testing::RegisterTest("DevdaxTest", test.name, nullptr, device.c_str(), __FILE__, __LINE__,
                            [device, body = test.body]() -> ::testing::Test* {
                              return new DevdaxTest(device, body);
                            });
  }
  return true;
}

[[maybe_unused]] const bool registered = register_devdax_tests();

// --- Everywhere: what is not a device-dax instance is refused by name ---

void expect_refused(const std::string& path, const std::string& says) {
  auto region = Region::open("devdax:" + path);
  ASSERT_FALSE(region) << path << " opened as a devdax region";
  const std::string msg = region.error().message();
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find(says), std::string::npos) << "'" << says << "' missing in: " << msg;
}

TEST(DevdaxRegion, RefusesWhatIsNotADeviceDaxInstance) {
  expect_refused("/dev/null", "not a device-dax instance");
  expect_refused("/dev/null", "class mem");
  testing::ScratchDir scratch(testing::tmpfs_parent());
  const std::string file = scratch.path() + "/plain";
  std::ofstream(file) << "not a device";
  expect_refused(file, "a regular file");
  expect_refused(scratch.path(), "a directory");
  // A block device, where the machine has one (the guest has its disk).
  for (const auto& entry : std::filesystem::directory_iterator("/sys/class/block")) {
    const std::string dev = "/dev/" + entry.path().filename().string();
    struct stat st;
    if (::stat(dev.c_str(), &st) == 0 && S_ISBLK(st.st_mode)) {
      expect_refused(dev, "a block device");
      break;
    }
  }
}

}  // namespace
}  // namespace rawdax

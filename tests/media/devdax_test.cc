// device-dax on a real device: the suite DevdaxTest runs against the device
// named by RAWDAX_TEST_DEVDAX (or RAWDAX_GUEST_DEVDAX, which tests/guest/run
// sets) and is not registered at all when neither names one. Our hosts have
// no device-dax; the guest runner has one (docs/guest.md):
//   tests/guest/run -- build/tests/rawdax_tests --gtest_filter='DevdaxTest.*'
// The tests share the one device and run one after another; each writes the
// bytes it checks. The error paths for what is not a device-dax instance run
// everywhere (DevdaxRegion).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

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

class DevdaxTest : public ::testing::Test {
 public:
  using Body = std::function<void(DevdaxTest&)>;
  DevdaxTest(std::string device, Body body) : device_(std::move(device)), body_(std::move(body)) {}

  void SetUp() override {
    auto region = Region::open("devdax:" + device_);
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
    ASSERT_EQ(region_->list().size(), 1u);
    name_ = region_->list().front().name;
    align_ = region_->capabilities().alignment;
  }
  void TestBody() override { body_(*this); }

  std::unique_ptr<Device> open_device() {
    auto dev = region_->open_device(name_);
    EXPECT_TRUE(dev) << dev.error().message();
    return dev ? std::move(*dev) : nullptr;
  }

  std::string device_;
  Body body_;
  std::unique_ptr<Region> region_;
  std::string name_;
  uint64_t align_ = 0;
};

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
  EXPECT_EQ(t.region_->list().front().size, size);
  EXPECT_EQ(t.region_->list().front().path, t.device_);
  // One namespace, the device: nothing to create or destroy.
  EXPECT_FALSE(t.region_->create_namespace({.name = "second", .size = align}));
  EXPECT_FALSE(t.region_->destroy_namespace(t.name_));
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

void restore_in_place(DevdaxTest& t) {
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
  auto restored = t.region_->restore_namespace(t.name_, path);
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(restored->path, t.device_);
  auto dev = t.open_device();
  ASSERT_TRUE(dev);
  std::vector<std::byte> back(len);
  ASSERT_TRUE(dev->read(t.align_, back));
  EXPECT_EQ(back, before);
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
      {"RestoreInPlace", restore_in_place},
      {"RemoveRevokesMappings", remove_revokes_mappings},
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

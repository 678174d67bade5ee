// Bad input to a carved (file:) region: each case gets an error that says
// what is wrong, and leaves the region as it was (its generation, its
// namespaces, its free space, and the bytes of its label area or file).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "child_process.h"
#include "common/uuid.h"
#include "rawdax/rawdax.h"
#include "region/label_area.h"
#include "snapshot/snapshot_file.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchDir;
namespace fs = std::filesystem;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kRegionBytes = 64 * kMiB;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A child that holds the region open: it opens RAWDAX_CARVED_HOLDER_SPEC,
// writes one byte to the inherited fd RAWDAX_CARVED_HOLDER_READY, and waits
// to be killed.
[[maybe_unused]] const bool kHolderRan = [] {
  const char* spec = std::getenv("RAWDAX_CARVED_HOLDER_SPEC");
  if (spec == nullptr) return false;
  const char* ready = std::getenv("RAWDAX_CARVED_HOLDER_READY");
  if (ready == nullptr) ::_exit(2);
  auto region = Region::open(spec);
  char verdict = region ? 'y' : 'n';
  if (::write(std::atoi(ready), &verdict, 1) != 1) ::_exit(2);
  for (;;) ::pause();
}();

// What must not change when an operation is refused.
struct Observed {
  uint64_t generation = 0;
  std::vector<std::string> namespaces;  // name@offset+size uuid
  uint64_t free = 0, largest_free = 0;
  std::string label_area;
  bool operator==(const Observed&) const = default;
};

class CarvedBadInputTest : public ::testing::Test {
 protected:
  std::string image() const { return dir_.path() + "/region.img"; }
  std::string spec() const { return "file:" + image(); }

  // A region holding a (1 MiB) and c (2 MiB), made in that order.
  std::unique_ptr<Region> make_region() {
    auto r = Region::open(spec(), {.create = true, .file_size = kRegionBytes});
    EXPECT_TRUE(r) << r.error().message();
    if (!r) return nullptr;
    EXPECT_TRUE((*r)->create_namespace({.name = "a", .size = kMiB}));
    EXPECT_TRUE((*r)->create_namespace({.name = "c", .size = 2 * kMiB}));
    return std::move(*r);
  }

  // The file's bytes in [offset, offset+length), clipped to its size.
  std::string file_bytes(uint64_t offset = 0, uint64_t length = UINT64_MAX) const {
    int fd = ::open(image().c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    struct stat st {};
    EXPECT_EQ(::fstat(fd, &st), 0);
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    std::string out(offset >= size ? 0 : std::min(length, size - offset), '\0');
    EXPECT_EQ(::pread(fd, out.data(), out.size(), off_t(offset)), ssize_t(out.size()));
    ::close(fd);
    return out;
  }

  Observed observe(const Region& region) const {
    Observed out;
    out.generation = region.generation();
    for (const auto& ns : region.list()) {
      out.namespaces.push_back(ns.name + "@" + std::to_string(ns.offset) + "+" +
                               std::to_string(ns.size) + " " + ns.uuid);
    }
    RegionSpace space = region.space();
    out.free = space.free;
    out.largest_free = space.largest_free;
    out.label_area = file_bytes(0, space.label_area_size);
    return out;
  }

  // The label state as the file holds it (read with the library's decoder).
  internal::LabelState labels() const {
    std::string area = file_bytes(0, internal::label_area_bytes(::getpagesize()));
    auto state = internal::read_label_area(std::as_bytes(std::span(area.data(), area.size())), spec());
    EXPECT_TRUE(state) << state.error().message();
    return state ? *state : internal::LabelState{};
  }

  void flip_file_byte(uint64_t offset) const {
    int fd = ::open(image().c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    char c = 0;
    ASSERT_EQ(::pread(fd, &c, 1, off_t(offset)), 1);
    c ^= 0x5a;
    ASSERT_EQ(::pwrite(fd, &c, 1, off_t(offset)), 1);
    ::close(fd);
  }

  ScratchDir dir_{::rawdax::testing::tmpfs_parent()};
};

TEST_F(CarvedBadInputTest, MisalignedMapOffsetIsRefused) {
  auto r = make_region();
  ASSERT_TRUE(r);
  const Observed before = observe(*r);
  auto dev = r->open_device("c");
  ASSERT_TRUE(dev);
  const uint64_t align = r->space().align;
  for (uint64_t offset : {uint64_t{1}, align / 2, align + 512}) {
    auto m = (*dev)->map(offset, align, Access::ReadWrite);
    ASSERT_FALSE(m) << offset;
    EXPECT_EQ(m.error().code(), std::errc::invalid_argument);
    EXPECT_TRUE(contains(m.error().message(), "map offset " + std::to_string(offset)))
        << m.error().message();
    EXPECT_TRUE(contains(m.error().message(), std::to_string(align))) << m.error().message();
    EXPECT_TRUE(contains(m.error().message(), "namespace c")) << m.error().message();
  }
  EXPECT_EQ((*dev)->stats().live_mappings, 0u);
  dev->reset();
  EXPECT_EQ(observe(*r), before);
}

TEST_F(CarvedBadInputTest, RestoreOfASnapshotOfUnalignedSizeIsRefused) {
  auto r = make_region();
  ASSERT_TRUE(r);
  const uint64_t align = r->space().align;
  // A snapshot of a namespace whose size is no multiple of this region's
  // align (as a media with smaller pages could hold).
  const uint64_t size = align + 1000;
  const std::string path = dir_.path() + "/odd.snap";
  internal::SnapshotHeader header;
  header.id = internal::new_uuid();
  header.source_uuid = internal::new_uuid();
  header.namespace_size = size;
  header.page_size = align;
  auto writer = internal::SnapshotWriter::create(path, header);
  ASSERT_TRUE(writer) << writer.error().message();
  std::vector<std::byte> data(size, std::byte{0x3c});
  ASSERT_TRUE(writer->write_pages(0, data));
  ASSERT_TRUE(writer->finish());
  ASSERT_TRUE(verify_snapshot(path)) << "the crafted snapshot is itself invalid";

  const Observed before = observe(*r);
  for (const char* name : {"fresh", "c"}) {
    auto restored = r->restore_namespace(name, path, {.force = true});
    ASSERT_FALSE(restored) << name;
    EXPECT_EQ(restored.error().code(), std::errc::invalid_argument);
    const std::string& msg = restored.error().message();
    EXPECT_TRUE(contains(msg, std::to_string(size))) << msg;
    EXPECT_TRUE(contains(msg, std::to_string(align))) << msg;
    EXPECT_TRUE(contains(msg, std::string("namespace ") + name)) << msg;
    EXPECT_EQ(observe(*r), before) << name;
  }
}

TEST_F(CarvedBadInputTest, FullRegionNamesTheLargestFreeExtent) {
  auto r = make_region();
  ASSERT_TRUE(r);
  // Fill all but a small tail, then punch a hole: free space in two pieces.
  RegionSpace space = r->space();
  const uint64_t align = space.align;
  ASSERT_TRUE(r->create_namespace({.name = "hole", .size = 3 * kMiB}));
  ASSERT_TRUE(r->create_namespace({.name = "big", .size = r->space().largest_free - 5 * align}));
  ASSERT_TRUE(r->destroy_namespace("hole"));
  space = r->space();
  ASSERT_EQ(space.largest_free, 3 * kMiB);
  ASSERT_EQ(space.free, 3 * kMiB + 5 * align);
  const Observed before = observe(*r);
  for (uint64_t size : {3 * kMiB + align, space.free, 64 * kMiB}) {
    auto made = r->create_namespace({.name = "toobig", .size = size});
    ASSERT_FALSE(made) << size;
    EXPECT_EQ(made.error().code(), std::errc::no_space_on_device);
    const std::string& msg = made.error().message();
    EXPECT_TRUE(contains(msg, "the largest free extent has " + std::to_string(3 * kMiB))) << msg;
    EXPECT_TRUE(contains(msg, std::to_string(size))) << msg;
    EXPECT_TRUE(contains(msg, "namespace toobig")) << msg;
    EXPECT_EQ(observe(*r), before);
  }
  // Growing a in place: c follows it directly.
  auto a = r->open_device("a");
  ASSERT_TRUE(a);
  Status grown = (*a)->resize(2 * kMiB);
  ASSERT_FALSE(grown);
  EXPECT_EQ(grown.error().code(), std::errc::no_space_on_device);
  EXPECT_TRUE(contains(grown.error().message(), "namespace a")) << grown.error().message();
  EXPECT_TRUE(contains(grown.error().message(),
                       "the largest size that fits in place is " + std::to_string(kMiB)))
      << grown.error().message();
  EXPECT_EQ((*a)->size(), kMiB);
  a->reset();
  EXPECT_EQ(observe(*r), before);
}

TEST_F(CarvedBadInputTest, TakenNameIsEEXIST) {
  auto r = make_region();
  ASSERT_TRUE(r);
  const Observed before = observe(*r);
  for (uint64_t size : {kMiB, 2 * kMiB, 4096 * uint64_t{3}}) {
    auto made = r->create_namespace({.name = "a", .size = size});
    ASSERT_FALSE(made);
    EXPECT_EQ(made.error().code(), std::errc::file_exists);
    EXPECT_TRUE(contains(made.error().message(), "namespace a")) << made.error().message();
    EXPECT_EQ(observe(*r), before);
  }
}

TEST_F(CarvedBadInputTest, CorruptNewestIndexOpensThePreviousState) {
  {
    auto r = make_region();
    ASSERT_TRUE(r);
  }
  const internal::LabelState state = labels();
  ASSERT_EQ(state.labels.size(), 2u);
  flip_file_byte(uint64_t(state.current_block) * internal::kIndexBlockBytes + 24);
  auto r = Region::open(spec());
  ASSERT_TRUE(r) << r.error().message();
  // The update that made c is lost; a is there.
  auto listed = (*r)->list();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].name, "a");
  const std::string why = (*r)->space().recovered_from;
  EXPECT_TRUE(contains(why, "index block " + std::to_string(state.current_block))) << why;
  // The region goes on from there: an update writes a whole new state.
  ASSERT_TRUE((*r)->create_namespace({.name = "d", .size = kMiB}));
  r->reset();
  auto again = Region::open(spec());
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_TRUE((*again)->space().recovered_from.empty()) << (*again)->space().recovered_from;
  EXPECT_EQ((*again)->list().size(), 2u);
}

TEST_F(CarvedBadInputTest, CorruptLabelOfTheNewestIndexOpensThePreviousState) {
  {
    auto r = make_region();
    ASSERT_TRUE(r);
  }
  const internal::LabelState state = labels();
  // c's slot: written by the last update only.
  uint32_t slot = UINT32_MAX;
  for (size_t i = 0; i < state.labels.size(); ++i) {
    if (state.labels[i].name == "c") slot = state.slots[i];
  }
  ASSERT_NE(slot, UINT32_MAX);
  flip_file_byte(internal::kLabelSlotsOffset + uint64_t{slot} * internal::kLabelSlotBytes + 80);  // its name
  auto r = Region::open(spec());
  ASSERT_TRUE(r) << r.error().message();
  auto listed = (*r)->list();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].name, "a");
  const std::string why = (*r)->space().recovered_from;
  EXPECT_TRUE(contains(why, "label slot " + std::to_string(slot))) << why;
}

TEST_F(CarvedBadInputTest, BothIndexBlocksCorruptIsRefusedNamingTheFile) {
  {
    auto r = make_region();
    ASSERT_TRUE(r);
  }
  flip_file_byte(24);
  flip_file_byte(internal::kIndexBlockBytes + 24);
  const std::string before = file_bytes();
  for (bool create : {false, true}) {
    auto r = Region::open(spec(), {.create = create});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), std::errc::illegal_byte_sequence);
    EXPECT_TRUE(contains(r.error().message(), image())) << r.error().message();
    EXPECT_TRUE(file_bytes() == before) << "a refused open changed the file";
  }
  // init refuses to erase it unasked, and says what it holds.
  auto refused = Region::init(spec());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::file_exists);
  EXPECT_TRUE(contains(refused.error().message(), "corrupt")) << refused.error().message();
  EXPECT_TRUE(file_bytes() == before);
  auto forced = Region::init(spec(), {.force = true});
  ASSERT_TRUE(forced) << forced.error().message();
  auto r = Region::open(spec());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE((*r)->list().empty());
}

TEST_F(CarvedBadInputTest, DeviceSizeChangedUnderTheLabelsIsRefused) {
  {
    auto r = make_region();
    ASSERT_TRUE(r);
  }
  const uint64_t align = 4096;
  for (uint64_t new_size : {kRegionBytes + kMiB, kRegionBytes - kMiB, kRegionBytes + align}) {
    ASSERT_EQ(::truncate(image().c_str(), off_t(new_size)), 0);
    const std::string before = file_bytes();
    auto r = Region::open(spec());
    ASSERT_FALSE(r) << new_size;
    EXPECT_EQ(r.error().code(), std::errc::illegal_byte_sequence);
    const std::string& msg = r.error().message();
    EXPECT_TRUE(contains(msg, std::to_string(kRegionBytes))) << msg;
    EXPECT_TRUE(contains(msg, std::to_string(new_size))) << msg;
    EXPECT_TRUE(contains(msg, image())) << msg;
    EXPECT_TRUE(file_bytes() == before) << "a refused open changed the file";
    EXPECT_EQ(fs::file_size(image()), new_size);
    ASSERT_EQ(::truncate(image().c_str(), off_t(kRegionBytes)), 0);
  }
  // Back at its size, it opens as it was.
  auto r = Region::open(spec());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)->list().size(), 2u);
}

TEST_F(CarvedBadInputTest, SecondOpenInThisProcessIsEBUSYNamingThisPid) {
  auto r = make_region();
  ASSERT_TRUE(r);
  const Observed before = observe(*r);
  auto second = Region::open(spec());
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), std::errc::device_or_resource_busy);
  EXPECT_TRUE(contains(second.error().message(), "pid " + std::to_string(::getpid())))
      << second.error().message();
  auto init = Region::init(spec(), {.force = true});
  ASSERT_FALSE(init);
  EXPECT_EQ(init.error().code(), std::errc::device_or_resource_busy);
  EXPECT_EQ(observe(*r), before);
}

TEST_F(CarvedBadInputTest, OpenWhileAnotherProcessHoldsItIsEBUSYNamingThatPid) {
  {
    auto r = make_region();
    ASSERT_TRUE(r);
  }
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);  // inherited by the child: no close-on-exec
  pid_t child = ::rawdax::testing::spawn_self(
      {"RAWDAX_CARVED_HOLDER_SPEC=" + spec(),
       "RAWDAX_CARVED_HOLDER_READY=" + std::to_string(ready[1])},
      "RAWDAX_CARVED_HOLDER_");
  ASSERT_GT(child, 0);
  ::close(ready[1]);
  char verdict = 0;
  ASSERT_EQ(::read(ready[0], &verdict, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(verdict, 'y') << "the child could not open the region";
  const std::string before = file_bytes();
  auto r = Region::open(spec());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), std::errc::device_or_resource_busy);
  EXPECT_TRUE(contains(r.error().message(), "pid " + std::to_string(child)))
      << r.error().message();
  EXPECT_TRUE(file_bytes() == before);
  // The kernel drops the lock with the holder.
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  EXPECT_EQ(::rawdax::testing::wait_child(child), 128 + SIGKILL);
  auto after = Region::open(spec());
  ASSERT_TRUE(after) << after.error().message();
  EXPECT_EQ((*after)->list().size(), 2u);
}

TEST_F(CarvedBadInputTest, DataWithoutALabelAreaIsRefusedUntilInitForce) {
  // A file with data and no label area: one byte in the label area's range
  // (past the index blocks) and one in the data area.
  const uint64_t in_area = 100000, in_data = 5 * kMiB + 123;
  {
    std::ofstream out(image(), std::ios::binary);
    out.seekp(off_t(kRegionBytes - 1));
    out.put('\0');
  }
  auto put = [&](uint64_t at) {
    int fd = ::open(image().c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "x", 1, off_t(at)), 1);
    ::close(fd);
  };
  put(in_data);
  std::string before = file_bytes();
  // Without create only the label area is looked at: no labels, and no
  // data there either.
  auto plain = Region::open(spec());
  ASSERT_FALSE(plain);
  EXPECT_EQ(plain.error().code(), std::errc::no_such_file_or_directory);
  EXPECT_TRUE(contains(plain.error().message(), "no rawdax label area")) << plain.error().message();
  EXPECT_TRUE(file_bytes() == before);
  // Opening with create would format it: the whole file is looked at first.
  auto r = Region::open(spec(), {.create = true});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), std::errc::directory_not_empty);
  EXPECT_TRUE(contains(r.error().message(), "offset " + std::to_string(in_data)))
      << r.error().message();
  EXPECT_TRUE(file_bytes() == before);
  put(in_area);
  before = file_bytes();
  for (bool create : {false, true}) {
    r = Region::open(spec(), {.create = create});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), std::errc::directory_not_empty);
    EXPECT_TRUE(contains(r.error().message(), "offset " + std::to_string(in_area)))
        << r.error().message();
    EXPECT_TRUE(file_bytes() == before);
  }
  auto refused = Region::init(spec());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::file_exists);
  EXPECT_TRUE(contains(refused.error().message(), "offset " + std::to_string(in_area)))
      << refused.error().message();
  EXPECT_TRUE(file_bytes() == before);

  auto forced = Region::init(spec(), {.force = true});
  ASSERT_TRUE(forced) << forced.error().message();
  EXPECT_FALSE(forced->erased.empty());
  EXPECT_EQ(forced->device_size, kRegionBytes);
  auto opened = Region::open(spec());
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_TRUE((*opened)->list().empty());
  // A new namespace over the old data reads as zeros.
  auto made = (*opened)->create_namespace({.name = "n", .size = 8 * kMiB});
  ASSERT_TRUE(made) << made.error().message();
  ASSERT_LE(made->offset, in_data);
  ASSERT_GT(made->offset + made->size, in_data);
  auto dev = (*opened)->open_device("n");
  ASSERT_TRUE(dev);
  std::byte got{0x7f};
  ASSERT_TRUE((*dev)->read(in_data - made->offset, std::span<std::byte>(&got, 1)));
  EXPECT_EQ(got, std::byte{0});
}

TEST_F(CarvedBadInputTest, InitOnARegionWithNamespacesNeedsForce) {
  {
    auto r = make_region();
    ASSERT_TRUE(r);
  }
  const std::string before = file_bytes();
  auto refused = Region::init(spec());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::file_exists);
  const std::string& msg = refused.error().message();
  EXPECT_TRUE(contains(msg, "a (")) << msg;
  EXPECT_TRUE(contains(msg, "c (")) << msg;
  EXPECT_TRUE(contains(msg, "2 namespace")) << msg;
  EXPECT_TRUE(file_bytes() == before) << "a refused init changed the file";
  {
    auto r = Region::open(spec());
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ((*r)->list().size(), 2u);
  }

  auto forced = Region::init(spec(), {.force = true});
  ASSERT_TRUE(forced) << forced.error().message();
  EXPECT_TRUE(contains(forced->erased, "a (")) << forced->erased;
  EXPECT_TRUE(contains(forced->erased, "c (")) << forced->erased;
  auto r = Region::open(spec());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE((*r)->list().empty());
  RegionSpace space = (*r)->space();
  EXPECT_EQ(space.free, space.device_size - space.label_area_size);
}

}  // namespace
}  // namespace rawdax

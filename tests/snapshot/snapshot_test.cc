// Snapshots: one cut, full and incremental chains, restore, verify, and
// refusal of every kind of damage with nothing created.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <optional>
#include <thread>
#include <gtest/gtest.h>
#include <random>
#include <vector>

#include "engine/write_tracker.h"
#include "rawdax/rawdax.h"
#include "snapshot/snapshot_file.h"
#include "test_util.h"

namespace rawdax {
namespace {

using ::rawdax::testing::ScratchDir;
using ::rawdax::testing::ScratchRegion;
using ::rawdax::testing::TestMedia;

constexpr uint64_t kMiB = uint64_t{1} << 20;
// The large namespaces, whose copy must take long next to one page's copy
// (2 MiB on hugetlbfs).
constexpr uint64_t kBig = 256 * kMiB;

class SnapshotTest : public ::testing::TestWithParam<TestMedia> {
 protected:
  void SetUp() override {
    auto region = Region::open(scratch_.spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
    // 1 MiB, and at least 16 pages: 256 pages of 4 KiB, 16 of 2 MiB.
    page_ = region_->capabilities().page_size;
    pages_ = std::clamp<uint64_t>(kMiB / page_, 16, 256);
    size_ = pages_ * page_;
    ASSERT_TRUE(region_->create_namespace({.name = "src", .size = size_}));
    auto dev = region_->open_device("src", {.track_dirty = true});
    ASSERT_TRUE(dev) << dev.error().message();
    dev_ = std::move(*dev);
  }
  std::string file(const std::string& name) const { return files_.path() + "/" + name; }
  void stress_block_and_mapping_writers(const DeviceOptions& options);
  // The pages an incremental stores when `written` pages changed since its
  // base and a mapping covers the whole namespace: exactly those where the
  // engine tracks pages; every mapped page where the mprotect engine has no
  // kernel tracker (Linux before 6.7: whole-range tracking, docs/engine.md).
  uint64_t incremental_pages(uint64_t written) const {
    bool whole_range = dev_->engine() == ProtectionEngine::kMprotect &&
                       !internal::write_tracker_supported();
    return whole_range ? pages_ : written;
  }
  void fill_page(uint64_t page, uint8_t value) {
    std::vector<std::byte> buf(page_, std::byte{value});
    ASSERT_TRUE(dev_->write(page * page_, buf));
  }
  std::vector<std::byte> contents(const std::string& name) {
    auto dev = region_->open_device(name);
    EXPECT_TRUE(dev) << dev.error().message();
    std::vector<std::byte> out(dev ? (*dev)->size() : 0);
    if (dev) {
      EXPECT_TRUE((*dev)->read(0, out));
    }
    return out;
  }
  std::vector<std::byte> source() {
    std::vector<std::byte> out(size_);
    EXPECT_TRUE(dev_->read(0, out));
    return out;
  }
  void flip_byte(const std::string& path, uint64_t offset) {
    int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char c;
    ASSERT_EQ(::pread(fd, &c, 1, static_cast<off_t>(offset)), 1);
    c = static_cast<char>(c ^ 0x40);
    ASSERT_EQ(::pwrite(fd, &c, 1, static_cast<off_t>(offset)), 1);
    ::close(fd);
  }
  // A restore that must fail with `text` and leave no namespace behind.
  void expect_refused(const std::string& path, const std::string& text) {
    auto restored = region_->restore_namespace("victim", path);
    ASSERT_FALSE(restored) << path;
    EXPECT_NE(restored.error().message().find(text), std::string::npos)
        << restored.error().message();
    EXPECT_FALSE(region_->find("victim")) << "a refused restore created the namespace";
    auto verified = verify_snapshot(path);
    ASSERT_FALSE(verified);
    EXPECT_NE(verified.error().message().find(text), std::string::npos)
        << verified.error().message();
  }

  ScratchRegion scratch_{GetParam()};
  ScratchDir files_{::rawdax::testing::disk_parent()};
  std::unique_ptr<Region> region_;
  std::unique_ptr<Device> dev_;
  uint64_t page_ = 0;   // the media's page: snapshots store whole pages
  uint64_t pages_ = 0;  // of the namespace "src"
  uint64_t size_ = 0;
};

TEST_P(SnapshotTest, FullSnapshotStoresNoHolesAndRestoresExactly) {
  // Six distinct pages whatever pages_ is (256: 0 3 4 100 255 129; 16: 0 3 4 6 15 9).
  for (uint64_t page : {uint64_t{0}, uint64_t{3}, uint64_t{4}, pages_ * 100 / 256, pages_ - 1}) {
    fill_page(page, static_cast<uint8_t>(page % 200 + 1));
  }
  auto m = dev_->map(0, size_, Access::ReadWrite);
  ASSERT_TRUE(m);
  m->data()[(pages_ / 2 + 1) * page_ + 7] = std::byte{9};  // a store through a mapping counts too
  uint64_t last_done = 0, last_total = 0, calls = 0;
  auto info = dev_->snapshot(file("full.snap"), {.progress = [&](uint64_t done, uint64_t total) {
                                                   EXPECT_GE(done, last_done);
                                                   last_done = done;
                                                   last_total = total;
                                                   ++calls;
                                                 }});
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_GE(calls, 1u);
  EXPECT_EQ(last_done, size_ / page_);  // the last report is complete
  EXPECT_EQ(last_total, size_ / page_);
  EXPECT_EQ(info->pages, 6u);  // the hole pages of the sparse namespace are not stored
  EXPECT_EQ(info->bytes_written, 6 * page_);
  EXPECT_TRUE(info->base_id.empty());
  EXPECT_FALSE(std::filesystem::exists(file("full.snap") + ".tmp." + std::to_string(::getpid())));

  auto chain = verify_snapshot(file("full.snap"));
  ASSERT_TRUE(chain) << chain.error().message();
  ASSERT_EQ(chain->size(), 1u);
  EXPECT_EQ((*chain)[0].id, info->id);

  auto restored = region_->restore_namespace("copy", file("full.snap"));
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(restored->size, size_);
  EXPECT_EQ(contents("copy"), source());
}

TEST_P(SnapshotTest, IncrementalChainEqualsTheSource) {
  for (uint64_t page = 0; page < pages_; page += 2) fill_page(page, 1);
  auto full = dev_->snapshot(file("a.snap"));
  ASSERT_TRUE(full) << full.error().message();
  fill_page(1, 2);
  fill_page(2, 2);
  auto m = dev_->map(0, size_, Access::ReadWrite);
  ASSERT_TRUE(m);
  m->data()[pages_ * 77 / 256 * page_] = std::byte{3};  // page 77 of 256, 4 of 16
  auto inc1 = dev_->snapshot(file("b.snap"), {.base = file("a.snap")});
  ASSERT_TRUE(inc1) << inc1.error().message();
  EXPECT_EQ(inc1->pages, incremental_pages(3));  // the pages written since the base
  EXPECT_EQ(inc1->base_id, full->id);
  std::vector<std::byte> zero(page_);
  ASSERT_TRUE(dev_->write(4 * page_, zero));  // zeroing is a change too
  m->data()[pages_ * 200 / 256 * page_ + 1] = std::byte{4};  // page 200 of 256, 12 of 16
  auto inc2 = dev_->snapshot(file("c.snap"), {.base = file("b.snap")});
  ASSERT_TRUE(inc2) << inc2.error().message();
  EXPECT_EQ(inc2->pages, incremental_pages(2));

  EXPECT_EQ(inc2->base_path, "b.snap");  // recorded relative to its own directory

  auto chain = verify_snapshot(file("c.snap"));
  ASSERT_TRUE(chain) << chain.error().message();
  EXPECT_EQ(chain->size(), 3u);
  auto restored = region_->restore_namespace("copy", file("c.snap"));
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(contents("copy"), source());
}

TEST_P(SnapshotTest, IncrementalFromAnOlderBaseStoresWhatDiffersFromIt) {
  fill_page(1, 1);
  ASSERT_TRUE(dev_->snapshot(file("a.snap")));
  fill_page(2, 2);
  auto b = dev_->snapshot(file("b.snap"), {.base = file("a.snap")});  // from tracking
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(b->pages, 1u);
  fill_page(3, 3);
  fill_page(1, 1);  // written, but as in a.snap: not a change against it
  // a.snap is no longer the device's last snapshot: compared page by page.
  auto c = dev_->snapshot(file("c.snap"), {.base = file("a.snap")});
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->pages, 2u);  // pages 2 and 3
  auto restored = region_->restore_namespace("copy", file("c.snap"));
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(contents("copy"), source());

  // A device without tracking (the CLI's, in a fresh process) compares too,
  // against the whole chain.
  dev_.reset();
  auto plain = region_->open_device("src");
  ASSERT_TRUE(plain);
  std::vector<std::byte> zero(page_);
  ASSERT_TRUE((*plain)->write(2 * page_, zero));
  auto d = (*plain)->snapshot(file("d.snap"), {.base = file("c.snap")});
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->pages, 1u);  // page 2, zeroed
  auto again = region_->restore_namespace("copy2", file("d.snap"));
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(contents("copy2"), contents("src"));

  auto missing = (*plain)->snapshot(file("e.snap"), {.base = file("nope.snap")});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("nope.snap"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(file("e.snap")));
}

TEST_P(SnapshotTest, DamageIsRefusedAndNothingIsCreated) {
  for (uint64_t page : {1, 2, 9}) fill_page(page, 7);
  ASSERT_TRUE(dev_->snapshot(file("a.snap")));
  fill_page(9, 8);
  ASSERT_TRUE(dev_->snapshot(file("b.snap"), {.base = file("a.snap")}));

  // A flipped byte in a stored page.
  std::filesystem::copy_file(file("a.snap"), file("flip.snap"));
  auto header = verify_snapshot(file("a.snap"));
  ASSERT_TRUE(header);
  uint64_t size = std::filesystem::file_size(file("flip.snap"));
  flip_byte(file("flip.snap"), size - size_ + 2 * page_ + 100);  // data area: page 2
  expect_refused(file("flip.snap"), "fails its checksum");

  // A truncated file.
  std::filesystem::copy_file(file("a.snap"), file("short.snap"));
  std::filesystem::resize_file(file("short.snap"), size / 2);
  expect_refused(file("short.snap"), "truncated");

  // A flipped byte in the header.
  std::filesystem::copy_file(file("a.snap"), file("head.snap"));
  flip_byte(file("head.snap"), 40);
  expect_refused(file("head.snap"), "snapshot");

  // A wrong base: the incremental's recorded base replaced by another snapshot.
  std::filesystem::rename(file("a.snap"), file("a.orig"));
  ASSERT_TRUE(dev_->snapshot(file("a.snap")));  // a new full snapshot under the old name
  expect_refused(file("b.snap"), "expected");

  // The base changed after the incremental was made: its data is damaged.
  std::filesystem::remove(file("a.snap"));
  std::filesystem::copy_file(file("a.orig"), file("a.snap"));
  flip_byte(file("a.snap"), size - size_ + 1 * page_ + 5);
  expect_refused(file("b.snap"), "fails its checksum");
}

TEST_P(SnapshotTest, RestoreRefusesAnotherSizeUnlessForced) {
  fill_page(5, 5);
  ASSERT_TRUE(dev_->snapshot(file("a.snap")));
  const uint64_t small = size_ / 16;
  ASSERT_TRUE(region_->create_namespace({.name = "small", .size = small}));
  auto refused = region_->restore_namespace("small", file("a.snap"));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("force"), std::string::npos);
  EXPECT_EQ(region_->find("small")->size, small);
  auto forced = region_->restore_namespace("small", file("a.snap"), {.force = true});
  ASSERT_TRUE(forced) << forced.error().message();
  EXPECT_EQ(forced->size, size_);
  EXPECT_EQ(contents("small"), source());
}

TEST_P(SnapshotTest, TooManyCopyThreadsIsRefusedAndNothingIsWritten) {
  auto info = dev_->snapshot(file("many.snap"), {.copy_threads = kMaxSnapshotCopyThreads + 1});
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), std::make_error_code(std::errc::invalid_argument));
  EXPECT_NE(info.error().message().find("namespace src: snapshot " + file("many.snap") +
                                        ": copy_threads 65 is more than 64"),
            std::string::npos)
      << info.error().message();
  EXPECT_TRUE(std::filesystem::is_empty(files_.path()));
}

TEST_P(SnapshotTest, SnapshotAfterRemoveFailsClearly) {
  ASSERT_TRUE(dev_->remove());
  auto snap = dev_->snapshot(file("x.snap"));
  ASSERT_FALSE(snap);
  EXPECT_EQ(snap.error().code(), std::errc::no_such_device_or_address);
  EXPECT_FALSE(std::filesystem::exists(file("x.snap")));
}

// A writer sweeps every page of the namespace storing the pass number, so at
// any instant pages [0,k) hold v and [k,P) hold v-1. A restored snapshot must
// have exactly that shape: one cut. And the cut must lie within the
// snapshot's own call: each page holds at least what the writer had stored
// there before the call began and at most what it had stored when the call
// returned (so a stale image, or an incremental that stored nothing, fails).
// The media, and the uffd engine's fault mode the source is opened with
// (kAuto: what a default open gets).
struct OneCutCase {
  TestMedia media;
  UffdFaults faults = UffdFaults::kAuto;
};

// Every selected media as a default open gets it, and the media of the uffd
// engine again with faults resolved in the faulting thread.
std::vector<OneCutCase> one_cut_cases() {
  std::vector<OneCutCase> out;
  for (TestMedia media : ::rawdax::testing::all_media()) out.push_back({media});
  for (TestMedia media : ::rawdax::testing::all_media()) {
    if (media == TestMedia::kTmpfs || media == TestMedia::kMemfd || media == TestMedia::kCarved ||
        media == TestMedia::kHugetlbfs) {
      out.push_back({media, UffdFaults::kFaultingThread});
    }
  }
  return out;
}

std::string one_cut_name(const ::testing::TestParamInfo<OneCutCase>& info) {
  return std::string(::rawdax::testing::media_name(info.param.media)) +
         (info.param.faults == UffdFaults::kFaultingThread ? "_faulting_thread" : "");
}

class OneCutTest : public ::testing::TestWithParam<OneCutCase> {
 protected:
  void SetUp() override {
    auto region = Region::open(scratch_.spec(), {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
    page_ = region_->capabilities().page_size;
    big_ = kBig;
    pages_ = big_ / page_;
    ASSERT_TRUE(region_->create_namespace({.name = "src", .size = big_}));
    auto dev = region_->open_device("src", {.track_dirty = true, .uffd_faults = GetParam().faults});
    ASSERT_TRUE(dev) << dev.error().message();
    dev_ = std::move(*dev);
    if (GetParam().faults != UffdFaults::kAuto) {
      ASSERT_EQ(dev_->uffd_faults(), GetParam().faults);
    }
    auto m = dev_->map(0, big_, Access::ReadWrite);
    ASSERT_TRUE(m);
    mapping_ = std::move(*m);
    writer_ = std::thread([this] {
      auto* base = mapping_->data();
      uint64_t stores = 0;
      for (uint64_t pass = 1; !stop_.load(std::memory_order_relaxed); ++pass) {
        for (uint64_t k = 0; k < pages_; ++k) {
          auto t0 = std::chrono::steady_clock::now();
          *reinterpret_cast<volatile uint64_t*>(base + k * page_) = pass;
          // Release: whoever reads the count sees the store it counts.
          stores_.store(++stores, std::memory_order_release);
          auto ns = static_cast<uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
                  .count());
          if (ns > max_store_ns_.load(std::memory_order_relaxed)) max_store_ns_.store(ns);
        }
        passes_.store(pass);
      }
    });
    while (passes_.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  void TearDown() override {
    stop_.store(true);
    if (writer_.joinable()) writer_.join();
  }
  std::string file(const std::string& name) const { return files_.path() + "/" + name; }

  // What page k holds after the writer's first `stores` stores: how many of
  // them went to page k, i.e. the pass number of the last one.
  uint64_t written_by(uint64_t stores, uint64_t k) const {
    return stores > k ? (stores - k + pages_ - 1) / pages_ : 0;
  }

  // The writer's stores before a snapshot call and after it returned.
  struct Window {
    uint64_t before = 0, after = 0;
  };
  Result<SnapshotInfo> snapshot(const std::string& name, Window* window,
                                SnapshotOptions options = {}) {
    window->before = stores_.load(std::memory_order_acquire);
    auto info = dev_->snapshot(file(name), options);
    window->after = stores_.load(std::memory_order_acquire);
    return info;
  }
  // Waits until the writer has stored into every page again since `since`
  // (and one more), so every page differs from any image taken before.
  void wait_for_a_new_pass(uint64_t since) {
    ASSERT_TRUE(::rawdax::testing::eventually(
        [&] { return stores_.load(std::memory_order_acquire) > since + pages_; },
        std::chrono::seconds(120)));
  }

  // Restores `path` and checks the pass numbers form one cut, taken within
  // `window`.
  void expect_one_cut(const std::string& path, const std::string& into, Window window) {
    auto restored = region_->restore_namespace(into, path);
    ASSERT_TRUE(restored) << restored.error().message();
    auto dev = region_->open_device(into);
    ASSERT_TRUE(dev);
    std::vector<uint64_t> first(pages_);
    for (uint64_t k = 0; k < pages_; ++k) {
      ASSERT_TRUE((*dev)->read(k * page_, std::as_writable_bytes(std::span(&first[k], 1))));
    }
    for (uint64_t k = 0; k < pages_; ++k) {
      ASSERT_GE(first[k], written_by(window.before, k))
          << path << ": page " << k << " is older than the snapshot's start";
      // The store after the last one counted may have landed uncounted.
      ASSERT_LE(first[k], written_by(window.after + 1, k))
          << path << ": page " << k << " is newer than the snapshot's end";
    }
    uint64_t v = first[0], cuts = 0;
    for (uint64_t k = 1; k < pages_; ++k) {
      if (first[k] == first[k - 1]) continue;
      ++cuts;
      ASSERT_EQ(first[k] + 1, first[k - 1]) << path << ": page " << k << " holds " << first[k]
                                            << " after " << first[k - 1];
    }
    EXPECT_LE(cuts, 1u) << path << ": the image is not one cut";
    EXPECT_GE(v, 1u);
    // Room for the next copy (hugetlbfs in the guest holds few).
    dev->reset();
    ASSERT_TRUE(region_->destroy_namespace(into));
  }

  ScratchRegion scratch_{GetParam().media};
  ScratchDir files_{::rawdax::testing::disk_parent()};
  std::unique_ptr<Region> region_;
  std::unique_ptr<Device> dev_;
  std::optional<Mapping> mapping_;
  std::thread writer_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> passes_{0}, max_store_ns_{0};
  std::atomic<uint64_t> stores_{0};  // the writer's stores so far
  uint64_t page_ = 0, big_ = 0, pages_ = 0;  // set before the writer starts
};

TEST_P(OneCutTest, FullSnapshotWhileAWriterSweeps) {
  max_store_ns_.store(0);
  Window window;
  auto info = snapshot("full.snap", &window);
  ASSERT_TRUE(info) << info.error().message();
  uint64_t worst = max_store_ns_.load();
  std::printf("%s: snapshot of %llu MiB took %.1f ms; writer's worst store %.3f ms; "
              "reported stall %.3f ms\n",
              ::rawdax::testing::media_name(GetParam().media),
              static_cast<unsigned long long>(big_ / kMiB), info->duration_ns / 1e6, worst / 1e6,
              info->max_writer_stall_ns / 1e6);
  // Live on both engines: a writer waits for at most a page copy (uffd) or
  // two 2 MiB chunk copies (mprotect), never for the whole copy.
  EXPECT_LT(worst * 2, info->duration_ns);
  expect_one_cut(file("full.snap"), "copy", window);
}

// The background pass on one thread and on several: every chunk is copied
// once, by one of them, and the image is still one cut.
TEST_P(OneCutTest, OneCutWhateverTheNumberOfCopyThreads) {
  for (unsigned threads : {1u, 4u}) {
    const std::string name = "threads-" + std::to_string(threads);
    Window window;
    auto info = snapshot(name + ".snap", &window, {.copy_threads = threads});
    ASSERT_TRUE(info) << info.error().message();
    EXPECT_EQ(info->pages, pages_) << threads << " threads";
    expect_one_cut(file(name + ".snap"), name, window);
  }
}

// Each incremental follows a full pass of the writer, so every page changed
// since its base: restored, each link of the chain must show its own cut.
TEST_P(OneCutTest, IncrementalChainWhileAWriterSweeps) {
  Window a, b, c;
  ASSERT_TRUE(snapshot("a.snap", &a));
  wait_for_a_new_pass(a.after);
  ASSERT_TRUE(snapshot("b.snap", &b, {.base = file("a.snap")}));
  wait_for_a_new_pass(b.after);
  auto last = snapshot("c.snap", &c, {.base = file("b.snap")});
  ASSERT_TRUE(last) << last.error().message();
  EXPECT_LT(last->pages, pages_ + 1);
  expect_one_cut(file("a.snap"), "copy-a", a);
  expect_one_cut(file("b.snap"), "copy-b", b);
  expect_one_cut(file("c.snap"), "copy-c", c);
}

// Holds a snapshot inside: its progress callback blocks at the last report
// (the pages are copied, the file not yet finished) until release(), and
// the snapshot runs on its own thread. Destroying it releases and joins.
class HeldSnapshot {
 public:
  HeldSnapshot(Device& dev, std::string path) {
    SnapshotOptions options;
    options.progress = [this](uint64_t done, uint64_t total) {
      if (done != total) return;
      inside_.set_value();
      released_.wait();
    };
    result_ = std::async(std::launch::async, [&dev, path = std::move(path), options] {
      return dev.snapshot(path, options);
    });
  }
  ~HeldSnapshot() {
    release();
    if (result_.valid()) result_.wait();
  }
  HeldSnapshot(const HeldSnapshot&) = delete;
  HeldSnapshot& operator=(const HeldSnapshot&) = delete;

  // Whether the snapshot reached its last progress report within `limit`.
  bool wait_inside(std::chrono::seconds limit) {
    return inside_future_.wait_for(limit) == std::future_status::ready;
  }
  void release() {
    if (!released_flag_.exchange(true)) release_.set_value();
  }
  Result<SnapshotInfo> get() { return result_.get(); }

 private:
  std::promise<void> inside_;
  std::future<void> inside_future_ = inside_.get_future();
  std::promise<void> release_;
  std::shared_future<void> released_ = release_.get_future().share();
  std::atomic<bool> released_flag_{false};
  std::future<Result<SnapshotInfo>> result_;
};

// Longest wait for a snapshot of a 1 MiB namespace that must complete: a
// failure bound (under TSan too), not a measure of speed.
constexpr auto kMustComplete = std::chrono::seconds(30);

// Snapshots of two namespaces run in parallel: while a snapshot of "src" is
// held inside, a snapshot of another namespace completes (with one snapshot
// at a time per process, it would wait for the held one).
TEST_P(SnapshotTest, ParallelAcrossNamespacesWhileOneIsHeld) {
  ASSERT_TRUE(region_->create_namespace({.name = "other", .size = size_}));
  auto other = region_->open_device("other");
  ASSERT_TRUE(other) << other.error().message();
  std::vector<std::byte> ones(page_, std::byte{1}), twos(page_, std::byte{2});
  ASSERT_TRUE(dev_->write(0, ones));
  ASSERT_TRUE((*other)->write(page_, twos));

  // Declared first, so that a failure releases the held one before waiting
  // for this one (which, failing, waits for the held one).
  std::future<Result<SnapshotInfo>> parallel;
  HeldSnapshot held(*dev_, file("held.snap"));
  ASSERT_TRUE(held.wait_inside(kMustComplete)) << "the held snapshot never reached its end";
  parallel = std::async(std::launch::async, [&] { return (*other)->snapshot(file("other.snap")); });
  ASSERT_EQ(parallel.wait_for(kMustComplete), std::future_status::ready)
      << "a snapshot of another namespace waited for the one held inside";
  auto info = parallel.get();
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->pages, 1u);
  EXPECT_FALSE(std::filesystem::exists(file("held.snap"))) << "the held one finished early";

  held.release();
  auto held_info = held.get();
  ASSERT_TRUE(held_info) << held_info.error().message();
  EXPECT_EQ(held_info->pages, 1u);
  ASSERT_TRUE(region_->restore_namespace("copy-other", file("other.snap")));
  EXPECT_EQ(contents("copy-other"), contents("other"));
  ASSERT_TRUE(region_->restore_namespace("copy-src", file("held.snap")));
  EXPECT_EQ(contents("copy-src"), source());
}

// A second snapshot of the same namespace while one is in progress waits for
// it and is then taken after it: it is the namespace's last snapshot, so an
// incremental on it stores exactly the pages written since (by tracking).
TEST_P(SnapshotTest, SerializedWithinANamespaceTheSecondWaits) {
  fill_page(0, 1);
  std::atomic<bool> first_done{false};
  std::atomic<bool> second_ran_early{false};
  SnapshotOptions second_options;
  second_options.progress = [&](uint64_t, uint64_t) {
    if (!first_done.load()) second_ran_early.store(true);
  };
  std::future<Result<SnapshotInfo>> second;  // first: see ParallelAcrossNamespaces
  HeldSnapshot held(*dev_, file("first.snap"));
  ASSERT_TRUE(held.wait_inside(kMustComplete)) << "the held snapshot never reached its end";
  second = std::async(std::launch::async, [&] {
    return dev_->snapshot(file("second.snap"), second_options);
  });
  // Long enough for an unserialized snapshot of 1 MiB to finish; a pass
  // here on a slow machine cannot hide a failure of the checks below.
  EXPECT_EQ(second.wait_for(std::chrono::seconds(1)), std::future_status::timeout)
      << "a second snapshot of the namespace ran while the first was in progress";
  EXPECT_FALSE(std::filesystem::exists(file("second.snap")));

  first_done.store(true);
  held.release();
  auto first = held.get();
  ASSERT_TRUE(first) << first.error().message();
  ASSERT_EQ(second.wait_for(kMustComplete), std::future_status::ready);
  auto info = second.get();
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_FALSE(second_ran_early.load());
  EXPECT_NE(info->id, first->id);

  fill_page(pages_ - 1, 3);
  auto incr = dev_->snapshot(file("incr.snap"), {.base = file("second.snap")});
  ASSERT_TRUE(incr) << incr.error().message();
  EXPECT_EQ(incr->pages, 1u);  // no mapping: the block write's page only
  ASSERT_TRUE(region_->restore_namespace("copy", file("incr.snap")));
  EXPECT_EQ(contents("copy"), source());
}

// A store far ahead of the copier (the last page) waits for its own page or
// chunk to be copied, not for the copier to get there.
TEST_P(SnapshotTest, AStoreAheadOfTheCopierIsServedFirst) {
  const uint64_t big = kBig;
  ASSERT_TRUE(region_->create_namespace({.name = "big", .size = big}));
  auto dev = region_->open_device("big");
  ASSERT_TRUE(dev);
  std::vector<std::byte> data(1 << 20, std::byte{1});  // no zero pages: all copied
  for (uint64_t off = 0; off < big; off += data.size()) ASSERT_TRUE((*dev)->write(off, data));
  auto m = (*dev)->map(0, big, Access::ReadWrite);
  ASSERT_TRUE(m);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> worst{0};
  std::thread writer([&] {
    auto* last = reinterpret_cast<volatile uint64_t*>(m->data() + big - page_);
    for (uint64_t i = 1; !stop.load(); ++i) {
      auto t0 = std::chrono::steady_clock::now();
      *last = i;
      auto ns = static_cast<uint64_t>((std::chrono::steady_clock::now() - t0).count());
      if (ns > worst.load()) worst.store(ns);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  worst.store(0);
  // To tmpfs, so that the duration is mostly the copy (not an fsync).
  ScratchDir fast(::rawdax::testing::tmpfs_parent());
  auto info = (*dev)->snapshot(fast.path() + "/big.snap");
  stop.store(true);
  writer.join();
  ASSERT_TRUE(info) << info.error().message();
  std::printf("%s: snapshot of %llu MiB took %.1f ms; worst store at the end %.3f ms\n",
              ::rawdax::testing::media_name(GetParam()),
              static_cast<unsigned long long>(big / kMiB), info->duration_ns / 1e6,
              worst.load() / 1e6);
  EXPECT_LT(worst.load() * 4, info->duration_ns);
}

// An incremental's freeze write-protects only the pages written since the
// last snapshot (the uffd engine with tracking; docs/snapshot.md). Stores
// after it, to a page written before it and to one never written since the
// base, during the live copy (from another thread: the copier calls
// progress) and after it, are all caught: the incremental holds the bytes
// of the freeze instant, and the next one stores exactly those pages.
TEST_P(SnapshotTest, IncrementalFreezeCatchesStoresToCleanAndDirtyPages) {
  // Past 16 MiB, where the copier first reports progress (a page of 2 MiB
  // on hugetlbfs is its own chunk), with pages left to copy after that.
  const uint64_t size = 24 * kMiB, pages = size / page_;
  ASSERT_TRUE(region_->create_namespace({.name = "inc", .size = size}));
  auto dev = region_->open_device("inc", {.track_dirty = true});
  ASSERT_TRUE(dev) << dev.error().message();
  auto m = (*dev)->map(0, size, Access::ReadWrite);
  ASSERT_TRUE(m);
  std::memset(m->data(), 1, size);
  auto full = (*dev)->snapshot(file("a.snap"));
  ASSERT_TRUE(full) << full.error().message();
  for (uint64_t p = 0; p < pages; p += 2) m->data()[p * page_] = std::byte{2};  // dirty: even
  const uint64_t dirty = (20 * kMiB / page_) & ~uint64_t{1};  // ahead of the copier
  const uint64_t clean = dirty + 1;
  auto store = [&](uint64_t page, uint8_t v) {
    reinterpret_cast<volatile std::byte*>(m->data())[page * page_ + 8] = std::byte{v};
  };
  std::thread during;
  auto inc = (*dev)->snapshot(
      file("b.snap"), {.base = file("a.snap"),
                       .progress =
                           [&](uint64_t done, uint64_t total) {
                             if (done == total || during.joinable()) return;
                             during = std::thread([&] {
                               store(dirty, 3);
                               store(clean, 3);
                             });
                           },
                       .copy_threads = 1});
  ASSERT_TRUE(during.joinable()) << "the copier never reported progress mid-copy";
  during.join();
  ASSERT_TRUE(inc) << inc.error().message();
  // Whole-range tracking (the mprotect engine before Linux 6.7) stores every page.
  const bool whole_range = (*dev)->engine() == ProtectionEngine::kMprotect &&
                           !internal::write_tracker_supported();
  EXPECT_EQ(inc->pages, whole_range ? pages : pages / 2);
  store(2, 4);  // dirty before the incremental, not since
  store(3, 4);  // never written since the full snapshot
  auto next = (*dev)->snapshot(file("c.snap"), {.base = file("b.snap")});
  ASSERT_TRUE(next) << next.error().message();
  EXPECT_EQ(next->pages, whole_range ? pages : 4u);

  // The incremental is the namespace at its freeze: none of the stores.
  std::vector<std::byte> at_freeze(m->data(), m->data() + size);
  for (uint64_t p : {dirty, clean, uint64_t{2}, uint64_t{3}}) at_freeze[p * page_ + 8] = std::byte{1};
  ASSERT_TRUE(region_->restore_namespace("b", file("b.snap")));
  EXPECT_TRUE(contents("b") == at_freeze);
  ASSERT_TRUE(region_->restore_namespace("c", file("c.snap")));
  EXPECT_TRUE(contents("c") == std::vector<std::byte>(m->data(), m->data() + size));
}

// After a live snapshot every mapping takes stores again without faulting,
// however it was released: run by run (mprotect), or in slices at the end
// (uffd, 16 MiB at a time; the 40 MiB mapping spans three).
TEST_P(SnapshotTest, MappingsTakeStoresWithoutFaultsAfterASnapshot) {
  const uint64_t size = 40ull << 20;
  ASSERT_TRUE(region_->create_namespace({.name = "rel", .size = size}));
  auto dev = region_->open_device("rel");
  ASSERT_TRUE(dev);
  auto whole = (*dev)->map(0, size, Access::ReadWrite);
  auto part = (*dev)->map(size / 2, 1 << 20, Access::ReadWrite);
  ASSERT_TRUE(whole && part);
  auto store_everywhere = [&](uint8_t v) {
    for (uint64_t off = 0; off < size; off += page_) whole->data()[off] = std::byte{v};
    for (uint64_t off = 0; off < part->size(); off += page_) part->data()[off] = std::byte{v};
  };
  store_everywhere(1);
  ScratchDir fast(::rawdax::testing::tmpfs_parent());
  auto info = (*dev)->snapshot(fast.path() + "/rel.snap");
  ASSERT_TRUE(info) << info.error().message();
  uint64_t faults = (*dev)->stats().write_faults;
  store_everywhere(2);
  EXPECT_EQ((*dev)->stats().write_faults, faults);
}

// The live copy's concurrency, small enough for TSan: a block writer sweeps
// one half and a mapping writer the other, each storing its pass number,
// while snapshots are taken back to back. Every image must hold one cut per
// half ("pages [0,k) hold v, the rest v-1").
// The body of the stress tests below, on a device opened with `options`.
void SnapshotTest::stress_block_and_mapping_writers(const DeviceOptions& options) {
  // 8 MiB, and at least 16 pages, so that each half has 8 pages to cut.
  const uint64_t size = std::max(8 * kMiB, 16 * page_), half = size / 2, pages = half / page_;
  ASSERT_TRUE(region_->create_namespace({.name = "stress", .size = size}));
  auto dev = region_->open_device("stress", options);
  ASSERT_TRUE(dev) << dev.error().message();
  if (options.uffd_faults != UffdFaults::kAuto) {
    ASSERT_EQ((*dev)->uffd_faults(), options.uffd_faults);
  }
  auto m = (*dev)->map(half, half, Access::ReadWrite);
  ASSERT_TRUE(m);
  std::atomic<bool> stop{false};
  std::thread block([&] {
    for (uint64_t pass = 1; !stop.load(); ++pass) {
      for (uint64_t k = 0; k < pages && !stop.load(); ++k) {
        ASSERT_TRUE((*dev)->write(k * page_, std::as_bytes(std::span(&pass, 1))));
      }
    }
  });
  std::thread store([&] {
    for (uint64_t pass = 1; !stop.load(); ++pass) {
      for (uint64_t k = 0; k < pages && !stop.load(); ++k) {
        std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(m->data() + k * page_))
            .store(pass, std::memory_order_relaxed);
      }
    }
  });
  std::vector<std::string> taken;
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::string path = file("stress" + std::to_string(i) + ".snap");
    // 1 to 3 background copy threads, whatever the CPUs here.
    auto info = (*dev)->snapshot(path, {.copy_threads = static_cast<unsigned>(i % 3 + 1)});
    ASSERT_TRUE(info) << info.error().message();
    taken.push_back(path);
  }
  stop.store(true);
  block.join();
  store.join();
  for (size_t i = 0; i < taken.size(); ++i) {
    std::string name = "img" + std::to_string(i);
    ASSERT_TRUE(region_->restore_namespace(name, taken[i]));
    auto image = contents(name);
    for (uint64_t base : {uint64_t{0}, half}) {
      uint64_t cuts = 0;
      for (uint64_t k = 1; k < pages; ++k) {
        uint64_t prev, cur;
        std::memcpy(&prev, image.data() + base + (k - 1) * page_, 8);
        std::memcpy(&cur, image.data() + base + k * page_, 8);
        if (cur == prev) continue;
        ++cuts;
        ASSERT_EQ(cur + 1, prev) << taken[i] << " at page " << k << " of half " << base / half;
      }
      EXPECT_LE(cuts, 1u) << taken[i] << ": not one cut in half " << base / half;
    }
  }
}

TEST_P(SnapshotTest, StressBlockAndMappingWritersAcrossSnapshots) {
  stress_block_and_mapping_writers({});
}

// The same with the uffd engine's faults resolved in the faulting thread
// (the SIGBUS handler copies and unprotects), on the media of that engine.
class FaultingThreadSnapshotTest : public SnapshotTest {};

TEST_P(FaultingThreadSnapshotTest, StressBlockAndMappingWritersAcrossSnapshots) {
  stress_block_and_mapping_writers({.uffd_faults = UffdFaults::kFaultingThread});
}

TEST_P(SnapshotTest, RemoveDuringASnapshotEndsBothCleanly) {
  const uint64_t big = 128ull << 20;
  ASSERT_TRUE(region_->create_namespace({.name = "big", .size = big}));
  auto dev = region_->open_device("big");
  ASSERT_TRUE(dev);
  std::vector<std::byte> data(1 << 20, std::byte{1});
  for (uint64_t off = 0; off < big; off += data.size()) ASSERT_TRUE((*dev)->write(off, data));
  auto snap = std::async(std::launch::async, [&] { return (*dev)->snapshot(file("big.snap")); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE((*dev)->remove());
  auto result = snap.get();
  if (result) {
    // The copy won the race: the file must then be whole.
    EXPECT_TRUE(verify_snapshot(file("big.snap")));
  } else {
    EXPECT_EQ(result.error().code(), std::errc::no_such_device_or_address)
        << result.error().message();
    EXPECT_FALSE(std::filesystem::exists(file("big.snap")));
  }
}

// A namespace size off the snapshot's page size leaves a short last page,
// checksummed zero-padded. Restore hashed only the page's namespace bytes, so
// it refused every such snapshot that verify accepted (fuzz_snapshot's
// differential oracle found it). Bytes the file holds past the namespace's
// end are no part of the image: both verify and restore ignore them.
TEST(SnapshotShortLastPageTest, RestoresExactlyWhatVerifies) {
  ScratchDir dir(::rawdax::testing::tmpfs_parent());
  const std::string path = dir.path() + "/short.snap";
  internal::SnapshotHeader header;
  header.id = "5eed0000-0000-4000-8000-00000000000a";
  header.source_uuid = "5eed0000-0000-4000-8000-000000000001";
  header.namespace_size = 12288;  // 8 KiB pages: the second holds 4 KiB
  header.page_size = 8192;
  auto writer = internal::SnapshotWriter::create(path, header);
  ASSERT_TRUE(writer) << writer.error().message();
  std::vector<std::byte> image(header.namespace_size);
  for (size_t i = 0; i < image.size(); ++i) image[i] = static_cast<std::byte>(i * 7 + 1);
  ASSERT_TRUE(writer->write_pages(0, image));
  auto written = writer->finish();
  ASSERT_TRUE(written) << written.error().message();
  {
    int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const char tail[] = "past the namespace's end";
    EXPECT_EQ(::pwrite(fd, tail, sizeof tail, written->data_offset() + header.namespace_size),
              static_cast<ssize_t>(sizeof tail));
    ::close(fd);
  }
  auto verified = verify_snapshot(path);
  ASSERT_TRUE(verified) << verified.error().message();

  auto region = Region::open("memfd:short-last-page");
  ASSERT_TRUE(region) << region.error().message();
  auto restored = (*region)->restore_namespace("n", path);
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(restored->size, header.namespace_size);
  auto dev = (*region)->open_device("n");
  ASSERT_TRUE(dev) << dev.error().message();
  std::vector<std::byte> back(header.namespace_size);
  ASSERT_TRUE((*dev)->read(0, back));
  EXPECT_EQ(back, image);
}

INSTANTIATE_TEST_SUITE_P(AllMedia, SnapshotTest, RAWDAX_ALL_MEDIA, testing::param_name);
INSTANTIATE_TEST_SUITE_P(UffdMedia, FaultingThreadSnapshotTest,
                         ::testing::ValuesIn(::rawdax::testing::media_except(
                             ::rawdax::testing::all_media(),
                             {TestMedia::kDisk, TestMedia::kFsdax})),
                         testing::param_name);
INSTANTIATE_TEST_SUITE_P(AllMedia, OneCutTest, ::testing::ValuesIn(one_cut_cases()), one_cut_name);

}  // namespace
}  // namespace rawdax

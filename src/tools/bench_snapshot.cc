// `rawdax bench`, snapshot part: a live snapshot while one writer stores at
// random at a fixed rate, against fork-COW (Redis's way: the child writes
// the image while the parent keeps writing), and incremental snapshots at
// 1 %, 10 % and 50 % dirty against the full one.
//
// A "stall" is the wall time of one 8-byte store, taken around the store by
// the writer itself, so a store that faults (copy-before-write, or fork's
// write-protected PTEs) shows up as a long one.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <tuple>

#include "common/mapped_range.h"
#include "common/unique_fd.h"
#include "tools/bench.h"
#include "tools/bench_raw.h"

namespace rawdax::cli {
namespace {

constexpr uint64_t kPage = 4096;

// Stores one word on a random page every `period`, timing each store, until
// stopped. Latencies are kept only while `recording` is set.
class PacedWriter {
 public:
  PacedWriter(std::byte* base, uint64_t size, std::chrono::nanoseconds period)
      : base_(base), pages_(size / kPage), period_(period) {
    latencies_.reserve(1 << 22);
  }
  ~PacedWriter() { stop(); }

  void start() {
    thread_ = std::thread([this] { run(); });
    while (!running_.load()) std::this_thread::yield();
  }
  void record(bool on) { recording_.store(on); }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  // Sorted latencies recorded (call after stop()).
  std::vector<uint64_t> sorted() {
    std::sort(latencies_.begin(), latencies_.end());
    return latencies_;
  }

 private:
  void run() {
    std::mt19937_64 rng(7);
    auto next = std::chrono::steady_clock::now();
    running_.store(true);
    uint64_t value = 1;
    while (!stop_.load(std::memory_order_relaxed)) {
      next += period_;
      while (std::chrono::steady_clock::now() < next) {
      }
      auto* word = reinterpret_cast<volatile uint64_t*>(base_ + (rng() % pages_) * kPage +
                                                        (rng() % (kPage / 8)) * 8);
      auto t0 = std::chrono::steady_clock::now();
      *word = value++;
      auto t1 = std::chrono::steady_clock::now();
      if (recording_.load(std::memory_order_relaxed) && latencies_.size() < latencies_.capacity()) {
        latencies_.push_back(static_cast<uint64_t>((t1 - t0).count()));
      }
    }
  }

  std::byte* base_;
  uint64_t pages_;
  std::chrono::nanoseconds period_;
  std::thread thread_;
  std::atomic<bool> running_{false}, recording_{false}, stop_{false};
  std::vector<uint64_t> latencies_;  // owned by the writer thread until stop()
};

struct StallFigures {
  double p50 = 0, p99 = 0, max = 0, total_ns = 0;
  uint64_t stores = 0;
};

StallFigures figures(std::vector<uint64_t> sorted, double total_ns) {
  StallFigures f;
  f.total_ns = total_ns;
  f.stores = sorted.size();
  if (sorted.empty()) return f;
  f.p50 = static_cast<double>(sorted[sorted.size() / 2]);
  f.p99 = static_cast<double>(sorted[sorted.size() * 99 / 100]);
  f.max = static_cast<double>(sorted.back());
  return f;
}

void fill(std::byte* p, uint64_t size) {
  for (uint64_t off = 0; off < size; off += 8) {
    uint64_t v = off * 0x9E3779B97F4A7C15ull | 1;  // no page is all zeros
    std::memcpy(p + off, &v, 8);
  }
}

// Writes and frees `size` bytes of a file in `dir`, so that the timed write
// that follows (made right after, on both sides of a pair) gets memory the
// VM already backs. This VM hands freed memory back to its host (the
// balloon's free page reporting), and touching it again costs a host fault
// per page: 1 GiB of pwrite to tmpfs took 0.18 s right after 1 GiB was
// freed and 0.9-2.2 s a few seconds later, for the anchor and rawdax alike.
Status warm_destination(const std::string& dir, uint64_t size) {
  const std::string path = dir + "/rawdax-bench-warm-" + std::to_string(::getpid());
  internal::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return errno_error(errno, "bench: create " + path);
  std::vector<std::byte> block(1 << 20, std::byte{1});
  Status st;
  for (uint64_t off = 0; off < size && st; off += block.size()) {
    if (::pwrite(fd.get(), block.data(), block.size(), static_cast<off_t>(off)) < 0) {
      st = errno_error(errno, "bench: write " + path);
    }
  }
  ::unlink(path.c_str());
  return st;
}

std::string dir_of(const std::string& path) { return path.substr(0, path.rfind('/')); }

// The anchor: private anonymous memory, forked; the child writes the image to
// `path` in 1 MiB writes and exits, the parent's writer keeps storing.
// With `thp`, the memory is advised for transparent huge pages.
Result<StallFigures> fork_cow(uint64_t size, const std::string& path,
                              std::chrono::nanoseconds period, bool thp = false) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return errno_error(errno, "fork-COW anchor: mmap");
  internal::MappedRange memory(p, size);
  if (thp) ::madvise(p, size, MADV_HUGEPAGE);
  fill(memory.data(), size);
  RAWDAX_RETURN_IF_ERROR(warm_destination(dir_of(path), size));
  PacedWriter writer(memory.data(), size, period);
  writer.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  writer.record(true);
  auto start = std::chrono::steady_clock::now();
  pid_t child = ::fork();
  if (child < 0) return errno_error(errno, "fork-COW anchor: fork");
  if (child == 0) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) ::_exit(1);
    constexpr uint64_t kChunk = 1 << 20;
    for (uint64_t off = 0; off < size; off += kChunk) {
      if (::pwrite(fd, memory.data() + off, kChunk, static_cast<off_t>(off)) !=
          static_cast<ssize_t>(kChunk)) {
        ::_exit(1);
      }
    }
    ::_exit(::fsync(fd) == 0 ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  double total = static_cast<double>((std::chrono::steady_clock::now() - start).count());
  writer.record(false);
  writer.stop();
  ::unlink(path.c_str());
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Error(std::errc::io_error, "fork-COW anchor: the child could not write " + path);
  }
  return figures(writer.sorted(), total);
}

// A live snapshot of a fresh namespace of `size` while the writer stores.
Result<StallFigures> live_snapshot(Region& region, uint64_t size, const std::string& path,
                                   std::chrono::nanoseconds period, UffdFaults faults) {
  std::string name = "bench-snap-" + std::to_string(::getpid());
  auto info = region.create_namespace({.name = name, .size = size});
  if (!info) return info.error();
  Result<StallFigures> result = Error(std::errc::invalid_argument, "not run");
  {
    auto dev = region.open_device(name, {.uffd_faults = faults});
    if (!dev) return dev.error();
    auto mapping = (*dev)->map(0, size, Access::ReadWrite);
    if (!mapping) return mapping.error();
    fill(mapping->data(), size);
    RAWDAX_RETURN_IF_ERROR(warm_destination(dir_of(path), size));
    PacedWriter writer(mapping->data(), size, period);
    writer.start();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    writer.record(true);
    auto start = std::chrono::steady_clock::now();
    auto snap = (*dev)->snapshot(path);
    double total = static_cast<double>((std::chrono::steady_clock::now() - start).count());
    writer.record(false);
    writer.stop();
    result = snap ? Result<StallFigures>(figures(writer.sorted(), total))
                  : Result<StallFigures>(snap.error());
  }
  ::unlink(path.c_str());
  Status destroyed = region.destroy_namespace(name);
  if (!result) return result;
  if (!destroyed) return destroyed.error();
  return result;
}

// The floor under any write tracking here: the same writer, for `duration`,
// over a raw memfd mapping write-protected whole as it runs. With kKernel
// the first store to each page takes a fault the kernel resolves itself
// (async uffd-wp: no thread, no copy); with kHandlerThread a thread only
// unprotects the page: the round trip that copy-before-write adds its copy to.
Result<StallFigures> fault_floor(uint64_t size, std::chrono::nanoseconds period, RawFaults faults,
                                 std::chrono::nanoseconds duration) {
  auto raw = raw_mapping(size);
  if (!raw) return raw.error();
  fill(raw->range.data(), size);
  auto uffd = RawUffd::create(raw->range.data(), size, faults);
  if (!uffd) return uffd.error();
  PacedWriter writer(raw->range.data(), size, period);
  writer.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  writer.record(true);
  auto start = std::chrono::steady_clock::now();
  (*uffd)->protect(raw->range.data(), size, true);
  std::this_thread::sleep_until(start + duration);
  writer.record(false);
  writer.stop();
  return figures(writer.sorted(), static_cast<double>(duration.count()));
}

// A snapshot of a filled namespace that nobody writes, against the bare copy
// of the same bytes: pread from the backing file and pwrite to a new file in
// `dir`, 256 KiB at a time (what the background pass does, minus checksums,
// the zero-page test and the format). Each side writes right after
// warm_destination(). Returns {anchor ns, rawdax ns}.
Result<std::pair<double, double>> idle_copy(Region& region, uint64_t size, const std::string& dir) {
  std::string name = "bench-idle-" + std::to_string(::getpid());
  auto info = region.create_namespace({.name = name, .size = size});
  if (!info) return info.error();
  Result<std::pair<double, double>> result = Error(std::errc::invalid_argument, "not run");
  {
    auto dev = region.open_device(name);
    if (!dev) return dev.error();
    auto mapping = (*dev)->map(0, size, Access::ReadWrite);
    if (!mapping) return mapping.error();
    fill(mapping->data(), size);
    auto source = region.open_backing_fd(name, false);
    if (!source) return source.error();
    internal::UniqueFd in(*source);
    const std::string copy_path = dir + "/rawdax-bench-copy-" + std::to_string(::getpid());
    internal::UniqueFd out(::open(copy_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!out.valid()) return errno_error(errno, "bench: create " + copy_path);
    const std::string snap_path =
        dir + "/rawdax-bench-idle-" + std::to_string(::getpid()) + ".snap";
    RAWDAX_RETURN_IF_ERROR(warm_destination(dir, size));
    auto start = std::chrono::steady_clock::now();
    auto snap = (*dev)->snapshot(snap_path);
    double live = static_cast<double>((std::chrono::steady_clock::now() - start).count());
    ::unlink(snap_path.c_str());
    std::vector<std::byte> buffer(256 << 10);
    RAWDAX_RETURN_IF_ERROR(warm_destination(dir, size));
    start = std::chrono::steady_clock::now();
    for (uint64_t off = 0; off < size; off += buffer.size()) {
      if (::pread(in.get(), buffer.data(), buffer.size(), static_cast<off_t>(off)) < 0 ||
          ::pwrite(out.get(), buffer.data(), buffer.size(), static_cast<off_t>(off + 4096)) < 0) {
        ::unlink(copy_path.c_str());
        return errno_error(errno, "bench: copy to " + copy_path);
      }
    }
    double anchor = static_cast<double>((std::chrono::steady_clock::now() - start).count());
    ::unlink(copy_path.c_str());
    result = snap ? Result<std::pair<double, double>>(std::make_pair(anchor, live))
                  : Result<std::pair<double, double>>(snap.error());
  }
  Status destroyed = region.destroy_namespace(name);
  if (!result) return result;
  if (!destroyed) return destroyed.error();
  return result;
}

// One snapshot's figures: its time, its freeze instant and the writer's
// worst store while it ran.
struct SnapshotCost {
  double total_ns = 0, freeze_ns = 0, max_stall_ns = 0;
};

// Full and incremental snapshots of a tracked namespace, each taken while a
// paced writer stores: per percent, a full snapshot with every page written
// since the last one (the anchor), then a
// full one with nobody writing (the base, so that the writer's own stores do
// not add to the dirty set), `percent` of the pages written at random, and
// the incremental. Returns {full, incremental} per percent.
Result<std::vector<std::pair<SnapshotCost, SnapshotCost>>> incremental_costs(
    Region& region, uint64_t size, const std::string& dir, const std::vector<int>& percents,
    std::chrono::nanoseconds period) {
  std::string name = "bench-incr-" + std::to_string(::getpid());
  auto info = region.create_namespace({.name = name, .size = size});
  if (!info) return info.error();
  std::vector<std::pair<SnapshotCost, SnapshotCost>> costs;
  Status failed;
  {
    auto dev = region.open_device(name, {.track_dirty = true});
    if (!dev) return dev.error();
    auto mapping = (*dev)->map(0, size, Access::ReadWrite);
    if (!mapping) return mapping.error();
    fill(mapping->data(), size);
    const uint64_t pages = size / kPage;
    std::mt19937_64 rng(11);
    std::vector<uint64_t> order(pages);
    for (uint64_t i = 0; i < pages; ++i) order[i] = i;
    const std::string base = dir + "/bench-base.snap", incr = dir + "/bench-incr.snap";
    auto timed = [&](const std::string& path, const SnapshotOptions& options)
        -> Result<SnapshotCost> {
      PacedWriter writer(mapping->data(), size, period);
      writer.start();
      writer.record(true);
      auto snap = (*dev)->snapshot(path, options);
      writer.record(false);
      writer.stop();
      if (!snap) return snap.error();
      auto f = figures(writer.sorted(), static_cast<double>(snap->duration_ns));
      return SnapshotCost{static_cast<double>(snap->duration_ns),
                          static_cast<double>(snap->freeze_ns), f.max};
    };
    for (int percent : percents) {
      // Every page written first, so the anchor's freeze protects every
      // page, as a full snapshot of a namespace written all over does.
      for (uint64_t p = 0; p < pages; ++p) mapping->data()[p * kPage + 1] = std::byte{1};
      auto full = timed(incr, {});
      ::unlink(incr.c_str());
      auto quiet = full ? (*dev)->snapshot(base) : Result<SnapshotInfo>(full.error());
      if (!quiet) {
        failed = quiet.error();
        break;
      }
      std::shuffle(order.begin(), order.end(), rng);
      for (uint64_t i = 0; i < pages * percent / 100; ++i) {
        mapping->data()[order[i] * kPage] = std::byte{static_cast<uint8_t>(percent)};
      }
      auto inc = timed(incr, {.base = base});
      ::unlink(base.c_str());
      ::unlink(incr.c_str());
      if (!inc) {
        failed = inc.error();
        break;
      }
      costs.emplace_back(*full, *inc);
    }
  }
  Status destroyed = region.destroy_namespace(name);
  if (!failed) return failed.error();
  if (!destroyed) return destroyed.error();
  return costs;
}

// With 2 MiB pages: a live snapshot on shmem THP against fork-COW on THP
// anonymous memory, and on hugetlbfs (where a page, hence a writer's
// copy-before-write, is 2 MiB) against `small`, the same run's 4 KiB one.
Result<std::vector<Pair>> huge_page_stalls(uint64_t size, const std::string& path,
                                           std::chrono::nanoseconds period, int rounds,
                                           const StallFigures& small) {
  std::vector<Pair> pairs;
  const std::string size_text = std::to_string(size >> 20) + " MiB";
  auto best_of = [&](const std::function<Result<StallFigures>()>& run) -> Result<StallFigures> {
    StallFigures best;
    best.p99 = 1e300;
    for (int r = 0; r < rounds; ++r) {
      auto got = run();
      if (!got) return got.error();
      if (got->p99 < best.p99) best = *got;
    }
    return best;
  };
  {
    ShmemThpForBench thp(::geteuid() == 0);
    if (!thp.on()) {
      note_not_measured("live snapshot on shmem THP", "shmem THP is '" + thp.before() +
                                                          "' and could not be set (not root?)");
    } else {
      auto thp_region = Region::open("memfd:");
      if (!thp_region) return thp_region.error();
      auto forked = best_of([&] { return fork_cow(size, path, period, /*thp=*/true); });
      if (!forked) return forked.error();
      auto live = best_of([&] { return live_snapshot(**thp_region, size, path, period, UffdFaults::kAuto); });
      if (!live) return live.error();
      for (auto [label, f, l] : {std::tuple{"p50", forked->p50, live->p50},
                                 std::tuple{"p99", forked->p99, live->p99},
                                 std::tuple{"max", forked->max, live->max}}) {
        pairs.push_back(Pair{"live snapshot " + size_text + " on shmem THP, writer stall " + label,
                             "fork-COW on THP anonymous memory", f, l, 0, "per store",
                             GoalKind::kReport});
      }
    }
  }
  HugetlbfsForBench pool(size / (2 << 20) + 8);
  if (!pool.on()) {
    note_not_measured("live snapshot on hugetlbfs (2 MiB copy-before-write)", pool.why());
    return pairs;
  }
  auto huge_region = Region::open(pool.dir(), {.create = true});
  if (!huge_region) return huge_region.error();
  auto live = best_of([&] { return live_snapshot(**huge_region, size, path, period, UffdFaults::kAuto); });
  if (!live) return live.error();
  pairs.push_back(Pair{"live snapshot " + size_text + " on hugetlbfs, writer stall p50",
                       "the same on this region's 4 KiB pages", small.p50, live->p50, 0, "per store",
                       GoalKind::kReport});
  // Goal of issue #19: copying 2 MiB before a write must not make the p99
  // worse than copying 4 KiB does.
  pairs.push_back(Pair{"live snapshot " + size_text + " on hugetlbfs, writer stall p99",
                       "the same on this region's 4 KiB pages", small.p99, live->p99, 1.0, "per store",
                       GoalKind::kMinRatio});
  pairs.push_back(Pair{"live snapshot " + size_text + " on hugetlbfs, writer stall max",
                       "the same on this region's 4 KiB pages", small.max, live->max, 0, "per store",
                       GoalKind::kReport});
  return pairs;
}

}  // namespace

Result<std::vector<Pair>> run_snapshot_pairs(Region& region, uint64_t size, int rounds,
                                             bool huge_pages) {
  const bool async_wp = region.capabilities().uffd_wp_async;
  const std::string dir = "/dev/shm";  // the goal is stated for tmpfs
  const std::string path = dir + "/rawdax-bench-" + std::to_string(::getpid()) + ".snap";
  const auto period = std::chrono::microseconds(10);  // 100 000 stores per second
  const double gib = static_cast<double>(size) / (1 << 30);
  std::string size_text = std::to_string(size >> 20) + " MiB";

  // The uffd engine is measured in both of its fault modes (the handler
  // thread is what kAuto picks as root; a plain user gets the faulting
  // thread); other engines once, as kAuto opens them.
  struct Mode {
    UffdFaults faults;
    std::string label;  // after "live snapshot N MiB"
    StallFigures best;
  };
  std::vector<Mode> modes;
  if (region.capabilities().engine == ProtectionEngine::kUffd) {
    modes.push_back({UffdFaults::kHandlerThread, " (uffd, handler thread)", {}});
    modes.push_back({UffdFaults::kFaultingThread, " (uffd, faulting thread)", {}});
  } else {
    modes.push_back({UffdFaults::kAuto, "", {}});
  }
  // Alternate the sides; keep each side's round with the best p99.
  StallFigures fork_best;
  fork_best.p99 = 1e300;
  for (Mode& m : modes) m.best.p99 = 1e300;
  for (int r = 0; r < rounds; ++r) {
    auto forked = fork_cow(size, path, period);
    if (!forked) return forked.error();
    if (forked->p99 < fork_best.p99) fork_best = *forked;
    for (Mode& m : modes) {
      auto live = live_snapshot(region, size, path, period, m.faults);
      if (!live) return live.error();
      if (live->p99 < m.best.p99) m.best = *live;
    }
  }
  std::vector<Pair> pairs;
  for (const Mode& m : modes) {
    const StallFigures& live_best = m.best;
    const std::string head = "live snapshot " + size_text + m.label;
    auto stall_pair = [&](const char* what, double fork_ns, double live_ns, double goal,
                          GoalKind kind) {
      pairs.push_back(Pair{head + ", writer stall " + what, "fork-COW, child writes the image",
                           fork_ns, live_ns, goal, "per store", kind});
    };
    stall_pair("p50", fork_best.p50, live_best.p50, 1 / 1.5, GoalKind::kMinRatio);
    stall_pair("p99", fork_best.p99, live_best.p99, 1.0, GoalKind::kMinRatio);
    stall_pair("p99 (<= 50 us)", fork_best.p99, live_best.p99, 50000, GoalKind::kMaxNs);
    stall_pair("max", fork_best.max, live_best.max, 0, GoalKind::kReport);
    Pair copy{head + " to tmpfs, total time",
              "fork-COW, child writes the image",
              fork_best.total_ns,
              live_best.total_ns,
              1e3 / 2.0 * (1 << 30) / 1e9,  // 2 GB/s, in ms per GiB
              "per snapshot",
              GoalKind::kMaxMsPerGib};
    copy.gib = gib;
    pairs.push_back(copy);
    Pair total{head + " to tmpfs, total time against fork", "fork-COW, child writes the image",
               fork_best.total_ns, live_best.total_ns, 1.0, "per snapshot", GoalKind::kMinRatio};
    pairs.push_back(total);
  }
  // The same writer for as long as the first mode's snapshot took, over the
  // bare fault mechanisms: what one fault per first store to a page costs
  // here at best.
  const StallFigures& first = modes.front().best;
  const auto window = std::chrono::nanoseconds(static_cast<int64_t>(first.total_ns));
  for (auto [faults, what] : {std::pair{RawFaults::kKernel, "async uffd-wp fault, kernel-resolved"},
                              std::pair{RawFaults::kHandlerThread,
                                        "sync uffd-wp fault, a thread unprotects"}}) {
    if (faults == RawFaults::kKernel && !async_wp) {
      note_not_measured(std::string("live snapshot ") + size_text +
                            ", writer stall against the bare " + what,
                        "no async uffd-wp in this kernel (Linux 6.7+)");
      continue;
    }
    auto floor = fault_floor(size, period, faults, window);
    if (!floor) return floor.error();
    for (const Mode& m : modes) {
      for (auto [label, floor_ns, live_ns] : {std::tuple{"p50", floor->p50, m.best.p50},
                                              std::tuple{"p99", floor->p99, m.best.p99}}) {
        pairs.push_back(Pair{std::string("live snapshot ") + size_text + m.label +
                                 ", writer stall " + label + " against the bare fault",
                             std::string(what) + " (no copy)", floor_ns, live_ns, 0, "per store",
                             GoalKind::kReport});
      }
    }
  }

  Pair idle{"snapshot " + size_text + " to tmpfs, nobody writing", "pread+pwrite of the same bytes",
            1e300, 1e300, 1e3 / 2.0 * (1 << 30) / 1e9, "per snapshot", GoalKind::kMaxMsPerGib};
  idle.gib = gib;
  for (int r = 0; r < rounds; ++r) {
    auto idle_times = idle_copy(region, size, dir);
    if (!idle_times) return idle_times.error();
    idle.anchor_ns = std::min(idle.anchor_ns, idle_times->first);
    idle.rawdax_ns = std::min(idle.rawdax_ns, idle_times->second);
  }
  pairs.push_back(idle);

  // Incrementals: best of `rounds` per side (a preemption of the writer on
  // this 2-CPU VM costs milliseconds on either side).
  const int percents[] = {1, 10, 50};
  std::vector<std::pair<SnapshotCost, SnapshotCost>> best;
  for (int r = 0; r < rounds; ++r) {
    auto costs = incremental_costs(region, size, dir, {1, 10, 50}, period);
    if (!costs) return costs.error();
    if (best.empty()) {
      best = *costs;
      continue;
    }
    for (size_t i = 0; i < best.size() && i < costs->size(); ++i) {
      for (auto [to, from] : {std::pair{&best[i].first, &(*costs)[i].first},
                              std::pair{&best[i].second, &(*costs)[i].second}}) {
        to->total_ns = std::min(to->total_ns, from->total_ns);
        to->freeze_ns = std::min(to->freeze_ns, from->freeze_ns);
        to->max_stall_ns = std::min(to->max_stall_ns, from->max_stall_ns);
      }
    }
  }
  const std::string anchor = "full snapshot of the same namespace";
  for (size_t i = 0; i < best.size(); ++i) {
    const std::string what =
        "incremental snapshot " + size_text + ", " + std::to_string(percents[i]) + " % dirty";
    const auto& [full, inc] = best[i];
    pairs.push_back(Pair{what, anchor, full.total_ns, inc.total_ns, 0, "per snapshot",
                         GoalKind::kReport});
    pairs.push_back(Pair{what + ", freeze instant", anchor, full.freeze_ns, inc.freeze_ns, 0,
                         "per freeze", GoalKind::kReport});
    // The goal: a small incremental stalls its writers 10x
    // less than a full snapshot does.
    pairs.push_back(Pair{what + ", writer stall max", anchor, full.max_stall_ns,
                         inc.max_stall_ns, percents[i] == 1 ? 10.0 : 0, "per snapshot",
                         percents[i] == 1 ? GoalKind::kMinRatio : GoalKind::kReport});
  }
  if (huge_pages) {
    auto huge = huge_page_stalls(size, path, period, rounds, modes.front().best);
    if (!huge) return huge.error();
    pairs.insert(pairs.end(), huge->begin(), huge->end());
  }
  return pairs;
}

}  // namespace rawdax::cli

// Verb: bench. Measures rawdax against an anchor in the same run and prints
// the ratio anchor_time / rawdax_time (above 1: rawdax is faster). Each pair
// is measured in alternation, `rounds` times, and the best time of each side
// is kept, so that a noisy neighbour hurts both sides alike.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <random>
#include <thread>
#include <vector>

#include "common/mapped_range.h"
#include "common/unique_fd.h"
#include "common/units.h"
#include "ref/live_ref.h"
#include "tools/bench.h"
#include "tools/cli_common.h"
#include "tools/commands.h"

namespace rawdax::cli {

void note_not_measured(const std::string& row, const std::string& why) {
  std::fprintf(stderr, "rawdax bench: not measured here: %s: %s\n", row.c_str(), why.c_str());
}

double time_ns(const std::function<void()>& work) {
  auto start = std::chrono::steady_clock::now();
  work();
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start)
      .count();
}

void measure(Pair& pair, int rounds, double units, const std::function<void()>& anchor,
             const std::function<void()>& subject) {
  anchor();  // warm-up: faults pages in, fills caches
  subject();
  pair.anchor_ns = pair.rawdax_ns = 1e300;
  for (int r = 0; r < rounds; ++r) {
    pair.anchor_ns = std::min(pair.anchor_ns, time_ns(anchor) / units);
    pair.rawdax_ns = std::min(pair.rawdax_ns, time_ns(subject) / units);
  }
}

namespace {

struct BenchOptions {
  GlobalOptions global;
  std::string size = "64M";
  std::string teardown_size = "1G";
  std::string freeze_size = "256M";
  std::string snapshot_size = "1G";
  std::string restore_size = "1G";
  std::string only;  // "" or one of: core, live-ref, teardown, engine, region, snapshot, restore
  bool huge_pages = false;
  int rounds = 5;
  bool region_given = false;
};



// The same code runs over both memories, so only the memory differs.
__attribute__((noinline)) void store_pass(uint64_t* p, size_t words, uint64_t seed) {
  for (size_t i = 0; i < words; ++i) p[i] = seed + i;
  compiler_barrier();
}

__attribute__((noinline)) uint64_t load_pass(const uint64_t* p, size_t words) {
  uint64_t sum = 0;
  for (size_t i = 0; i < words; ++i) sum += p[i];
  compiler_barrier();
  return sum;
}

Result<internal::MappedRange> anonymous(size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return errno_error(errno, "mmap anonymous");
  std::memset(p, 1, size);
  return internal::MappedRange(p, size);
}

Result<std::vector<Pair>> run_pairs(Device& dev, size_t size, int rounds) {
  std::vector<Pair> pairs;
  volatile uint64_t sink = 0;
  auto anon = anonymous(size);
  if (!anon) return anon.error();

  {  // 1. Loads and stores through a Mapping vs anonymous memory.
    auto mapping = dev.map(0, size, Access::ReadWrite);
    if (!mapping) return mapping.error();
    size_t words = size / sizeof(uint64_t);
    auto* a = reinterpret_cast<uint64_t*>(anon->data());
    auto* m = reinterpret_cast<uint64_t*>(mapping->data());
    uint64_t seed = 0;
    Pair pair{"mapping stores+loads", "anonymous memory", 0, 0, 0.95, "per GiB"};
    measure(pair, rounds, static_cast<double>(size) / (1 << 30),
            [&] { store_pass(a, words, ++seed); sink = sink + load_pass(a, words); },
            [&] { store_pass(m, words, ++seed); sink = sink + load_pass(m, words); });
    pairs.push_back(pair);
  }

  {  // 2. 4K random write+read, one thread, vs pwrite/pread on a tmpfs file.
    std::string path = "/dev/shm/rawdax-bench." + std::to_string(::getpid());
    internal::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.valid()) return errno_error(errno, "cannot create " + path);
    ::unlink(path.c_str());
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
      return errno_error(errno, "ftruncate " + path);
    }
    constexpr size_t kBlock = 4096;
    constexpr int kOps = 50000;
    std::vector<uint64_t> offsets(kOps);
    std::mt19937_64 rng(42);
    for (auto& off : offsets) off = (rng() % (size / kBlock)) * kBlock;
    std::vector<std::byte> buf(kBlock, std::byte{7});
    for (size_t off = 0; off < size; off += kBlock) {  // populate both sides
      if (::pwrite(fd.get(), buf.data(), kBlock, static_cast<off_t>(off)) < 0) {
        return errno_error(errno, "pwrite " + path);
      }
    }
    bool failed = false;
    Pair pair{"block 4K random write+read, 1 thread", "pwrite+pread on a tmpfs file", 0, 0, 2.0,
              "per op pair"};
    measure(
        pair, rounds, kOps,
        [&] {
          for (uint64_t off : offsets) {
            failed |= ::pwrite(fd.get(), buf.data(), kBlock, static_cast<off_t>(off)) < 0;
            failed |= ::pread(fd.get(), buf.data(), kBlock, static_cast<off_t>(off)) < 0;
          }
        },
        [&] {
          for (uint64_t off : offsets) {
            failed |= !dev.write(off, buf);
            failed |= !dev.read(off, buf);
          }
        });
    if (failed) return Error(std::errc::io_error, "4K random benchmark: an I/O failed");
    pairs.push_back(pair);
  }

  {  // 3. 1 MiB sequential block writes vs memcpy into anonymous memory.
    constexpr size_t kChunk = 1 << 20;
    std::vector<std::byte> src(kChunk);
    std::mt19937_64 rng(7);
    for (auto& b : src) b = static_cast<std::byte>(rng());
    bool failed = false;
    Pair pair{"block 1M sequential write", "memcpy", 0, 0, 0.9, "per MiB"};
    measure(
        pair, rounds, static_cast<double>(size / kChunk),
        [&] {
          for (size_t off = 0; off + kChunk <= size; off += kChunk) {
            std::memcpy(anon->data() + off, src.data(), kChunk);
          }
          compiler_barrier();
        },
        [&] {
          for (size_t off = 0; off + kChunk <= size; off += kChunk) {
            failed |= !dev.write(off, src);
          }
        });
    if (failed) return Error(std::errc::io_error, "sequential benchmark: a write failed");
    pairs.push_back(pair);
  }
  return pairs;
}

// The live ref's hot path vs one shared std::atomic doing the same, alone and
// with two threads on one object.
std::vector<Pair> run_live_ref_pairs(int rounds) {
  constexpr int kIters = 2'000'000;
  std::vector<Pair> pairs;
  alignas(64) std::atomic<int64_t> counter{0};
  Pair alone{"live ref get+put, uncontended", "fetch_add+fetch_sub on a std::atomic", 0, 0,
             20, "per get+put", GoalKind::kMaxNs};
  {
    internal::LiveRef ref;
    measure(
        alone, rounds, kIters,
        [&] {
          for (int i = 0; i < kIters; ++i) {
            counter.fetch_add(1);
            counter.fetch_sub(1);
          }
        },
        [&] {
          for (int i = 0; i < kIters; ++i) {
            if (ref.tryget(internal::LiveRef::Access::kWrite)) ref.put(internal::LiveRef::Access::kWrite);
          }
        });
  }
  pairs.push_back(alone);

  Pair shared{"live ref get+put, 2 threads, one object", "one shared std::atomic", 0, 0, 2.0,
              "per get+put"};
  internal::LiveRef ref;
  auto two_threads = [](const std::function<void()>& body) {
    std::thread other(body);
    body();
    other.join();
  };
  measure(
      shared, rounds, 2.0 * kIters,
      [&] {
        two_threads([&] {
          for (int i = 0; i < kIters; ++i) {
            counter.fetch_add(1);
            counter.fetch_sub(1);
          }
        });
      },
      [&] {
        two_threads([&] {
          for (int i = 0; i < kIters; ++i) {
            if (ref.tryget(internal::LiveRef::Access::kWrite)) ref.put(internal::LiveRef::Access::kWrite);
          }
        });
      });
  pairs.push_back(shared);
  return pairs;
}

// remove() of a namespace with `size` bytes mapped and populated while two
// threads hammer it with block I/O, vs the raw munmap of the same range.
Result<Pair> run_teardown_pair(Region& region, uint64_t size, int rounds) {
  Pair pair{"remove() with the range mapped, 2 threads hammering", "munmap of the same range",
            0, 0, 50, "per teardown", GoalKind::kMaxMsPerGib};
  pair.gib = static_cast<double>(size) / (1 << 30);
  pair.anchor_ns = pair.rawdax_ns = 1e300;
  for (int r = 0; r < rounds; ++r) {
    {
      internal::UniqueFd fd(::memfd_create("rawdax-bench-anchor", MFD_CLOEXEC));
      if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
        return errno_error(errno, "teardown anchor memfd");
      }
      void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
      if (p == MAP_FAILED) return errno_error(errno, "teardown anchor mmap");
      std::memset(p, 1, size);
      pair.anchor_ns = std::min(pair.anchor_ns, time_ns([&] { ::munmap(p, size); }));
    }
    std::string name = "bench-teardown-" + std::to_string(::getpid());
    auto info = region.create_namespace({.name = name, .size = size});
    if (!info) return info.error();
    auto dev = region.open_device(name);
    if (!dev) return dev.error();
    auto mapping = (*dev)->map(0, size, Access::ReadWrite);
    if (!mapping) return mapping.error();
    std::memset(mapping->data(), 1, size);
    std::atomic<int> started{0};
    auto hammer = [&, d = dev->get()](uint64_t seed) {
      std::vector<std::byte> buf(4096, std::byte{2});
      for (uint64_t i = seed;; i += 7919) {
        uint64_t off = (i * 4096) % size;
        if (!((i & 1) ? d->write(off, buf) : d->read(off, buf))) return;
        if (i == seed) started.fetch_add(1);
      }
    };
    std::thread a(hammer, 1), b(hammer, 2);
    while (started.load() < 2) std::this_thread::yield();
    Status removed;
    pair.rawdax_ns = std::min(pair.rawdax_ns, time_ns([&] { removed = (*dev)->remove(); }));
    a.join();
    b.join();
    if (!removed) return removed.error();
    mapping = Error(std::errc::operation_canceled, "released");
    dev->reset();
    RAWDAX_RETURN_IF_ERROR(region.destroy_namespace(name));
  }
  return pair;
}

std::string ns_text(double ns) {
  char buf[32];
  if (ns >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2f ms", ns / 1e6);
  } else if (ns >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.2f us", ns / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f ns", ns);
  }
  return buf;
}

int run_bench(const BenchOptions& options) {
  auto size = internal::parse_size(options.size);
  if (!size) return fail(size.error());
  auto teardown_size = internal::parse_size(options.teardown_size);
  if (!teardown_size) return fail(teardown_size.error());
  auto freeze_size = internal::parse_size(options.freeze_size);
  if (!freeze_size) return fail(freeze_size.error());
  auto snapshot_size = internal::parse_size(options.snapshot_size);
  if (!snapshot_size) return fail(snapshot_size.error());
  auto restore_size = internal::parse_size(options.restore_size);
  if (!restore_size) return fail(restore_size.error());
  auto want = [&](const char* group) { return options.only.empty() || options.only == group; };
  if (*size < (4u << 20) || *size % (1 << 20) != 0) {
    return fail(Error(std::errc::invalid_argument,
                      "bench size " + options.size + " must be a multiple of 1M, at least 4M"));
  }
  if (options.rounds < 1) {
    return fail(Error(std::errc::invalid_argument, "--rounds must be at least 1"));
  }
  GlobalOptions global = options.global;
  if (!options.region_given) global.region = "memfd:";
  auto region = open_region(global);
  if (!region) return fail(region.error());
  std::vector<Pair> pairs;
  if (want("core")) {
    std::string name = "bench-" + std::to_string(::getpid());
    auto info = (*region)->create_namespace({.name = name, .size = *size});
    if (!info) return fail(info.error());
    Result<std::vector<Pair>> core = Error(std::errc::invalid_argument, "not run");
    {
      auto dev = (*region)->open_device(name);
      if (!dev) return fail(dev.error());
      core = run_pairs(**dev, *size, options.rounds);
    }
    Status destroyed = (*region)->destroy_namespace(name);
    if (!core) return fail(core.error());
    if (!destroyed) return fail(destroyed.error());
    pairs = std::move(*core);
  }
  if (want("live-ref")) {
    for (auto& p : run_live_ref_pairs(options.rounds)) pairs.push_back(p);
  }
  if (want("teardown")) {
    auto teardown = run_teardown_pair(**region, *teardown_size, options.rounds);
    if (!teardown) return fail(teardown.error());
    pairs.push_back(*teardown);
  }
  if (want("engine")) {
    auto engine = run_engine_pairs(**region, *freeze_size, options.rounds, options.huge_pages);
    if (!engine) return fail(engine.error());
    for (auto& p : *engine) pairs.push_back(p);
  }
  if (want("region")) {
    auto made = run_region_pairs(**region, *size, options.rounds);
    if (!made) return fail(made.error());
    for (auto& p : *made) pairs.push_back(p);
  }
  if (want("snapshot")) {
    auto snapshot = run_snapshot_pairs(**region, *snapshot_size, std::min(options.rounds, 3),
                                       options.huge_pages);
    if (!snapshot) return fail(snapshot.error());
    for (auto& p : *snapshot) pairs.push_back(p);
  }
  if (want("restore")) {
    auto restored = run_restore_pairs(**region, *restore_size, std::min(options.rounds, 3));
    if (!restored) return fail(restored.error());
    for (auto& p : *restored) pairs.push_back(p);
  }

  if (options.global.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& p : pairs) {
      out.push_back({{"name", p.name},
                     {"anchor", p.anchor},
                     {"unit", p.unit},
                     {"anchor_ns", p.anchor_ns},
                     {"rawdax_ns", p.rawdax_ns},
                     {"ratio", p.ratio()},
                     {"goal", p.goal_text()},
                     {"met", p.met()}});
      if (p.gib > 0) out.back()["ms_per_gib"] = p.ms_per_gib();
    }
    print_json(out);
    return 0;
  }
  std::printf("rawdax bench: region %s (%s), namespace of %s, best of %d rounds\n",
              (*region)->spec().c_str(), (*region)->capabilities().filesystem.c_str(),
              internal::format_size(*size).c_str(), options.rounds);
  std::printf("ratio = anchor time / rawdax time (above 1: rawdax is faster)\n\n");
  std::printf("%-52s %-38s %11s %11s %7s  %s\n", "benchmark", "anchor", "anchor", "rawdax",
              "ratio", "goal");
  for (const auto& p : pairs) {
    std::printf("%-52s %-38s %11s %11s %7.2f  %s %s\n", p.name.c_str(), p.anchor.c_str(),
                ns_text(p.anchor_ns).c_str(), ns_text(p.rawdax_ns).c_str(), p.ratio(),
                p.goal_text().c_str(), p.met() ? "met" : "MISSED");
  }
  return 0;
}

}  // namespace

void register_bench_command(CLI::App& app, int* exit_code) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* bench = app.add_subcommand("bench", "Measure rawdax against anchors; print ratios");
  add_global_options(*bench, options->global);
  bench->add_option("--size", options->size, "Namespace size to measure over")
      ->capture_default_str();
  bench->add_option("--teardown-size", options->teardown_size,
                    "Mapped size torn down by the teardown benchmark")
      ->capture_default_str();
  bench->add_option("--freeze-size", options->freeze_size,
                    "Mapped size for freeze+thaw latency (also measured at 4x)")
      ->capture_default_str();
  bench->add_option("--snapshot-size", options->snapshot_size,
                    "Namespace size for the live snapshot benchmark")
      ->capture_default_str();
  bench->add_option("--restore-size", options->restore_size,
                    "Snapshot size for the lazy restore benchmark")
      ->capture_default_str();
  bench->add_option("--only", options->only,
                    "Run one group: core, live-ref, teardown, engine, region, snapshot, restore")
      ->check(CLI::IsMember(
          {"core", "live-ref", "teardown", "engine", "region", "snapshot", "restore"}));
  bench->add_flag("--huge-pages", options->huge_pages,
                  "Measure 2M pages too (root): shmem THP set to 'advise' and a hugetlbfs "
                  "pool and mount, each for the run");
  bench->add_option("--rounds", options->rounds, "Rounds per measurement (best is kept)")
      ->capture_default_str();
  bench->callback([=] {
    options->region_given = bench->count("--region") > 0;
    *exit_code = run_bench(*options);
  });
}

}  // namespace rawdax::cli

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
#include <vector>

#include "common/mapped_range.h"
#include "common/unique_fd.h"
#include "common/units.h"
#include "tools/cli_common.h"
#include "tools/commands.h"

namespace rawdax::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  GlobalOptions global;
  std::string size = "64M";
  int rounds = 5;
  bool region_given = false;
};

struct Pair {
  std::string name;
  std::string anchor;
  double anchor_ns = 0;  // best time of one unit of work
  double rawdax_ns = 0;
  double goal = 0;
  std::string unit;
  double ratio() const { return anchor_ns / rawdax_ns; }
};

void compiler_barrier() { asm volatile("" ::: "memory"); }

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

double time_ns(const std::function<void()>& work) {
  auto start = Clock::now();
  work();
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count();
}

// Runs anchor and subject alternately; keeps each side's best per-unit time.
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

Result<MappedRange> anonymous(size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return errno_error(errno, "mmap anonymous");
  std::memset(p, 1, size);
  return MappedRange(p, size);
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
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
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
  auto size = parse_size(options.size);
  if (!size) return fail(size.error());
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
  std::string name = "bench-" + std::to_string(::getpid());
  auto info = (*region)->create_namespace({.name = name, .size = *size});
  if (!info) return fail(info.error());
  Result<std::vector<Pair>> pairs = Error(std::errc::invalid_argument, "not run");
  {
    auto dev = (*region)->open_device(name);
    if (!dev) return fail(dev.error());
    pairs = run_pairs(**dev, *size, options.rounds);
  }
  Status destroyed = (*region)->destroy_namespace(name);
  if (!pairs) return fail(pairs.error());
  if (!destroyed) return fail(destroyed.error());

  if (options.global.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& p : *pairs) {
      out.push_back({{"name", p.name},
                     {"anchor", p.anchor},
                     {"unit", p.unit},
                     {"anchor_ns", p.anchor_ns},
                     {"rawdax_ns", p.rawdax_ns},
                     {"ratio", p.ratio()},
                     {"goal", p.goal},
                     {"met", p.ratio() >= p.goal}});
    }
    print_json(out);
    return 0;
  }
  std::printf("rawdax bench: region %s (%s), namespace of %s, best of %d rounds\n",
              (*region)->spec().c_str(), (*region)->capabilities().filesystem.c_str(),
              format_size(*size).c_str(), options.rounds);
  std::printf("ratio = anchor time / rawdax time (above 1: rawdax is faster)\n\n");
  std::printf("%-38s %-30s %12s %12s %7s %8s\n", "benchmark", "anchor", "anchor", "rawdax",
              "ratio", "goal");
  for (const auto& p : *pairs) {
    std::printf("%-38s %-30s %12s %12s %7.2f  >= %-4.2f %s\n", p.name.c_str(), p.anchor.c_str(),
                ns_text(p.anchor_ns).c_str(), ns_text(p.rawdax_ns).c_str(), p.ratio(), p.goal,
                p.ratio() >= p.goal ? "met" : "MISSED");
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
  bench->add_option("--rounds", options->rounds, "Rounds per measurement (best is kept)")
      ->capture_default_str();
  bench->callback([=] {
    options->region_given = bench->count("--region") > 0;
    *exit_code = run_bench(*options);
  });
}

}  // namespace rawdax::cli

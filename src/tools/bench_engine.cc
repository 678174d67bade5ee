// `rawdax bench`, engine part: freeze+thaw latency against the raw
// write-protect primitive, the first-write fault with tracking against the
// bare fault mechanism, and sync() per dirty page against the bare re-protect.
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "common/mapped_range.h"
#include "common/unique_fd.h"
#include "common/units.h"
#include "engine/write_tracker.h"
#include "media/uffd_compat.h"
#include "tools/bench.h"
#include "tools/bench_raw.h"

namespace rawdax::cli {
namespace {

constexpr uint64_t kPage = 4096;

// Bytes of [addr, addr+len) mapped by PMDs (huge pages), from /proc/self/smaps.
uint64_t pmd_mapped_bytes(const void* addr, uint64_t len) {
  FILE* smaps = std::fopen("/proc/self/smaps", "r");
  if (smaps == nullptr) return 0;
  char line[512];
  bool inside = false;
  uint64_t total = 0;
  auto lo = reinterpret_cast<uintptr_t>(addr), hi = lo + len;
  while (std::fgets(line, sizeof line, smaps)) {
    unsigned long start = 0, end = 0;
    if (std::sscanf(line, "%lx-%lx ", &start, &end) == 2 && std::strchr(line, '-') < std::strchr(line, ' ')) {
      inside = start < hi && end > lo;
      continue;
    }
    unsigned long kb = 0;
    if (inside && (std::sscanf(line, "ShmemPmdMapped: %lu kB", &kb) == 1 ||
                   std::sscanf(line, "FilePmdMapped: %lu kB", &kb) == 1)) {
      total += uint64_t{kb} * 1024;
    }
  }
  std::fclose(smaps);
  return total;
}

// The bare mechanism an engine tracks writes with, on the anchor's mapping:
// sync uffd-wp (answered by a thread that unprotects, when `handle`), or
// async uffd-wp read back with PAGEMAP_SCAN.
struct BareTracking {
  std::unique_ptr<RawUffd> uffd;
  std::unique_ptr<internal::WriteTracker> tracker;
  internal::MappedRange* range = nullptr;

  ~BareTracking() {
    if (tracker) tracker->remove_range(range->data(), range->size());
  }
  // Write-protects the whole range again.
  Status rearm() {
    if (uffd) {
      uffd->protect(range->data(), range->size(), true);
      return ok();
    }
    auto scanned = tracker->scan_and_reprotect(range->data(), range->size(), [](void*, size_t) {});
    if (!scanned) return scanned.error();
    return ok();
  }
};

Result<std::unique_ptr<BareTracking>> bare_tracking(EngineChoice engine, internal::MappedRange& range,
                                                    bool handle) {
  auto bare = std::make_unique<BareTracking>();
  if (engine == EngineChoice::kUffd) {
    auto made = RawUffd::create(range.data(), range.size(),
                                handle ? RawFaults::kHandlerThread : RawFaults::kNobody);
    if (!made) return made.error();
    bare->uffd = std::move(*made);
  } else {
    auto made = internal::WriteTracker::create();
    if (!made) return made.error();
    RAWDAX_RETURN_IF_ERROR((*made)->add_range(range.data(), range.size()));
    bare->tracker = std::move(*made);
  }
  bare->range = &range;
  return bare;
}

const char* engine_name(EngineChoice engine) {
  return engine == EngineChoice::kUffd ? "uffd" : "mprotect";
}

struct BenchDevice {
  std::unique_ptr<Device> dev;
  Result<Mapping> mapping = Error(std::errc::invalid_argument, "unmapped");
};

Result<BenchDevice> open_bench_device(Region& region, const std::string& name, uint64_t size,
                                      EngineChoice engine, bool track) {
  (void)region.destroy_namespace(name);
  auto info = region.create_namespace({.name = name, .size = size});
  if (!info) return info.error();
  BenchDevice b;
  auto dev = region.open_device(name, {.track_dirty = track, .engine = engine});
  if (!dev) return dev.error();
  b.dev = std::move(*dev);
  b.mapping = b.dev->map(0, size, Access::ReadWrite);
  if (!b.mapping) return b.mapping.error();
  std::memset(b.mapping->data(), 1, size);
  return b;
}

Status close_bench_device(Region& region, const std::string& name, BenchDevice& b) {
  b.mapping = Error(std::errc::operation_canceled, "closed");
  b.dev.reset();
  return region.destroy_namespace(name);
}

// Which of two equal mappings is populated first changes the cost of
// write-protecting it by up to 1.5x on our machines, so the pair is measured
// in both orders and each side keeps its best.
Result<Pair> freeze_pair(Region& region, EngineChoice engine, uint64_t size, int rounds) {
  const uint64_t huge = region.capabilities().huge_page_size;
  const bool hugetlb = region.capabilities().hugetlb;
  Pair pair{"freeze+thaw, " + std::string(engine_name(engine)) + ", " + internal::format_size(size) +
                (hugetlb ? " mapped (hugetlbfs 2M pages)"
                         : huge ? " mapped (2M pages)" : " mapped (4K pages)"),
            engine == EngineChoice::kUffd ? "UFFDIO_WRITEPROTECT on+off, same size"
                                          : "mprotect RO+RW, same size",
            0, 0, 25, "per freeze+thaw", GoalKind::kMaxMsPerGibAndSlowdown};
  pair.gib = static_cast<double>(size) / (1 << 30);
  pair.slowdown = 1.2;
  pair.goal = huge ? 3 : 25;  // ms per GiB: 512 PMD entries per GiB with huge pages
  double best_anchor = 1e300, best_rawdax = 1e300;
  bool mostly_small = false;
  uint64_t pmd_after = size;  // least PMD-mapped bytes of the device left by a freeze
  const std::string name = "bench-freeze-" + std::to_string(::getpid());
  for (bool device_first : {true, false}) {
    Result<RawMapping> raw = Error(std::errc::invalid_argument, "not made");
    if (!device_first) raw = raw_mapping(size, huge, hugetlb);
    auto dev = open_bench_device(region, name, size, engine, false);
    if (!dev) return dev.error();
    if (device_first) raw = raw_mapping(size, huge, hugetlb);
    if (!raw) return raw.error();
    // smaps counts hugetlbfs pages apart (Shared_Hugetlb): always huge there.
    if (huge != 0 && !hugetlb && (pmd_mapped_bytes(dev->mapping->data(), size) < size / 2 ||
                      pmd_mapped_bytes(raw->range.data(), size) < size / 2)) {
      mostly_small = true;
    }
    std::unique_ptr<RawUffd> uffd;
    if (engine == EngineChoice::kUffd) {
      auto made = RawUffd::create(raw->range.data(), size, RawFaults::kNobody);
      if (!made) return made.error();
      uffd = std::move(*made);
    }
    bool failed = false;
    measure(
        pair, rounds, 1,
        [&] {
          if (uffd) {
            uffd->protect(raw->range.data(), size, true);
            uffd->protect(raw->range.data(), size, false);
          } else {
            ::mprotect(raw->range.data(), size, PROT_READ);
            ::mprotect(raw->range.data(), size, PROT_READ | PROT_WRITE);
          }
        },
        [&] {
          auto frozen = dev->dev->freeze();
          failed |= !frozen;
        });
    uffd.reset();
    if (huge != 0 && !hugetlb) {
      pmd_after = std::min(pmd_after, pmd_mapped_bytes(dev->mapping->data(), size));
    }
    RAWDAX_RETURN_IF_ERROR(close_bench_device(region, name, *dev));
    if (failed) return Error(std::errc::io_error, "freeze benchmark: a freeze failed");
    best_anchor = std::min(best_anchor, pair.anchor_ns);
    best_rawdax = std::min(best_rawdax, pair.rawdax_ns);
  }
  pair.anchor_ns = best_anchor;
  pair.rawdax_ns = best_rawdax;
  if (mostly_small) {
    pair.name += ", but mostly 4K-mapped";
  } else if (pmd_after < size / 2) {
    // Write-protecting a file THP splits its PMD (the kernel keeps uffd-wp
    // and mprotect state per PTE for file mappings), so the freeze itself
    // leaves the mapping 4K-mapped; see docs/engine.md, "Huge pages".
    pair.name += ", PMDs split by the freeze (" + internal::format_size(pmd_after) + " left)";
  }
  return pair;
}

// The first store to each of `pages` pages after tracking was re-armed.
Result<Pair> first_write_pair(Region& region, EngineChoice engine, int rounds) {
  constexpr uint64_t kPages = 4096;
  const uint64_t size = kPages * kPage;
  const std::string name = "bench-fault-" + std::to_string(::getpid());
  auto dev = open_bench_device(region, name, size, engine, true);
  if (!dev) return dev.error();
  auto raw = raw_mapping(size);
  if (!raw) return raw.error();
  auto bare = bare_tracking(engine, raw->range, /*handle=*/true);
  if (!bare) return bare.error();
  auto touch = [](std::byte* base, uint64_t round) {
    for (uint64_t p = 0; p < kPages; ++p) {
      *reinterpret_cast<volatile uint64_t*>(base + p * kPage) = round;
    }
  };
  Pair pair{"first write per page with tracking, " + std::string(engine_name(engine)),
            (*bare)->uffd ? "bare sync uffd-wp fault + unprotect" : "bare async uffd-wp fault", 0, 0,
            1.0 / 1.2, "per page"};
  pair.anchor_ns = pair.rawdax_ns = 1e300;
  for (int r = 0; r <= rounds; ++r) {  // round 0 warms up
    RAWDAX_RETURN_IF_ERROR((*bare)->rearm());
    double anchor = time_ns([&] { touch(raw->range.data(), r); }) / kPages;
    RAWDAX_RETURN_IF_ERROR(dev->dev->sync());  // re-arms every page written before
    double subject = time_ns([&] { touch(dev->mapping->data(), r); }) / kPages;
    if (r == 0) continue;
    pair.anchor_ns = std::min(pair.anchor_ns, anchor);
    pair.rawdax_ns = std::min(pair.rawdax_ns, subject);
  }
  RAWDAX_RETURN_IF_ERROR(close_bench_device(region, name, *dev));
  return pair;
}

// sync() of `dirty` scattered dirty pages (every other page), per page,
// against re-protecting the same pages with the raw primitive.
Result<Pair> sync_pair(Region& region, EngineChoice engine, uint64_t dirty, int rounds) {
  const uint64_t size = dirty * 2 * kPage;
  const std::string name = "bench-sync-" + std::to_string(::getpid());
  auto dev = open_bench_device(region, name, size, engine, true);
  if (!dev) return dev.error();
  auto raw = raw_mapping(size);
  if (!raw) return raw.error();
  // The bare re-protect of the same written pages: one UFFDIO_WRITEPROTECT
  // per page (uffd), or one PAGEMAP_SCAN get+reprotect (mprotect engine).
  auto bare = bare_tracking(engine, raw->range, /*handle=*/false);
  if (!bare) return bare.error();
  RawUffd* uffd = (*bare)->uffd.get();
  Pair pair{"sync() of " + std::to_string(dirty) + " scattered dirty pages, " +
                engine_name(engine),
            uffd ? "UFFDIO_WRITEPROTECT of each page" : "PAGEMAP_SCAN get+reprotect", 0, 0,
            500, "per dirty page", GoalKind::kMaxNs};
  pair.anchor_ns = pair.rawdax_ns = 1e300;
  for (int r = 0; r <= rounds; ++r) {
    for (uint64_t p = 0; p < dirty; ++p) {
      dev->mapping->data()[2 * p * kPage] = std::byte{1};
      raw->range.data()[2 * p * kPage] = std::byte{1};
    }
    double subject = time_ns([&] { (void)dev->dev->sync(); }) / static_cast<double>(dirty);
    double anchor = time_ns([&] {
                      if (uffd) {
                        for (uint64_t p = 0; p < dirty; ++p) {
                          uffd->protect(raw->range.data() + 2 * p * kPage, kPage, true);
                        }
                      } else {
                        (void)(*bare)->rearm();
                      }
                    }) /
                    static_cast<double>(dirty);
    if (uffd) uffd->protect(raw->range.data(), size, false);
    if (r == 0) continue;
    pair.anchor_ns = std::min(pair.anchor_ns, anchor);
    pair.rawdax_ns = std::min(pair.rawdax_ns, subject);
  }
  RAWDAX_RETURN_IF_ERROR(close_bench_device(region, name, *dev));
  return pair;
}

// sync() of `dirty` scattered dirty pages (every other page) where the
// mprotect engine has no kernel tracker: it persists every mapped page.
// Anchor: persist() of exactly the dirty pages, what a tracker would allow.
Result<Pair> whole_range_sync_pair(Region& region, uint64_t dirty, int rounds) {
  const uint64_t size = dirty * 2 * kPage;
  const std::string name = "bench-sync-" + std::to_string(::getpid());
  auto dev = open_bench_device(region, name, size, EngineChoice::kMprotect, true);
  if (!dev) return dev.error();
  Pair pair{"sync() of " + std::to_string(dirty) + " scattered dirty pages, mprotect whole-range",
            "persist() of each dirty page", 0, 0, 0, "per dirty page", GoalKind::kReport};
  pair.anchor_ns = pair.rawdax_ns = 1e300;
  std::byte* base = dev->mapping->data();
  for (int r = 0; r <= rounds; ++r) {
    for (uint64_t p = 0; p < dirty; ++p) base[2 * p * kPage] = std::byte{1};
    double subject = time_ns([&] { (void)dev->dev->sync(); }) / static_cast<double>(dirty);
    for (uint64_t p = 0; p < dirty; ++p) base[2 * p * kPage] = std::byte{2};
    double anchor = time_ns([&] {
                      for (uint64_t p = 0; p < dirty; ++p) {
                        (void)dev->mapping->persist(base + 2 * p * kPage, kPage);
                      }
                    }) /
                    static_cast<double>(dirty);
    if (r == 0) continue;
    pair.anchor_ns = std::min(pair.anchor_ns, anchor);
    pair.rawdax_ns = std::min(pair.rawdax_ns, subject);
  }
  RAWDAX_RETURN_IF_ERROR(close_bench_device(region, name, *dev));
  return pair;
}

}  // namespace

Result<std::vector<Pair>> run_engine_pairs(Region& region, uint64_t size, int rounds,
                                           bool enable_huge_pages) {
  std::vector<Pair> pairs;
  std::vector<EngineChoice> engines;
  if (region.capabilities().uffd_wp_sync) engines.push_back(EngineChoice::kUffd);
  engines.push_back(EngineChoice::kMprotect);
  for (EngineChoice engine : engines) {
    for (uint64_t bytes : {size, size * 4}) {
      auto pair = freeze_pair(region, engine, bytes, rounds);
      if (!pair) return pair.error();
      pairs.push_back(*pair);
    }
  }
  // Huge pages: 1 GiB, the size the goal of 3 ms (512 PMD entries) is for.
  constexpr uint64_t kHugeSize = uint64_t{1} << 30;
  {  // 2 MiB pages, on a fresh memfd region that probes the THP setting anew.
    ShmemThpForBench thp(enable_huge_pages && ::geteuid() == 0);
    if (thp.on()) {
      auto huge_region = Region::open("memfd:");
      if (!huge_region) return huge_region.error();
      for (EngineChoice engine : engines) {
        auto pair = freeze_pair(**huge_region, engine, kHugeSize, rounds);
        if (!pair) return pair.error();
        pairs.push_back(*pair);
      }
    } else {
      std::fprintf(stderr, "rawdax bench: 2M pages not measured: shmem THP is '%s'%s\n",
                   thp.before().c_str(),
                   enable_huge_pages ? " and could not be set to 'advise' (not root?)"
                                     : " (--huge-pages sets it to 'advise' for the run)");
    }
  }
  if (enable_huge_pages) {  // hugetlbfs: the namespace and the anchor, plus room
    HugetlbfsForBench pool(2 * kHugeSize / (2 << 20) + 8);
    if (!pool.on()) {
      note_not_measured("freeze+thaw on hugetlbfs 2M pages", pool.why());
    } else {
      auto huge_region = Region::open(pool.dir(), {.create = true});
      if (!huge_region) return huge_region.error();
      for (EngineChoice engine : engines) {
        auto pair = freeze_pair(**huge_region, engine, kHugeSize, rounds);
        if (!pair) return pair.error();
        pairs.push_back(*pair);
      }
    }
  }
  // Without async uffd-wp and PAGEMAP_SCAN (before Linux 6.7), the mprotect
  // engine tracks whole ranges: its per-page rows have no anchor, and its
  // sync is measured against persisting just the dirty pages instead.
  const bool kernel_tracker = internal::write_tracker_supported();
  for (EngineChoice engine : engines) {
    if (engine == EngineChoice::kMprotect && !kernel_tracker) {
      note_not_measured("first write per page with tracking, mprotect",
                        "no async uffd-wp (Linux 6.7+); tracking is whole-range, with no fault");
      continue;
    }
    auto pair = first_write_pair(region, engine, rounds);
    if (!pair) return pair.error();
    pairs.push_back(*pair);
  }
  for (EngineChoice engine : engines) {
    for (uint64_t dirty : {uint64_t{1024}, uint64_t{16384}}) {
      bool whole_range = engine == EngineChoice::kMprotect && !kernel_tracker;
      auto pair = whole_range ? whole_range_sync_pair(region, dirty, rounds)
                              : sync_pair(region, engine, dirty, rounds);
      if (!pair) return pair.error();
      pairs.push_back(*pair);
    }
  }
  return pairs;
}

}  // namespace rawdax::cli

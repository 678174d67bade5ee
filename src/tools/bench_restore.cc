// `rawdax bench --only restore`: a lazy restore against a plain restore of
// the same snapshot, in the same run: time to the first 4 KiB read of a page
// deep in the image (from the restore call to that read's return), to the
// first load through a mapping of the whole namespace (a lazy restore's
// missing pages come from the userfaultfd engine's faults, or, on media
// without it, map() fills its range first), and until every page is in
// place.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "tools/bench.h"

namespace rawdax::cli {
namespace {

struct RestoreTimes {
  double first_io_ns = 0;  // restore call, then the first read's return
  double first_load_ns = 0;  // restore call, then map(all) and one load deep in it
  double total_ns = 0;     // restore call until every page is in place
};

double since(std::chrono::steady_clock::time_point start) {
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::steady_clock::now() - start)
                                 .count());
}

Result<RestoreTimes> restore_once(Region& region, const std::string& name,
                                  const std::string& snap, uint64_t size, bool lazy) {
  std::vector<std::byte> page(4096);
  const uint64_t deep = size - 3 * (size / 7) / 4096 * 4096;  // 4/7 in, page-aligned
  RestoreTimes out;
  for (bool by_load : {false, true}) {
    const auto start = std::chrono::steady_clock::now();
    auto info = region.restore_namespace(name, snap, {.lazy = lazy});
    if (!info) return info.error();
    {
      auto dev = region.open_device(name);
      if (!dev) return dev.error();
      if (by_load) {
        auto mapping = (*dev)->map(0, size, Access::ReadOnly);
        if (!mapping) return mapping.error();
        volatile std::byte loaded = mapping->data()[deep + 1];
        (void)loaded;
        out.first_load_ns = since(start);
      } else {
        RAWDAX_RETURN_IF_ERROR((*dev)->read(deep, page));
        out.first_io_ns = since(start);
      }
    }
    RAWDAX_RETURN_IF_ERROR(region.wait_for_restore(name));
    if (!by_load) out.total_ns = since(start);
    RAWDAX_RETURN_IF_ERROR(region.destroy_namespace(name));
  }
  return out;
}

}  // namespace

Result<std::vector<Pair>> run_restore_pairs(Region& region, uint64_t size, int rounds) {
  const std::string tag = std::to_string(::getpid());
  const std::string snap = "/dev/shm/rawdax-bench-" + tag + "-restore.snap";
  const std::string source = "bench-restore-src-" + tag, target = "bench-restore-" + tag;
  {
    auto info = region.create_namespace({.name = source, .size = size});
    if (!info) return info.error();
    auto dev = region.open_device(source);
    if (!dev) return dev.error();
    std::vector<std::byte> chunk(1 << 20);
    for (uint64_t at = 0; at < size; at += chunk.size()) {
      for (size_t i = 0; i < chunk.size(); i += 512) {
        chunk[i] = std::byte(static_cast<uint8_t>((at + i) >> 9));
      }
      RAWDAX_RETURN_IF_ERROR((*dev)->write(at, std::span(chunk.data(), std::min<uint64_t>(
                                                                           chunk.size(), size - at))));
    }
    auto taken = (*dev)->snapshot(snap);
    if (!taken) return taken.error();
  }
  RAWDAX_RETURN_IF_ERROR(region.destroy_namespace(source));
  RestoreTimes plain{1e300, 1e300, 1e300}, lazy{1e300, 1e300, 1e300};
  Status failed;
  for (int r = 0; r < rounds && failed; ++r) {
    for (bool is_lazy : {false, true}) {
      auto t = restore_once(region, target, snap, size, is_lazy);
      if (!t) {
        failed = t.error();
        break;
      }
      RestoreTimes& best = is_lazy ? lazy : plain;
      best.first_io_ns = std::min(best.first_io_ns, t->first_io_ns);
      best.first_load_ns = std::min(best.first_load_ns, t->first_load_ns);
      best.total_ns = std::min(best.total_ns, t->total_ns);
    }
  }
  ::unlink(snap.c_str());
  (void)region.destroy_namespace(target);
  if (!failed) return failed.error();
  const std::string size_text = std::to_string(size >> 20) + " MiB";
  const double gib = static_cast<double>(size) / (1 << 30);
  std::vector<Pair> pairs;
  pairs.push_back(Pair{"lazy restore " + size_text + ", to the first 4 KiB read deep in it",
                       "plain restore of the same snapshot", plain.first_io_ns,
                       lazy.first_io_ns, 0, "per restore", GoalKind::kReport});
  pairs.push_back(Pair{"lazy restore " + size_text + ", to the first load through a mapping of it all",
                       "plain restore of the same snapshot", plain.first_load_ns,
                       lazy.first_load_ns, 0, "per restore", GoalKind::kReport});
  Pair total{"lazy restore " + size_text + ", until every page is in place",
             "plain restore of the same snapshot", plain.total_ns, lazy.total_ns, 0,
             "per restore", GoalKind::kReport};
  total.gib = gib;
  pairs.push_back(total);
  return pairs;
}

}  // namespace rawdax::cli

// Shared pieces of `rawdax bench`: a measured pair (rawdax against an anchor
// in the same run), its goal, and the alternating best-of-N measurement.
#ifndef RAWDAX_TOOLS_BENCH_H_
#define RAWDAX_TOOLS_BENCH_H_

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "rawdax/region.h"
#include "rawdax/result.h"

namespace rawdax::cli {

// What a pair's goal bounds: the ratio, rawdax's time per unit, or (for
// teardown) rawdax's milliseconds per GiB torn down.
// kReport: no goal, shown for the record.
enum class GoalKind { kMinRatio, kMaxNs, kMaxMsPerGib, kMaxMsPerGibAndSlowdown, kReport };

struct Pair {
  std::string name;
  std::string anchor;
  double anchor_ns = 0;  // best time of one unit of work
  double rawdax_ns = 0;
  double goal = 0;
  std::string unit;
  GoalKind kind = GoalKind::kMinRatio;
  double gib = 0;       // kMaxMsPerGib*: GiB per unit
  double slowdown = 0;  // kMaxMsPerGibAndSlowdown: rawdax may take this many times the anchor
  double ratio() const { return anchor_ns / rawdax_ns; }
  double ms_per_gib() const { return rawdax_ns / 1e6 / gib; }
  bool met() const {
    switch (kind) {
      case GoalKind::kMinRatio: return ratio() >= goal;
      case GoalKind::kMaxNs: return rawdax_ns <= goal;
      case GoalKind::kMaxMsPerGib: return ms_per_gib() <= goal;
      case GoalKind::kMaxMsPerGibAndSlowdown:
        return ms_per_gib() <= goal && ratio() >= 1.0 / slowdown;
      case GoalKind::kReport: return true;
    }
    return false;
  }
  std::string goal_text() const {
    char buf[48];
    switch (kind) {
      case GoalKind::kMinRatio: std::snprintf(buf, sizeof buf, "ratio >= %.2f", goal); break;
      case GoalKind::kMaxNs: std::snprintf(buf, sizeof buf, "rawdax <= %.0f ns", goal); break;
      case GoalKind::kMaxMsPerGib:
        std::snprintf(buf, sizeof buf, "%.1f ms/GiB <= %.0f", ms_per_gib(), goal);
        break;
      case GoalKind::kMaxMsPerGibAndSlowdown:
        std::snprintf(buf, sizeof buf, "%.2f ms/GiB <= %.0f, ratio >= %.2f", ms_per_gib(), goal,
                      1.0 / slowdown);
        break;
      case GoalKind::kReport:
        if (gib > 0) {
          std::snprintf(buf, sizeof buf, "%.1f ms/GiB (no goal)", ms_per_gib());
        } else {
          std::snprintf(buf, sizeof buf, "(no goal)");
        }
        break;
    }
    return buf;
  }
};

inline void compiler_barrier() { asm volatile("" ::: "memory"); }

// Wall time of one call of work(), in nanoseconds.
double time_ns(const std::function<void()>& work);

// Says on stderr that `row` is not measured on this machine, and why (a
// kernel without the feature its anchor or subject needs). The other rows
// still run: the bench fails only on real errors.
void note_not_measured(const std::string& row, const std::string& why);

// Runs anchor and subject alternately, `rounds` times after one warm-up each,
// and keeps each side's best time per unit (`units` units per call).
void measure(Pair& pair, int rounds, double units, const std::function<void()>& anchor,
             const std::function<void()>& subject);

// Freeze/thaw latency per engine and size (and on 2 MiB shmem THP pages when
// enabled; `enable_huge_pages` switches shmem THP to "advise" for the run
// when root, restoring it after), first-write fault cost with tracking, and
// sync() cost per dirty page (bench_engine.cc).
Result<std::vector<Pair>> run_engine_pairs(Region& region, uint64_t size, int rounds,
                                           bool enable_huge_pages);

// Live snapshot writer stall and time against fork-COW, and incremental
// snapshot cost, freeze instant and writer stall by dirty fraction; with
// `huge_pages` (root), the writer stall on shmem THP against fork-COW on THP
// anonymous memory and on hugetlbfs (2 MiB copy-before-write) against 4 KiB
// pages (bench_snapshot.cc).
Result<std::vector<Pair>> run_snapshot_pairs(Region& region, uint64_t size, int rounds,
                                             bool huge_pages);

// Lazy restore against a plain restore of the same `size`-byte snapshot:
// time to the first 4 KiB read deep in the image, and until the fill is
// complete (bench_restore.cc).
Result<std::vector<Pair>> run_restore_pairs(Region& region, uint64_t size, int rounds);

// Namespace create and destroy latency on the region (zeroing included: a
// carved region zeroes an extent at create), against making and removing a
// file of the same size, fsynced, on the same filesystem (/dev/shm for
// devdax and memfd) (bench_region.cc).
Result<std::vector<Pair>> run_region_pairs(Region& region, uint64_t size, int rounds);

}  // namespace rawdax::cli

#endif  // RAWDAX_TOOLS_BENCH_H_

// LiveRef hot path against the obvious alternative, a single atomic counter.
//
// Pairs measured in the same run:
//   uncontended: LiveRef writer tryget+put vs fetch_add+fetch_sub on one
//                std::atomic<int64_t>            (goal: LiveRef <= 20 ns)
//   2 threads on ONE shared object: the same pair  (goal: LiveRef >= 2x faster)
// After the run a summary prints the ratios computed from this run's results.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "ref/live_ref.h"

namespace {

using rawdax::internal::LiveRef;

// Shared by all benchmark threads; each on its own cache line.
alignas(64) std::atomic<int64_t> g_shared_counter{0};
alignas(64) LiveRef g_shared_ref;

void BM_Atomic_Uncontended(benchmark::State& state) {
  alignas(64) std::atomic<int64_t> counter{0};
  for (auto _ : state) {
    counter.fetch_add(1);
    counter.fetch_sub(1);
  }
  benchmark::DoNotOptimize(counter.load());
}
BENCHMARK(BM_Atomic_Uncontended)->Unit(benchmark::kNanosecond);

void BM_LiveRef_Uncontended(benchmark::State& state) {
  LiveRef ref;
  for (auto _ : state) {
    if (!ref.tryget(LiveRef::Access::kWrite)) {
      state.SkipWithError("tryget failed");
      break;
    }
    ref.put(LiveRef::Access::kWrite);
  }
}
BENCHMARK(BM_LiveRef_Uncontended)->Unit(benchmark::kNanosecond);

// Reported time per iteration is wall time over the iterations of all
// threads, i.e. the inverse of aggregate throughput.
void BM_Atomic_Shared(benchmark::State& state) {
  for (auto _ : state) {
    g_shared_counter.fetch_add(1);
    g_shared_counter.fetch_sub(1);
  }
}
BENCHMARK(BM_Atomic_Shared)->Threads(2)->UseRealTime()->Unit(benchmark::kNanosecond);

void BM_LiveRef_Shared(benchmark::State& state) {
  for (auto _ : state) {
    if (!g_shared_ref.tryget(LiveRef::Access::kWrite)) {
      state.SkipWithError("tryget failed");
      break;
    }
    g_shared_ref.put(LiveRef::Access::kWrite);
  }
}
BENCHMARK(BM_LiveRef_Shared)->Threads(2)->UseRealTime()->Unit(benchmark::kNanosecond);

// Prints as usual and keeps real/cpu time per iteration of each run.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  // A display reporter passed in by hand does not get --benchmark_color, so
  // decide like its "auto" default does: colour only on a terminal.
  RatioReporter() : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_ColorTabular : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      // Each repetition's own run; with --benchmark_report_aggregates_only
      // only the aggregates arrive, and their "median" stands in.
      Times& times = times_[run.run_name.function_name];
      std::vector<Sample>* into = nullptr;
      if (run.run_type == Run::RT_Iteration) {
        into = &times.runs;
      } else if (run.aggregate_name == "median") {
        into = &times.medians;
      }
      if (into == nullptr) continue;
      into->push_back({ToNs(run.GetAdjustedRealTime(), run.time_unit),
                       ToNs(run.GetAdjustedCPUTime(), run.time_unit)});
    }
  }

  void PrintSummary() const {
    std::printf("\nSummary (ns per iteration, median over repetitions; ratio = anchor/LiveRef):\n");
    Sample anchor, live;
    if (Find("BM_Atomic_Uncontended", &anchor) && Find("BM_LiveRef_Uncontended", &live)) {
      std::printf("  uncontended: atomic %.2f ns, LiveRef %.2f ns (goal <= 20 ns: %s)\n",
                  anchor.real_ns, live.real_ns, live.real_ns <= 20.0 ? "met" : "MISSED");
      std::printf("  ratio uncontended atomic/LiveRef: %.2fx\n", anchor.real_ns / live.real_ns);
    } else {
      std::printf("  uncontended: n/a (filtered out or failed)\n");
    }
    if (Find("BM_Atomic_Shared", &anchor) && Find("BM_LiveRef_Shared", &live)) {
      const double ratio = anchor.real_ns / live.real_ns;
      std::printf("  2 threads, one shared object: atomic %.2f ns, LiveRef %.2f ns (aggregate)\n",
                  anchor.real_ns, live.real_ns);
      std::printf("  ratio 2-thread shared-atomic/LiveRef: %.1fx (goal >= 2: %s)\n", ratio,
                  ratio >= 2.0 ? "met" : "MISSED");
      // cpu/real is how many threads really ran at once. Near 1 means another
      // process held the second core: there was no contention to measure.
      const double overlap = std::min(anchor.cpu_ns / anchor.real_ns, live.cpu_ns / live.real_ns);
      if (overlap < 1.5) {
        std::printf(
            "  WARNING: the 2 threads overlapped only %.1fx (cpu/real); the machine is "
            "busy and the 2-thread ratio is not meaningful\n",
            overlap);
      }
    } else {
      std::printf("  2 threads: n/a (filtered out or failed)\n");
    }
  }

 private:
  struct Sample {
    double real_ns = 0;
    double cpu_ns = 0;
  };
  struct Times {
    std::vector<Sample> runs;
    std::vector<Sample> medians;
  };

  static double ToNs(double value, benchmark::TimeUnit unit) {
    switch (unit) {
      case benchmark::kNanosecond:
        return value;
      case benchmark::kMicrosecond:
        return value * 1e3;
      case benchmark::kMillisecond:
        return value * 1e6;
      case benchmark::kSecond:
        return value * 1e9;
    }
    return value;
  }

  // The median sample (by real time) of a benchmark; false if it did not run.
  bool Find(const std::string& name, Sample* out) const {
    auto it = times_.find(name);
    if (it == times_.end()) return false;
    std::vector<Sample> v = it->second.runs.empty() ? it->second.medians : it->second.runs;
    if (v.empty()) return false;
    std::sort(v.begin(), v.end(),
              [](const Sample& a, const Sample& b) { return a.real_ns < b.real_ns; });
    *out = v[v.size() / 2];
    return true;
  }

  std::map<std::string, Times> times_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintSummary();
  benchmark::Shutdown();
  return 0;
}

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

using rawdax::LiveRef;

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
      if (run.error_occurred || run.run_type != Run::RT_Iteration) continue;
      // Names look like "BM_LiveRef_Shared/real_time/threads:2".
      const std::string name = run.benchmark_name();
      Times& times = times_[name.substr(0, name.find('/'))];
      times.real_ns.push_back(ToNs(run.GetAdjustedRealTime(), run.time_unit));
      times.cpu_ns.push_back(ToNs(run.GetAdjustedCPUTime(), run.time_unit));
    }
  }

  void PrintSummary() const {
    std::printf("\nSummary (real time per iteration; median over repetitions):\n");
    PrintPair("uncontended", "BM_Atomic_Uncontended", "BM_LiveRef_Uncontended", "atomic/LiveRef",
              nullptr);
    const double uncontended = Median("BM_LiveRef_Uncontended");
    if (uncontended > 0) {
      std::printf("  LiveRef uncontended tryget+put: %.2f ns (goal <= 20 ns: %s)\n", uncontended,
                  uncontended <= 20.0 ? "met" : "MISSED");
    }
    PrintPair("2 threads, one shared object", "BM_Atomic_Shared", "BM_LiveRef_Shared",
              "2-thread shared-atomic/LiveRef", "2");
  }

 private:
  struct Times {
    std::vector<double> real_ns;
    std::vector<double> cpu_ns;
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

  // Median ns/iteration (real or cpu) of a benchmark, or -1 if it did not run.
  double Median(const std::string& name, bool cpu = false) const {
    auto it = times_.find(name);
    if (it == times_.end() || it->second.real_ns.empty()) return -1;
    std::vector<double> v = cpu ? it->second.cpu_ns : it->second.real_ns;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }

  void PrintPair(const char* what, const std::string& anchor, const std::string& subject,
                 const char* label, const char* goal) const {
    const double anchor_ns = Median(anchor);
    const double subject_ns = Median(subject);
    if (anchor_ns <= 0 || subject_ns <= 0) {
      std::printf("  %s: n/a (filtered out or failed)\n", what);
      return;
    }
    const double ratio = anchor_ns / subject_ns;
    std::printf("  %s: anchor %.2f ns (cpu %.2f), LiveRef %.2f ns (cpu %.2f)\n", what, anchor_ns,
                Median(anchor, true), subject_ns, Median(subject, true));
    if (goal != nullptr) {
      std::printf("  ratio %s: %.1fx (goal >= %s: %s)\n", label, ratio, goal,
                  ratio >= std::stod(goal) ? "met" : "MISSED");
    } else {
      std::printf("  ratio %s: %.2fx\n", label, ratio);
    }
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

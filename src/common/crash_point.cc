#include "common/crash_point.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace rawdax::internal {
namespace {

struct Settings {
  long target = 0;
  bool trace = false;
};

const Settings& settings() {
  static const Settings s = [] {
    Settings out;
    if (const char* at = std::getenv("RAWDAX_CRASH_AT")) out.target = std::strtol(at, nullptr, 10);
    if (const char* trace = std::getenv("RAWDAX_CRASH_TRACE")) out.trace = trace[0] == '1';
    return out;
  }();
  return s;
}

std::atomic<long> g_passed{0};

}  // namespace

void crash_point(const char* what) {
  const Settings& s = settings();
  if (s.target <= 0 && !s.trace) [[likely]] return;
  long n = g_passed.fetch_add(1) + 1;
  if (s.trace) std::fprintf(stderr, "rawdax: persist point %ld: %s\n", n, what);
  if (n == s.target) {
    // write(2), not stdio: nothing buffered may be flushed by the "crash".
    char line[256];
    int len = std::snprintf(line, sizeof line, "rawdax: crash injected at persist point %ld (%s)\n",
                            n, what);
    if (len > 0) (void)!::write(STDERR_FILENO, line, static_cast<size_t>(len));
    ::_exit(kCrashExitCode);
  }
}

}  // namespace rawdax::internal

// Crash injection at persist points, for crash-consistency tests.
//
// Each writer of durable state (region metadata, backing files, snapshots,
// restores) calls crash_point("what") just before and after each step that
// makes something durable or visible: fsync, rename, unlink, flush. With the
// environment variable RAWDAX_CRASH_AT=N the process dies at the Nth call
// (one line on stderr, then _exit(86): no destructors, no stdio flush, as a
// kill would). RAWDAX_CRASH_TRACE=1 prints every point as it passes.
// Unset, a call costs one predictable branch.
//
// Thread-safe (an atomic counter).
#ifndef RAWDAX_COMMON_CRASH_POINT_H_
#define RAWDAX_COMMON_CRASH_POINT_H_

namespace rawdax::internal {

inline constexpr int kCrashExitCode = 86;

void crash_point(const char* what);

}  // namespace rawdax::internal

#endif  // RAWDAX_COMMON_CRASH_POINT_H_

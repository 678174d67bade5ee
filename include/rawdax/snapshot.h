// Point-in-time snapshots of a namespace: options and results.
// Plain value types. Option members have default initializers so that
// designated initializers may omit any of them without -Wextra warnings. See Device::snapshot(), Region::restore_namespace() and
// verify_snapshot().
#ifndef RAWDAX_SNAPSHOT_H_
#define RAWDAX_SNAPSHOT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "rawdax/export.h"
#include "rawdax/result.h"

namespace rawdax {

struct SnapshotOptions {
  // Empty: a full snapshot. Otherwise the path of this device's previous
  // snapshot: only the pages written since it are stored (needs a device
  // opened with track_dirty).
  std::string base = {};
  // Called now and then from the snapshotting thread with pages examined so
  // far and the total; for progress bars. May be empty.
  std::function<void(uint64_t done, uint64_t total)> progress = nullptr;
  // Threads copying in the background pass (the calling thread is one of
  // them); 0 picks one per CPU, at most 2. Writers' own copies are extra.
  // More than kMaxSnapshotCopyThreads is invalid_argument.
  unsigned copy_threads = 0;
};
inline constexpr unsigned kMaxSnapshotCopyThreads = 64;

struct SnapshotInfo {
  std::string path;
  std::string id;
  std::string base_id;         // empty for a full snapshot
  std::string base_path;       // as recorded in the file
  std::string source_uuid;
  uint64_t namespace_size = 0;
  uint64_t page_size = 0;
  uint64_t pages = 0;          // pages stored in this file
  uint64_t bytes_written = 0;  // page bytes stored
  uint64_t duration_ns = 0;    // taking it (0 when read back from a file)
  uint64_t max_writer_stall_ns = 0;
  // A snapshot of a namespace an attached VM maps (the daemon's snapshot
  // command): how the guest's stores were held, "background" (QEMU's
  // background snapshot: paused only while QEMU write-protects its RAM) or
  // "pause" (paused for the whole copy); empty without a VM. vm_pause_ns is
  // the guest's pause, RESUME − STOP of QEMU's QMP event timestamps (0 when
  // QEMU did not report both).
  std::string vm_snapshot = {};
  uint64_t vm_pause_ns = 0;
  // The freeze instant: from the freeze until the device thawed with the
  // copier installed (part of max_writer_stall_ns; 0 when read back).
  uint64_t freeze_ns = 0;
};

// Checks a snapshot file and its whole base chain: header and data
// checksums, the page bitmap, and that each base has the recorded id and
// checksum. Returns the chain, newest first; the error names the file and
// what is wrong.
RAWDAX_EXPORT Result<std::vector<SnapshotInfo>> verify_snapshot(const std::string& path);

}  // namespace rawdax

#endif  // RAWDAX_SNAPSHOT_H_

// Device's plain value types: the options its calls take, its counters and
// the runs extents() reports. Apart from Device so that the device and engine
// layers (src/device, src/engine) can use them without the API that sits
// above them. Option members have default initializers, so designated
// initializers may omit any of them.
#ifndef RAWDAX_DEVICE_TYPES_H_
#define RAWDAX_DEVICE_TYPES_H_

#include <chrono>
#include <cstdint>

namespace rawdax {

// Which protection engine write-protects the mappings (freeze, tracking).
enum class EngineChoice {
  kAuto,      // the region's capabilities().engine
  kUffd,      // sync userfaultfd write-protect; ENOTSUP where the media refuses it
  kMprotect,  // mprotect + SIGSEGV parking; works on every media
};

// Which thread answers a write fault of the uffd engine (a store to a page a
// freeze, tracking or a live snapshot's copy-before-write protects).
enum class UffdFaults {
  kAuto,            // kFaultingThread where this process's userfaultfd is user-mode-only
                    // (a plain user's: it loses nothing there), else kHandlerThread
  kHandlerThread,   // the engine's handler thread; on a full-mode userfaultfd a
                    // kernel-mode write (read(2) into a mapping) waits like a store
  kFaultingThread,  // the faulting thread itself, in a SIGBUS handler: about half the
                    // round trip; a kernel-mode write into a protected page fails
                    // with EFAULT, and a lazy restore's pages are filled at map()
};

// The first open of a namespace (per Region) fixes its engine and tracking;
// a later open that asks for different ones fails with EBUSY.
struct DeviceOptions {
  bool track_dirty = false;  // page-granular dirty bitmap fed by both faces
  bool read_only = false;    // this handle refuses writes and writable mappings
  EngineChoice engine = EngineChoice::kAuto;
  UffdFaults uffd_faults = UffdFaults::kAuto;  // the uffd engine only
};

struct FreezeOptions {
  // Longest wait for in-flight block writes to drain; then ETIMEDOUT.
  std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max();
};

struct WriteOptions {
  bool fua = false;  // durable by the media's method when write() returns
};

struct ResizeOptions {
  bool force = false;  // revoke mappings that cover a cut instead of failing
};

struct ZeroOptions {
  bool no_hole = false;  // keep the space allocated (memset, never punch)
};

// Counters since the device was opened. Monotonic, except the gauges
// (live_mappings, dirty_pages, parked_writers); read one by one, so a
// snapshot of several counters is not atomic as a whole.
struct DeviceStats {
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t write_zeroes = 0;
  uint64_t discards = 0;
  uint64_t flushes = 0;
  uint64_t maps = 0;
  uint64_t live_mappings = 0;
  uint64_t revoked_mappings = 0;
  uint64_t media_errors = 0;    // requests failed with EIO by the media (poison, a cut-short file)
  uint64_t bad_ranges = 0;      // ranges in the bad-block list now (NamespaceInfo::badblocks)
  uint64_t dirty_pages = 0;     // set in the dirty bitmap now (tracking only)
  uint64_t synced_pages = 0;    // persisted by sync() since open
  uint64_t write_faults = 0;    // write faults the engine handled (tracking or parking)
  uint64_t freezes = 0;         // outermost freezes taken
  uint64_t stall_total_ns = 0;  // time writers (stores and block writes) waited on freezes
  uint64_t stall_max_ns = 0;    // the longest single wait
  // Writers waiting now: block writes held by a freeze or a resize, and
  // stores parked by the engine on a frozen mapping (or, during a live
  // snapshot on the mprotect engine, on a chunk not yet copied). A writer
  // counted here has not written yet; it lands after the thaw.
  uint64_t parked_writers = 0;
};

// One run of the namespace as its backing allocation shows it.
struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool hole = false;  // no space allocated: the run reads as zeros
};

}  // namespace rawdax

#endif  // RAWDAX_DEVICE_TYPES_H_

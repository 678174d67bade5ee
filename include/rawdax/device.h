// Device: an open namespace, with its two faces over the same bytes.
//
// Block face: read/write/write_zeroes/discard/flush, bounds-checked; each is
// a memcpy (or memset / hole punch) on the device's own shared mapping, so
// the hot path makes no system call. Mapping face: map() hands out Mappings
// of the same pages.
//
// Errors: every offset/length outside the namespace, or overflowing, fails
// with an Error naming the namespace, offset, length and size, and writes
// nothing: EINVAL (reads, bad alignment, overflow), ENOSPC (writes past the
// end), EROFS/EACCES (writes on a read-only device).
//
// Thread safety: all methods are thread-safe. Concurrent writes to the same
// bytes race as plain memory does (last store wins, no tearing guarantee below
// a page for the block face). Ownership: the caller owns the Device; Mappings
// keep the internals alive after the Device is destroyed.
#ifndef RAWDAX_DEVICE_H_
#define RAWDAX_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "rawdax/capabilities.h"
#include "rawdax/mapping.h"
#include "rawdax/namespace.h"
#include "rawdax/result.h"

namespace rawdax {

struct DeviceOptions {
  bool track_dirty = false;  // page-granular dirty tracking (protection engine)
  bool read_only = false;    // refuse writes and writable mappings
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

// Counters since the device was opened. Monotonic; read with relaxed loads,
// so a snapshot of several counters is not atomic as a whole.
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
};

class Device {
 public:
  // Made by Region::open_device(); not for direct use.
  Device(std::shared_ptr<internal::DeviceCore> core, DeviceOptions options);
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  ~Device();

  const std::string& name() const;
  NamespaceInfo info() const;  // with the current size
  uint64_t size() const;
  const Capabilities& capabilities() const;

  Status read(uint64_t offset, std::span<std::byte> out) const;
  Status write(uint64_t offset, std::span<const std::byte> data, WriteOptions options = {});
  // Reads of the range return zeros afterwards. Punches a hole where the
  // media can (page-aligned interior), unless options.no_hole.
  Status write_zeroes(uint64_t offset, uint64_t length, ZeroOptions options = {});
  // Releases the range's space where the media can; reads then return zeros.
  Status discard(uint64_t offset, uint64_t length);
  // Makes every write that returned before it durable by the media's method.
  Status flush();

  // Maps [offset, offset+length). The offset must be a multiple of
  // capabilities().alignment (the page size; the huge page size on hugetlbfs
  // and devdax); the length must be > 0 and inside the namespace.
  Result<Mapping> map(uint64_t offset, uint64_t length, Access access);

  // Changes the namespace's size (rounded up to the alignment) and records it
  // crash-consistently. Growing is always allowed, under load. Shrinking fails
  // with EBUSY while a Mapping covers the cut, unless options.force, which
  // revokes those mappings first (their accesses then raise SIGBUS). Block
  // writes wait while a resize runs; I/O past the new end fails. ENOTSUP on
  // devdax; ENXIO after remove().
  Status resize(uint64_t new_size, ResizeOptions options = {});

  // Tears the namespace down in this process, as the kernel's device removal
  // does. When it returns: new block I/O and map() fail with ENXIO; every
  // Mapping is revoked (loads and stores raise SIGBUS, while the address
  // range stays reserved until the Mapping is destroyed); in-flight requests
  // have drained; the backing media is released. Idempotent. Every Device
  // handle of the namespace sees the removal.
  Status remove();

  DeviceStats stats() const;

 private:
  std::shared_ptr<internal::DeviceCore> core_;
  bool read_only_;
};

}  // namespace rawdax

#endif  // RAWDAX_DEVICE_H_

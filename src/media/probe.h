// Capability detection for each media kind. Every flag comes from trying
// the thing on a small probe object: statfs for the filesystem, a MAP_SYNC
// mapping, fallocate(PUNCH_HOLE), and userfaultfd registrations in sync and
// async write-protect mode. Thread-safe; each call makes and removes its own
// probe object.
#ifndef RAWDAX_MEDIA_PROBE_H_
#define RAWDAX_MEDIA_PROBE_H_

#include <cstdint>
#include <string>

#include "rawdax/capabilities.h"
#include "rawdax/result.h"

namespace rawdax::internal {

// Probes a directory on any filesystem by creating a hidden probe file in it.
Result<Capabilities> probe_directory(const std::string& dir);

// Probes anonymous shared memory (memfd).
Result<Capabilities> probe_memfd();

// Size and alignment of a device-dax character device, read from sysfs.
struct DevdaxGeometry {
  uint64_t size = 0;
  uint64_t align = 0;
};
Result<DevdaxGeometry> read_devdax_geometry(const std::string& device_path);

// Probes an open device-dax fd by mapping its first `geometry.align` bytes.
Result<Capabilities> probe_devdax(int fd, const DevdaxGeometry& geometry);

// mmap flags for a shared mapping of this media (adds MAP_SYNC where it works).
int shared_map_flags(const Capabilities& caps);

}  // namespace rawdax::internal

#endif  // RAWDAX_MEDIA_PROBE_H_

// What a region reports of its space, and what formatting a carved device
// takes and reports. Plain value types, apart from Region so that the region
// layer (src/region) can use them without the API that sits above it.
#ifndef RAWDAX_REGION_SPACE_H_
#define RAWDAX_REGION_SPACE_H_

#include <cstdint>
#include <string>

namespace rawdax {

// The space of a region, as list --json reports it.
struct RegionSpace {
  bool carved = false;           // devdax: or file:
  uint64_t device_size = 0;      // carved: usable bytes of the device or file
  uint64_t label_area_size = 0;  // carved: bytes before the first extent
  uint64_t align = 0;            // granularity of sizes and extents
  uint64_t free = 0;             // bytes new namespaces could take in all
  uint64_t largest_free = 0;     // the largest namespace that can be created now
  uint32_t label_slots = 0;      // carved: label slots (one per namespace, plus one spare)
  // carved: set when a label index block was unusable (a corrupt or torn
  // block, or the newest one naming a bad label) and the region opened from
  // the other one; says what was wrong and that the last update may be lost.
  std::string recovered_from;
};

struct InitOptions {
  // Erase what the device holds: namespaces in a label area, or data on a
  // device without one. Without it such a device is refused (EEXIST) with a
  // description of what would be erased.
  bool force = false;
  uint64_t file_size = 0;  // file: make a missing file of this size (0: 4 GiB)
};

struct InitReport {
  std::string spec;
  uint64_t device_size = 0;
  uint64_t label_area_size = 0;
  uint64_t align = 0;
  std::string erased;  // what the device held that is gone; empty when nothing
};

struct DestroyOptions {
  bool force = false;
};

struct RestoreOptions {
  bool force = false;  // resize an existing namespace of another size
  // Makes the namespace usable at once: pages are filled on demand by its
  // first access and by a background fill that this Region runs (see
  // Region::restore_namespace and docs/snapshot.md "Lazy restore").
  bool lazy = false;
};

}  // namespace rawdax

#endif  // RAWDAX_REGION_SPACE_H_

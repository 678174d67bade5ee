// CarvedMedia: the one backing object of a carved region, either a
// device-dax character device ("devdax:/dev/daxX.Y") or one preallocated
// file ("file:PATH": on a DAX filesystem, hugetlbfs, ext4 or tmpfs). Every
// namespace of the region is an extent of it (see label_area.h); this class
// knows the object's geometry and how to reach, zero and persist its bytes,
// and holds the exclusive lock that makes one process its owner.
//
// Lock: an exclusive flock on the object itself, held while this object
// lives; the kernel drops it when the process dies. A second opener (another
// daemon, or a second Region in this process) gets EBUSY naming the holder's
// pid, read from /proc/locks.
//
// Ownership: owns the fd and the label area's mapping. Thread safety: the
// accessors are thread-safe; zero() and persist() may run concurrently on
// disjoint ranges. Updates of the label area are serialized by the Catalog.
#ifndef RAWDAX_REGION_CARVED_MEDIA_H_
#define RAWDAX_REGION_CARVED_MEDIA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/mapped_range.h"
#include "common/unique_fd.h"
#include "rawdax/capabilities.h"
#include "rawdax/result.h"

namespace rawdax::internal {

class CarvedMedia {
 public:
  struct Options {
    bool create = false;      // file: make a missing file of `file_size` bytes
    uint64_t file_size = 0;   // 0: kDefaultFileSize
    bool require_dax = false;
  };
  static constexpr uint64_t kDefaultFileSize = uint64_t{4} << 30;

  // `spec` is "devdax:PATH" or "file:PATH". ENOENT for a missing file
  // without create; ENODEV for a path that is not a device-dax instance;
  // EBUSY when another open holds the lock; ENOTSUP for require_dax on media
  // without DAX.
  static Result<std::unique_ptr<CarvedMedia>> open(const std::string& spec, Options options);

  // True for the specs this class opens.
  static bool is_carved_spec(std::string_view spec);

  const std::string& spec() const { return spec_; }
  const std::string& path() const { return path_; }
  const Capabilities& capabilities() const { return caps_; }
  int fd() const { return fd_.get(); }
  // Usable bytes: the object's size rounded down to the align.
  uint64_t size() const { return size_; }
  // Extent granularity: the device align (devdax), or the page size, or the
  // huge page size on hugetlbfs and DAX filesystems.
  uint64_t align() const { return caps_.alignment; }

  // Maps [offset, offset+length), both multiples of align(), read-write.
  Result<MappedRange> map(uint64_t offset, uint64_t length) const;
  // The label area, [0, label_area_bytes(align())), mapped once for updates.
  std::byte* label_area() const { return label_area_.data(); }
  size_t label_area_size() const { return label_area_.size(); }
  // Persists bytes of a mapping of this media by its method.
  Status persist(const std::byte* addr, size_t length) const;

  // Makes [offset, offset+length) read as zeros, durably: ZERO_RANGE or a
  // punched hole on files that support them, else stores through a mapping
  // and the media's flush (devdax, hugetlbfs).
  Status zero(uint64_t offset, uint64_t length) const;

  // The offset of the first non-zero byte in [begin, end), or nullopt when
  // it is all zeros. Holes of a file are skipped without reading them.
  Result<std::optional<uint64_t>> first_nonzero(uint64_t begin, uint64_t end) const;

 private:
  CarvedMedia() = default;
  Status open_devdax();
  Status open_backing_file(const Options& options);
  Status lock();

  std::string spec_, path_;
  Capabilities caps_;
  UniqueFd fd_;
  uint64_t size_ = 0;
  MappedRange label_area_;
};

}  // namespace rawdax::internal

#endif  // RAWDAX_REGION_CARVED_MEDIA_H_

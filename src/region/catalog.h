// Catalog: the namespaces of one region and the objects that back them.
//
// Kinds:
//  - directory: metadata in DIR/rawdax.meta (see metadata.h), one backing
//    file per namespace in DIR/ns/<uuid>, an exclusive flock on DIR/rawdax.lock.
//    On hugetlbfs (Capabilities::hugetlb) backing objects have every page
//    allocated when they are made, so that no store can find the pool empty.
//  - memfd: metadata in memory, one memfd per namespace; lives as long as the
//    Catalog (and any mappings of its memfds).
//  - carved (devdax:, file:): one device or file (CarvedMedia) whose label
//    area (label_area.h) names each namespace's extent. Extents are taken by
//    best fit (FreeSpace), zeroed before a label names them, and grow only
//    in place. Besides the labels, extents can be held in memory: by a
//    device whose views still cover bytes a shrink cut off (until the device
//    releases its media), and by a restore or create in progress. Held bytes
//    are never handed out.
//  - devdax-whole: exactly one namespace, the whole device, named after it;
//    it can be neither created nor destroyed (the layout before carving).
//
// Crash consistency (carved): label updates are atomic (label_area.h); a
// new extent is zeroed and, for a restore, filled and persisted before the
// update that names it.
//
// Crash consistency (directory): create makes and fsyncs the backing file
// before the metadata names it; destroy drops the name from the metadata
// before it unlinks the file. A crash therefore leaves old or new metadata
// and at worst an unnamed file, which open() deletes (orphan cleanup).
//
// Thread safety: all methods are thread-safe (one internal mutex; updates are
// serialized, so the generation counter increases by one per update).
#ifndef RAWDAX_REGION_CATALOG_H_
#define RAWDAX_REGION_CATALOG_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "rawdax/capabilities.h"
#include "common/mapped_range.h"
#include "rawdax/namespace.h"
#include "rawdax/region_space.h"
#include "rawdax/result.h"
#include "region/carved_media.h"
#include "region/free_space.h"
#include "region/label_area.h"
#include "region/metadata.h"
#include "region/region_lock.h"

namespace rawdax::internal {

class Catalog {
 public:
  // `spec` is a directory path, "memfd:[LABEL]" or "devdax:PATH". With
  // `create`, a missing directory is made and initialised. With
  // `require_dax`, media without DAX (a directory whose filesystem refuses
  // MAP_SYNC, memfd) is ENOTSUP, and nothing is created or changed.
  static Result<std::unique_ptr<Catalog>> open(std::string_view spec, bool create,
                                               bool require_dax = false, uint64_t file_size = 0);
  // See Region::init.
  static Result<InitReport> init(std::string_view spec, InitOptions options);

  bool carved() const { return carved_ != nullptr; }
  RegionSpace space() const;

  const Capabilities& capabilities() const { return caps_; }
  const std::string& spec() const { return spec_; }
  uint64_t generation() const;

  std::vector<NamespaceInfo> list() const;
  Result<NamespaceInfo> find(std::string_view name) const;  // ENOENT when absent

  // EINVAL for a bad name or size, EEXIST for a taken name, ENOSPC when the
  // media cannot hold the (rounded) size. Nothing changes on failure.
  Result<NamespaceInfo> create(const NamespaceSpec& spec);
  Status destroy(std::string_view name);

  // Records a new size (the caller has sized the backing object). ENOENT when
  // the namespace is gone.
  // On a carved region a grow happens in place only: ENOSPC, naming the
  // largest size that fits in place, when the following bytes are not free;
  // the grown part is zeroed before the label names it.
  Status set_size(std::string_view name, uint64_t size);

  // Replaces the namespace's bad-block list (sorted, disjoint; see
  // bad_ranges.h) and records it: in the metadata on a directory region, in
  // memory elsewhere. ENOENT when the namespace is gone.
  Status set_badblocks(std::string_view name, std::vector<BadRange> badblocks);

  // Carved: `length` bytes from the namespace's offset are covered by a view
  // of an open device and must stay out of other namespaces' reach even when
  // the namespace shrinks below them. Until release_view(uuid).
  void hold_view(const std::string& uuid, uint64_t offset, uint64_t length);
  void release_view(const std::string& uuid);

  // ENOSPC, naming the namespace, `bytes` and the space free, when the media
  // cannot hold `bytes` more. On hugetlbfs the space is the pool's free huge
  // pages (capped by a size= mount limit) less one, which the metadata update
  // after a create or grow needs.
  Status check_space(const std::string& name, uint64_t bytes) const;

  // A backing object that no metadata names yet: a restore fills it, then
  // install() names it in one metadata update, so a crash leaves the old
  // state or the new one (an unnamed file is an orphan that open() removes).
  // `name` is validated as for create(). ENOTSUP on devdax.
  // On a carved region the object is a zeroed free extent, held until it
  // is installed or discarded: `view` maps it (when it is to be filled);
  // `fd` is unused.
  struct DetachedObject {
    std::string name;
    std::string uuid;
    uint64_t size = 0;
    UniqueFd fd;
    uint64_t offset = 0;  // carved: the extent's offset
    MappedRange view;     // carved only
    // A lazy restore's marker, recorded by install() in the same update that
    // names the object (RestoreState: snapshot and checksum only).
    std::optional<RestoreState> restore = std::nullopt;
  };
  // `to_fill` false: the caller only installs it (a create), so a carved
  // extent gets no `view`, and install() has nothing more to persist.
  Result<DetachedObject> create_detached(const std::string& name, uint64_t size,
                                         bool to_fill = true);
  // Names the object: a new namespace, or, when the name exists, the
  // namespace's new backing object (its old one is removed after the
  // metadata update). The uuid is the object's.
  // With `replace` false, EEXIST when the name exists (create() of a carved
  // namespace is create_detached() then install()).
  Result<NamespaceInfo> install(DetachedObject object, bool replace = true);
  // Drops an object that will not be installed.
  void discard(DetachedObject object);
  // Records that the lazy restore which installed object `uuid` as `name`
  // is complete (drops the namespace's restore marker). A no-op when the
  // namespace is gone or now has another object. The caller has made the
  // filled pages durable first.
  Status clear_restore(std::string_view name, const std::string& uuid);

  // A new fd on the namespace's backing object, for mapping it.
  Result<UniqueFd> open_backing(std::string_view name, bool writable) const;

 private:
  Catalog() = default;
  Status open_directory(bool create, bool require_dax);
  Status open_devdax(const std::string& path);
  // Reads (or, with create, formats a blank all-zero device) the label area.
  Status open_carved(bool create);
  // Carved: the extents in use, labels and holds, except `skip_uuid`'s.
  FreeSpace free_space_locked(const std::string& skip_uuid = "") const;
  // ENOSPC naming the largest size `ns` reaches in place, when `new_size` does not fit.
  Status check_grow_locked(const NamespaceInfo& ns, uint64_t new_size) const;
  Error no_space_error(const std::string& name, uint64_t size, const FreeSpace& space) const;
  Result<uint64_t> available_bytes(std::string* where, std::string* unit) const;
  // Carved: gives a freed extent's pages back where that is cheap (a file
  // region punches it). Best effort: the next create zeroes it anyway.
  void release_extent_locked(ByteRange range) const;
  Status remove_orphans();
  Status commit(RegionMetadata next);  // persists, then installs `next`
  // After the metadata stopped naming it (directory kind): truncates the
  // file, so that every mapping of it raises SIGBUS, then unlinks it.
  Status remove_backing_file(const std::string& name, const std::string& uuid);
  NamespaceInfo with_path(NamespaceInfo ns) const;
  const NamespaceInfo* lookup(std::string_view name) const;
  // ENOENT naming `name`, or EINVAL when no namespace could have that name.
  Error not_found(std::string_view name) const;

  std::string spec_;
  std::string dir_;  // directory kind only
  Capabilities caps_;
  std::optional<RegionLock> lock_;

  mutable std::mutex mu_;
  RegionMetadata meta_;                    // guarded by mu_
  std::map<std::string, UniqueFd> memfds_;  // by uuid; memfd kind; guarded by mu_
  UniqueFd devdax_fd_;
  std::unique_ptr<CarvedMedia> carved_;
  LabelState labels_;                       // carved; guarded by mu_
  std::map<std::string, ByteRange> holds_;  // carved; by uuid; guarded by mu_
};

}  // namespace rawdax::internal

#endif  // RAWDAX_REGION_CATALOG_H_

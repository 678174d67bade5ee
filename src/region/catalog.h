// Catalog: the namespaces of one region and the objects that back them.
//
// Kinds:
//  - directory: metadata in DIR/rawdax.meta (see metadata.h), one backing
//    file per namespace in DIR/ns/<uuid>, an exclusive flock on DIR/rawdax.lock.
//    On hugetlbfs (Capabilities::hugetlb) backing objects have every page
//    allocated when they are made, so that no store can find the pool empty.
//  - memfd: metadata in memory, one memfd per namespace; lives as long as the
//    Catalog (and any mappings of its memfds).
//  - devdax: exactly one namespace, the whole device, named after it; it can
//    be neither created nor destroyed.
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
#include "rawdax/namespace.h"
#include "rawdax/result.h"
#include "region/metadata.h"
#include "region/region_lock.h"

namespace rawdax {

class Catalog {
 public:
  // `spec` is a directory path, "memfd:[LABEL]" or "devdax:PATH". With
  // `create`, a missing directory is made and initialised. With
  // `require_dax`, media without DAX (a directory whose filesystem refuses
  // MAP_SYNC, memfd) is ENOTSUP, and nothing is created or changed.
  static Result<std::unique_ptr<Catalog>> open(std::string_view spec, bool create,
                                               bool require_dax = false);

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
  Status set_size(std::string_view name, uint64_t size);

  // ENOSPC, naming the namespace, `bytes` and the space free, when the media
  // cannot hold `bytes` more. On hugetlbfs the space is the pool's free huge
  // pages (capped by a size= mount limit) less one, which the metadata update
  // after a create or grow needs.
  Status check_space(const std::string& name, uint64_t bytes) const;

  // A backing object that no metadata names yet: a restore fills it, then
  // install() names it in one metadata update, so a crash leaves the old
  // state or the new one (an unnamed file is an orphan that open() removes).
  // `name` is validated as for create(). ENOTSUP on devdax.
  struct DetachedObject {
    std::string name;
    std::string uuid;
    uint64_t size = 0;
    UniqueFd fd;
  };
  Result<DetachedObject> create_detached(const std::string& name, uint64_t size);
  // Names the object: a new namespace, or, when the name exists, the
  // namespace's new backing object (its old one is removed after the
  // metadata update). The uuid is the object's.
  Result<NamespaceInfo> install(DetachedObject object);
  // Drops an object that will not be installed.
  void discard(DetachedObject object);

  // A new fd on the namespace's backing object, for mapping it.
  Result<UniqueFd> open_backing(std::string_view name, bool writable) const;

 private:
  Catalog() = default;
  Status open_directory(bool create, bool require_dax);
  Status open_devdax(const std::string& path);
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
};

}  // namespace rawdax

#endif  // RAWDAX_REGION_CATALOG_H_

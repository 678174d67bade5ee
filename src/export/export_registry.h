// ExportRegistry: the exports one NbdServer serves, by name: every namespace
// of its Region (opened per connection through Region::open_device, as
// ever) and the snapshot exports registered at run time (docs/export.md,
// "Point-in-time exports").
//
// Names: a snapshot export's default name is `<namespace>@<file stem>`
// (namespace names cannot hold '@', so a default name never meets one). A
// name held by a namespace or another export is refused (EEXIST). Should a
// namespace be created later under a snapshot export's name, the snapshot
// export keeps it: lookups try snapshot exports first.
//
// Unexport: the export leaves the list at once; connections attached to it
// answer every later request with ESHUTDOWN, as for a removed namespace, and
// the image's files close when the last of them ends.
//
// Thread safety: every method is thread-safe (mu_ guards the snapshot table;
// a snapshot export's state is immutable but for its `removed` flag, an
// atomic whose store orders nothing but itself). add_snapshot() verifies the
// chain without holding mu_. Ownership: the Region must outlive this.
#ifndef RAWDAX_EXPORT_EXPORT_REGISTRY_H_
#define RAWDAX_EXPORT_EXPORT_REGISTRY_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "export/export_source.h"
#include "rawdax/nbd_server.h"
#include "rawdax/region.h"

namespace rawdax::nbd {

class ExportRegistry {
 public:
  ExportRegistry(Region& region, bool read_only) : region_(region), read_only_(read_only) {}

  // The export a client names; "" is the default namespace ("default", else
  // the first). ENOENT for an unknown name; the namespace's open errors.
  Result<std::unique_ptr<ExportSource>> open(const std::string& name, std::string* resolved);
  // The metadata contexts the export offers (ExportSource::contexts()),
  // without opening it; ENOENT for an unknown name.
  Result<std::vector<std::string>> contexts(const std::string& name);
  // The namespace "" means; "" when the region has none.
  std::string default_export() const;

  // Verifies the chain (SnapshotImage::open) and registers it as `name`
  // ("" for the default). Errors: the chain's own; EINVAL for a bad name;
  // EEXIST for a taken one.
  Result<NbdExportInfo> add_snapshot(const std::string& path, const std::string& name);
  // ENOENT when no export has the name; EINVAL when a namespace has it.
  Status remove_snapshot(const std::string& name);
  // Namespaces first (the region's order), then snapshot exports by name;
  // each snapshot export's state checked now.
  std::vector<NbdExportInfo> list() const;
  // NBD_OPT_LIST's answer: every export's name and description (namespaces
  // have none; a snapshot export's names its namespace and time).
  std::vector<std::pair<std::string, std::string>> listing() const;

  struct Entry;

 private:
  Region& region_;
  const bool read_only_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> snapshots_;  // guarded by mu_
};

}  // namespace rawdax::nbd

#endif  // RAWDAX_EXPORT_EXPORT_REGISTRY_H_

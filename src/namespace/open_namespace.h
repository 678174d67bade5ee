// OpenNamespace: one namespace open in this process, as one object. It owns
// the three parts that serve it and reach each other only through it:
//  - the device core (device/device_core.h): both faces, the mapping
//    registry, the dirty bitmaps;
//  - the protection engine (engine/protector.h), installed as the core's
//    MappingObserver before any mapping exists;
//  - the live-snapshot state (snapshot/snapshot.h): the per-namespace
//    serialization of snapshots and the last snapshot taken.
// This layer sits above device, engine and snapshot and below the public
// facades (src/api): Device, FreezeGuard and Mapping hold it by shared_ptr,
// and the Region keeps a weak_ptr per name, so it lives until the last
// handle or Mapping of the namespace is gone. Every Device handle of a
// namespace opened through one Region shares one OpenNamespace.
//
// Lifetime: the engine is destroyed before the core (members in that order,
// reversed), and only once no Mapping exists (each holds this object), so
// the core never reports a mapping event to a destroyed engine.
//
// Thread safety: every method is thread-safe (the parts are). Snapshots of
// this namespace are serialized (a second one waits for the first); those of
// other namespaces run in parallel.
#ifndef RAWDAX_NAMESPACE_OPEN_NAMESPACE_H_
#define RAWDAX_NAMESPACE_OPEN_NAMESPACE_H_

#include <memory>
#include <string>
#include <string_view>

#include "device/device_core.h"
#include "engine/protector.h"
#include "rawdax/device.h"
#include "region/catalog.h"
#include "snapshot/snapshot.h"

namespace rawdax::internal {

class OpenNamespace {
 public:
  // Opens the device core of `name` and its engine (options.engine). Errors:
  // those of DeviceCore::open, and ENOTSUP when the engine cannot work here.
  // `fill`: the namespace's incomplete lazy restore, installed in the core
  // before anything can reach it (device/page_fill.h); may be null.
  static Result<std::shared_ptr<OpenNamespace>> open(std::shared_ptr<Catalog> catalog,
                                                     std::string_view name,
                                                     const DeviceOptions& options,
                                                     std::shared_ptr<PageFill> fill = nullptr);
  ~OpenNamespace();
  OpenNamespace(const OpenNamespace&) = delete;
  OpenNamespace& operator=(const OpenNamespace&) = delete;

  DeviceCore& core() const { return *core_; }
  Protector& engine() const { return *engine_; }
  // The options of the first open: they fix tracking and the engine.
  const DeviceOptions& options() const { return options_; }

  // A point-in-time image into `path` (snapshot/snapshot.h); waits for a
  // snapshot of this namespace already running.
  Result<SnapshotInfo> snapshot(const std::string& path, const SnapshotOptions& options);
  // The core's counters and the engine's.
  DeviceStats stats() const;

 private:
  OpenNamespace(std::unique_ptr<DeviceCore> core, std::unique_ptr<Protector> engine,
                const DeviceOptions& options);

  const std::unique_ptr<DeviceCore> core_;
  const std::unique_ptr<Protector> engine_;  // observes core_; destroyed first
  const DeviceOptions options_;
  SnapshotState snapshots_;
};

}  // namespace rawdax::internal

#endif  // RAWDAX_NAMESPACE_OPEN_NAMESPACE_H_

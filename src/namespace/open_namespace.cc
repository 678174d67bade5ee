#include "namespace/open_namespace.h"

#include <utility>

namespace rawdax::internal {

Result<std::shared_ptr<OpenNamespace>> OpenNamespace::open(std::shared_ptr<Catalog> catalog,
                                                           std::string_view name,
                                                           const DeviceOptions& options,
                                                           std::shared_ptr<PageFill> fill) {
  auto core = DeviceCore::open(std::move(catalog), name, options);
  if (!core) return core.error();
  if (fill != nullptr) (*core)->set_fill(std::move(fill));
  auto engine = Protector::create(**core, options.engine, options.uffd_faults);
  if (!engine) return engine.error();
  return std::shared_ptr<OpenNamespace>(
      new OpenNamespace(std::move(*core), std::move(*engine), options));
}

OpenNamespace::OpenNamespace(std::unique_ptr<DeviceCore> core, std::unique_ptr<Protector> engine,
                             const DeviceOptions& options)
    : core_(std::move(core)), engine_(std::move(engine)), options_(options) {
  core_->set_observer(engine_.get());
}

OpenNamespace::~OpenNamespace() {
  // No Mapping is left (each holds this object); the core forgets the engine
  // before it goes.
  core_->set_observer(nullptr);
}

Result<SnapshotInfo> OpenNamespace::snapshot(const std::string& path,
                                             const SnapshotOptions& options) {
  return take_snapshot(*core_, *engine_, snapshots_, path, options);
}

DeviceStats OpenNamespace::stats() const {
  DeviceStats stats = core_->stats();
  engine_->add_stats(stats);
  return stats;
}

}  // namespace rawdax::internal

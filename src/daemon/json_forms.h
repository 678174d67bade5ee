// The JSON forms of the public value types, as the control socket returns
// them and the CLI prints them (raw integer sizes; the CLI's --human turns
// sizes into strings). One place, so that a verb prints the same through
// the daemon as without it. Pure functions; thread-safe.
#ifndef RAWDAX_DAEMON_JSON_FORMS_H_
#define RAWDAX_DAEMON_JSON_FORMS_H_

#include <nlohmann/json.hpp>

#include "rawdax/capabilities.h"
#include "rawdax/device_types.h"
#include "rawdax/nbd_server.h"
#include "rawdax/namespace.h"
#include "rawdax/region_space.h"
#include "rawdax/snapshot.h"

namespace rawdax::control {

// [{"offset":..,"length":..}, ...]
nlohmann::json badblocks_json(const std::vector<BadRange>& badblocks);
nlohmann::json namespace_json(const NamespaceInfo& ns);
// Grouped so that each source is told apart: "media" (what the region's
// media accepts), "engine", "privilege" (the userfaultfd mode this process
// gets), "kernel" (what the running kernel offers), "page_size".
nlohmann::json capabilities_json(const Capabilities& caps);
// A region's space: free bytes and the largest free extent, plus the
// device geometry of a carved region.
nlohmann::json space_json(const RegionSpace& s);
// duration_ns and max_writer_stall_ns only for a snapshot just taken
// (duration_ns > 0), not for one read back from a file.
nlohmann::json snapshot_json(const SnapshotInfo& s);
// An NBD export as query-exports lists it: name, kind, uri, namespace,
// size, state ("ok" or "broken"); a snapshot export also file, taken_at,
// base_export (an incremental's) and, when broken, reason.
nlohmann::json export_json(const NbdExportInfo& e, const std::string& uri);
// A namespace's counters as query-stats lists them, under its name.
nlohmann::json stats_json(const std::string& name, const DeviceStats& s);

}  // namespace rawdax::control

#endif  // RAWDAX_DAEMON_JSON_FORMS_H_

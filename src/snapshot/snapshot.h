// Taking a snapshot of an open namespace (the snapshot layer, above the
// protection engine). The image is the namespace's contents at one instant:
// the instant the device froze. Every snapshot is live, on both engines:
//  1. The freeze drains block writers and write-protects every mapping,
//     without persisting (a snapshot copies memory). It lasts only while the
//     set of pages to copy is fixed and a PageCopier is installed on the
//     device; then the device thaws, with the mappings still protected.
//  2. Copy-before-write: a writer about to change a page not yet copied has
//     it copied first. Block writes (write, write-zeroes, discard) call the
//     copier for their pages. A store through a mapping faults: on the uffd
//     engine the fault handler copies that one page (into an in-memory stash)
//     and unprotects it; on the mprotect engine the store parks, posts its
//     address, and the background pass serves its chunk next and makes the
//     chunk writable again. A writer waits for its own pages' copy, or for
//     the one run in flight that holds its page.
//  3. A background pass on options.copy_threads threads (this one included)
//     copies every page not copied yet, a chunk at a time, then the copier
//     is removed and the engine ends the live copy (what is still protected
//     for the snapshot takes stores again).
// A full snapshot stores every page that is not all zeros. An incremental
// stores the pages written since its base: from the device's dirty tracking
// when the base is the last snapshot taken of this namespace in this process
// (the tracking epoch restarts at every snapshot), else by comparing every
// page with the base chain's checksums.
//
// Thread safety: snapshots of one namespace are serialized by its
// SnapshotState (a second one waits until the first is done); snapshots of
// different namespaces run in parallel. Other I/O runs concurrently: writers
// wait at the freeze instant and for their copy-before-write, as above.
// Errors: those of the snapshot file, the freeze and the copy, each naming
// the namespace and the path; ENXIO after remove(). On any error nothing is
// written at `path` (the image goes to a temporary file renamed over it only
// when complete); an error from the freeze on also forgets the namespace's
// last snapshot (the tracking epoch is consumed, so no incremental may use
// tracking on that base).
#ifndef RAWDAX_SNAPSHOT_SNAPSHOT_H_
#define RAWDAX_SNAPSHOT_SNAPSHOT_H_

#include <mutex>
#include <string>

#include "device/device_core.h"
#include "engine/protector.h"
#include "rawdax/snapshot.h"

namespace rawdax::internal {

// The live-snapshot state of one open namespace, owned with its device core
// and engine (namespace/open_namespace.h).
struct SnapshotState {
  // Held by take_snapshot() for the whole snapshot.
  std::mutex serial;
  // The last snapshot taken of this namespace in this process, the base an
  // incremental must name to use tracking. Empty id: none, or the last one
  // failed. Guarded by `serial`.
  std::string last_id, last_checksum;
};

Result<SnapshotInfo> take_snapshot(DeviceCore& core, Protector& engine, SnapshotState& state,
                                   const std::string& path, const SnapshotOptions& options);

}  // namespace rawdax::internal

#endif  // RAWDAX_SNAPSHOT_SNAPSHOT_H_

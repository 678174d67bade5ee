// Taking a snapshot of an open device (the snapshot layer, above the
// protection engine). The image is the device's contents at one instant: the
// instant the device froze.
//  - Live (uffd engine): the freeze write-protects every mapping and lasts
//    only while the page set is fixed and a copier is installed; then the
//    device thaws, a writer about to change a page not yet copied copies it
//    first (copy-before-write: its stall is one page copy), and this thread
//    copies the rest.
//  - Frozen copy (mprotect engine): the device stays frozen while every page
//    is copied.
// A full snapshot stores every page that is not all zeros; an incremental
// stores the pages written since the base, which must be the last snapshot
// taken of this device (the tracking epoch restarts at every snapshot).
//
// Thread safety: one snapshot per device at a time (serialized inside);
// other I/O may run concurrently and waits at the freeze as usual.
#ifndef RAWDAX_SNAPSHOT_SNAPSHOT_H_
#define RAWDAX_SNAPSHOT_SNAPSHOT_H_

#include <string>

#include "device/device_core.h"
#include "engine/protector.h"
#include "rawdax/snapshot.h"

namespace rawdax::internal {

Result<SnapshotInfo> take_snapshot(DeviceCore& core, Protector& engine, const std::string& path,
                                   const SnapshotOptions& options);

}  // namespace rawdax::internal

#endif  // RAWDAX_SNAPSHOT_SNAPSHOT_H_

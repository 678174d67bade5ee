// A snapshot of a namespace that a running QEMU guest maps, taken through
// QEMU's own background snapshot instead of pausing the guest for the copy.
//
// QEMU (6.0+, the background-snapshot migration capability) stops the guest,
// write-protects all its RAM with userfaultfd (UFFDIO_WRITEPROTECT), and
// resumes it; it then streams every page, and a page the guest writes
// meanwhile is sent from QEMU's fault handler before the write goes on. So
// the stream is the guest's RAM at the instant of the write-protect, and the
// guest is paused only for that. The namespace is one RAM block of the
// stream (its memory backend); its pages are written to the snapshot file as
// they arrive. The stream goes over a socketpair passed to QEMU with getfd,
// so QEMU needs no path of ours.
//
// What it needs, else ENOTSUP naming the reason (the caller then pauses the
// guest for a whole copy):
//   - QEMU 6.0+ (the capability);
//   - a host kernel with userfaultfd write-protect for every RAM block of
//     the guest: anonymous memory since Linux 5.7, shmem (tmpfs, memfd) and
//     hugetlbfs since 5.19. A namespace backed by a regular file on a disk
//     filesystem (ext4, xfs) cannot be write-protected: QEMU refuses the
//     capability ("not compatible with guest memory configuration");
//   - a memory backend of the VM that maps the namespace's file (its
//     mem-path, size, and offset for a carved namespace), any id;
//   - no migration running, no x-ignore-shared;
//   - 4 KiB pages (QEMU streams 4 KiB target pages).
// The capability and max-bandwidth are set back to what they were after.
//
// Not thread-safe: the caller owns `qmp` for the whole call (several QMP
// round trips and the stream). Other writers of the namespace (block face,
// holders' mappings) are the caller's to stop: QEMU sees only its own
// mapping's stores. Errors other than ENOTSUP: the snapshot file's, the
// stream's (migration_stream.h) and QEMU's migration failure (its
// error-desc); the migration is cancelled and nothing is left at `path`.
#ifndef RAWDAX_VM_VM_SNAPSHOT_H_
#define RAWDAX_VM_VM_SNAPSHOT_H_

#include <string>

#include "rawdax/namespace.h"
#include "rawdax/result.h"
#include "rawdax/snapshot.h"
#include "vm/qmp_client.h"

namespace rawdax::internal {

// A full snapshot of `ns` at `path` (zero pages not stored), with
// vm_pause_ns from QMP's STOP and RESUME event timestamps and vm_snapshot
// "background".
Result<SnapshotInfo> snapshot_through_qemu(QmpClient& qmp, const NamespaceInfo& ns,
                                           const std::string& path);

}  // namespace rawdax::internal

#endif  // RAWDAX_VM_VM_SNAPSHOT_H_

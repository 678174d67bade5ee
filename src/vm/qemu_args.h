// QEMU command-line arguments that give a guest one namespace as persistent
// memory: a memory-backend-file with share=on over the namespace's backing
// file, and an nvdimm (or virtio-pmem-pci) device on it. Guest offset X of
// /dev/pmem0 is then byte X of the namespace (raw nvdimm and virtio-pmem).
// A carved namespace (devdax:, file:) is an extent of its backing object:
// the backend then needs `offset=`, which QEMU has since 8.1
// (kQemuOffsetVersion), and `align=` on a device-dax.
//
// Thread-safe. qemu_backend_offset_support() runs the QEMU binary once;
// the rest are pure functions.
#ifndef RAWDAX_VM_QEMU_ARGS_H_
#define RAWDAX_VM_QEMU_ARGS_H_

#include <string>
#include <vector>

#include "rawdax/namespace.h"
#include "rawdax/result.h"

namespace rawdax::internal {

struct QemuPmemArgs {
  std::string machine_option;  // to add to -machine ("nvdimm=on"; empty for virtio)
  std::string memory_option;   // what -m needs besides the RAM size ("slots=…,maxmem=…")
  std::vector<std::string> args;  // -object … -device …
};

inline constexpr const char* kQemuOffsetVersion = "8.1";

// What the installed QEMU's memory-backend-file offers.
struct QemuBackendSupport {
  bool offset = false;  // the `offset` property
  std::string version;  // "7.2.22", from --version; empty if unknown
};
// Asks `qemu` ("-object memory-backend-file,help", "--version"). ENOENT
// when it cannot be run.
Result<QemuBackendSupport> qemu_backend_support(const std::string& qemu);

// EINVAL naming the namespace when it has no backing file QEMU can open (a
// memfd: region). ENOTSUP naming the QEMU version needed for a namespace at
// a non-zero offset when `support.offset` is false. `guest_ram` is the
// guest's RAM size in bytes (for maxmem); `align`, the backing's mapping
// granularity, is passed on to QEMU when it exceeds the page size
// (device-dax refuses smaller mappings).
Result<QemuPmemArgs> qemu_pmem_args(const NamespaceInfo& ns, bool virtio, uint64_t guest_ram,
                                    const QemuBackendSupport& support = {}, uint64_t align = 0);

// One shell-quoted line of the arguments (for printing).
std::string shell_join(const std::vector<std::string>& args);

}  // namespace rawdax::internal

#endif  // RAWDAX_VM_QEMU_ARGS_H_

// QEMU command-line arguments that give a guest one namespace as persistent
// memory: a memory-backend-file with share=on over the namespace's backing
// file, and an nvdimm (or virtio-pmem-pci) device on it. Guest offset X of
// /dev/pmem0 is then byte X of the namespace (raw nvdimm and virtio-pmem).
//
// Pure functions; thread-safe.
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

// EINVAL naming the namespace when it has no backing file QEMU can open (a
// memfd: region). `guest_ram` is the guest's RAM size in bytes (for maxmem).
Result<QemuPmemArgs> qemu_pmem_args(const NamespaceInfo& ns, bool virtio, uint64_t guest_ram);

// One shell-quoted line of the arguments (for printing).
std::string shell_join(const std::vector<std::string>& args);

}  // namespace rawdax::internal

#endif  // RAWDAX_VM_QEMU_ARGS_H_

#include "vm/qemu_args.h"

namespace rawdax::internal {
namespace {

// QEMU's option parser splits on commas; a comma in a value is doubled.
std::string escape_commas(const std::string& value) {
  std::string out;
  for (char c : value) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

}  // namespace

Result<QemuPmemArgs> qemu_pmem_args(const NamespaceInfo& ns, bool virtio, uint64_t guest_ram) {
  if (ns.path.empty() || ns.path.front() != '/') {
    return Error(std::errc::invalid_argument,
                 "namespace " + ns.name + " (" + ns.path +
                     ") has no backing file a VM can map: use a directory region");
  }
  const std::string id = "rawdax-" + ns.name;
  QemuPmemArgs out;
  out.machine_option = virtio ? "" : "nvdimm=on";
  // Persistent memory is hot-pluggable memory to QEMU: one slot, and maxmem
  // covering RAM plus the namespace.
  out.memory_option = "slots=2,maxmem=" + std::to_string((guest_ram + ns.size) >> 20) + "M";
  out.args = {"-object",
              "memory-backend-file,id=" + id + ",share=on,mem-path=" + escape_commas(ns.path) +
                  ",size=" + std::to_string(ns.size),
              "-device",
              std::string(virtio ? "virtio-pmem-pci" : "nvdimm") + ",memdev=" + id +
                  ",id=" + id + "-dev"};
  return out;
}

std::string shell_join(const std::vector<std::string>& args) {
  std::string line;
  for (const auto& arg : args) {
    if (!line.empty()) line += ' ';
    bool plain = !arg.empty() && arg.find_first_not_of(
                                     "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789-_=,./:+@%") == std::string::npos;
    if (plain) {
      line += arg;
      continue;
    }
    line += '\'';
    for (char c : arg) line += c == '\'' ? std::string("'\\''") : std::string(1, c);
    line += '\'';
  }
  return line;
}

}  // namespace rawdax::internal

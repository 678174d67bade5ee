#include "vm/qemu_args.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <regex>

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

// Everything `command` prints on stdout and stderr, or ENOENT naming it
// when it does not run to a zero exit.
Result<std::string> output_of(const std::string& command, const std::string& what) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return errno_error(errno, "cannot run " + what);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  int status = ::pclose(pipe);
  if (status != 0) {
    return Error(std::errc::no_such_file_or_directory,
                 "cannot ask " + what + " what it supports (is QEMU installed? it said: " +
                     out.substr(0, 200) + ")");
  }
  return out;
}

}  // namespace

Result<QemuBackendSupport> qemu_backend_support(const std::string& qemu) {
  // It runs through a shell, and the name may come from a control client.
  if (qemu.empty() || qemu.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                              "0123456789._/+-") != std::string::npos) {
    return Error(std::errc::invalid_argument,
                 "QEMU binary '" + qemu + "': only A-Z a-z 0-9 . _ / + - are allowed");
  }
  const std::string quoted = "'" + qemu + "'";
  auto props = output_of(quoted + " -object memory-backend-file,help", qemu);
  if (!props) return props.error();
  QemuBackendSupport out;
  out.offset = props->find("\n  offset=") != std::string::npos ||
               props->rfind("offset=", 0) == 0;
  if (auto version = output_of(quoted + " --version", qemu)) {
    std::smatch m;
    if (std::regex_search(*version, m, std::regex("version ([0-9][0-9.]*)"))) out.version = m[1];
  }
  return out;
}

Result<QemuPmemArgs> qemu_pmem_args(const NamespaceInfo& ns, bool virtio, uint64_t guest_ram,
                                    const QemuBackendSupport& support, uint64_t align) {
  if (ns.path.empty() || ns.path.front() != '/') {
    return Error(std::errc::invalid_argument,
                 "namespace " + ns.name + " (" + ns.path +
                     ") has no backing file a VM can map: use a directory region");
  }
  if (ns.offset != 0 && !support.offset) {
    return Error(std::errc::operation_not_supported,
                 "namespace " + ns.name + " is the extent at offset " + std::to_string(ns.offset) +
                     " of " + ns.path + ": QEMU's memory-backend-file needs its offset " +
                     "property for it, which QEMU has since version " + kQemuOffsetVersion +
                     "; the installed QEMU" +
                     (support.version.empty() ? std::string() : " (" + support.version + ")") +
                     " lacks it");
  }
  std::string placement;
  if (ns.offset != 0) placement += ",offset=" + std::to_string(ns.offset);
  if (align > static_cast<uint64_t>(::sysconf(_SC_PAGESIZE))) {
    placement += ",align=" + std::to_string(align);
  }
  const std::string id = "rawdax-" + ns.name;
  QemuPmemArgs out;
  out.machine_option = virtio ? "" : "nvdimm=on";
  // Persistent memory is hot-pluggable memory to QEMU: one slot, and maxmem
  // covering RAM plus the namespace.
  out.memory_option = "slots=2,maxmem=" + std::to_string((guest_ram + ns.size) >> 20) + "M";
  out.args = {"-object",
              "memory-backend-file,id=" + id + ",share=on,mem-path=" + escape_commas(ns.path) +
                  ",size=" + std::to_string(ns.size) + placement,
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

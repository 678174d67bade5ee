// Verb: vm-args. Prints the QEMU arguments that give a guest a namespace as
// an nvdimm (or, with --virtio, a virtio-pmem-pci device).
#include <CLI/CLI.hpp>
#include <iostream>

#include "common/units.h"
#include "tools/cli_common.h"
#include "tools/commands.h"
#include "vm/qemu_args.h"

namespace rawdax::cli {
namespace {

struct VmArgsOptions {
  GlobalOptions global;
  std::string name;
  bool virtio = false;
  std::string ram = "512M";
  std::string qemu = "qemu-system-x86_64";
};

int run_vm_args(const VmArgsOptions& options) {
  auto ram = parse_size(options.ram);
  if (!ram) return fail(ram.error());
  auto region = open_region(options.global);
  if (!region) return fail(region.error());
  auto ns = (*region)->find(options.name);
  if (!ns) {
    return fail(Error(std::errc::no_such_file_or_directory,
                      "namespace " + options.name + " not found in region " +
                          (*region)->spec()));
  }
  // Only a carved namespace needs to know what the QEMU can do.
  internal::QemuBackendSupport support;
  if (ns->offset != 0) {
    auto asked = internal::qemu_backend_support(options.qemu);
    if (!asked) return fail(asked.error());
    support = *asked;
  }
  auto pmem = internal::qemu_pmem_args(*ns, options.virtio, *ram, support,
                                       (*region)->capabilities().alignment);
  if (!pmem) return fail(pmem.error());
  std::vector<std::string> args;
  args.push_back("-machine");
  args.push_back(pmem->machine_option.empty() ? "pc" : "pc," + pmem->machine_option);
  args.push_back("-m");
  args.push_back(std::to_string(*ram >> 20) + "M," + pmem->memory_option);
  args.insert(args.end(), pmem->args.begin(), pmem->args.end());
  if (options.global.json) {
    print_json({{"name", ns->name},
                {"device", options.virtio ? "virtio-pmem-pci" : "nvdimm"},
                {"path", ns->path},
                {"offset", ns->offset},
                {"size", ns->size},
                {"args", args}});
  } else {
    std::cout << internal::shell_join(args) << "\n";
  }
  return 0;
}

}  // namespace

void register_vm_commands(CLI::App& app, int* exit_code) {
  auto options = std::make_shared<VmArgsOptions>();
  CLI::App* verb = app.add_subcommand(
      "vm-args", "Print QEMU arguments giving a guest the namespace as persistent memory");
  add_global_options(*verb, options->global);
  verb->add_option("name", options->name, "Namespace")->required();
  verb->add_flag("--virtio", options->virtio, "virtio-pmem-pci instead of an ACPI nvdimm");
  verb->add_option("--ram", options->ram, "Guest RAM (for -m and maxmem)")->capture_default_str();
  verb->add_option("--qemu", options->qemu,
                   "The QEMU binary the arguments are for; asked what it supports when the "
                   "namespace is an extent of a carved region")
      ->capture_default_str();
  verb->callback([=] { *exit_code = run_vm_args(*options); });
}

}  // namespace rawdax::cli

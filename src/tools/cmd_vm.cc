// Verb: vm-args. Prints the QEMU arguments that give a guest a namespace as
// an nvdimm (or, with --virtio, a virtio-pmem-pci device).
#include <CLI/CLI.hpp>
#include <iostream>

#include "common/units.h"
#include "tools/cli_common.h"
#include "tools/command_path.h"
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
  auto ram = internal::parse_size(options.ram);
  if (!ram) return fail(ram.error());
  auto path = CommandPath::open(options.global);
  if (!path) return fail(path.error());
  auto reply = (*path)->execute("vm-args", {{"name", options.name},
                                            {"virtio", options.virtio},
                                            {"ram", *ram},
                                            {"qemu", options.qemu}});
  if (!reply) return fail(reply.error());
  auto args = reply->find("args");
  if (!reply->is_object() || args == reply->end() || !args->is_array()) {
    return fail(Error(std::errc::protocol_error, "malformed vm-args reply"));
  }
  std::vector<std::string> rebased;
  for (const auto& arg : *args) {
    if (!arg.is_string()) return fail(Error(std::errc::protocol_error, "malformed vm-args reply"));
    rebased.push_back((*path)->rebase(arg.get<std::string>()));
  }
  if (options.global.json) {
    nlohmann::json out = *reply;
    out["args"] = rebased;
    if (auto p = out.find("path"); p != out.end() && p->is_string()) {
      *p = (*path)->rebase(p->get<std::string>());
    }
    print_json(out);
  } else {
    std::cout << internal::shell_join(rebased) << "\n";
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

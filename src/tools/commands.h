// The CLI verbs. Each register_* adds its verbs to the app; the callback it
// installs stores the verb's exit code in *exit_code.
#ifndef RAWDAX_TOOLS_COMMANDS_H_
#define RAWDAX_TOOLS_COMMANDS_H_

namespace CLI {
class App;
}

namespace rawdax::cli {

void register_namespace_commands(CLI::App& app, int* exit_code);  // list, create, destroy
void register_serve_command(CLI::App& app, int* exit_code);
void register_snapshot_commands(CLI::App& app, int* exit_code);  // snapshot, restore, verify
void register_bench_command(CLI::App& app, int* exit_code);
void register_vm_commands(CLI::App& app, int* exit_code);  // vm-args
// export-snapshot, unexport, exports
void register_export_commands(CLI::App& app, int* exit_code);

}  // namespace rawdax::cli

#endif  // RAWDAX_TOOLS_COMMANDS_H_

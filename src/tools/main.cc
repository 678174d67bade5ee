// rawdax: the command-line tool. Verbs follow ndctl's style; see --help.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"rawdax: direct load/store and block access to persistent-memory namespaces"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every verb");
  int exit_code = 0;
  rawdax::cli::register_namespace_commands(app, &exit_code);
  rawdax::cli::register_snapshot_commands(app, &exit_code);
  rawdax::cli::register_serve_command(app, &exit_code);
  rawdax::cli::register_bench_command(app, &exit_code);
  rawdax::cli::register_vm_commands(app, &exit_code);
  rawdax::cli::register_export_commands(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --help-all
    // One line, like every other error (docs/cli.md).
    std::fprintf(stderr, "rawdax: error: %s (see --help)\n", e.what());
    return e.get_exit_code();
  }
  return exit_code;
}

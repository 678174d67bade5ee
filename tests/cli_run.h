// Running the rawdax CLI from a test: its exit code and what it printed.
#ifndef RAWDAX_TESTS_CLI_RUN_H_
#define RAWDAX_TESTS_CLI_RUN_H_

#include <sys/wait.h>

#include <cstdlib>
#include <ostream>
#include <string>

#include "test_util.h"

namespace rawdax::testing {

struct CliRun {
  int exit_code = -1;  // -1: killed by a signal
  std::string out;
  std::string err;
  bool operator==(const CliRun&) const = default;
};

inline std::ostream& operator<<(std::ostream& os, const CliRun& r) {
  return os << "exit " << r.exit_code << "\nstdout: " << r.out << "\nstderr: " << r.err;
}

// Runs `rawdax ARGS` with stdin from /dev/null; its output goes through the
// files `out` and `err` in the directory `scratch`.
inline CliRun run_cli(const std::string& scratch, const std::string& args) {
  std::string out = scratch + "/out", err = scratch + "/err";
  std::string cmd =
      std::string(RAWDAX_CLI_PATH) + " " + args + " >" + out + " 2>" + err + " </dev/null";
  int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text(out), read_text(err)};
}

}  // namespace rawdax::testing

#endif  // RAWDAX_TESTS_CLI_RUN_H_

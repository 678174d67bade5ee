// The operations power-cut loop (tests/guest/ops_powercut.sh): every region
// operation kind running at once, cut by the runner, checked by the next boot.
// The protocol and what a check accepts are in powercut_ops.cc.
#ifndef RAWDAX_TESTS_GUEST_POWERCUT_OPS_H_
#define RAWDAX_TESTS_GUEST_POWERCUT_OPS_H_

namespace rawdax_powercut {

// rawdax_powercut ops-run|ops-check ...; returns the exit code.
int ops_main(int argc, char** argv);

}  // namespace rawdax_powercut

#endif  // RAWDAX_TESTS_GUEST_POWERCUT_OPS_H_

#!/bin/bash
# The verdict on a ctest run beyond its exit status, which passes three things
# that must fail a CI stage: a test ctest did not run ("Not Run": a disabled
# test; a missing executable also fails ctest itself), a test that skipped
# (a gtest skip passes in ctest's eyes), and a run of no test at all. A test
# that cannot run on some media or kernel is not registered there instead.
#
# Usage, in the build tree after ctest: tests/check_ctest.sh CTEST_OUTPUT
#   CTEST_OUTPUT  ctest's standard output, saved (e.g. with tee)
# Reads Testing/Temporary/LastTest.log, which ctest writes there.
set -euo pipefail
out=${1:?usage: check_ctest.sh CTEST_OUTPUT}
log=Testing/Temporary/LastTest.log
fail() { echo "check_ctest: $*" >&2; exit 1; }

[ -r "$out" ] || fail "no ctest output in $out"
[ -r "$log" ] || fail "no ctest log in $log (did ctest run here?)"
if grep 'Not Run' "$out" >&2; then
  fail "tests above were not run (disabled or not built): a stage runs every test it selects"
fi
if grep -h '\[  SKIPPED \]' "$log" >&2; then
  fail "skipped tests fail the run (a test that cannot run here is not registered here)"
fi
# "100% tests passed, 0 tests failed out of 123"
total=$(sed -n 's/.*tests passed, [0-9]* tests\{0,1\} failed out of \([0-9]*\).*/\1/p' "$out" | tail -n 1)
[ -n "$total" ] || fail "ctest reported no result line in $out"
[ "$total" -gt 0 ] || fail "ctest ran no test"
echo "check_ctest: $total tests, none skipped or left unrun"

#!/usr/bin/env bash
# ctest Media.Hugetlbfs (label root): the media suites on a hugetlbfs region.
#
# Reserves PAGES more 2 MiB huge pages (/proc/sys/vm/nr_hugepages), mounts
# hugetlbfs on a temporary directory, and runs RAWDAX_TESTS with
# RAWDAX_TEST_MEDIA=hugetlbfs over every test registered for it (the device,
# teardown, resize, extents, freeze, snapshot, region, crash and control
# suites, and HugetlbfsTest and HugetlbfsCliTest). Then it unmounts and gives
# the pages back, however it ends. It fails when a test fails, when no test
# ran, or when a test was skipped or left unrun (disabled). Needs root:
# mounting and the page pool.
#
# Usage: hugetlbfs_suite.sh RAWDAX_TESTS [PAGES]
set -euo pipefail

tests=${1:?usage: hugetlbfs_suite.sh RAWDAX_TESTS [PAGES]}
# The largest need of one test, with room: OneCutTest holds two 256 MiB
# namespaces (256 pages); HugetlbfsTest fills whatever is free.
pages=${2:-400}
filter='*/hugetlbfs:*/hugetlbfs_*'
pool=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages

fail() {
  echo "hugetlbfs suite: $*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (it mounts hugetlbfs and reserves huge pages); leave it out with ctest -LE root"
[ -w "$pool" ] || fail "no 2 MiB huge page pool at $pool"
command -v jq >/dev/null || fail "needs jq (make deps)"

dir=$(mktemp -d /tmp/rawdax-hugetlbfs.XXXXXX)
report=$(mktemp /tmp/rawdax-hugetlbfs-report.XXXXXX.json)
added=0
mounted=0
cleanup() {
  set +e
  if [ "$mounted" = 1 ]; then umount "$dir" || umount -l "$dir"; fi
  rmdir "$dir"
  rm -f "$report"
  # Give back what we added, whatever others did to the pool meanwhile.
  if [ "$added" -gt 0 ]; then echo $(( $(cat "$pool") - added )) > "$pool"; fi
}
trap cleanup EXIT

before=$(cat "$pool")
echo $(( before + pages )) > "$pool"
added=$(( $(cat "$pool") - before ))
[ "$added" -ge "$pages" ] || fail "asked the kernel for $pages more 2 MiB huge pages, got $added"
mount -t hugetlbfs -o pagesize=2M,mode=0700 none "$dir"
mounted=1
echo "hugetlbfs suite: $pages huge pages added to the pool (now $(cat "$pool")), mounted on $dir"

# Bounded here, below ctest's TIMEOUT: ctest would kill this script too, and
# the pool and the mount would not be given back.
status=0
RAWDAX_TEST_MEDIA=hugetlbfs RAWDAX_TEST_HUGETLBFS="$dir" timeout --kill-after=10 240 \
  "$tests" --gtest_filter="$filter" --gtest_output="json:$report" || status=$?

[ -s "$report" ] || fail "no test report (exit status $status)"
ran=$(jq '[.testsuites[].testsuite[] | select(.result == "COMPLETED")] | length' "$report")
skipped=$(jq -r '[.testsuites[].testsuite[] | select(.result == "SKIPPED") | .classname + "." + .name] | join(" ")' "$report")
unrun=$(jq -r '[.testsuites[].testsuite[] | select(.status == "NOTRUN") | .classname + "." + .name] | join(" ")' "$report")
failed=$(jq '.failures' "$report")
echo "hugetlbfs suite: $ran tests ran, $failed failed, exit status $status"
[ "$status" = 0 ] || fail "the suite failed (exit status $status)"
[ "$failed" = 0 ] || fail "$failed tests failed"
[ "$ran" -gt 0 ] || fail "no test ran (filter $filter)"
[ -z "$skipped" ] || fail "skipped, which this suite does not allow: $skipped"
[ -z "$unrun" ] || fail "selected but not run (disabled): $unrun"

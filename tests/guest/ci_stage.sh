#!/bin/bash
# The guest stage (make test-guest; CI runs it after the sanitizer stages):
# rawdax's device, engine, snapshot, region and crash suites under Debian 12's
# own kernel (6.1) in tests/guest/run, on every guest media, once as root and
# once as a plain user, then the power-cut checks (one cut each on fsdax and
# devdax, two amid namespace creates and destroys on devdax, three amid every
# region operation on the ext4 disk and devdax). A boot, a
# failed test, a skipped test or a boot that ran no test fails the stage.
# Prints each part's time.
#
# Usage: tests/guest/ci_stage.sh [BUILD_DIR] [--full]
#   --full  also the stress tests (minutes each under TCG; outside CI)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build="$repo/build"
full=0
for a in "$@"; do
  case $a in
    --full) full=1 ;;
    *) build=$(cd "$a" && pwd) ;;
  esac
done
bin="$build/tests/rawdax_tests"
[ -x "$bin" ] || { echo "guest stage: $bin is not built (make build)" >&2; exit 1; }

# The device, engine, snapshot, region and crash suites.
suites='*RegionTest*:*DeviceTest*:*TeardownTest*:*ResizeTest*:ResizePersistence.*'
suites+=':*FreezeTest*:*TrackingTest*:EngineChoice.*:SegvParking*:*WriteTracker*:DirtyBitmap.*'
suites+=':*SnapshotTest*:*OneCutTest*:*CrashConsistency*:CrashInjectionTest.*:Durability.*'
suites+=':*DeviceExtentsTest*:LiveRef*:*Devdax*:*Fsdax*:RequireDax*:*Hugetlbfs*'
# Media errors: the cut-short-file suite on every guest media, real
# MADV_HWPOISON (registered only as root on a kernel with memory failure).
suites+=':*PoisonTest*:*HwPoison*:SafeCopy*'
# Lazy restore: its fills, and the userfaultfd MISSING faults that fill a
# mapping's pages on shmem and memfd (the crash sweep included).
suites+=':PageFill*:*LazyRestore*'
# Stress tests prove concurrency, not media: the host runs them (plain and
# ASan; TSan those in TSAN_TESTS); under TCG each takes 5 to 40 s. `--full`
# runs them here too.
stress='*OneCutTest*:*AStoreAheadOfTheCopierIsServedFirst*:*EveryFreezeIsOneStableCut*'
stress+=':*RemoveUnderLoadRefusesRevokesAndDrains*:*ResizeStormAtTheBoundary*:LiveRefStressTest.*'
stress+=':CrashInjectionTest.*:SegvParkingTest.Stress*'
filter=$suites
[ "$full" = 1 ] || filter="$suites-$stress"

# The plain user of the --user boot runs these binaries over 9p, with the
# host's modes.
"$repo/tests/reach_for_users.sh" "$build"

results=$(mktemp -d "${TMPDIR:-/tmp}/rawdax-guest-stage.XXXXXX")
chmod 1777 "$results"
trap 'rm -rf "$results"' EXIT
stage_start=$SECONDS

# One boot running the suites on MEDIA (RAWDAX_TEST_MEDIA; the runner passes
# RAWDAX_* to the guest); then gtest's JSON report is checked on the host.
run_suites() {
  local name=$1 media=$2; shift 2
  # In the scratch directory: the one place the guest writes that the host sees.
  local start=$SECONDS json="$results/$name/report.json" status=0
  echo "guest stage: $name: media $media"
  RAWDAX_TEST_MEDIA=$media RAWDAX_TESTS_BIN=$bin RAWDAX_TESTS_FILTER=$filter \
    RAWDAX_TESTS_JSON=$json "$here/run" --scratch "$results/$name" "$@" -- bash -c '
      export RAWDAX_TEST_DISK_DIR=$RAWDAX_GUEST_DISK RAWDAX_TEST_FSDAX=$RAWDAX_GUEST_FSDAX
      export RAWDAX_TEST_HUGETLBFS=$RAWDAX_GUEST_HUGETLBFS RAWDAX_TEST_DEVDAX=$RAWDAX_GUEST_DEVDAX
      cd "$RAWDAX_GUEST_SCRATCH" &&
      "$RAWDAX_TESTS_BIN" --gtest_brief=1 --gtest_filter="$RAWDAX_TESTS_FILTER" \
        --gtest_output="json:$RAWDAX_TESTS_JSON"' || status=$?
  if [ "$status" != 0 ]; then
    echo "guest stage: $name FAILED (exit $status) after $((SECONDS - start)) s" >&2
    exit 1
  fi
  # A test the filter selects but gtest does not run (a DISABLED_ one) is
  # reported with status NOTRUN: it fails the stage as a skipped one does.
  local counts ran failed skipped unrun
  counts=$(jq -r '[.tests, .failures,
                   ([.testsuites[].testsuite[] | select(.result == "SKIPPED")] | length),
                   ([.testsuites[].testsuite[] | select(.status == "NOTRUN")] | length)] | @tsv' \
             "$json") || { echo "guest stage: $name wrote no test report" >&2; exit 1; }
  read -r ran failed skipped unrun <<<"$counts"
  if [ "$ran" = 0 ] || [ "$failed" != 0 ] || [ "$skipped" != 0 ] || [ "$unrun" != 0 ]; then
    echo "guest stage: $name: $ran tests, $failed failed, $skipped skipped, $unrun not run: FAILED" >&2
    jq -r '.testsuites[].testsuite[] | select(.result == "SKIPPED" or .status == "NOTRUN") |
           "  \(.result | ascii_downcase): \(.classname).\(.name)"' "$json" >&2
    exit 1
  fi
  echo "guest stage: $name: $ran tests passed in $((SECONDS - start)) s"
}

# Room for what the host suites hold at once: a 1.1 GiB namespace on fsdax
# (ResizeTest), two 256 MiB ones on hugetlbfs (OneCutTest under --full).
guest_size=(--pmem-size 2G --hugepages 400 --memory 4G)
run_suites root tmpfs,disk,memfd,fsdax,hugetlbfs "${guest_size[@]}"
run_suites user tmpfs,disk,memfd,fsdax,hugetlbfs "${guest_size[@]}" --user

for media in fsdax devdax; do
  start=$SECONDS
  bash "$here/powercut.sh" "$media" "$build/tests/rawdax_powercut" ||
    { echo "guest stage: power cut on $media FAILED" >&2; exit 1; }
  echo "guest stage: power cut on $media passed in $((SECONDS - start)) s"
done
# Two cuts amid namespace creates and destroys on carved devdax (the second
# starts from what the first left); make powercut-carve runs many.
start=$SECONDS
bash "$here/carve_powercut.sh" 2 --tool "$build/tests/rawdax_powercut" ||
  { echo "guest stage: power cuts while carving FAILED" >&2; exit 1; }
echo "guest stage: 2 power cuts while carving passed in $((SECONDS - start)) s"
# Three cuts while every region operation runs on the ext4 disk and on
# devdax (make powercut runs fifty).
start=$SECONDS
bash "$here/ops_powercut.sh" 3 --tool "$build/tests/rawdax_powercut" ||
  { echo "guest stage: power cuts amid region operations FAILED" >&2; exit 1; }
echo "guest stage: 3 power cuts amid region operations passed in $((SECONDS - start)) s"
echo "guest stage: passed in $((SECONDS - stage_start)) s"

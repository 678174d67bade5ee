#!/bin/bash
# tests/guest/carve_powercut.sh N [--seed S] [--tool TOOL] [--pmem FILE]:
# N power cuts in the middle of carving, on the guest's device-dax
# (devdax:/dev/dax0.0), all on one NVDIMM file, so each cut starts from the
# state the earlier ones built up.
#
# Boot 1 formats the blank device and churns (TOOL carve-churn: creates
# namespaces of random sizes, fills each with the pattern of its name and
# uuid, persists it, destroys some); after a few operations it prints the cut
# text and goes on, so the SIGKILL lands wherever the churn is then (zeroing
# a new extent, filling one, a label commit, between operations). Boots 2..N
# first check what the last cut left (TOOL carve-check: the region opens,
# extents are disjoint and accounted for, every namespace holds its pattern
# or is the one in progress; powercut_tool.cc says exactly what is legal),
# then churn and are cut in turn. Boot N+1 checks, creates and destroys a
# few more, and checks again. A failed check, a boot that never printed its
# cut text, or CARVE FAILED in any output fails the run (exit 1).
#
# TOOL is build/tests/rawdax_powercut by default; S seeds the operations and
# the cut points (random by default; printed, to replay a run's choices;
# where the SIGKILL lands still varies). --pmem keeps the NVDIMM file.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
usage() { echo "usage: carve_powercut.sh N [--seed S] [--tool TOOL] [--pmem FILE]" >&2; exit 2; }
cuts=${1:-}
[[ $cuts =~ ^[1-9][0-9]*$ ]] || usage
shift
seed=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
tool="$repo/build/tests/rawdax_powercut"
pmem=""
while [ $# -gt 0 ]; do
  case $1 in
    --seed) seed=${2:?}; shift ;;
    --tool) tool=${2:?}; shift ;;
    --pmem) pmem=${2:?}; shift ;;
    *) usage ;;
  esac
  shift
done
[[ $seed =~ ^[0-9]+$ ]] || usage
[ -x "$tool" ] || { echo "carve powercut: $tool is not an executable" >&2; exit 2; }
tool=$(cd "$(dirname "$tool")" && pwd)/$(basename "$tool")

work=$(mktemp -d "${TMPDIR:-/tmp}/rawdax-carve-powercut.XXXXXX")
trap 'rm -rf "$work"' EXIT
[ -n "$pmem" ] || pmem="$work/pmem"
RANDOM=$seed

# One boot: CMD runs in the guest with SPEC set; its output goes to $work/log.
boot() {
  local cut_text=$1; shift
  local cut=()
  [ -z "$cut_text" ] || cut=(--cut-when "$cut_text")
  "$here/run" --pmem "$pmem" "${cut[@]}" -- bash -c '
    spec=devdax:$RAWDAX_GUEST_DEVDAX tool=$0
    '"$1" "$tool" 2>&1 | tee "$work/log" || return 1
  # A failure the SIGKILL raced with still counts.
  ! grep -q 'CARVE FAILED' "$work/log"
}

echo "carve powercut: $cuts cuts, seed $seed"
start_all=$SECONDS
for ((i = 1; i <= cuts; i++)); do
  s=$((seed * 1000 + i))
  text="RAWDAX-CARVE-CUT-$s"
  after=$((RANDOM % 6))
  churn="\"\$tool\" carve-churn \"\$spec\" $s --cut-after $after --cut-text $text"
  # Every other boot makes only one-unit namespaces once its cut text is out:
  # short operations, so some cuts land in destroys and between operations.
  small=""
  (( i % 2 == 0 )) && { churn+=" --small-after-cut"; small=", small namespaces after it"; }
  if [ "$i" = 1 ]; then
    cmd="$churn --format"
  else
    cmd="\"\$tool\" carve-check \"\$spec\" && $churn"
  fi
  start=$SECONDS
  echo "carve powercut: boot $i: churn, cut after $after operations$small"
  boot "$text" "$cmd" || { echo "carve powercut: boot $i FAILED" >&2; exit 1; }
  last=$(grep -E '^(op [0-9]+:|  created)' "$work/log" | tail -n 1 || true)
  echo "carve powercut: cut $i of $cuts after $((SECONDS - start)) s; last output: ${last:-none}"
done

start=$SECONDS
echo "carve powercut: boot $((cuts + 1)): check, create and destroy more, check"
boot "" "\"\$tool\" carve-check \"\$spec\" &&
  \"\$tool\" carve-churn \"\$spec\" $((seed * 1000)) --ops 4 &&
  \"\$tool\" carve-check \"\$spec\"" ||
  { echo "carve powercut: the final check FAILED" >&2; exit 1; }
echo "carve powercut: final boot took $((SECONDS - start)) s"
echo "carve powercut: $cuts cuts, every check passed, in $((SECONDS - start_all)) s (seed $seed)"

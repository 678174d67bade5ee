#!/bin/bash
# tests/guest/ops_powercut.sh CUTS [--seed S] [--media LIST] [--kinds KINDS]
#                             [--step-cuts] [--tool TOOL] [--keep DIR]
#
# CUTS power cuts of the guest (tests/guest/run: Debian 12's kernel) while
# every region operation runs, on each media of LIST (default disk,devdax):
#   disk    a directory region on ext4 over the virtio disk, which QEMU opens
#           with cache=directsync: what the guest was told is written is in
#           the host file, and what it was not told is lost with the guest.
#   devdax  a carved region on /dev/dax0.0 (the NVDIMM's file on the host).
# Snapshot files go to the ext4 disk for both. The disk and NVDIMM files
# persist from boot to boot, so each cut starts from what the earlier ones
# left.
#
# Boot 1 makes the regions and runs (rawdax_powercut ops-run: one thread per
# operation kind, see tests/guest/powercut_ops.cc). Boots 2..CUTS first check
# what the last cut left (ops-check, given each kind's last step this script
# saw acknowledged), then run and are cut in turn. Boot CUTS+1 only checks.
# Each cut is either
#   - after a step: one kind on one media stalls right after acknowledging
#     step N and prints the cut text; that step must then be the last one of
#     its kind, byte for byte (what catches a lost fsync: the runner kills
#     QEMU within 0.3 s, well inside ext4's 5 s journal commit); or
#   - on a timer: the text comes after a random 0.2-3.2 s, wherever each
#     thread then is.
# --step-cuts makes every cut the first kind (the mutation check).
# A failed check, a failed run or a boot without its cut fails (exit 1).
# At the end: for each media and operation, how many cuts landed inside it
# (the last line of its thread the host saw was its "begin").
#
# TOOL: build/tests/rawdax_powercut by default. S seeds the operations and
# the cut choices (random by default; printed). --keep DIR keeps the disk and
# NVDIMM files there.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
usage() {
  echo "usage: ops_powercut.sh CUTS [--seed S] [--media disk,devdax] [--kinds crsixw] [--step-cuts] [--tool TOOL] [--keep DIR]" >&2
  exit 2
}
cuts=${1:-}
[[ $cuts =~ ^[1-9][0-9]*$ ]] || usage
shift
seed=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
media_list=disk,devdax
kinds=crsixw
step_cuts=0
tool="$repo/build/tests/rawdax_powercut"
keep=""
while [ $# -gt 0 ]; do
  case $1 in
    --seed) seed=${2:?}; shift ;;
    --media) media_list=${2:?}; shift ;;
    --kinds) kinds=${2:?}; shift ;;
    --step-cuts) step_cuts=1 ;;
    --tool) tool=${2:?}; shift ;;
    --keep) keep=${2:?}; shift ;;
    *) usage ;;
  esac
  shift
done
[[ $seed =~ ^[0-9]+$ ]] || usage
[[ $kinds =~ ^[crsixw]+$ ]] || usage
IFS=, read -r -a media <<<"$media_list"
for m in "${media[@]}"; do
  case $m in disk|devdax) ;; *) usage ;; esac
done
[ -x "$tool" ] || { echo "ops powercut: $tool is not an executable" >&2; exit 2; }
tool=$(cd "$(dirname "$tool")" && pwd)/$(basename "$tool")

work=$(mktemp -d "${TMPDIR:-/tmp}/rawdax-ops-powercut.XXXXXX")
trap 'rm -rf "$work"' EXIT
files=${keep:-$work}
mkdir -p "$files"
RANDOM=$seed

# The guest side: SPEC and SNAPS of media $1, expanded in the guest.
where='case $1 in
  disk) spec=$RAWDAX_GUEST_DISK/region snaps=$RAWDAX_GUEST_DISK/snaps ;;
  devdax) spec=devdax:$RAWDAX_GUEST_DEVDAX snaps=$RAWDAX_GUEST_DISK/dsnaps ;;
esac'

# One boot. CHECKS: "MEDIA ACKED" lines (may be empty); RUNS: "MEDIA ARGS..."
# lines, each run in the background; CUT: the text to cut on ("" for none).
boot() {
  local checks=$1 runs=$2 cut=$3 script="rm -rf /tmp/ops-barrier; mkdir /tmp/ops-barrier"$'\n' m rest
  while read -r m rest; do
    [ -n "$m" ] || continue
    script+="set -- $m; $where; \"\$tool\" ops-check \"\$spec\" \"\$snaps\" $seed $rest --label $m --kinds $kinds || exit 1"$'\n'
  done <<<"$checks"
  while read -r m rest; do
    [ -n "$m" ] || continue
    script+="set -- $m; $where; \"\$tool\" ops-run \"\$spec\" \"\$snaps\" $seed $rest --label $m --kinds $kinds --barrier /tmp/ops-barrier:${#media[@]} &"$'\n'
  done <<<"$runs"
  [ -z "$runs" ] || script+='wait -n; echo "a run ended before the cut"; exit 1'$'\n'
  local cut_args=()
  [ -z "$cut" ] || cut_args=(--cut-when "$cut")
  "$here/run" --pmem "$files/pmem" --disk "$files/disk" --timeout 600 "${cut_args[@]}" -- \
    bash -c 'tool=$0; '"$script" "$tool" 2>&1 | tee "$work/log" || return 1
  ! grep -q 'OPS FAILED' "$work/log"
}

# "c=5,r=3,...": the last step of each kind on media $1 that the log shows
# acknowledged, "!" after the stalled one ($2).
acked_of() {
  local m=$1 stalled=$2 k n out=""
  for ((j = 0; j < ${#kinds}; j++)); do
    k=${kinds:j:1}
    n=$(grep -aoE "^$m: $k ack [0-9]+" "$work/log" | awk '{print $4}' | sort -n | tail -n 1)
    out+="$k=${n:-0}$([ "$k" = "$stalled" ] && echo '!'),"
  done
  echo "${out%,}"
}

declare -A landed=()
tally() {
  local m=$1 k line op
  for ((j = 0; j < ${#kinds}; j++)); do
    k=${kinds:j:1}
    line=$(grep -aE "^$m: $k (begin|ack) " "$work/log" | tail -n 1 || true)
    case $line in
      *" begin "*) op=$(awk '{print $4}' <<<"$line") ;;
      *) op="between" ;;
    esac
    case $op in fill|refill) op="between" ;; esac
    landed[$m:$op]=$(( ${landed[$m:$op]:-0} + 1 ))
  done
}

echo "ops powercut: $cuts cuts on ${media[*]}, kinds $kinds, seed $seed"
start_all=$SECONDS
checks=""
for ((i = 1; i <= cuts; i++)); do
  text="RAWDAX-OPS-CUT-$seed-$i"
  cut_media=${media[RANDOM % ${#media[@]}]}
  stalled_kind=""
  runs=""
  for m in "${media[@]}"; do
    args="$i"
    [ "$i" = 1 ] && args+=" --format"
    if [ "$m" != "$cut_media" ]; then
      args+=" --until-cut"
    elif [ "$step_cuts" = 1 ] || (( RANDOM % 2 == 0 )); then
      stalled_kind=${kinds:RANDOM % ${#kinds}:1}
      step=$((1 + RANDOM % 4))
      args+=" --cut $stalled_kind:$step:$text"
      how="after step $step of $stalled_kind on $m"
    else
      ms=$((200 + RANDOM % 3000))
      args+=" --cut-after-ms $ms:$text"
      how="$ms ms into the run on $m"
    fi
    runs+="$m $args"$'\n'
  done
  start=$SECONDS
  echo "ops powercut: boot $i: check, run, cut $how"
  boot "$checks" "$runs" "$text" || { echo "ops powercut: boot $i FAILED" >&2; exit 1; }
  checks=""
  for m in "${media[@]}"; do
    tally "$m"
    stall=""
    [ "$m" = "$cut_media" ] && stall=$stalled_kind
    checks+="$m $i --acked $(acked_of "$m" "$stall")"$'\n'
  done
  echo "ops powercut: cut $i of $cuts after $((SECONDS - start)) s; acked: $(tr '\n' ' ' <<<"$checks")"
done

start=$SECONDS
echo "ops powercut: boot $((cuts + 1)): check"
boot "$checks" "" "" || { echo "ops powercut: the final check FAILED" >&2; exit 1; }
checked=$(grep -ac 'OPS CHECK OK' "$work/log" || true)
[ "$checked" = "${#media[@]}" ] || { echo "ops powercut: the final boot checked $checked of ${#media[@]} media" >&2; exit 1; }
echo "ops powercut: where the cuts landed (operation in flight, per media):"
for key in $(printf '%s\n' "${!landed[@]}" | sort); do
  echo "  ${key%%:*} ${key#*:}: ${landed[$key]}"
done
echo "ops powercut: $cuts cuts, every check passed, in $((SECONDS - start_all)) s (seed $seed)"

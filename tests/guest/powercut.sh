#!/bin/bash
# tests/guest/powercut.sh MEDIA TOOL: a power cut on real DAX, in two boots
# of the guest (tests/guest/run) that share one NVDIMM backing file.
#
# MEDIA is fsdax (a region on ext4 -o dax) or devdax (/dev/dax0.0); TOOL is
# the rawdax_powercut binary. Boot 1 writes a random pattern through a
# mapping, persists it with Mapping::persist() (which must make no msync
# call: the tool counts them), prints the ready text and sleeps; the runner
# SIGKILLs QEMU on that text, so the guest loses its page cache and whatever
# it had not written back. Boot 2 reads the bytes back: they must be the
# pattern. It also checks that another seed's pattern is refused, so the
# check can fail. Exit 0 on success; nonzero, with the reason, otherwise.
set -euo pipefail

media=${1:?usage: powercut.sh fsdax|devdax TOOL}
tool=${2:?usage: powercut.sh fsdax|devdax TOOL}
here=$(cd "$(dirname "$0")" && pwd)
case $media in
  fsdax|devdax) ;;
  *) echo "powercut: unknown media '$media' (fsdax or devdax)" >&2; exit 2 ;;
esac
size=$((8 << 20))  # on devdax, four units of its 2 MiB alignment
[ -x "$tool" ] || { echo "powercut: $tool is not an executable" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/rawdax-powercut.XXXXXX")
trap 'rm -rf "$work"' EXIT
pmem="$work/pmem"
seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
ready="RAWDAX-POWERCUT-READY-$seed"

# The region as the guest names it; expanded there, from the runner's variables.
guest_spec='case $0 in fsdax) spec=$RAWDAX_GUEST_FSDAX/powercut ;; devdax) spec=devdax:$RAWDAX_GUEST_DEVDAX ;; esac'

echo "powercut: $media, $size bytes, seed $seed: boot 1 writes, persists, and loses power"
start=$SECONDS
"$here/run" --pmem "$pmem" --cut-when "$ready" -- bash -c "$guest_spec"'
  exec "$1" write "$spec" pc "$2" "$3" "$4"' "$media" "$tool" "$size" "$seed" "$ready"
echo "powercut: boot 1 took $((SECONDS - start)) s; boot 2 reads back"

start=$SECONDS
"$here/run" --pmem "$pmem" -- bash -c "$guest_spec"'
  "$1" check "$spec" pc "$2" "$3" || exit 1
  if "$1" check "$spec" pc "$2" "$(($3 + 1))"; then
    echo "powercut: the pattern of another seed matched too: the check cannot fail" >&2
    exit 1
  fi' "$media" "$tool" "$size" "$seed"
echo "powercut: boot 2 took $((SECONDS - start)) s; $media kept every persisted byte"

#!/bin/bash
# The guest half of tests/guest/run, run as root inside `chroot /host` by
# run_init.sh, so every tool here is the host's own (read over 9p).
#
# Usage: guest_side.sh CTL SCRATCH
# CTL holds what the runner wrote: `options` (shell assignments: user,
# hugepages, devdax_size), `env` (exports for CMD) and `cmd` (CMD, quoted).
# This script writes CTL/setup.log, CTL/out (CMD's output) and CTL/status
# (CMD's exit status). A failed step writes CTL/setup-error naming the step
# and exits without running CMD.
set -uo pipefail
ctl=$1
scratch=$2
# shellcheck source=/dev/null
. "$ctl/options"
exec 3>>"$ctl/setup.log"
current=""
step() {
  current=$1
  echo "RAWDAX-GUEST: step $1 (at $(cut -d" " -f1 /proc/uptime) s)" > /dev/console
  echo "== $1" >&3
}
fail() {
  echo "$current: $*" > "$ctl/setup-error"
  echo "RAWDAX-GUEST: FAILED step $current: $*" > /dev/console
  exit 1
}
# Runs a setup command, its output in setup.log; fails the step on error.
run() { "$@" >&3 2>&1 || fail "'$*' exited $?"; }

devdax_dir=/dev
fsdax_dir=/mnt/rawdax-fsdax
hugetlbfs_dir=/mnt/rawdax-hugetlbfs
disk_dir=/mnt/rawdax-disk
uid=0
if [ "$user" = 1 ]; then uid=65534; fi

step nvdimm-region
for _ in $(seq 100); do
  [ -n "$(ndctl list -R 2>/dev/null)" ] && break
  sleep 0.1
done
region_json=$(ndctl list -R 2>&3) || fail "ndctl list -R"
[ -n "$region_json" ] || fail "no NVDIMM region appeared (nfit, libnvdimm loaded?)"
region=$(jq -r 'if type == "array" then .[0].dev else .dev end' <<<"$region_json")
echo "region $region: $region_json" >&3

# A pmem file the runner reused keeps its namespaces: only a fresh one is set up.
namespaces=$(ndctl list -N -r "$region" 2>&3)
devdax=$(jq -r '[.. | objects | select(.mode? == "devdax") | .chardev] | first // empty' \
  <<<"${namespaces:-[]}")
fsdax=$(jq -r '[.. | objects | select(.mode? == "fsdax") | .blockdev] | first // empty' \
  <<<"${namespaces:-[]}")
fresh=0
if [ -z "$devdax" ]; then
  step init-labels
  run ndctl disable-region "$region"
  run ndctl init-labels -f all
  run ndctl enable-region "$region"
  step devdax-namespace
  out=$(ndctl create-namespace -r "$region" -m devdax -a 2M -s "$devdax_size" 2>&3) ||
    fail "ndctl create-namespace -m devdax -a 2M -s $devdax_size"
  echo "$out" >&3
  devdax=$(jq -r '.daxregion.devices[0].chardev' <<<"$out")
  fresh=1
fi
[ -c "/dev/$devdax" ] || fail "/dev/$devdax is not a character device"
[ "$(cat "/sys/bus/dax/devices/$devdax/align" 2>/dev/null)" = $((2 << 20)) ] ||
  fail "$devdax align is not 2 MiB"

if [ -z "$fsdax" ]; then
  step fsdax-namespace
  out=$(ndctl create-namespace -r "$region" -m fsdax -M mem 2>&3) ||
    fail "ndctl create-namespace -m fsdax"
  echo "$out" >&3
  fsdax=$(jq -r '.blockdev' <<<"$out")
  fresh=1
fi
[ -b "/dev/$fsdax" ] || fail "/dev/$fsdax is not a block device"
if [ "$fresh" = 1 ]; then
  step mkfs-fsdax
  run mkfs.ext4 -q -F -b 4096 -E nodiscard "/dev/$fsdax"
fi
step mount-fsdax
mkdir -p "$fsdax_dir"
run mount -t ext4 -o dax "/dev/$fsdax" "$fsdax_dir"
grep -E "^/dev/$fsdax $fsdax_dir ext4 [^ ]*dax" /proc/mounts >&3 ||
  fail "$fsdax_dir is not mounted with dax: $(grep "$fsdax_dir" /proc/mounts)"

step disk
# ext4 without DAX on the virtio disk: a disk region under this kernel.
mkdir -p "$disk_dir"
if ! blkid /dev/vda >&3 2>&1; then
  run mkfs.ext4 -q -F -b 4096 -E nodiscard /dev/vda
fi
run mount -t ext4 /dev/vda "$disk_dir"

step hugetlbfs
if [ "$hugepages" -gt 0 ]; then
  echo "$hugepages" > /proc/sys/vm/nr_hugepages
  got=$(cat /proc/sys/vm/nr_hugepages)
  [ "$got" = "$hugepages" ] || fail "asked for $hugepages huge pages, the kernel gave $got"
fi
mkdir -p "$hugetlbfs_dir"
run mount -t hugetlbfs -o "pagesize=2M,uid=$uid,gid=$uid,mode=0755" none "$hugetlbfs_dir"

step privileges
echo 0 > /proc/sys/vm/unprivileged_userfaultfd || fail "cannot set vm.unprivileged_userfaultfd"
if [ "$user" = 1 ]; then
  # What an administrator does for a tenant: the devices and mounts are theirs.
  run chown "$uid:$uid" "/dev/$devdax" "$fsdax_dir" "$disk_dir" "$scratch"
fi

step run
export RAWDAX_GUEST_DEVDAX="/dev/$devdax"
export RAWDAX_GUEST_FSDAX="$fsdax_dir"
export RAWDAX_GUEST_HUGETLBFS="$hugetlbfs_dir"
export RAWDAX_GUEST_DISK="$disk_dir"
export RAWDAX_GUEST_SCRATCH="$scratch"
export RAWDAX_GUEST_KERNEL="$(uname -r)"
export HOME=/tmp
# shellcheck source=/dev/null
. "$ctl/env"
if [ "$user" = 1 ]; then
  setpriv --reuid="$uid" --regid="$uid" --clear-groups --inh-caps=-all --bounding-set=-all \
    -- /bin/bash "$ctl/cmd" >"$ctl/out" 2>&1 </dev/null
else
  /bin/bash "$ctl/cmd" >"$ctl/out" 2>&1 </dev/null
fi
status=$?
sync
umount "$fsdax_dir" "$disk_dir" 2>&3
echo "$status" > "$ctl/status"
sync

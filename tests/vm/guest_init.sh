#!/bin/sh
# /init of the VM end-to-end test's guest. Every line meant for the host
# starts with "RAWDAX-GUEST: " on the serial console.
#   rawdax.step=write  markers at the end of raw /dev/pmem0, then fsdax
#                      (ndctl), ext4 mounted -o dax, a file; "ready"; then
#                      keeps writing for a while so the host snapshots a
#                      running guest; powers off.
#   rawdax.step=read   mounts the (restored) fsdax /dev/pmem0 -o dax and
#                      prints the file back; powers off.
#   rawdax.step=generations  writes raw /dev/pmem0 round after round and
#                      never stops: round g fills every 4 KiB page, in
#                      order, with the byte g (1..255, then 1 again),
#                      through O_DIRECT, so each page reaches the namespace
#                      as it is written. "rounds" once two rounds are done.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "RAWDAX-GUEST: $*"; }
fail() { say "FAILED: $*"; poweroff -f; }
for m in $(cat /modules/order); do insmod "/modules/$m.ko" 2>/dev/null; done
wait_pmem() {
  for i in $(seq 100); do [ -b /dev/pmem0 ] && return 0; sleep 0.1; done
  fail "no /dev/pmem0"
}
step=$(sed -n 's/.*rawdax\.step=\([a-z]*\).*/\1/p' /proc/cmdline)
wait_pmem
case "$step" in
write)
  blocks=$(( $(cat /sys/block/pmem0/size) / 8 ))
  for i in 0 1 2 3; do
    printf 'rawdax-marker-%d\n' "$i" | dd of=/dev/pmem0 bs=4096 seek=$((blocks - 4 + i)) \
      conv=notrunc,fsync 2>/dev/null || fail "marker $i"
  done
  say "markers at block $((blocks - 4)) of $blocks"
  out=$(ndctl create-namespace -f -e namespace0.0 -m fsdax -M mem 2>&1) || fail "ndctl: $out"
  sleep 0.5
  wait_pmem
  fsdax_blocks=$(( $(cat /sys/block/pmem0/size) / 8 ))
  # Clear of the markers: the filesystem ends 4 MiB before the device.
  # The full path: busybox sh would run its own mke2fs applet.
  out=$(/bin/mke2fs -q -t ext4 -F -E nodiscard -b 4096 /dev/pmem0 $((fsdax_blocks - 1024)) 2>&1) ||
    fail "mke2fs: $out"
  mount -t ext4 -o dax /dev/pmem0 /mnt || fail "mount -o dax"
  grep -q 'pmem0.*dax' /proc/mounts || fail "not mounted with dax"
  echo "hello from the guest" > /mnt/file
  sync
  say "ready"
  for i in $(seq 40); do echo "$i" > /mnt/counter; sync; sleep 0.1; done
  umount /mnt
  say "done"
  ;;
read)
  mount -t ext4 -o dax /dev/pmem0 /mnt || fail "mount -o dax"
  say "file: $(cat /mnt/file)"
  say "done"
  ;;
generations)
  mib=$(( $(cat /sys/block/pmem0/size) / 2048 ))
  g=0
  while :; do
    g=$(( g % 255 + 1 ))
    dd if=/dev/zero bs=1M count=$mib 2>/dev/null | tr '\000' "\\$(printf %o $g)" |
      dd of=/dev/pmem0 bs=1M iflag=fullblock oflag=direct 2>/dev/null || fail "round $g"
    [ $g = 2 ] && say "rounds"
  done
  ;;
*)
  fail "unknown step '$step'"
  ;;
esac
poweroff -f

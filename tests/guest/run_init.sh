#!/bin/sh
# /run_init of the guest kit (tests/guest/build_kit.sh), booted by
# tests/guest/run with rdinit=/run_init. Busybox only: it loads the modules,
# mounts the host's root (9p, read-only) at /host with proc, sys, dev and
# tmpfs where a running system writes, mounts the runner's control and scratch
# directories (9p, writable) at their host paths, and hands over to
# tests/guest/guest_side.sh inside `chroot /host`, which sets the media up and
# runs the command. Lines for the host start with "RAWDAX-GUEST: ".
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "RAWDAX-GUEST: $* (at $(cut -d" " -f1 /proc/uptime) s)" > /dev/console; }
fail() { say "FAILED step $1: $2"; sync; poweroff -f; }
arg() { sed -n "s/.*rawdax\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
ctl=$(arg ctl)
scratch=$(arg scratch)
side=$(arg side)
say "step modules"
for m in $(cat /modules/order); do
  insmod "/modules/$m.ko" 2>/dev/null || grep -q "^$m " /proc/modules || fail modules "insmod $m"
done
say "step mount-host"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host ||
  fail mount-host "9p hostroot"
mount -t proc proc /host/proc || fail mount-host "proc"
mount -t sysfs sys /host/sys || fail mount-host "sysfs"
mount -t devtmpfs dev /host/dev || fail mount-host "devtmpfs"
mkdir -p /host/dev/shm /host/dev/pts /host/dev/hugepages
mount -t tmpfs -o mode=1777,size=67% shm /host/dev/shm || fail mount-host "tmpfs /dev/shm"
for d in /tmp /run /mnt /var/tmp; do
  mount -t tmpfs -o mode=1777 tmpfs "/host$d" || fail mount-host "tmpfs $d"
done
say "step mount-scratch"
# They may lie under a tmpfs mounted above: make the mount points there.
mkdir -p "/host$ctl" "/host$scratch" 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=mmap ctl "/host$ctl" ||
  fail mount-scratch "9p control directory $ctl"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=mmap scratch "/host$scratch" ||
  fail mount-scratch "9p scratch directory $scratch"
chroot /host /bin/bash "$side" "$ctl" "$scratch"
say "guest-side exited $?"
umount "/host$scratch" "/host$ctl" 2>/dev/null
sync
poweroff -f

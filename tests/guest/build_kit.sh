#!/bin/bash
# Builds the guest kit that tests/guest/run and the VM end-to-end test boot:
#   OUT/vmlinux            the Debian kernel's xz payload, booted through its
#                          PVH entry point (QEMU's -kernel takes it directly);
#   OUT/initramfs.cpio.gz  busybox, ndctl and mke2fs with their libraries, the
#                          nvdimm, virtio (pmem, blk), ext4 and 9p modules, and two inits:
#                          /init is tests/vm/guest_init.sh (the VM e2e test's),
#                          /run_init is tests/guest/run_init.sh (the runner's,
#                          chosen with rdinit=/run_init).
# The kit is rebuilt only when the kernel or one of these scripts changes.
#
# Usage: build_kit.sh OUT_DIR
# Exit 77 (the reason on stderr) when a package is missing; `make deps`
# installs them all. Any other failure exits 1 naming what failed.
set -euo pipefail
out=$1
here=$(cd "$(dirname "$0")" && pwd)
vm_init="$here/../vm/guest_init.sh"
run_init="$here/run_init.sh"
need() { command -v "$1" >/dev/null || { echo "guest kit: $1 not installed (make deps)" >&2; exit 77; }; }
need busybox; need ndctl; need mke2fs; need cpio; need xz
# The newest Debian kernel in /lib/modules that has its image in /boot (the
# host's own kernel may have modules without an image, or the reverse).
kver=""
for k in $(ls /lib/modules 2>/dev/null | sort -V); do
  [ -r "/boot/vmlinuz-$k" ] && kver=$k
done
[ -n "$kver" ] || { echo "guest kit: no Debian kernel in /boot (make deps installs linux-image-amd64)" >&2; exit 77; }
vmlinuz=/boot/vmlinuz-$kver

mkdir -p "$out"
stamp="$out/.built-$kver-$(md5sum "$vm_init" "$run_init" "$0" | md5sum | cut -c1-12)"
[ -e "$stamp" ] && exit 0

# vmlinux: decompress the xz stream that follows the bzImage setup code.
python3 - "$vmlinuz" "$out/vmlinux.tmp" <<'PY'
import lzma, sys
data = open(sys.argv[1], 'rb').read()
at = data.find(b'\xfd7zXZ\x00')
if at < 0:
    sys.exit('guest kit: no xz payload in ' + sys.argv[1])
out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[at:])
open(sys.argv[2], 'wb').write(out)
PY
mv "$out/vmlinux.tmp" "$out/vmlinux"
echo "$kver" > "$out/kernel-release"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,lib,lib64,proc,sys,dev,mnt,tmp,modules,host}
cp /usr/bin/busybox "$root/bin/busybox"
for tool in sh mount umount dd cat echo sleep mkdir insmod poweroff grep hexdump sync ls head seq \
            tr od printf cut test [ sed dmesg chroot; do
  ln -sf busybox "$root/bin/$tool"
done
copy_with_libs() {
  cp "$1" "$root/bin/"
  ldd "$1" | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
copy_with_libs "$(command -v ndctl)"
copy_with_libs "$(command -v mke2fs)"
# Dependency order: insmod does not resolve dependencies.
for m in libnvdimm nd_btt nd_pmem nfit device_dax dax_pmem virtio_ring virtio virtio_pci_modern_dev \
         virtio_pci_legacy_dev virtio_pci virtio_blk nd_virtio virtio_pmem crc16 crc32c_generic mbcache jbd2 ext4 \
         netfs fscache 9pnet 9pnet_virtio 9p; do
  f=$(find "/lib/modules/$kver" -name "$m.ko" -o -name "$m.ko.xz" | head -1)
  [ -n "$f" ] || { echo "guest kit: module $m not found in /lib/modules/$kver" >&2; exit 1; }
  case $f in
    *.xz) xz -dc "$f" > "$root/modules/$m.ko" ;;
    *) cp "$f" "$root/modules/$m.ko" ;;
  esac
  echo "$m" >> "$root/modules/order"
done
cp "$vm_init" "$root/init"
cp "$run_init" "$root/run_init"
chmod +x "$root/init" "$root/run_init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs.cpio.gz"
rm -f "$out"/.built-*
touch "$stamp"

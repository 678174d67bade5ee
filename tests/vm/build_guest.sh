#!/bin/bash
# Builds what the VM end-to-end test boots: OUT/vmlinux (the Debian kernel's
# xz payload, booted through its PVH entry point) and OUT/initramfs.cpio.gz
# (busybox, ndctl and mke2fs with their libraries, the nvdimm/virtio-pmem/ext4
# modules, and tests/vm/guest_init.sh as /init).
#
# Usage: build_guest.sh OUT_DIR
# Exit 77 (a skip, with the reason on stderr) when a peer package is missing;
# `make deps` installs them all.
set -euo pipefail
out=$1
here=$(cd "$(dirname "$0")" && pwd)
need() { command -v "$1" >/dev/null || { echo "skip: $1 not installed (make deps)" >&2; exit 77; }; }
need busybox; need ndctl; need mke2fs; need cpio; need xz
kver=$(ls /lib/modules 2>/dev/null | sort -V | tail -1)
vmlinuz=/boot/vmlinuz-$kver
[ -n "$kver" ] && [ -r "$vmlinuz" ] || { echo "skip: no Debian kernel in /boot (make deps)" >&2; exit 77; }

mkdir -p "$out"
stamp="$out/.built-$kver-$(md5sum "$here/guest_init.sh" "$0" | md5sum | cut -c1-12)"
[ -e "$stamp" ] && exit 0

# vmlinux: decompress the xz stream that follows the bzImage setup code.
python3 - "$vmlinuz" "$out/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], 'rb').read()
at = data.find(b'\xfd7zXZ\x00')
if at < 0:
    sys.exit('no xz payload in ' + sys.argv[1])
out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[at:])
open(sys.argv[2], 'wb').write(out)
PY

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,lib,lib64,proc,sys,dev,mnt,tmp,modules}
cp /usr/bin/busybox "$root/bin/busybox"
for tool in sh mount umount dd cat echo sleep mkdir insmod poweroff grep hexdump sync ls head seq \
            tr od printf cut test [ sed dmesg; do
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
for m in libnvdimm nd_btt nd_pmem nfit device_dax dax_pmem virtio_ring virtio virtio_pci_modern_dev \
         virtio_pci_legacy_dev virtio_pci nd_virtio virtio_pmem crc16 crc32c_generic mbcache jbd2 ext4; do
  f=$(find "/lib/modules/$kver" -name "$m.ko" -o -name "$m.ko.xz" | head -1)
  [ -n "$f" ] || { echo "module $m not found in /lib/modules/$kver" >&2; exit 1; }
  case $f in
    *.xz) xz -dc "$f" > "$root/modules/$m.ko" ;;
    *) cp "$f" "$root/modules/$m.ko" ;;
  esac
  echo "$m" >> "$root/modules/order"
done
cp "$here/guest_init.sh" "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs.cpio.gz"
rm -f "$out"/.built-*
touch "$stamp"

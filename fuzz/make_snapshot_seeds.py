#!/usr/bin/env python3
"""Writes snapshot seeds of geometries the CLI never makes (run by make_seeds.sh).

Every file is a valid snapshot (docs/snapshot.md: XXH3-64 checksums through
libxxhash), so it verifies in any build:
  short-last-page       12 KiB namespace in 8 KiB pages: the last page holds
                        4 KiB; the file's bytes past the namespace's end are
                        not zeros (they are no part of the image)
  incremental-short-last-page
                        an incremental over a base of that geometry (no bytes
                        past the end), storing only the short last page,
                        + split + its base
  unaligned-size        a 5000-byte namespace in 4 KiB pages: verifies, but no
                        region of 4 KiB alignment can hold it
  small-pages           an 8 KiB namespace in 512-byte pages, mostly holes
"""
import ctypes
import json
import os
import struct

_lib = ctypes.CDLL("libxxhash.so.0")
_xxh3 = _lib.XXH3_64bits_withSeed
_xxh3.restype = ctypes.c_uint64
_xxh3.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]

MAGIC = b"RAWDAXSNAP 2\n"
HEADER_BYTES = 4096
SPLIT = b"\n--RAWDAX-FUZZ-BASE--\n"


def xxh3(data, seed=0):
    return _xxh3(data, len(data), seed)


def hex64(v):
    return "%016x" % v


def snapshot(ns_size, page_size, pages, ident, base=None, tail=b""):
    """pages: {index: bytes of the page's namespace part}. base: (id, header_checksum)."""
    count = (ns_size + page_size - 1) // page_size
    bitmap = bytearray((count + 7) // 8)
    table = [0] * count
    for i, data in pages.items():
        bitmap[i // 8] |= 1 << (i % 8)
        table[i] = xxh3(data.ljust(page_size, b"\0"), i)
    table_bytes = b"".join(struct.pack("<Q", v) for v in table)
    table_offset = (HEADER_BYTES + len(bitmap) + 7) & ~7
    data_offset = (table_offset + 8 * count + page_size - 1) // page_size * page_size
    header = {
        "version": 2, "id": ident, "source_uuid": "5eed0000-0000-4000-8000-000000000001",
        "namespace_size": ns_size, "page_size": page_size,
        "base_id": base[0] if base else "", "base_checksum": base[1] if base else "",
        "base_path": "base.snap" if base else "", "stored_pages": len(pages),
        "bitmap_checksum": hex64(xxh3(bytes(bitmap))),
        "table_checksum": hex64(xxh3(table_bytes)),
    }
    dump = lambda h: json.dumps(h, sort_keys=True, separators=(",", ":")).encode()
    header["header_checksum"] = hex64(xxh3(dump(header)))
    out = bytearray(data_offset + count * page_size)
    text = MAGIC + dump(header)
    out[0:len(text)] = text
    out[HEADER_BYTES:HEADER_BYTES + len(bitmap)] = bitmap
    out[table_offset:table_offset + len(table_bytes)] = table_bytes
    for i, data in pages.items():
        at = data_offset + i * page_size
        out[at:at + len(data)] = data
    if tail:  # bytes of the last page's slot past the namespace's end
        at = data_offset + ns_size
        out[at:at + len(tail)] = tail
    return bytes(out), (ident, header["header_checksum"])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    corpus = os.path.join(here, "corpus", "snapshot")
    os.makedirs(corpus, exist_ok=True)

    def write(name, data):
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(data)

    page0 = b"first page " * 100
    short = b"the short last page" * 50  # 950 bytes, then zeros to 4 KiB
    pages = {0: page0.ljust(8192, b"\x01"), 1: short.ljust(4096, b"\0")}
    full, _ = snapshot(12288, 8192, pages, "5eed0000-0000-4000-8000-00000000000a",
                       tail=b"past the end")
    write("short-last-page", full)
    base, base_id = snapshot(12288, 8192, pages, "5eed0000-0000-4000-8000-00000000000e")
    top, _ = snapshot(12288, 8192, {1: b"changed last page".ljust(4096, b"\x02")},
                      "5eed0000-0000-4000-8000-00000000000b", base=base_id)
    write("incremental-short-last-page", top + SPLIT + base)
    odd, _ = snapshot(5000, 4096, {0: b"a".ljust(4096, b"\x03"), 1: b"b" * 904},
                      "5eed0000-0000-4000-8000-00000000000c")
    write("unaligned-size", odd)
    small, _ = snapshot(8192, 512, {0: b"x" * 512, 3: b"y" * 512, 15: b"z" * 512},
                        "5eed0000-0000-4000-8000-00000000000d")
    write("small-pages", small)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the seed corpora of the NBD fuzz targets (run by make_seeds.sh).

fuzz/corpus/nbd_handshake/     client byte streams from the client flags on:
                               each option, then a short transmission
fuzz/corpus/nbd_transmission/  a handshake-selection byte (see
                               nbd_transmission_fuzz.cc) and request streams
"""
import os
import struct
import sys

OPT_MAGIC = 0x49484156454F5054
REQ_MAGIC = 0x25609513
FIXED_NEWSTYLE, NO_ZEROES = 1, 2
(EXPORT_NAME, ABORT, LIST, STARTTLS, INFO, GO, STRUCTURED_REPLY, LIST_META,
 SET_META) = 1, 2, 3, 5, 6, 7, 8, 9, 10
INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 1, 2, 3
READ, WRITE, DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS = 0, 1, 2, 3, 4, 5, 6, 7
FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO = 1, 2, 4, 8, 16


def option(opt, data=b""):
    return struct.pack(">QII", OPT_MAGIC, opt, len(data)) + data


def string(s):
    return struct.pack(">I", len(s)) + s


def info_request(name, infos=()):
    return string(name) + struct.pack(">H", len(infos)) + b"".join(
        struct.pack(">H", i) for i in infos)


def meta_request(name, queries):
    return string(name) + struct.pack(">I", len(queries)) + b"".join(string(q) for q in queries)


cookie = 0


def request(cmd, offset=0, length=0, flags=0, payload=b""):
    global cookie
    cookie += 1
    return struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, cookie, offset, length) + payload


def flags(f=FIXED_NEWSTYLE):
    return struct.pack(">I", f)


def disc():
    return request(DISC)


handshake = {
    "export-name-default": flags() + option(EXPORT_NAME, b"") + request(READ, 0, 512) + disc(),
    "export-name-small-no-zeroes": flags(FIXED_NEWSTYLE | NO_ZEROES)
    + option(EXPORT_NAME, b"small") + request(FLUSH) + disc(),
    "export-name-unknown": flags() + option(EXPORT_NAME, b"nosuch"),
    "list-then-abort": flags() + option(LIST) + option(ABORT),
    "list-with-data": flags() + option(LIST, b"x") + option(ABORT),
    "info-every-type": flags() + option(INFO, info_request(b"default",
                                                           (INFO_NAME, INFO_DESCRIPTION,
                                                            INFO_BLOCK_SIZE, 99)))
    + option(ABORT),
    "info-unknown-export": flags() + option(INFO, info_request(b"nosuch")) + option(ABORT),
    "go-default-block-size": flags() + option(GO, info_request(b"", (INFO_BLOCK_SIZE,)))
    + request(WRITE, 0, 512, 0, b"\x5a" * 512) + request(READ, 0, 512) + disc(),
    "structured-meta-go": flags() + option(STRUCTURED_REPLY)
    + option(LIST_META, meta_request(b"default", []))
    + option(LIST_META, meta_request(b"default", [b"base:"]))
    + option(SET_META, meta_request(b"default", [b"base:allocation", b"qemu:dirty-bitmap:x"]))
    + option(GO, info_request(b"default", (INFO_NAME,)))
    + request(BLOCK_STATUS, 0, 1 << 20) + request(READ, 0, 65536) + disc(),
    "meta-before-structured": flags() + option(SET_META, meta_request(b"", [b"base:allocation"]))
    + option(ABORT),
    "starttls-unsupported": flags() + option(STARTTLS) + option(ABORT),
    "oversized-option": flags() + struct.pack(">QII", OPT_MAGIC, GO, 70000) + b"\0" * 64,
    "bad-option-magic": flags() + struct.pack(">QII", 0x1234, GO, 0),
    "unknown-client-flags": flags(0x80000001),
}

# Handshake selection byte of nbd_transmission_fuzz.cc.
STRUCT, META, BLOCKSIZE, EXPNAME, NOZERO, RO, SMALL = 1, 2, 4, 8, 16, 32, 64
transmission = {
    "simple-every-command": bytes([0]) + request(WRITE, 4096, 4096, FUA, b"\x11" * 4096)
    + request(READ, 4096, 4096) + request(FLUSH) + request(TRIM, 8192, 4096)
    + request(WRITE_ZEROES, 0, 4096, NO_HOLE) + request(WRITE_ZEROES, 12288, 4096, FAST_ZERO)
    + request(CACHE, 0, 65536) + request(READ, 0, 131072) + disc(),
    "structured-block-status": bytes([STRUCT | META | BLOCKSIZE])
    + request(WRITE, 0, 4096, 0, b"\x22" * 4096) + request(BLOCK_STATUS, 0, 1 << 20)
    + request(BLOCK_STATUS, 0, 1 << 20, REQ_ONE) + request(READ, 0, 65536)
    + request(READ, 65536, 65536, DF) + request(READ, 0, 512) + request(TRIM, 0, 4096, FUA)
    + request(WRITE_ZEROES, 0, 65536) + request(BLOCK_STATUS, 0, 0) + disc(),
    "structured-no-meta-block-status": bytes([STRUCT]) + request(BLOCK_STATUS, 0, 4096)
    + request(READ, 0, 4096, DF) + disc(),
    "export-name-no-zeroes": bytes([EXPNAME | NOZERO]) + request(READ, 0, 1)
    + request(WRITE, 1, 3, 0, b"abc") + disc(),
    "read-only-writes": bytes([RO | STRUCT]) + request(WRITE, 0, 512, 0, b"\0" * 512)
    + request(TRIM, 0, 4096) + request(WRITE_ZEROES, 0, 4096) + request(FLUSH)
    + request(READ, 0, 512) + disc(),
    "bad-lengths-and-offsets": bytes([SMALL | BLOCKSIZE])
    + request(READ, 65536 - 512, 1024) + request(READ, 0, 1 << 30)
    + request(READ, 1 << 63, 512) + request(READ, 1, 511)
    + request(WRITE, (1 << 64) - 512, 512, 0, b"\0" * 512)
    + request(TRIM, 0, 0xFFFFFFFF) + request(WRITE_ZEROES, 4096, 0)
    + request(CACHE, 0, 1 << 30) + request(READ, 0, 512, 0x8000) + request(99, 0, 512)
    + disc(),
    "write-header-1g": bytes([SMALL | STRUCT | META]) + request(WRITE, 0, 1 << 30)
    + b"\0" * 256,
    "truncated-write-payload": bytes([0]) + request(WRITE, 0, 8192) + b"\1" * 100,
    "bad-request-magic": bytes([STRUCT]) + struct.pack(">IHHQQI", 0xDEADBEEF, 0, READ, 1, 0, 512),
    # Reads back what unaligned writes, trims and zeroes left (the harness's model).
    "write-trim-read-back": bytes([0]) + request(WRITE, 100, 5000, 0, bytes(range(250)) * 20)
    + request(TRIM, 1000, 3000) + request(WRITE_ZEROES, 4000, 9000, NO_HOLE)
    + request(READ, 0, 16384) + request(WRITE, (1 << 20) - 6, 6, FUA, b"endend")
    + request(READ, (1 << 20) - 16, 16) + disc(),
    # Hole chunks, DF reads and zero extents after a whole-export write-zeroes.
    "structured-sparse-reads": bytes([STRUCT | META]) + request(WRITE_ZEROES, 0, 1 << 20)
    + request(READ, 0, 1 << 20) + request(WRITE, 300000, 10, 0, b"0123456789")
    + request(BLOCK_STATUS, 0, 1 << 20) + request(READ, 262144, 65536)
    + request(READ, 0, 65536, DF) + request(BLOCK_STATUS, 299008, 8192, REQ_ONE) + disc(),
}


def write(corpus, seeds):
    os.makedirs(corpus, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(data)


here = os.path.dirname(os.path.abspath(sys.argv[0]))
write(os.path.join(here, "corpus", "nbd_handshake"), handshake)
write(os.path.join(here, "corpus", "nbd_transmission"), transmission)

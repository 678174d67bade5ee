#!/usr/bin/python3
"""Drives the rawdax NBD server with python3-libnbd, as the NBD tests need.

  nbd_client.py bad-requests URI   requests a strict client never sends
  nbd_client.py two-clients URI    two connections see each other's writes
  nbd_client.py until-error URI    I/O until the server answers an error;
                                   prints the errno name (used for removal)
  nbd_client.py load URI SECONDS [SLOT]
                                   writes until SECONDS pass or the server goes;
                                   SLOT (0 or 1) picks a half of the export;
                                   prints how many writes were acknowledged

Prints one line per check; exits 0 when every check holds, 1 otherwise.
"""
import errno
import os
import struct
import sys
import time

import nbd

failures = []


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (": " + detail if detail else ""))
    sys.stdout.flush()
    if not ok:
        failures.append(what)


def connect(uri, strict=True):
    h = nbd.NBD()
    if not strict:
        h.set_strict_mode(0)
    h.connect_uri(uri)
    return h


def expect_errno(what, want, fn):
    try:
        fn()
    except nbd.Error as e:
        # libnbd reports the errno by name ("EINVAL").
        check(what, e.errno == errno.errorcode[want],
              "got %s (%s), want %s" % (e.errno, e.string, errno.errorcode[want]))
        return
    check(what, False, "succeeded, want %s" % errno.errorcode[want])


def still_works(h, what):
    data = os.urandom(4096)
    h.pwrite(data, 8192)
    check(what + ": same connection still works", h.pread(4096, 8192) == data)


def bad_requests(uri):
    h = connect(uri, strict=False)
    size = h.get_size()
    minimum = h.get_block_size(nbd.SIZE_MINIMUM)
    check("server advertises a minimum block size", minimum in (1, 512), str(minimum))
    cases = [
        ("read past the end", errno.EINVAL, lambda: h.pread(512, size)),
        ("read straddling the end", errno.EINVAL, lambda: h.pread(1024, size - 512)),
        ("write past the end", errno.ENOSPC, lambda: h.pwrite(b"x" * 512, size)),
        ("write straddling the end", errno.ENOSPC, lambda: h.pwrite(b"x" * 1024, size - 512)),
        ("zero-length read", errno.EINVAL, lambda: h.pread(0, 0)),
        ("zero-length write", errno.EINVAL, lambda: h.pwrite(b"", 0)),
        ("zero-length trim", errno.EINVAL, lambda: h.trim(0, 0)),
        ("read with an unknown flag", errno.EINVAL, lambda: h.pread(512, 0, flags=1 << 9)),
        ("write with an unknown flag", errno.EINVAL,
         lambda: h.pwrite(b"y" * 512, 0, flags=1 << 12)),
        ("huge read (48 MiB)", errno.EOVERFLOW, lambda: h.pread(48 << 20, 0)),
        ("huge write (48 MiB)", errno.EINVAL, lambda: h.pwrite(b"\0" * (48 << 20), 0)),
        ("trim past the end", errno.ENOSPC, lambda: h.trim(4096, size)),
        ("zero past the end", errno.ENOSPC, lambda: h.zero(4096, size)),
    ]
    if minimum == 512:
        cases += [
            ("misaligned read", errno.EINVAL, lambda: h.pread(512, 100)),
            ("misaligned write", errno.EINVAL, lambda: h.pwrite(b"z" * 100, 0)),
        ]
    for what, want, fn in cases:
        expect_errno(what, want, fn)
        still_works(h, what)
    # Good requests at the edges still succeed.
    tail = os.urandom(512)
    h.pwrite(tail, size - 512)
    check("write of the last block", h.pread(512, size - 512) == tail)
    h.shutdown()
    fresh = connect(uri)
    still_works(fresh, "after the bad requests, a new connection")
    fresh.shutdown()


def two_clients(uri):
    a = connect(uri)
    b = connect(uri)
    check("CAN_MULTI_CONN advertised", a.can_multi_conn() == 1)
    data = os.urandom(65536)
    a.pwrite(data, 1 << 20)
    check("B reads what A wrote", b.pread(65536, 1 << 20) == data)
    data2 = os.urandom(65536)
    b.pwrite(data2, 1 << 20, flags=nbd.CMD_FLAG_FUA)
    a.flush()
    check("A reads what B wrote with FUA", a.pread(65536, 1 << 20) == data2)
    a.zero(65536, 1 << 20)
    check("B reads A's zeroes", b.pread(65536, 1 << 20) == b"\0" * 65536)
    a.shutdown()
    b.shutdown()


def until_error(uri):
    h = connect(uri)
    size = h.get_size()
    print("started")
    sys.stdout.flush()
    deadline = time.time() + 20
    i = 0
    block = os.urandom(65536)
    while time.time() < deadline:
        off = (i * 65536) % (size - 65536)
        try:
            h.pwrite(block, off)
            h.pread(65536, off)
        except nbd.Error as e:
            print("error " + str(e.errno))
            sys.stdout.flush()
            # The spec asks a client that saw ESHUTDOWN for a soft disconnect.
            try:
                h.shutdown()
                print("disconnected cleanly")
            except nbd.Error as e2:
                print("disconnect failed: " + e2.string)
            return
        i += 1
    print("no error within 20 s")
    failures.append("until-error")


def load_block(slot, i):
    """Write i of SLOT: 64 KiB of the 64-bit little-endian word slot << 32 | i + 1."""
    return struct.pack("<Q", (slot << 32) | (i + 1)) * 8192


def load(uri, seconds, slot):
    """One write at a time, so writes 0..N-1 were acknowledged when write N
    fails: "stopped after N writes". Write i goes to 64 KiB block
    i % (half / 64 KiB - 1) of the slot's half (load_block says its bytes);
    "writing" follows the first 32 acknowledgements."""
    h = connect(uri)
    half = h.get_size() // 2
    base = slot * half
    print("started")
    sys.stdout.flush()
    deadline = time.time() + seconds
    i = 0
    try:
        while time.time() < deadline:
            h.pwrite(load_block(slot, i), base + (i * 65536) % (half - 65536))
            i += 1
            if i == 32:
                print("writing")
                sys.stdout.flush()
    except nbd.Error as e:
        print("stopped after %d writes: %s" % (i, e.string))


def main():
    mode, uri = sys.argv[1], sys.argv[2]
    if mode == "bad-requests":
        bad_requests(uri)
    elif mode == "two-clients":
        two_clients(uri)
    elif mode == "until-error":
        until_error(uri)
    elif mode == "load":
        load(uri, float(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    else:
        print("unknown mode " + mode)
        return 2
    if failures:
        print("%d check(s) failed: %s" % (len(failures), ", ".join(failures)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

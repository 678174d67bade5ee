#!/usr/bin/env python3
"""The guest's pause for a snapshot of a namespace a running QEMU guest writes
all the time: through QEMU's background snapshot against the anchor, the same
namespace snapshotted in the same run with the guest paused for the whole
copy (`vm: pause`). Both figures are QEMU's own, RESUME − STOP of its QMP
event timestamps, as the daemon reports them (vm_pause_ns).

    benchmarks/vm_snapshot_bench.py [--rawdax build/rawdax] [--size 1G] [--runs 5]

The namespace lives in a region on /dev/shm (tmpfs: userfaultfd can
write-protect it). The guest is QEMU TCG with the kit of
tests/guest/build_kit.sh, step `generations` (tests/vm/guest_init.sh): it
rewrites every page of /dev/pmem0 round after round. Each run takes one
snapshot each way, the order alternating, and prints both pauses and their
ratio (background / pause, lower is better); then the median and the spread.
Needs qemu-system-x86_64 and the guest packages (make deps).
"""
import argparse
import functools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

print = functools.partial(print, flush=True)
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


class Control:
    """One connection to the daemon's control socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.file = self.sock.makefile("rw")
        self.file.readline()  # greeting

    def execute(self, command, **arguments):
        self.file.write(json.dumps({"execute": command, "arguments": arguments}) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"{command}: {reply['error']['desc']}")
            return reply["return"]


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    sys.exit(f"vm_snapshot_bench: {what}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rawdax", default="build/rawdax")
    parser.add_argument("--size", default="1G")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    size = parse_size(args.size)
    kit = os.path.join(os.path.dirname(os.path.abspath(args.rawdax)), "vm-guest")
    if subprocess.call(["bash", os.path.join(SOURCE, "tests/guest/build_kit.sh"), kit]) != 0:
        sys.exit("vm_snapshot_bench: cannot build the guest kit (make deps)")

    work = tempfile.mkdtemp(prefix="rawdax-vm-bench.", dir="/dev/shm")
    procs = []
    try:
        region = os.path.join(work, "region")
        control = os.path.join(work, "control.sock")
        procs.append(subprocess.Popen(
            [args.rawdax, "serve", "--region", region, "--control", control,
             "--default-name", "vm", "--default-size", str(size)],
            stderr=open(os.path.join(work, "serve.log"), "w")))
        wait_for(lambda: os.path.exists(control), 20, "rawdax serve did not start")
        vm_args = json.loads(subprocess.check_output(
            [args.rawdax, "vm-args", "vm", "--region", region, "--control", control,
             "--ram", "512M", "--json"]))["args"]
        qmp = os.path.join(work, "qmp.sock")
        serial = os.path.join(work, "serial.log")
        machine = vm_args[vm_args.index("-machine") + 1]
        vm_args[vm_args.index("-machine") + 1] = machine.replace("pc", "pc,accel=tcg", 1)
        procs.append(subprocess.Popen(
            ["qemu-system-x86_64", "-cpu", "max", "-kernel", os.path.join(kit, "vmlinux"),
             "-initrd", os.path.join(kit, "initramfs.cpio.gz"),
             "-append", "console=ttyS0 quiet no_timer_check rawdax.step=generations", "-nographic",
             "-no-reboot", "-monitor", "none", "-serial", "file:" + serial,
             "-qmp", f"unix:{qmp},server=on,wait=off"] + vm_args,
            stdin=subprocess.DEVNULL))
        wait_for(lambda: os.path.exists(serial) and "RAWDAX-GUEST: rounds" in open(serial).read(),
                 600, "the guest did not start writing")
        ctl = Control(control)
        ctl.execute("attach-vm", name="vm", qmp=qmp)
        print(f"namespace {size >> 20} MiB, guest RAM 512 MiB, QEMU TCG, writing all the time")
        print("run  background_pause_ms  full_pause_ms  ratio  background_total_ms  full_total_ms")
        ratios, background, full = [], [], []
        for run in range(args.runs):
            order = ["background", "pause"] if run % 2 == 0 else ["pause", "background"]
            got = {}
            for mode in order:
                snap = os.path.join(work, f"{mode}.snap")
                info = ctl.execute("snapshot", name="vm", file=snap, vm=mode)
                if info.get("vm_snapshot") != mode:
                    sys.exit(f"vm_snapshot_bench: asked for {mode}, got {info.get('vm_snapshot')}"
                             " (see serve.log)")
                got[mode] = info
                os.unlink(snap)
            b = got["background"]["vm_pause_ns"] / 1e6
            f = got["pause"]["vm_pause_ns"] / 1e6
            background.append(b)
            full.append(f)
            ratios.append(b / f)
            print(f"{run + 1:3}  {b:19.2f}  {f:13.2f}  {b / f:5.3f}  "
                  f"{got['background']['duration_ns'] / 1e6:19.1f}  "
                  f"{got['pause']['duration_ns'] / 1e6:13.1f}")
        print(f"median   {statistics.median(background):12.2f}  {statistics.median(full):13.2f}  "
              f"{statistics.median(ratios):5.3f}")
        print(f"min-max  {min(background):.2f}-{max(background):.2f} ms  "
              f"{min(full):.2f}-{max(full):.2f} ms  ratio {min(ratios):.3f}-{max(ratios):.3f}")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("KEEP"):
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

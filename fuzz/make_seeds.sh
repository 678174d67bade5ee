#!/bin/bash
# Regenerates the seed corpora: from real files made by the CLI
#   fuzz/corpus/metadata/  a region's rawdax.meta with two namespaces, edge
#                          values, a bad-block list
#   fuzz/corpus/label_area/ the start of a carved region's label area: two
#                          namespaces, one resized (both index blocks used)
#   fuzz/corpus/snapshot/  a full snapshot, and an incremental + split + its base;
#                          geometries the CLI never makes (make_snapshot_seeds.py)
#   fuzz/corpus/nbd_*/     NBD client streams (make_nbd_seeds.py)
#   fuzz/corpus/control/   control request lines
# Usage: fuzz/make_seeds.sh path/to/rawdax
set -euo pipefail
cli=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$cli" create-namespace --region "$work/r" --name a --size 16K >/dev/null
"$cli" create-namespace --region "$work/r" --name b --size 8K >/dev/null
cp "$work/r/rawdax.meta" "$here/corpus/metadata/two-namespaces"
# A record the CLI would not write: the largest generation, another mode,
# non-ASCII in the region uuid (free text), hugetlbfs-style NUL padding.
python3 - "$here/corpus/metadata/edge-values" <<'PY'
import ctypes, json, sys
xxh64 = ctypes.CDLL("libxxhash.so.0").XXH64
xxh64.restype = ctypes.c_uint64
xxh64.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
body = {"generation": 2**64 - 1, "region_uuid": "r\u00e9gion",
        "namespaces": [{"name": "a.b-c_9", "uuid": "0f0e0d0c-0b0a-4908-8706-050403020100",
                        "size": 2**63, "mode": "fsdax"}]}
text = (json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()
out = b"RAWDAXMETA 1 %016x %d\n" % (xxh64(text, len(text), 0), len(text)) + text
open(sys.argv[1], "wb").write(out + b"\0" * 64)
PY
# A namespace with a bad-block list (docs/media.md): two ranges.
python3 - "$here/corpus/metadata/badblocks" <<'PY'
import ctypes, json, sys
xxh64 = ctypes.CDLL("libxxhash.so.0").XXH64
xxh64.restype = ctypes.c_uint64
xxh64.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
body = {"generation": 7, "region_uuid": "5a7c61b2-3d44-4e1f-9a0b-8c2d6e4f1a3b",
        "namespaces": [{"name": "vm1", "uuid": "0f0e0d0c-0b0a-4908-8706-050403020100",
                        "size": 1048576, "mode": "raw",
                        "badblocks": [{"offset": 4096, "length": 4096},
                                      {"offset": 65536, "length": 8192}]}]}
text = (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()
out = b"RAWDAXMETA 1 %016x %d\n" % (xxh64(text, len(text), 0), len(text)) + text
open(sys.argv[1], "wb").write(out)
PY
c="file:$work/carved.img"
"$cli" init-region "$c" --size 16M >/dev/null
"$cli" create-namespace --region "$c" --name a --size 1M >/dev/null
"$cli" create-namespace --region "$c" --name b --size 2M >/dev/null
"$cli" resize-namespace --region "$c" a --size 512K >/dev/null
mkdir -p "$here/corpus/label_area"
head -c 12288 "$work/carved.img" > "$here/corpus/label_area/two-namespaces"
f=$("$cli" list --json --region "$work/r" | python3 -c 'import json,sys; print([n["path"] for n in json.load(sys.stdin) if n["name"] == "a"][0])')
printf 'page zero' | dd of="$f" bs=1 conv=notrunc 2>/dev/null
"$cli" snapshot a "$work/base.snap" --region "$work/r" >/dev/null
printf 'page two' | dd of="$f" bs=1 seek=8192 conv=notrunc 2>/dev/null
"$cli" snapshot a "$work/top.snap" --base "$work/base.snap" --region "$work/r" >/dev/null
cp "$work/base.snap" "$here/corpus/snapshot/full"
{ cat "$work/top.snap"; printf '\n--RAWDAX-FUZZ-BASE--\n'; cat "$work/base.snap"; } \
  > "$here/corpus/snapshot/incremental-and-base"

# Snapshots with short last pages, small pages, a size off 4 KiB.
python3 "$here/make_snapshot_seeds.py"

# NBD client streams (binary, built by a script).
python3 "$here/make_nbd_seeds.py"

# Control request lines: each command, and bad requests. Paths are relative
# to the harness's files directory (see control_fuzz.cc).
c="$here/corpus/control"
mkdir -p "$c"
q() { printf '%s\n' "$@"; }
q '{"execute":"query-namespaces","id":1}' '{"execute":"query-region"}' \
  '{"execute":"query-stats","id":"s"}' > "$c/queries"
q '{"execute":"create-namespace","arguments":{"name":"vm1","size":65536},"id":1}' \
  '{"execute":"create-namespace","arguments":{"name":"vm1","size":4096}}' \
  '{"execute":"create-namespace","arguments":{"name":"big","size":18446744073709551615}}' \
  '{"execute":"destroy-namespace","arguments":{"name":"vm1"}}' > "$c/create-destroy"
q '{"execute":"resize-namespace","arguments":{"name":"default","size":2097152}}' \
  '{"execute":"resize-namespace","arguments":{"name":"default","size":4096,"force":true}}' \
  '{"execute":"resize-namespace","arguments":{"name":"small","size":0}}' > "$c/resize"
q '{"execute":"open-namespace","arguments":{"name":"default","access":"rw","exclusive":true}}' \
  '{"execute":"open-namespace","arguments":{"name":"default","access":"ro"}}' \
  '{"execute":"resize-namespace","arguments":{"name":"default","size":4096}}' \
  '{"execute":"destroy-namespace","arguments":{"name":"default"}}' \
  '{"execute":"release-namespace","arguments":{"name":"default"}}' \
  '{"execute":"open-namespace","arguments":{"name":"small","access":"ro"}}' \
  '{"execute":"destroy-namespace","arguments":{"name":"small","force":true}}' > "$c/open-release"
q '{"execute":"freeze","arguments":{"name":"default","timeout":1}}' \
  '{"execute":"freeze","arguments":{"name":"default"}}' \
  '{"execute":"snapshot","arguments":{"name":"default","file":"/frozen.snap"}}' \
  '{"execute":"thaw","arguments":{"name":"default"}}' \
  '{"execute":"thaw","arguments":{"name":"default"}}' \
  '{"execute":"thaw","arguments":{"name":"small"}}' > "$c/freeze-thaw"
q '{"execute":"snapshot","arguments":{"name":"default","file":"/a.snap"}}' \
  '{"execute":"snapshot","arguments":{"name":"default","file":"/b.snap","base":"/a.snap"}}' \
  '{"execute":"snapshot","arguments":{"name":"small","file":"/c.snap","base":"/a.snap"}}' \
  '{"execute":"snapshot","arguments":{"name":"small","file":""}}' > "$c/snapshots"
q '{"execute":"snapshot","arguments":{"name":"default","file":"/r.snap"}}' \
  '{"execute":"verify-snapshot","arguments":{"file":"/r.snap"}}' \
  '{"execute":"restore-namespace","arguments":{"name":"copy","file":"/r.snap"}}' \
  '{"execute":"restore-namespace","arguments":{"name":"small","file":"/r.snap","force":true}}' \
  '{"execute":"verify-snapshot","arguments":{"file":"/none.snap"}}' > "$c/restore-verify"
q '{"execute":"vm-args","arguments":{"name":"default","ram":536870912}}' \
  '{"execute":"vm-args","arguments":{"name":"small","virtio":true,"ram":1073741824}}' > "$c/vm-args"
q '{"execute":"attach-vm","arguments":{"name":"default","qmp":"/qmp.sock"}}' \
  '{"execute":"detach-vm","arguments":{"name":"default"}}' > "$c/vm"
q '{"execute":"snapshot","arguments":{"name":"default","file":"/e.snap"}}' \
  '{"execute":"export-snapshot","arguments":{"file":"/e.snap"}}' \
  '{"execute":"export-snapshot","arguments":{"file":"/e.snap","export":"x"}}' \
  '{"execute":"query-exports"}' \
  '{"execute":"unexport","arguments":{"export":"default@e"}}' > "$c/exports"
q 'not json' '[1,2]' '{"id":3}' '{"execute":7}' '{"execute":"query-region","extra":1}' \
  '{"execute":"query-region","arguments":[]}' '{"execute":"nosuch","id":{"a":1}}' \
  '{"execute":"create-namespace","arguments":{"name":"x","size":-1,"other":true}}' \
  '{"execute":"freeze","arguments":{"name":"default","timeout":1e300}}' \
  '{"execute":"open-namespace","arguments":{"name":"default","access":"wx"}}' \
  '{"execute":"destroy-namespace","arguments":{"name":"nosuch","force":"yes"}}' > "$c/bad-requests"

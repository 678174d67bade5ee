#!/bin/bash
# Regenerates the seed corpora from real files made by the CLI:
#   fuzz/corpus/metadata/  a region's rawdax.meta with two namespaces
#   fuzz/corpus/snapshot/  a full snapshot, and an incremental + split + its base
# Usage: fuzz/make_seeds.sh path/to/rawdax
set -euo pipefail
cli=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$cli" create-namespace --region "$work/r" --name a --size 16K >/dev/null
"$cli" create-namespace --region "$work/r" --name b --size 8K >/dev/null
cp "$work/r/rawdax.meta" "$here/corpus/metadata/two-namespaces"
f=$("$cli" list --json --region "$work/r" | python3 -c 'import json,sys; print([n["path"] for n in json.load(sys.stdin) if n["name"] == "a"][0])')
printf 'page zero' | dd of="$f" bs=1 conv=notrunc 2>/dev/null
"$cli" snapshot a "$work/base.snap" --region "$work/r" >/dev/null
printf 'page two' | dd of="$f" bs=1 seek=8192 conv=notrunc 2>/dev/null
"$cli" snapshot a "$work/top.snap" --base "$work/base.snap" --region "$work/r" >/dev/null
cp "$work/base.snap" "$here/corpus/snapshot/full"
{ cat "$work/top.snap"; printf '\n--RAWDAX-FUZZ-BASE--\n'; cat "$work/base.snap"; } \
  > "$here/corpus/snapshot/incremental-and-base"

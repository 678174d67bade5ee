#!/usr/bin/env bash
# Installs the build into a scratch prefix, then builds and runs the example
# against it twice: through find_package(rawdax CONFIG) and through pkg-config.
set -euo pipefail
build=$1 source=$2
work=$(mktemp -d "$build/install-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -x "$work/prefix/bin/rawdax"
test -f "$work/prefix/include/rawdax/rawdax.h"
"$work/prefix/bin/rawdax" --help >/dev/null

cmake -S "$source/examples" -B "$work/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cmake" >/dev/null
LD_LIBRARY_PATH="$work/prefix/lib" "$work/cmake/map_namespace" "$work/region-cmake"

libdir=$(ls -d "$work"/prefix/lib*/pkgconfig | head -1)
flags=$(PKG_CONFIG_PATH="$libdir" pkg-config --define-prefix --cflags --libs rawdax)
c++ "$source/examples/map_namespace.cc" $flags -o "$work/pc-example"
LD_LIBRARY_PATH="$(dirname "$libdir")" "$work/pc-example" "$work/region-pc"
# The C client (find_package build above) against an installed daemon.
region="$work/region-c"
LD_LIBRARY_PATH="$work/prefix/lib" "$work/prefix/bin/rawdax" serve --region "$region" \
  --default-size 1M 2>"$work/serve.log" &
serve=$!
for _ in $(seq 200); do [ -S "$region/control.sock" ] && break; sleep 0.05; done
status=0
LD_LIBRARY_PATH="$work/prefix/lib" "$work/cmake/client" "$region/control.sock" >"$work/client.out" \
  || status=$?
grep -q '"default"' "$work/client.out" || status=1
kill -TERM "$serve"
wait "$serve" || status=$?
if [ "$status" != 0 ]; then cat "$work/serve.log" >&2; exit 1; fi
# And compiled as C through pkg-config (its Cflags name the C++ standard).
cc "$source/examples/client.c" $(echo "$flags" | sed 's/-std=c++20//') -o "$work/pc-client"
echo "install check: find_package and pkg-config consumers both ran, and the C client"

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
echo "install check: find_package and pkg-config consumers both ran"

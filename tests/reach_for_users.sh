#!/bin/bash
# tests/reach_for_users.sh DIR: lets other users reach DIR (search permission,
# o+x, on DIR and every directory above it that lacks it), so a plain user
# can run the binaries and read the sources built there: make test-user on the
# host, tests/guest/run --user in the guest (which sees the host's modes over
# 9p). A checkout under /root (0700) needs it. Prints each directory it opens.
set -euo pipefail
dir=$(cd "$1" && pwd)
while :; do
  if [ "$(( 0$(stat -c %a "$dir") & 1 ))" = 0 ]; then
    chmod o+x "$dir"
    echo "reach_for_users: opened $dir to other users (o+x)"
  fi
  [ "$dir" = / ] && break
  dir=$(dirname "$dir")
done

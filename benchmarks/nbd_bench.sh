#!/bin/bash
# NBD throughput of `rawdax serve` against `nbdkit memory` of the same size,
# measured side by side in one run with the same clients. Servers alternate
# (rawdax first in odd rounds, nbdkit first in even ones), each test gets a
# fresh server, and the best of the rounds counts. Except for the nbdcopy
# write, each test starts from an export filled with the same random data.
#
#   benchmarks/nbd_bench.sh [--rawdax build/rawdax] [--size 1G] [--rounds 3] [--runtime 5]
#
# --size is the export size, at least 1G (the copies move 1 GiB).
#
# Prints one line per figure: rawdax, nbdkit and the ratio rawdax/nbdkit
# (higher is better for rawdax), and the goals: >= 1.5x on fio 4k, >= 1.2x
# on nbdcopy. Needs fio, nbdcopy (libnbd-bin), nbdkit, qemu-img, jq and bc.
set -euo pipefail

RAWDAX=build/rawdax
SIZE=1G
ROUNDS=3
RUNTIME=5
while [ $# -gt 0 ]; do
  case "$1" in
    --rawdax) RAWDAX=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --runtime) RUNTIME=$2; shift 2 ;;
    *) echo "usage: $0 [--rawdax PATH] [--size SIZE] [--rounds N] [--runtime SECONDS]" >&2; exit 2 ;;
  esac
done
for tool in fio nbdcopy nbdkit qemu-img jq; do
  command -v $tool >/dev/null || { echo "nbd_bench: $tool is not installed (make deps)" >&2; exit 1; }
done
[ -x "$RAWDAX" ] || { echo "nbd_bench: $RAWDAX not built (make build)" >&2; exit 1; }

WORK=$(mktemp -d /dev/shm/rawdax-nbd-bench.XXXXXX)
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# Starts a fresh server; sets URI and SERVER_PID.
start_server() {
  local which=$1
  rm -rf "$WORK/region" "$WORK/s.sock"
  if [ "$which" = rawdax ]; then
    "$RAWDAX" serve --region "$WORK/region" --default-size "$SIZE" --nbd "unix:$WORK/s.sock" \
      2>"$WORK/rawdax.log" &
    URI="nbd+unix:///default?socket=$WORK/s.sock"
  else
    nbdkit -f -U "$WORK/s.sock" memory "$SIZE" 2>"$WORK/nbdkit.log" &
    URI="nbd+unix:///?socket=$WORK/s.sock"
  fi
  SERVER_PID=$!
  for _ in $(seq 200); do [ -S "$WORK/s.sock" ] && return; sleep 0.05; done
  echo "nbd_bench: $which did not start" >&2; exit 1
}

stop_server() {
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
}

# Each prints one number (higher is better).
fio_iops() {  # jobs
  fio --name=bench --ioengine=nbd --uri="$URI" --rw=randrw --bs=4k --iodepth=32 \
    --numjobs="$1" --size=256M --offset_increment=256M --time_based --runtime="$RUNTIME" \
    --group_reporting --output-format=json 2>/dev/null |
    sed -n '/^{/,$p' | jq '.jobs[0].read.iops + .jobs[0].write.iops'
}
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
nbdcopy_write_mbs() { echo "1024 / $(seconds nbdcopy "$WORK/data.img" "$URI")" | bc -l; }
nbdcopy_read_mbs() { echo "1024 / $(seconds nbdcopy "$URI" null:)" | bc -l; }
qemu_bench_iops() {  # extra args
  local n=200000 t
  t=$(qemu-img bench -f raw -c $n -d 32 -s 4k "$@" "$URI" | sed -n 's/.*completed in \([0-9.]*\) seconds.*/\1/p')
  echo "$n / $t" | bc -l
}

TESTS=("fio 4k randrw qd32, 1 job (IOPS)|fio_iops 1|1.5"
       "fio 4k randrw qd32, 2 jobs (IOPS)|fio_iops 2|1.5"
       "nbdcopy 1 GiB write (MB/s)|nbdcopy_write_mbs|1.2"
       "nbdcopy 1 GiB read (MB/s)|nbdcopy_read_mbs|1.2"
       "qemu-img bench 4k read qd32 (IOPS)|qemu_bench_iops|0"
       "qemu-img bench 4k write qd32 (IOPS)|qemu_bench_iops -w|0")

dd if=/dev/urandom of="$WORK/data.img" bs=1M count=1024 status=none
declare -A BEST
echo "nbd_bench: $SIZE export, $ROUNDS rounds, fio runtime ${RUNTIME}s, $(nproc) CPUs" >&2
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="rawdax nbdkit"; else order="nbdkit rawdax"; fi
  for t in "${TESTS[@]}"; do
    IFS='|' read -r name cmd goal <<<"$t"
    for server in $order; do
      start_server "$server"
      # Every test but the write copy starts from a full export (the same
      # 1 GiB of random data on both), so it measures serving I/O, not the
      # first touch of each page (tmpfs allocation for rawdax, malloc for
      # nbdkit's sparse array).
      case "$cmd" in nbdcopy_write*) ;; *) nbdcopy "$WORK/data.img" "$URI" ;; esac
      v=$($cmd)
      stop_server
      key="$name|$server"
      if [ -z "${BEST[$key]:-}" ] || [ "$(echo "$v > ${BEST[$key]}" | bc -l)" = 1 ]; then
        BEST[$key]=$v
      fi
      printf "  round %d %-7s %-38s %12.1f\n" "$round" "$server" "$name" "$v" >&2
    done
  done
done

printf "%-40s %12s %12s %8s  %s\n" "test (best of $ROUNDS)" rawdax nbdkit ratio goal
status=0
for t in "${TESTS[@]}"; do
  IFS='|' read -r name cmd goal <<<"$t"
  r=${BEST["$name|rawdax"]}; k=${BEST["$name|nbdkit"]}
  ratio=$(echo "$r / $k" | bc -l)
  verdict=""
  if [ "$goal" != 0 ]; then
    if [ "$(echo "$ratio >= $goal" | bc -l)" = 1 ]; then verdict=">= ${goal}x met"; else verdict=">= ${goal}x MISSED"; status=1; fi
  fi
  printf "%-40s %12.1f %12.1f %7.2fx  %s\n" "$name" "$r" "$k" "$ratio" "$verdict"
done
exit $status

#!/bin/bash
# NBD throughput of `rawdax serve` against `nbdkit memory` of the same size,
# measured side by side in one run with the same clients. Servers alternate
# (rawdax first in odd rounds, nbdkit first in even ones), each test gets a
# fresh server, and the best of the rounds counts. Except for the nbdcopy
# write, each test starts from an export filled with the same random data.
#
#   benchmarks/nbd_bench.sh [--rawdax build/rawdax] [--size 1G] [--rounds 3] [--runtime 5]
#                           [--tables plain,cpu,tls] [--ios 200000]
#
# --size is the export size, at least 1G (the copies move 1 GiB).
#
# The plain table prints one line per figure: rawdax, nbdkit and the ratio
# rawdax/nbdkit (higher is better for rawdax), and the goals: >= 1.5x on fio
# 4k, >= 1.2x on nbdcopy.
#
# The cpu table measures what each request costs the server: per server, a
# fio job of a fixed number of I/Os (--ios per job, 4k randrw, qd32, 1 and 2
# jobs), with the server's CPU time (utime+stime of all its threads, dead
# ones included: /proc/PID/stat fields 14 and 15) read before and after,
# divided by the I/Os done. It prints rawdax and nbdkit microseconds per
# request and rawdax/nbdkit (lower is better; goal <= 0.35), then the same
# runs' IOPS and their ratio (goal >= 1). Each figure is the best of the
# rounds on its own (least CPU, most IOPS). Clock ticks are 10 ms, so
# 200000 I/Os at 5 us are 100 ticks: precise to about 1 %.
#
# The tls table measures what TLS costs, on 256 MiB exports: each server
# plain and with --tls require (X.509, certificates made by certtool for the
# run), with fio and nbdcopy, printed as rawdax-TLS/rawdax, nbdkit-TLS/nbdkit
# and rawdax-TLS/nbdkit-TLS. X.509 rather than PSK: fio's nbd engine does not
# let libnbd read a tls-psk-file, so the clients find the CA where libnbd
# looks by default ($HOME/.pki/libnbd, HOME pointed at the run's directory).
#
# Needs fio, nbdcopy (libnbd-bin), nbdkit, qemu-img, jq, bc and certtool.
set -euo pipefail

RAWDAX=build/rawdax
SIZE=1G
ROUNDS=3
RUNTIME=5
TABLES=plain,cpu,tls
IOS=200000
while [ $# -gt 0 ]; do
  case "$1" in
    --rawdax) RAWDAX=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --runtime) RUNTIME=$2; shift 2 ;;
    --tables) TABLES=$2; shift 2 ;;
    --ios) IOS=$2; shift 2 ;;
    *) echo "usage: $0 [--rawdax PATH] [--size SIZE] [--rounds N] [--runtime SECONDS] [--tables plain,cpu,tls] [--ios N]" >&2; exit 2 ;;
  esac
done
for tool in fio nbdcopy nbdkit qemu-img jq bc certtool; do
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

# Starts a fresh server (rawdax, nbdkit, rawdax-tls or nbdkit-tls) of
# EXPORT_SIZE; sets URI and SERVER_PID.
start_server() {
  local which=$1
  rm -rf "$WORK/region" "$WORK/s.sock"
  case "$which" in
    rawdax|rawdax-tls)
      local tls=()
      [ "$which" = rawdax-tls ] && tls=(--tls require --tls-certificates "$WORK/tls")
      "$RAWDAX" serve --region "$WORK/region" --default-size "$EXPORT_SIZE" \
        --nbd "unix:$WORK/s.sock" "${tls[@]}" 2>"$WORK/rawdax.log" &
      URI="nbd+unix:///default?socket=$WORK/s.sock" ;;
    nbdkit|nbdkit-tls)
      local tls=()
      [ "$which" = nbdkit-tls ] && tls=(--tls=require "--tls-certificates=$WORK/tls")
      nbdkit -f -U "$WORK/s.sock" "${tls[@]}" memory "$EXPORT_SIZE" 2>"$WORK/nbdkit.log" &
      URI="nbd+unix:///?socket=$WORK/s.sock" ;;
  esac
  case "$which" in *-tls) URI="nbds${URI#nbd}" ;; esac
  SERVER_PID=$!
  for _ in $(seq 200); do [ -S "$WORK/s.sock" ] && return; sleep 0.05; done
  echo "nbd_bench: $which did not start" >&2; exit 1
}

stop_server() {
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
}

# Each prints one number (higher is better).
fio_iops() {  # jobs [rw]
  fio --name=bench --ioengine=nbd --uri="$URI" --rw="${2:-randrw}" --bs=4k --iodepth=32 \
    --numjobs="$1" --size=256M --offset_increment=256M --time_based --runtime="$RUNTIME" \
    --group_reporting --output-format=json 2>/dev/null |
    sed -n '/^{/,$p' | jq '.jobs[0].read.iops + .jobs[0].write.iops'
}
# The server's CPU time so far in seconds: all threads, exited ones included.
server_cpu() {
  local f
  read -ra f <"/proc/$SERVER_PID/stat"
  # Fields 14 and 15 (utime, stime); the command name (field 2) has no spaces here.
  echo "(${f[13]} + ${f[14]}) / $CLK_TCK" | bc -l
}
# Runs IOS I/Os per job (4k randrw qd32) and sets CPU_US (server microseconds
# per request) and CPU_IOPS (fio's IOPS).
fio_fixed() {  # jobs
  local before after out ios iops
  before=$(server_cpu)
  out=$(fio --name=bench --ioengine=nbd --uri="$URI" --rw=randrw --bs=4k --iodepth=32 \
    --numjobs="$1" --size=256M --offset_increment=256M --norandommap --randrepeat=1 \
    --io_size=$((IOS * 4))k --group_reporting --output-format=json 2>/dev/null | sed -n '/^{/,$p')
  after=$(server_cpu)
  ios=$(jq '.jobs[0].read.total_ios + .jobs[0].write.total_ios' <<<"$out")
  iops=$(jq '.jobs[0].read.iops + .jobs[0].write.iops' <<<"$out")
  CPU_US=$(echo "($after - $before) * 1000000 / $ios" | bc -l)
  CPU_IOPS=$iops
}
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
# DATA_MIB of data.img in, or the export out.
nbdcopy_write_mbs() { echo "$DATA_MIB / $(seconds nbdcopy "$WORK/data.img" "$URI")" | bc -l; }
nbdcopy_read_mbs() { echo "$DATA_MIB / $(seconds nbdcopy "$URI" null:)" | bc -l; }
qemu_bench_iops() {  # extra args
  local n=200000 t
  t=$(qemu-img bench -f raw -c $n -d 32 -s 4k "$@" "$URI" | sed -n 's/.*completed in \([0-9.]*\) seconds.*/\1/p')
  echo "$n / $t" | bc -l
}

# Runs TESTS (each table sets its own) on SERVERS for ROUNDS rounds (the order rotates each round);
# fills BEST["test|server"] with each one's best figure.
declare -A BEST
run_table() {
  local round t name cmd goal server v key n=${#SERVERS[@]} i
  for round in $(seq "$ROUNDS"); do
    for t in "${TESTS[@]}"; do
      IFS='|' read -r name cmd goal <<<"$t"
      for i in $(seq 0 $((n - 1))); do
        server=${SERVERS[$(((i + round - 1) % n))]}
        start_server "$server"
        # Every test but the write copy starts from a full export (the same
        # random data on every server), so it measures serving I/O, not the
        # first touch of each page (tmpfs allocation for rawdax, malloc for
        # nbdkit's sparse array).
        case "$cmd" in nbdcopy_write*) ;; *) nbdcopy "$WORK/data.img" "$URI" ;; esac
        v=$($cmd)
        stop_server
        key="$name|$server"
        if [ -z "${BEST[$key]:-}" ] || [ "$(echo "$v > ${BEST[$key]}" | bc -l)" = 1 ]; then
          BEST[$key]=$v
        fi
        printf "  round %d %-10s %-38s %12.1f\n" "$round" "$server" "$name" "$v" >&2
      done
    done
  done
}

status=0
if [[ ",$TABLES," == *,plain,* ]]; then
  EXPORT_SIZE=$SIZE DATA_MIB=1024
  dd if=/dev/urandom of="$WORK/data.img" bs=1M count=$DATA_MIB status=none
  TESTS=("fio 4k randrw qd32, 1 job (IOPS)|fio_iops 1|1.5"
         "fio 4k randrw qd32, 2 jobs (IOPS)|fio_iops 2|1.5"
         "nbdcopy 1 GiB write (MB/s)|nbdcopy_write_mbs|1.2"
         "nbdcopy 1 GiB read (MB/s)|nbdcopy_read_mbs|1.2"
         "qemu-img bench 4k read qd32 (IOPS)|qemu_bench_iops|0"
         "qemu-img bench 4k write qd32 (IOPS)|qemu_bench_iops -w|0")
  SERVERS=(rawdax nbdkit)
  echo "nbd_bench: $SIZE export, $ROUNDS rounds, fio runtime ${RUNTIME}s, $(nproc) CPUs" >&2
  run_table
  printf "%-40s %12s %12s %8s  %s\n" "test (best of $ROUNDS)" rawdax nbdkit ratio goal
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
fi

if [[ ",$TABLES," == *,cpu,* ]]; then
  CLK_TCK=$(getconf CLK_TCK)
  EXPORT_SIZE=$SIZE DATA_MIB=512
  dd if=/dev/urandom of="$WORK/data.img" bs=1M count=$DATA_MIB status=none
  SERVERS=(rawdax nbdkit)
  declare -A CPU IOPS
  echo "nbd_bench: server CPU per request, $SIZE export, $IOS I/Os per fio job, $ROUNDS rounds, $(nproc) CPUs" >&2
  for round in $(seq "$ROUNDS"); do
    for jobs in 1 2; do
      for i in 0 1; do
        server=${SERVERS[$(((i + round - 1) % 2))]}
        start_server "$server"
        nbdcopy "$WORK/data.img" "$URI"  # both jobs' ranges hold the same data on both servers
        fio_fixed "$jobs"
        stop_server
        key="$jobs|$server"
        if [ -z "${CPU[$key]:-}" ] || [ "$(echo "$CPU_US < ${CPU[$key]}" | bc -l)" = 1 ]; then
          CPU[$key]=$CPU_US
        fi
        if [ -z "${IOPS[$key]:-}" ] || [ "$(echo "$CPU_IOPS > ${IOPS[$key]}" | bc -l)" = 1 ]; then
          IOPS[$key]=$CPU_IOPS
        fi
        printf "  round %d %-10s fio 4k randrw qd32, %d job(s) %10.2f us/request %10.1f IOPS\n" \
          "$round" "$server" "$jobs" "$CPU_US" "$CPU_IOPS" >&2
      done
    done
  done
  printf "%-40s %12s %12s %8s  %s\n" "server CPU (best of $ROUNDS)" rawdax nbdkit ratio goal
  for jobs in 1 2; do
    r=${CPU["$jobs|rawdax"]}; k=${CPU["$jobs|nbdkit"]}
    ratio=$(echo "$r / $k" | bc -l)
    if [ "$(echo "$ratio <= 0.35" | bc -l)" = 1 ]; then verdict="<= 0.35x met"; else verdict="<= 0.35x MISSED"; status=1; fi
    printf "%-40s %12.2f %12.2f %7.2fx  %s\n" "us/request, fio 4k randrw qd32, $jobs job$([ $jobs = 1 ] || echo s)" "$r" "$k" "$ratio" "$verdict"
  done
  for jobs in 1 2; do
    r=${IOPS["$jobs|rawdax"]}; k=${IOPS["$jobs|nbdkit"]}
    ratio=$(echo "$r / $k" | bc -l)
    if [ "$(echo "$ratio >= 1" | bc -l)" = 1 ]; then verdict=">= 1x met"; else verdict=">= 1x MISSED"; status=1; fi
    printf "%-40s %12.1f %12.1f %7.2fx  %s\n" "IOPS, same runs, $jobs job$([ $jobs = 1 ] || echo s)" "$r" "$k" "$ratio" "$verdict"
  done
fi

if [[ ",$TABLES," == *,tls,* ]]; then
  # A CA and a server certificate for both servers; the clients trust the
  # CA from libnbd's default directory under HOME.
  mkdir -p "$WORK/tls" "$WORK/home/.pki/libnbd"
  (
    cd "$WORK/tls"
    certtool --generate-privkey --key-type ecdsa --outfile ca-key.pem 2>/dev/null
    printf 'cn = nbd_bench CA\nca\ncert_signing_key\nexpiration_days = 2\n' >ca.info
    certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info \
      --outfile ca-cert.pem >/dev/null 2>&1
    certtool --generate-privkey --key-type ecdsa --outfile server-key.pem 2>/dev/null
    printf 'cn = localhost\ndns_name = localhost\ntls_www_server\nsigning_key\nexpiration_days = 2\n' >server.info
    certtool --generate-certificate --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
      --load-privkey server-key.pem --template server.info --outfile server-cert.pem >/dev/null 2>&1
  )
  cp "$WORK/tls/ca-cert.pem" "$WORK/home/.pki/libnbd/"
  export HOME="$WORK/home"
  EXPORT_SIZE=256M DATA_MIB=256
  dd if=/dev/urandom of="$WORK/data.img" bs=1M count=$DATA_MIB status=none
  TESTS=("fio 4k randread qd32 (IOPS)|fio_iops 1 randread|0"
         "fio 4k randrw qd32 (IOPS)|fio_iops 1 randrw|0"
         "nbdcopy 256 MiB write (MB/s)|nbdcopy_write_mbs|0"
         "nbdcopy 256 MiB read (MB/s)|nbdcopy_read_mbs|0")
  SERVERS=(rawdax rawdax-tls nbdkit nbdkit-tls)
  echo "nbd_bench: TLS (X.509, --tls require), 256M exports, $ROUNDS rounds, fio runtime ${RUNTIME}s, $(nproc) CPUs" >&2
  run_table
  printf "%-32s %10s %10s %10s %10s %9s %9s %9s\n" "test (best of $ROUNDS)" rawdax rawdax-TLS \
    nbdkit nbdkit-TLS "r-TLS/r" "n-TLS/n" "r-TLS/n-TLS"
  for t in "${TESTS[@]}"; do
    IFS='|' read -r name cmd goal <<<"$t"
    r=${BEST["$name|rawdax"]}; rt=${BEST["$name|rawdax-tls"]}
    k=${BEST["$name|nbdkit"]}; kt=${BEST["$name|nbdkit-tls"]}
    printf "%-32s %10.1f %10.1f %10.1f %10.1f %8.2fx %8.2fx %8.2fx\n" "$name" "$r" "$rt" "$k" "$kt" \
      "$(echo "$rt / $r" | bc -l)" "$(echo "$kt / $k" | bc -l)" "$(echo "$rt / $kt" | bc -l)"
  done
fi
exit $status

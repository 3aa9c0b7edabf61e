#!/usr/bin/env bash
# Random 4 KiB O_DIRECT reads at queue depth 32: fio (io_uring engine) against 32 corio tasks
# (bench_read --engine corio-batch), on the same file, in the same run, alternating 3 times.
# A third row runs fio submitting in batches the way a corio phase does
# (--iodepth_batch_submit=32 --iodepth_batch_complete_min=1): it shows what batching itself
# costs on the device, apart from corio.
# Usage: bench/compare_fio.sh [FILE] [IOS]   (FILE default: a 256 MiB file in /var/tmp)
# Every run is kept as bench/results/compare_fio-<time>-<host>.csv (bench/results.sh).
set -euo pipefail
BUILD=${BUILD:-build}
file=${1:-/var/tmp/afs-bench.dat}
ios=${2:-60000}
[ -f "$file" ] || head -c $((256 << 20)) /dev/urandom > "$file"
size=$(stat -c %s "$file")

fio_run() { # extra fio flags...
  fio --name=r --filename="$file" --rw=randread --bs=4k --direct=1 --ioengine=io_uring \
      --iodepth=32 --number_ios="$ios" --size="$size" --output-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; r=j["read"]; t=r["runtime"]/1000.0; print("%.0f %.2f" % (r["iops"], (j["usr_cpu"]+j["sys_cpu"])/100.0*t*1e6/max(r["total_ios"],1)))'
}
corio_run() {
  "$BUILD/bench/bench_read" "$file" --direct --ios "$ios" --tasks 32 --engine corio-batch --json |
    tail -1 | python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); print("%.0f %.2f" % (j["iops"], j["cpu_us_per_io"]))'
}

printf "%-34s %10s %12s\n" engine IOPS "CPU us/IO"
. "$(dirname "$0")/results.sh"
results_open compare_fio "round,engine,iodepth,ios,iops,cpu_us_per_io"
declare -A best cpu
names=("fio io_uring iodepth=32" "fio, batched submission" "corio 32 tasks (batched)")
for n in "${names[@]}"; do best[$n]=0; cpu[$n]=0; done
for round in 1 2 3; do
  for n in "${names[@]}"; do
    case $n in
      "fio io_uring iodepth=32") out=$(fio_run) ;;
      "fio, batched submission") out=$(fio_run --iodepth_batch_submit=32 --iodepth_batch_complete_min=1) ;;
      *) out=$(corio_run) ;;
    esac
    read -r iops c <<<"$out"
    printf "%-34s %10s %12s\n" "$n" "$iops" "$c"
    results_row "$round,${n//,/},32,$ios,$iops,$c"
    if [ "$iops" -gt "${best[$n]}" ]; then best[$n]=$iops; cpu[$n]=$c; fi
  done
done
f=${best["fio io_uring iodepth=32"]}; fb=${best["fio, batched submission"]}; co=${best["corio 32 tasks (batched)"]}
python3 -c "print('best of 3: corio %d IOPS (%s us CPU/IO) vs fio %d IOPS (%s us CPU/IO): %.2fx; vs fio batched %d IOPS: %.2fx' % ($co, '${cpu["corio 32 tasks (batched)"]}', $f, '${cpu["fio io_uring iodepth=32"]}', $co / $f, $fb, $co / $fb))"

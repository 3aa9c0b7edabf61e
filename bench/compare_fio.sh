#!/usr/bin/env bash
# Random 4 KiB O_DIRECT reads at queue depth 32: fio (io_uring engine) against 32 corio tasks
# (bench_read --engine corio-batch), on the same file, in the same run, alternating 3 times.
# Usage: bench/compare_fio.sh [FILE] [IOS]   (FILE default: a 256 MiB file in /var/tmp)
set -euo pipefail
BUILD=${BUILD:-build}
file=${1:-/var/tmp/afs-bench.dat}
ios=${2:-60000}
[ -f "$file" ] || head -c $((256 << 20)) /dev/urandom > "$file"
size=$(stat -c %s "$file")
printf "%-28s %10s %12s\n" engine IOPS "CPU us/IO"
best_fio=0; best_co=0; cpu_fio=0; cpu_co=0
for round in 1 2 3; do
  j=$(fio --name=r --filename="$file" --rw=randread --bs=4k --direct=1 --ioengine=io_uring \
        --iodepth=32 --number_ios=$ios --size="$size" --output-format=json 2>/dev/null)
  read -r iops cpu < <(python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; r=j["read"]; t=r["runtime"]/1000.0; print("%.0f %.2f" % (r["iops"], (j["usr_cpu"]+j["sys_cpu"])/100.0*t*1e6/max(r["total_ios"],1)))' <<<"$j")
  printf "%-28s %10s %12s\n" "fio io_uring iodepth=32" "$iops" "$cpu"
  if [ "$iops" -gt "$best_fio" ]; then best_fio=$iops; cpu_fio=$cpu; fi
  line=$("$BUILD/bench/bench_read" "$file" --direct --ios "$ios" --tasks 32 --engine corio-batch --json | tail -1)
  read -r iops cpu < <(python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); print("%.0f %.2f" % (j["iops"], j["cpu_us_per_io"]))' <<<"$line")
  printf "%-28s %10s %12s\n" "corio 32 tasks (batched)" "$iops" "$cpu"
  if [ "$iops" -gt "$best_co" ]; then best_co=$iops; cpu_co=$cpu; fi
done
python3 -c "print('best of 3: corio %d IOPS (%s us CPU/IO) vs fio %d IOPS (%s us CPU/IO): %.2fx' % ($best_co, '$cpu_co', $best_fio, '$cpu_fio', $best_co / $best_fio))"

#!/usr/bin/env bash
# Random 4 KiB O_DIRECT reads at queue depth 32: fio (io_uring engine) against 32 corio tasks,
# on the same file, in the same run, the engines alternating round after round.
#   fio io_uring iodepth=32            fio's io_uring engine, plain
#   fio --fixedbufs --registerfiles    the same with registered buffers and file
#   fio, batched submission            --iodepth_batch_submit=32 --iodepth_batch_complete_min=1:
#                                      what batching itself costs on the device, apart from corio
#   corio 32 tasks (batched)           bench_read --engine corio-batch (plain buffers and fd)
#   afbench corio fixed, offload=X     afbench --engine=corio --iodepth=32 --fixedbufs
#                                      --registerfiles with the offload rule as measured (auto),
#                                      forced inline (never) and forced to io-wq (always)
# Goals checked at the end: afbench corio fixed (auto) reaches at least 0.95x the IOPS of fio
# --fixedbufs --registerfiles, and at most 0.7x the CPU per I/O of plain fio.
# CPU per I/O is user + system time of the whole process (io_uring's io-wq workers are its
# threads, counted too) over the I/Os done: fio's usr_cpu/sys_cpu, getrusage for the others.
# The afbench rows also say which regime the offload rule ended on (inline/offload) and the
# rates it measured (completions per second inline and offloaded); every row has the load
# average (1 minute) at its start.
# Usage: bench/compare_fio.sh [FILE] [SECONDS] [ROUNDS]
#        (FILE default: a 256 MiB file in /var/tmp; 5 s per run; 3 rounds)
#        BUILD_B=<other build> bench/compare_fio.sh FILE SECONDS ROUNDS: A/B of two builds
#        instead, each round afbench corio fixed of $BUILD (A) and of $BUILD_B (B) (offload
#        $OFFLOAD, default never), fio --fixedbufs --registerfiles and plain fio, the order
#        rotated round by round; prints the medians of the rounds' ratios
#        (bench/results/compare_fio_ab-*.csv).
# Every run is kept as bench/results/compare_fio-<time>-<host>.csv (bench/results.sh).
set -euo pipefail
BUILD=${BUILD:-build}
file=${1:-/var/tmp/afs-bench.dat}
secs=${2:-5}
rounds=${3:-3}
[ -f "$file" ] || head -c $((256 << 20)) /dev/urandom > "$file"
size=$(stat -c %s "$file")

fio_run() { # extra fio flags...
  fio --name=r --filename="$file" --rw=randread --bs=4k --direct=1 --ioengine=io_uring \
      --iodepth=32 --time_based --runtime="$secs" --size="$size" --output-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; r=j["read"]; t=r["runtime"]/1000.0; print("%.0f %.2f" % (r["iops"], (j["usr_cpu"]+j["sys_cpu"])/100.0*t*1e6/max(r["total_ios"],1)))'
}
corio_run() {
  local ios
  ios=$(python3 -c "print(int(40000 * $secs))")
  "$BUILD/bench/bench_read" "$file" --direct --ios "$ios" --tasks 32 --engine corio-batch --json |
    tail -1 | python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); print("%.0f %.2f" % (j["iops"], j["cpu_us_per_io"]))'
}
afbench_run() { # extra afbench flags...
  "$BUILD/tools/afbench/afbench" --engine=corio --rw=randread --bs=4k --iodepth=32 --direct=1 \
      --size="$size" --runtime="$secs" --filename="$file" --output-format=json "$@" |
    python3 -c 'import json,sys; j=json.load(sys.stdin); print("%.0f %.2f %s %d %d" % (j["iops"], j["cpu_us_per_io"], "offload" if j["offloading"] else "inline", j["inline_rate"], j["offload_rate"]))'
}

. "$(dirname "$0")/results.sh"
if [ -n "${BUILD_B:-}" ]; then
  off=${OFFLOAD:-never}
  results_open compare_fio_ab "round,engine,build,offload,seconds,iops,cpu_us_per_io,load1"
  ab=("A" "B" "fio fixed" "fio plain")
  rows=""
  for round in $(seq 1 "$rounds"); do
    k=$(( (round - 1) % 4 ))
    for n in "${ab[@]:k}" "${ab[@]:0:k}"; do
      load=$(cut -d' ' -f1 /proc/loadavg)
      case $n in
        A) out=$(afbench_run --fixedbufs --registerfiles --offload="$off"); b=$BUILD ;;
        B) out=$(BUILD=$BUILD_B afbench_run --fixedbufs --registerfiles --offload="$off"); b=$BUILD_B ;;
        "fio fixed") out=$(fio_run --fixedbufs --registerfiles); b=fio ;;
        "fio plain") out=$(fio_run); b=fio ;;
      esac
      read -r iops c _ <<<"$out"
      printf "%-2s %-10s %10s %8s %6s\n" "$round" "$n" "$iops" "$c" "$load"
      results_row "$round,$n,${b//,/_},$off,$secs,$iops,$c,$load"
      rows+="$round:${n// /_}:$iops:$c "
    done
  done
  python3 - "$rows" <<'EOF'
import statistics, sys
d = {}
for x in sys.argv[1].split():
    r, n, i, c = x.split(":")
    d.setdefault(r, {})[n] = (float(i), float(c))
def med(f):
    return statistics.median(f(v) for v in d.values())
for n in ("B", "fio_fixed", "fio_plain"):
    print("%-9s / A: IOPS %.3f, CPU per I/O %.3f (medians of the rounds' ratios)" %
          (n, med(lambda v: v[n][0] / v["A"][0]), med(lambda v: v[n][1] / v["A"][1])))
for n in ("A", "B"):
    print("%s: IOPS %.2fx fio fixed's, CPU %.2fx plain fio's (medians of the rounds' ratios)" %
          (n, med(lambda v: v[n][0] / v["fio_fixed"][0]), med(lambda v: v[n][1] / v["fio_plain"][1])))
EOF
  exit 0
fi
printf "%-38s %10s %12s %6s  %s\n" engine IOPS "CPU us/IO" load "rule: chose, rates inline/offloaded"
results_open compare_fio "round,engine,iodepth,seconds,iops,cpu_us_per_io,load1,chose,inline_rate,offload_rate"
declare -A best cpu all
names=("fio io_uring iodepth=32" "fio --fixedbufs --registerfiles" "fio, batched submission"
       "corio 32 tasks (batched)" "afbench corio fixed offload=auto"
       "afbench corio fixed offload=never" "afbench corio fixed offload=always")
for n in "${names[@]}"; do best[$n]=0; cpu[$n]=0; all[$n]=""; done
for round in $(seq 1 "$rounds"); do
  # Each round starts one engine later, so no engine always runs first or after the same one.
  k=$(( (round - 1) % ${#names[@]} ))
  for n in "${names[@]:k}" "${names[@]:0:k}"; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    case $n in
      "fio io_uring iodepth=32") out=$(fio_run) ;;
      "fio --fixedbufs --registerfiles") out=$(fio_run --fixedbufs --registerfiles) ;;
      "fio, batched submission") out=$(fio_run --iodepth_batch_submit=32 --iodepth_batch_complete_min=1) ;;
      "corio 32 tasks (batched)") out=$(corio_run) ;;
      "afbench corio fixed offload="*) out=$(afbench_run --fixedbufs --registerfiles --offload="${n##*=}") ;;
    esac
    chose="" ri="" ro=""
    read -r iops c chose ri ro <<<"$out"
    printf "%-38s %10s %12s %6s  %s\n" "$n" "$iops" "$c" "$load" "${chose:+$chose, $ri/$ro per s}"
    results_row "$round,${n//,/},32,$secs,$iops,$c,$load,$chose,$ri,$ro"
    all[$n]+="$iops:$c "
    if [ "$iops" -gt "${best[$n]}" ]; then best[$n]=$iops; cpu[$n]=$c; fi
  done
done
# Medians over the rounds (IOPS and CPU each), and the goals on them; best-of-rounds beside.
python3 - "${all["fio io_uring iodepth=32"]}" "${all["fio --fixedbufs --registerfiles"]}" \
          "${all["afbench corio fixed offload=auto"]}" "${all["afbench corio fixed offload=never"]}" \
          "${all["afbench corio fixed offload=always"]}" <<'EOF'
import statistics, sys
def parse(s):
    v = [tuple(map(float, x.split(":"))) for x in s.split()]
    return statistics.median(i for i, _ in v), statistics.median(c for _, c in v), max(v)
fio, fixed, auto, never, always = (parse(a) for a in sys.argv[1:6])
print("medians: fio %.0f IOPS %.2f us CPU/IO; fio fixed %.0f IOPS %.2f us; afbench fixed auto %.0f IOPS %.2f us,"
      " never %.0f IOPS %.2f us, always %.0f IOPS %.2f us" % (fio[0], fio[1], fixed[0], fixed[1], auto[0], auto[1],
      never[0], never[1], always[0], always[1]))
r_iops, r_cpu = auto[0] / fixed[0], auto[1] / fio[1]
print("rule: auto %.2fx the better forced regime's median IOPS (always %.0f, never %.0f)" % (auto[0] / max(always[0], never[0]), always[0], never[0]))
print("goal IOPS  >= 0.95x fio --fixedbufs --registerfiles: %.2fx %s" % (r_iops, "met" if r_iops >= 0.95 else "MISSED"))
print("goal CPU/IO <= 0.70x plain fio:                      %.2fx %s" % (r_cpu, "met" if r_cpu <= 0.70 else "MISSED"))
print("best of rounds: afbench fixed auto %.0f IOPS (%.2f us) vs fio fixed %.0f IOPS: %.2fx" % (auto[2][0], auto[2][1], fixed[2][0], auto[2][0] / fixed[2][0]))
EOF

#!/usr/bin/env bash
# afbench's engines against fio, on the same file, in the same run: O_DIRECT random 4 KiB
# reads at queue depths 1..64. Writes $OUT/results.csv, a table on stdout, and the plot
# $OUT/iops_vs_qd.png (gnuplot; install it with scripts/deps.sh plot, fio with
# scripts/deps.sh bench). Supersedes bench/compare_fio.sh (one depth, corio only).
# Every run is also kept as bench/results/compare-<time>-<host>.csv (bench/results.sh).
#
# Each depth runs every engine once, one after the other, then fio io_uring, so slow drift of
# a shared disk hits them alike. pread and fio psync ignore the depth: they run once. fio keeps
# its random map (every block once a pass), as afbench does.
# About 27 points x RUNTIME seconds (default 3: ~1.5 minutes) plus the file's first layout.
#
# Environment (defaults):
#   AFBENCH   build/tools/afbench/afbench     BUILD  build (used for AFBENCH's default)
#   FILE      /var/tmp/afbench-compare.dat    SIZE   1g (written once, kept for later runs)
#   RUNTIME   3       DEPTHS "1 4 16 32 64"   BS 4k   RW randread   DIRECT 1
#   ENGINES   "corio queue threads uring-raw" (the depth-bound ones; pread runs once)
#   FIO       1 (0: skip fio)                 OUT    bench/out
#   PLOT_ONLY 0 (1: no runs, table and plot again from $OUT/results.csv)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
AFBENCH=${AFBENCH:-$BUILD/tools/afbench/afbench}
FILE=${FILE:-/var/tmp/afbench-compare.dat}
SIZE=${SIZE:-1g}
RUNTIME=${RUNTIME:-3}
DEPTHS=${DEPTHS:-1 4 16 32 64}
BS=${BS:-4k}
RW=${RW:-randread}
DIRECT=${DIRECT:-1}
ENGINES=${ENGINES:-corio queue threads uring-raw}
FIO=${FIO:-1}
OUT=${OUT:-bench/out}
PLOT_ONLY=${PLOT_ONLY:-0}
csv=$OUT/results.csv

if [ "$PLOT_ONLY" != 1 ]; then
[ -x "$AFBENCH" ] || { echo "compare.sh: no afbench at $AFBENCH (build it, or set AFBENCH)" >&2; exit 2; }
if [ "$FIO" = 1 ] && ! command -v fio >/dev/null; then
  echo "compare.sh: fio not found (scripts/deps.sh bench), running without it" >&2; FIO=0
fi
mkdir -p "$OUT"
raw=$OUT/raw.jsonl   # every run's full JSON (afbench's, and fio's job summary)
: > "$raw"
echo "engine,iodepth,iops,cpu_us_per_io,lat_p50_us,lat_p99_us,syscalls_per_io" > "$csv"

common=(--rw="$RW" --bs="$BS" --direct="$DIRECT" --size="$SIZE" --filename="$FILE")
# Lays the file out (afbench writes it when missing or short) so that no timed run pays.
"$AFBENCH" --engine=pread "${common[@]}" --runtime=0.1 --output-format=json >/dev/null

afb() { # engine depth
  local j
  j=$("$AFBENCH" --engine="$1" --iodepth="$2" "${common[@]}" --runtime="$RUNTIME" --output-format=json)
  echo "$j" >> "$raw"
  python3 -c 'import json,sys; j=json.loads(sys.argv[1]); l=j["latency_us"]
print("%s,%d,%.0f,%.3f,%.1f,%.1f,%.4f" % (sys.argv[2], j["iodepth"], j["iops"], j["cpu_us_per_io"], l["p50"], l["p99"], j["syscalls_per_io"]))' "$j" "$1" >> "$csv"
}

fio_run() { # ioengine depth label
  local j
  j=$(fio --name=cmp --filename="$FILE" --rw="$RW" --bs="$BS" --direct="$DIRECT" --size="$SIZE" \
        --ioengine="$1" --iodepth="$2" --runtime="$RUNTIME" --time_based \
        --randrepeat=1 --lat_percentiles=1 --output-format=json 2>/dev/null)
  python3 -c '
import json, sys
j = json.loads(sys.argv[1])["jobs"][0]
d = j["read"] if j["read"]["total_ios"] else j["write"]
ios = max(d["total_ios"], 1)
cpu = (j["usr_cpu"] + j["sys_cpu"]) / 100.0 * (j["job_runtime"] / 1000.0) * 1e6 / ios
p = d["lat_ns"].get("percentile", {})
pc = lambda k: p.get(k, 0) / 1000.0
# fio counts no system calls: -1 (unknown)
print(json.dumps({"engine": sys.argv[3], "iodepth": int(sys.argv[2]), "iops": d["iops"], "cpu_us_per_io": cpu}), file=sys.stderr)
print("%s,%s,%.0f,%.3f,%.1f,%.1f,-1" % (sys.argv[3], sys.argv[2], d["iops"], cpu, pc("50.000000"), pc("99.000000")))
' "$j" "$2" "$3" >> "$csv" 2>> "$raw"
}

echo "compare.sh: $RW bs=$BS direct=$DIRECT on $FILE ($SIZE), ${RUNTIME}s per point" >&2
afb pread 1
[ "$FIO" = 1 ] && fio_run psync 1 fio-psync
for qd in $DEPTHS; do
  echo "compare.sh: iodepth $qd" >&2
  for e in $ENGINES; do afb "$e" "$qd"; done
  [ "$FIO" = 1 ] && fio_run io_uring "$qd" fio-io_uring
done
# The run, kept with where and when it was measured (bench/report.sh makes tables of it).
. bench/results.sh
results_open compare "rw,bs,direct,size,runtime_s,$(head -1 "$csv")"
tail -n +2 "$csv" | while IFS= read -r line; do results_row "$RW,$BS,$DIRECT,$SIZE,$RUNTIME,$line"; done
fi
grep -q '^fio-io_uring,' "$csv" || FIO=0

# The table: per depth, each engine against fio io_uring at the same depth.
python3 - "$csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
fio = {r["iodepth"]: float(r["iops"]) for r in rows if r["engine"] == "fio-io_uring"}
print("%-13s %7s %10s %9s %10s %9s %9s %11s" % ("engine", "iodepth", "IOPS", "vs fio", "CPU us/IO",
      "p50 us", "p99 us", "syscalls/IO"))
for r in rows:
    base = fio.get(r["iodepth"])
    sync = r["engine"] in ("pread", "fio-psync")
    ratio = "%.2fx" % (float(r["iops"]) / base) if base and not sync else "-"
    print("%-13s %7s %10.0f %9s %10.2f %9.1f %9.1f %11s" % (r["engine"],
          "(any)" if sync else r["iodepth"], float(r["iops"]), ratio, float(r["cpu_us_per_io"]),
          float(r["lat_p50_us"]), float(r["lat_p99_us"]),
          "-" if r["syscalls_per_io"] == "-1" else "%.3f" % float(r["syscalls_per_io"])))
PY

# The plot: IOPS against queue depth, one line per engine; the synchronous baselines (which
# ignore the depth) as flat dashed lines.
if ! command -v gnuplot >/dev/null; then
  echo "compare.sh: gnuplot not found (scripts/deps.sh plot): no plot" >&2; exit 0
fi
term=png
gnuplot -e "set terminal" 2>&1 | grep -q pngcairo && term=pngcairo
dat=$OUT/plot; mkdir -p "$dat"
plots=()
declare -A color=([corio]='#1f4e9c' [queue]='#2ca02c' [threads]='#ff7f0e'
                   [uring-raw]='#9467bd' [fio-io_uring]='#000000' [pread]='#7f7f7f'
                   [fio-psync]='#8c564b')
for e in $ENGINES $( [ "$FIO" = 1 ] && echo fio-io_uring ); do
  awk -F, -v e="$e" '$1 == e { print $2, $3 }' "$csv" > "$dat/$e.dat"
  plots+=("'$dat/$e.dat' using 1:2 with linespoints lw 2 pt 7 lc rgb '${color[$e]:-#17becf}' title '$e'")
done
for e in pread $( [ "$FIO" = 1 ] && echo fio-psync ); do
  v=$(awk -F, -v e="$e" '$1 == e { print $3 }' "$csv")
  [ -n "$v" ] && plots+=("$v with lines dt 2 lw 2 lc rgb '${color[$e]}' title '$e (ignores depth)'")
done
xmax=$(echo $DEPTHS | tr ' ' '\n' | sort -n | tail -1)
host="$(nproc) CPUs, $(uname -r)"
gnuplot <<GP
set terminal $term size 1000,650 $( [ $term = pngcairo ] && echo "font 'sans,11'" )
set output '$OUT/iops_vs_qd.png'
set termoption noenhanced
set title "$RW bs=$BS direct=$DIRECT, ${RUNTIME}s per point ($host)"
set xlabel 'queue depth (iodepth)'
set ylabel 'IOPS'
set logscale x 2
set xrange [0.8:$xmax*1.25]
set yrange [0:*]
set xtics (${DEPTHS// /,})
set format y '%.0s%c'
set grid
set key top left box opaque
plot $(IFS=,; echo "${plots[*]}")
GP
echo "compare.sh: wrote $csv and $OUT/iops_vs_qd.png" >&2

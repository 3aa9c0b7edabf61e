#!/bin/sh
# A/B of two builds' streams against fread, each build in turn (A B A B ...), each run with
# its own fread baseline in the same process (bench_stream's pair ratios: fread time /
# afs_fread time, wall and process CPU). Rows go to bench/results/stream_ab-<time>-vm.csv.
#
# Usage: bench/run_stream_ab.sh BUILD_A BUILD_B [ROUNDS]
#   BUILD_A/B  build directories holding bench/bench_stream (e.g. of main and of a branch)
#   ROUNDS     A B pairs per case (default 2)
# Environment: FILE (default /var/tmp/bench_stream_ab.dat, 256 MiB, kept), TIMES (pairs
# inside each run, default 21), CASES (a subset of the case names below, space-separated),
# COLD=1 adds cold cases (drop_caches, root). BN: reads of N bytes (records) through a 32 MiB
# file (warm). SKnN: N random seeks, each followed by one read
# of K KiB (warm); DKnN the same on a cold cache.
set -eu
A=$1 B=$2 ROUNDS=${3:-2}
FILE=${FILE:-/var/tmp/bench_stream_ab.dat}
T=${TIMES:-21}
DIR=$(dirname "$0")/results
mkdir -p "$DIR"
OUT="$DIR/stream_ab-$(date -u +%Y%m%dT%H%M%SZ)-vm.csv"
echo "case,build,load1,kind,fastest,pairs_kept,pairs_total,pair_median,pair_min,pair_max,cpu_median,cpu_min,cpu_max" >"$OUT"
SMALL=/var/tmp/bench_stream_ab_small.dat
ALL="R4 R64 R1024 R16384 X64 X1024 K4o2000R4 K64o500R4 K64o500R64 K1024o200R4 L16o500"
ALL="$ALL S4n20000 S64n5000 S1024n500 B1 B16 B100"
[ "${COLD:-0}" = 1 ] && ALL="$ALL C64 C1024 D4n1000 D64n500 D1024n100"
args() {
    case $1 in
    R*) echo "-f $FILE -s 256 -w -t $T -R ${1#R} -p io_stdio,io_afs" ;;
    B*) echo "-f $SMALL.32768 -K 32768 -w -t $T -B ${1#B} -p io_stdio,io_afs" ;;
    X*) echo "-f $FILE -s 256 -w -x -t $T -R ${1#X} -p stdio,afs" ;;
    C*) echo "-f $FILE -s 256 -x -t 2 -R ${1#C} -p io_stdio,io_afs,stdio,afs" ;;
    K*) k=${1#K}; o=${k#*o}; r=${o#*R}; echo "-f $SMALL.${k%%o*} -K ${k%%o*} -o ${o%%R*} -w -t $T -R $r -p io_stdio,io_afs" ;;
    L*) l=${1#L}; echo "-f $FILE -s 256 -L ${l%%o*} -o ${l#*o} -w -t $T -R 4 -p io_stdio,io_afs" ;;
    S*) k=${1#S}; echo "-f $FILE -s 256 -w -t $T -S ${k#*n} -R ${k%%n*} -p io_stdio,io_afs" ;;
    D*) k=${1#D}; echo "-f $FILE -s 256 -t 4 -S ${k#*n} -R ${k%%n*} -p io_stdio,io_afs" ;;
    esac
}
for c in ${CASES:-$ALL}; do
    for r in $(seq "$ROUNDS"); do
        for b in "$A" "$B"; do
            load=$(cut -d' ' -f1 /proc/loadavg)
            # shellcheck disable=SC2046
            "$b/bench/bench_stream" $(args "$c") -k >/tmp/stream_ab.$$ 2>&1 || true
            awk -v c="$c" -v b="$(basename "$b")" -v l="$load" '
                /^speed afs vs stdio/ { kind = ($0 ~ /reads alone/) ? "reads alone" : "with work";
                    match($0, /fastest [0-9.]+/); f = substr($0, RSTART + 8, RLENGTH - 8);
                    match($0, /pairs \([0-9]+ of [0-9]+\)/); split(substr($0, RSTART + 7, RLENGTH - 8), p, " of ");
                    match($0, /median [0-9.]+/); m = substr($0, RSTART + 7, RLENGTH - 7);
                    match($0, /min [0-9.]+/); lo = substr($0, RSTART + 4, RLENGTH - 4);
                    match($0, /max [0-9.]+/); hi = substr($0, RSTART + 4, RLENGTH - 4);
                    row[kind] = "\"" c "\"," b "," l "," kind "," f "," p[1] "," p[2] "," m "," lo "," hi }
                /^CPU time afs vs stdio/ { kind = ($0 ~ /reads alone/) ? "reads alone" : "with work";
                    match($0, /median [0-9.]+/); m = substr($0, RSTART + 7, RLENGTH - 7);
                    match($0, /min [0-9.]+/); lo = substr($0, RSTART + 4, RLENGTH - 4);
                    match($0, /max [0-9.]+/); hi = substr($0, RSTART + 4, RLENGTH - 4);
                    print row[kind] "," m "," lo "," hi }' /tmp/stream_ab.$$ | tee -a "$OUT"
        done
    done
done
rm -f /tmp/stream_ab.$$
echo "rows in $OUT"

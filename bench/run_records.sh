#!/bin/sh
# Records through stdio and through a stream, alternated in the same run (stdio first in odd
# rounds, the stream first in even ones): writes to a new file (after a sync, so that no run
# pays for the last one's write-back; each run its own file, all deleted after the case: on
# a virtual machine the pages a deleted file freed may go back to the host, and the next run
# to touch them pays a fault on the host for each), writes to a pipe (`| cat`), reads
# from a pipe (`cat FILE |`), reads of a warm file. Each process times its own loop (the close
# included). Rows go to bench/results/records-<time>-vm.csv; a summary gives, per case, the
# median over the rounds of stdio's time / the stream's (above 1: the stream is faster).
#
# Usage: bench/run_records.sh BUILD [ROUNDS]
#   BUILD   a build directory holding bench/bench_records
#   ROUNDS  pairs per case (default 5)
# Environment: CASES (default below: KIND+RECORD_BYTES:MIB, KIND one of fw pw pr fr),
# DIR (default /var/tmp: the files written and read), BASE (another build's directory: its
# stream is run too, as a third side, for an A/B of two builds).
set -eu
B=$1 ROUNDS=${2:-5}
BIN=$B/bench/bench_records
[ -x "$BIN" ] || { echo "no $BIN" >&2; exit 2; }
BASEBIN=${BASE:+$BASE/bench/bench_records}
D=${DIR:-/var/tmp}
SRC=$D/afs-records-src.dat OUTF=$D/afs-records-out.dat
CASES=${CASES:-"fw1:64 fw100:256 fw65536:256 pw1:64 pw100:1024 pw65536:1024 pr1:64 pr100:1024 pr65536:1024 fr1:64 fr100:1024"}
RES=$(dirname "$0")/results
mkdir -p "$RES"
CSV="$RES/records-$(date -u +%Y%m%dT%H%M%SZ)-vm.csv"
echo "case,side,round,load1,seconds" >"$CSV"
head -c $((1024 << 20)) /dev/urandom >"$SRC"
cat "$SRC" >/dev/null
LOG=$(mktemp)
trap 'rm -f "$LOG" "$SRC" "$OUTF" "$OUTF".*' EXIT

one() { # bin side case run -> seconds
    kind=${3%%[0-9]*}; rest=${3#"$kind"}; rec=${rest%%:*}; mib=${rest#*:}
    case $kind in
    fw) sync; "$1" "$2" write "$rec" "$mib" "$OUTF.$4" 2>"$LOG" ;;
    pw) "$1" "$2" write "$rec" "$mib" - 2>"$LOG" | cat >/dev/null ;;
    pr) head -c $((mib << 20)) "$SRC" | "$1" "$2" read "$rec" 0 - 2>"$LOG" ;;
    fr) head -c $((mib << 20)) "$SRC" >"$OUTF"; "$1" "$2" read "$rec" 0 "$OUTF" 2>"$LOG" ;;
    esac
    sed -n 's/.*, \([0-9.]*\) s, .*/\1/p' "$LOG"
}

for c in $CASES; do
    for r in $(seq "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then sides="stdio afs"; else sides="afs stdio"; fi
        [ -n "$BASEBIN" ] && sides="$sides base"
        for side in $sides; do
            load=$(cut -d' ' -f1 /proc/loadavg)
            if [ "$side" = base ]; then t=$(one "$BASEBIN" afs "$c" "$side$r"); else t=$(one "$BIN" "$side" "$c" "$side$r"); fi
            echo "$c,$side,$r,$load,$t" >>"$CSV"
        done
    done
    rm -f "$OUTF".*
done
awk -F, 'NR > 1 { t[$1 "," $3 "," $2] = $5; cases[$1] = 1; rounds[$3] = 1 }
    function median(a, n,   i, j, x) { for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
                                       return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    END { for (c in cases) { n = 0; m = 0; for (r in rounds) { s = t[c "," r ",stdio"]; a = t[c "," r ",afs"]; b = t[c "," r ",base"]
              if (s > 0 && a > 0) q[++n] = s / a; if (s > 0 && b > 0) p[++m] = s / b }
              line = sprintf("%-10s stdio/stream %.2f (%d pairs)", c, median(q, n), n)
              if (m) line = line sprintf(", stdio/base stream %.2f", median(p, m))
              print line } }' "$CSV" | sort
echo "rows in $CSV"

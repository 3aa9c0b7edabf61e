#!/usr/bin/env bash
# afcp against cp, in one run, on the same data: (a) a tree of 10,000 files of 16 KiB,
# (b) one 2 GiB file. Each copy starts with cold caches when run as root (sync, then
# drop_caches); otherwise the caches are warm and the table says so. Every copy is verified
# byte for byte. Prints a table with the ratios and removes everything it made.
#
# Then the warm trees: /usr/include, /usr/share/doc and a generated flat directory of NFLAT
# small files, copied by cp -r and afcp -r in turn (WARM_RUNS rounds, cp first in odd rounds
# and afcp first in even ones, the source read again right before each copy, a sync before
# each copy, the copies set aside so that each starts alike); one line per round gives both
# wall and CPU times, their ratio and the load average before each copy; the table gives the median wall time and CPU time (user + system) of each, the ratio of the
# medians, the worst round's ratio (cp's wall / afcp's wall in the same round) and how many
# rounds afcp was not slower than cp.
#
# Usage: bench/compare_cp.sh [path/to/afcp]     (default: afcp from PATH)
# Environment: NFILES (10000), FILE_KB (16), BIG_MB (2048), BENCH_DIR (/var/tmp),
#              AFCP_EXTRA (extra afcp options for every afcp run), RUNS (1: tables to print),
#              COLD (1: run the cold table), WARM (1: run the warm table), WARM_RUNS (3),
#              NFLAT (100000), WARM_TREES (default "/usr/include /usr/share/doc"),
#              PIN (a CPU list, e.g. 0: every warm copy, cp's and afcp's, runs under
#              taskset -c PIN; PIN=0 is the case of a machine with no core free)
#
# Columns: "copy" is the time until the command returns; "copy+sync" adds a sync run right
# after it, i.e. until the data is on disk. Both cp and afcp (by default) leave their data
# to the kernel's write-back; "afcp --fsync" renames each file into place only once its data
# is on disk (group commit: one syncfs per group of small files, fdatasync for files of
# 8 MiB or more), so its "copy" compares with the others' "copy+sync".
# RUNS=N repeats the whole table N times on the same data (default 1).
# Every run is kept as bench/results/compare_cp-<time>-<host>.csv (bench/results.sh).
set -euo pipefail

AFCP=${1:-$(command -v afcp || true)}
[[ -x "$AFCP" ]] || { echo "usage: $0 path/to/afcp" >&2; exit 2; }
NFILES=${NFILES:-10000}
FILE_KB=${FILE_KB:-16}
BIG_MB=${BIG_MB:-2048}
AFCP_EXTRA=${AFCP_EXTRA:-}
BASE=$(mktemp -d "${BENCH_DIR:-/var/tmp}/afcp_bench.XXXXXX")
trap 'rm -rf "$BASE"' EXIT

cold=0
if [[ $(id -u) -eq 0 && -w /proc/sys/vm/drop_caches ]]; then cold=1; fi

drop_caches() {
    sync
    if ((cold)); then echo 3 > /proc/sys/vm/drop_caches; fi
}

now() { date +%s.%N; }

# run NAME VERIFY_SRC VERIFY_DST CMD...: times CMD and CMD+sync from cold caches, verifies.
declare -A T_COPY T_SYNC
run() {
    local name=$1 vsrc=$2 vdst=$3
    shift 3
    rm -rf "$vdst"
    drop_caches
    local t0 t1 t2
    t0=$(now)
    "$@"
    t1=$(now)
    sync
    t2=$(now)
    T_COPY[$name]=$(echo "$t1 - $t0" | bc -l)
    T_SYNC[$name]=$(echo "$t2 - $t0" | bc -l)
    if [[ -d "$vsrc" ]]; then
        diff -r --no-dereference "$vsrc" "$vdst" > /dev/null || { echo "$name: MISMATCH" >&2; exit 1; }
        # Set aside, removed at the end: on ext4, creating files right after deleting
        # thousands makes the inode allocator skip each recently deleted inode (ialloc.c,
        # recently_deleted()), and every run would be slower than the one before it.
        mv "$vdst" "$BASE/done.$((++KEPT))"
    else
        cmp "$vsrc" "$vdst" || { echo "$name: MISMATCH" >&2; exit 1; }
        rm -rf "$vdst"
    fi
    sync
}
KEPT=0

q=(-q)
ratio() { echo "scale=2; $1 / $2" | bc -l; }
if [[ ${COLD:-1} == 1 ]]; then
echo "generating $NFILES files of $FILE_KB KiB and one $BIG_MB MiB file in $BASE ..." >&2
per=100
ndirs=$(( (NFILES + per - 1) / per ))
mkdir -p "$BASE/tree"
for ((d = 0; d < ndirs; d++)); do
    n=$(( NFILES - d * per < per ? NFILES - d * per : per ))
    mkdir "$BASE/tree/d$d"
    head -c $(( n * FILE_KB * 1024 )) /dev/urandom |
        split -b $(( FILE_KB * 1024 )) -a 3 -d - "$BASE/tree/d$d/f"
done
head -c $(( BIG_MB * 1024 * 1024 )) /dev/urandom > "$BASE/big"
sync

. "$(dirname "$0")/results.sh"
results_open compare_cp "round,command,data,copy_s,copy_sync_s,caches,fs"
fs=$(df -T "$BASE" | awk 'NR==2 {print $2}')
for ((round = 1; round <= ${RUNS:-1}; round++)); do
# shellcheck disable=SC2086
{
run "cp -r"                 "$BASE/tree" "$BASE/out" cp -r "$BASE/tree" "$BASE/out"
run "afcp -r"               "$BASE/tree" "$BASE/out" "$AFCP" "${q[@]}" $AFCP_EXTRA -r "$BASE/tree" "$BASE/out"
run "afcp -r --fsync"    "$BASE/tree" "$BASE/out" "$AFCP" "${q[@]}" $AFCP_EXTRA --fsync -r "$BASE/tree" "$BASE/out"
run "cp"                    "$BASE/big" "$BASE/big.out" cp "$BASE/big" "$BASE/big.out"
run "afcp"                  "$BASE/big" "$BASE/big.out" "$AFCP" "${q[@]}" $AFCP_EXTRA "$BASE/big" "$BASE/big.out"
run "afcp --fsync"       "$BASE/big" "$BASE/big.out" "$AFCP" "${q[@]}" $AFCP_EXTRA --fsync "$BASE/big" "$BASE/big.out"
run "afcp --no-copy-range"  "$BASE/big" "$BASE/big.out" "$AFCP" "${q[@]}" $AFCP_EXTRA --no-copy-range "$BASE/big" "$BASE/big.out"
run "afcp --direct"         "$BASE/big" "$BASE/big.out" "$AFCP" "${q[@]}" $AFCP_EXTRA --direct "$BASE/big" "$BASE/big.out"
}

printf '\nafcp vs cp (%s caches; %s, %s CPUs, %s)\n' "$([[ $cold == 1 ]] && echo cold || echo WARM: not root, no drop_caches)" \
    "$(uname -r)" "$(nproc)" "$(df -T "$BASE" | awk 'NR==2 {print $2 " on " $1}')"
printf '%-26s %10s %12s %14s %16s\n' "command" "copy s" "copy+sync s" "cp/x (copy)" "cp/x (copy+sync)"
for name in "cp -r" "afcp -r" "afcp -r --fsync"; do
    results_row "$round,$name,$NFILES x ${FILE_KB} KiB,${T_COPY[$name]},${T_SYNC[$name]},$([[ $cold == 1 ]] && echo cold || echo warm),$fs"
    printf '%-26s %10.2f %12.2f %14s %16s\n' "$name ($NFILES x ${FILE_KB}K)" "${T_COPY[$name]}" "${T_SYNC[$name]}" \
        "$(ratio "${T_COPY[cp -r]}" "${T_COPY[$name]}")x" "$(ratio "${T_SYNC[cp -r]}" "${T_SYNC[$name]}")x"
done
for name in "cp" "afcp" "afcp --fsync" "afcp --no-copy-range" "afcp --direct"; do
    results_row "$round,$name,${BIG_MB} MiB,${T_COPY[$name]},${T_SYNC[$name]},$([[ $cold == 1 ]] && echo cold || echo warm),$fs"
    printf '%-26s %10.2f %12.2f %14s %16s\n' "$name (${BIG_MB} MiB)" "${T_COPY[$name]}" "${T_SYNC[$name]}" \
        "$(ratio "${T_COPY[cp]}" "${T_COPY[$name]}")x" "$(ratio "${T_SYNC[cp]}" "${T_SYNC[$name]}")x"
done
done
echo "targets: tree >= 3x faster than cp -r, big file >= 5x faster than cp (all copies verified)"
fi

# ---- warm trees: cp -r and afcp -r in turn on cached sources
if [[ ${WARM:-1} == 1 ]]; then
    . "$(dirname "$0")/results.sh"
    results_open compare_cp_warm "round,command,data,wall_s,cpu_s,load1,pin"
    NFLAT=${NFLAT:-100000}
    echo "generating a flat directory of $NFLAT small files in $BASE/flat ..." >&2
    mkdir -p "$BASE/flat"
    (cd "$BASE/flat" && for ((i = 0; i < NFLAT; i++)); do echo "file $i"; done |
        split -l 1 -a 6 - f)
    declare -A W_WALL W_CPU W_LOAD
    pin=()
    if [[ -n ${PIN:-} ]]; then pin=(taskset -c "$PIN"); fi
    TIMEFORMAT='%R %U %S'
    wrun() { # round name src cmd...: one timed copy of src to $BASE/w.out, verified
        local round=$1 name=$2 src=$3 t
        shift 3
        # Read the source again right before the copy: on a shared machine something else may
        # have dropped the caches since the last round, and the table is about warm copies.
        tar cf - "$src" 2> /dev/null | cat > /dev/null
        sync
        local load
        load=$(cut -d' ' -f1 /proc/loadavg)
        t=$( { time "${pin[@]}" "$@" "$src" "$BASE/w.out" > /dev/null; } 2>&1 | tail -1)
        diff -r --no-dereference "$src" "$BASE/w.out" > /dev/null || { echo "$name: MISMATCH" >&2; exit 1; }
        mv "$BASE/w.out" "$BASE/done.$((++KEPT))"
        local wall cpu
        wall=$(awk '{print $1}' <<< "$t")
        cpu=$(awk '{printf "%.3f", $2 + $3}' <<< "$t")
        W_WALL[$name]+="$wall "
        W_CPU[$name]+="$cpu "
        results_row "$round,$name,$src,$wall,$cpu,$load,${PIN:-}"
        W_LOAD[$name]+="$load "
    }
    median() { tr ' ' '\n' <<< "$1" | grep . | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
    printf '\nwarm trees: cp -r against afcp -r, %s rounds in turn, medians (%s, %s CPUs, %s%s)\n' \
        "${WARM_RUNS:-3}" "$(uname -r)" "$(nproc)" "$(df -T "$BASE" | awk 'NR==2 {print $2}')" \
        "${PIN:+, both pinned to CPU $PIN}"
    printf '%-26s %9s %9s %9s %9s %12s %12s %12s %7s\n' "tree" "cp wall" "afcp wall" "cp CPU" \
        "afcp CPU" "cp/afcp wall" "cp/afcp CPU" "worst round" "won"
    for src in ${WARM_TREES:-/usr/include /usr/share/doc} "$BASE/flat"; do
        [[ -d $src ]] || continue
        # Read the source once (warm). The copy is set aside, not removed, so that no timed
        # copy follows a removal that the other did not (the first timed copy is cp's): what
        # the file system pays to create an inode depends on what was freed just before.
        cp -r "$src" "$BASE/w.out" && mv "$BASE/w.out" "$BASE/done.$((++KEPT))"
        W_WALL=() W_CPU=() W_LOAD=()
        for ((r = 1; r <= ${WARM_RUNS:-3}; r++)); do
            # cp first in odd rounds, afcp first in even ones: neither always follows the other
            if ((r % 2)); then
                wrun "$r" "cp -r" "$src" cp -r
                # shellcheck disable=SC2086
                wrun "$r" "afcp -r" "$src" "$AFCP" -q $AFCP_EXTRA -r
            else
                # shellcheck disable=SC2086
                wrun "$r" "afcp -r" "$src" "$AFCP" -q $AFCP_EXTRA -r
                wrun "$r" "cp -r" "$src" cp -r
            fi
        done
        # every round on its own line: walls, CPU times, cp/afcp and the load average
        paste <(tr ' ' '\n' <<< "${W_WALL[cp -r]}" | grep .) <(tr ' ' '\n' <<< "${W_WALL[afcp -r]}" | grep .) \
              <(tr ' ' '\n' <<< "${W_CPU[cp -r]}" | grep .) <(tr ' ' '\n' <<< "${W_CPU[afcp -r]}" | grep .) \
              <(tr ' ' '\n' <<< "${W_LOAD[cp -r]}" | grep .) <(tr ' ' '\n' <<< "${W_LOAD[afcp -r]}" | grep .) |
            awk -v t="${src/#$BASE\//}" '{printf "  %s round %d: cp %.2f s (CPU %.2f), afcp %.2f s (CPU %.2f), cp/afcp %.2fx, load %s/%s\n", t, NR, $1, $3, $2, $4, $1 / $2, $5, $6}'

        cw=$(median "${W_WALL[cp -r]}") aw=$(median "${W_WALL[afcp -r]}")
        cc=$(median "${W_CPU[cp -r]}") ac=$(median "${W_CPU[afcp -r]}")
        # every round: cp's wall over afcp's in that round (the two ran back to back)
        read -r worst won < <(paste <(tr ' ' '\n' <<< "${W_WALL[cp -r]}" | grep .) \
            <(tr ' ' '\n' <<< "${W_WALL[afcp -r]}" | grep .) |
            awk '{r = $1 / $2; if (NR == 1 || r < w) w = r; if (r >= 1) n++} END {printf "%.2f %d/%d\n", w, n, NR}')
        printf '%-26s %9.2f %9.2f %9.2f %9.2f %11sx %11sx %11sx %7s\n' "${src/#$BASE\//}" "$cw" "$aw" "$cc" \
            "$ac" "$(ratio "$cw" "$aw")" "$(ratio "$cc" "$ac")" "$worst" "$won"
    done
    echo "target: cp/afcp wall >= 1.00x on every warm tree, every round (all copies verified)"
fi

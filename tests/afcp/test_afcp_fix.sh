#!/usr/bin/env bash
# afcp end to end, the harder cases: signals during a tree copy (no temporary may survive),
# deep trees (no stack growth per level, cp's PATH_MAX limit), trailing slashes, files whose
# size lies (/proc, sysfs, FIFOs, devices) and sparse files. Runs once per backend: AUTO
# (io_uring here) and threads (ASYNCFS_BACKEND; sync is left to test_afcp.sh, for the time
# of the suite).
# Usage: tests/afcp/test_afcp_fix.sh path/to/afcp
set -uo pipefail

. "$(dirname "$0")/lib.sh" afcp_fix "${1:-}"
blocks_below() { (($(stat -c '%b*%B' "$1") < $2)); } # allocated bytes < $2

# ---- fixtures (shared by every backend's run) ----
S=$T/src
mkdir -p "$S"
# a 300-file tree in 3 directories
mkdir -p "$S/t300/a" "$S/t300/b" "$S/t300/c"
for d in a b c; do
    for i in $(seq 1 100); do echo "$d $i" > "$S/t300/$d/f$i"; done
done
# 1,300 nested directories with a file at the bottom (2,600 bytes of path: under PATH_MAX)
deep_rel=$(printf 'd/%.0s' $(seq 1 1300))
mkdir -p "$S/deep/$deep_rel" && echo leaf > "$S/deep/${deep_rel}leaf"
# deeper than PATH_MAX: 30 levels of 200-byte names, a file at the top
long=$(printf 'x%.0s' $(seq 1 200))
(cd "$S" && mkdir toolong && echo top > toolong/top && cd toolong &&
    for i in $(seq 1 30); do mkdir "$long" && cd -P "$long" || exit 1; done && echo leaf > leaf)
echo aaa > "$S/a"
mkdir "$S/dir"; echo x > "$S/dir/x"; ln -s dir "$S/dirlink"
# a 1 GiB sparse file with three data extents, one at the very end
truncate -s 1G "$S/sparse"
head -c 65536 /dev/urandom | dd of="$S/sparse" conv=notrunc status=none
head -c 1048576 /dev/urandom | dd of="$S/sparse" bs=1M seek=300 conv=notrunc status=none
head -c 4096 /dev/urandom | dd of="$S/sparse" bs=4096 seek=$((262144 - 1)) conv=notrunc status=none
# 8 MiB: all holes but one block; and 4 MiB of written zeros
truncate -s 8M "$S/sparse8"; echo data | dd of="$S/sparse8" bs=4096 seek=100 conv=notrunc status=none
head -c 4194304 /dev/zero > "$S/zeros"
sparse_ok=1
[[ $(stat -c '%b' "$S/sparse") -lt 8192 ]] || sparse_ok=0 # the file system keeps holes

run_suite() {
    local O=$T/out.${BACKEND:-auto} i st
    rm -rf "$O"; mkdir -p "$O"

    # ---- signals: a signal at any point of a tree copy leaves no temporary behind. The
    # hook raises the signal in the file task whose destination open has just returned
    # (the other files' opens of the same batch are then done in the kernel too).
    # SIGPIPE: -v into a pipe whose reader left (`afcp -rv ... | head -1`).
    local sigs=(INT TERM HUP PIPE) ns=(1 2 5 9 17 31 50 64 65 66 80 100 128 129 150 199 200 250 290 300)
    for i in "${!ns[@]}"; do
        local sig=${sigs[i % 4]} n=${ns[i]} want
        want=$((128 + $(kill -l "$sig")))
        AFCP_TEST_SIGNAL=$sig:$n "$AFCP" -q -r "$S/t300" "$O/sig$i" 2> /dev/null
        st=$?
        check "SIG$sig after $n opens: died of it (status $st)" [ "$st" -eq "$want" ]
        check "SIG$sig after $n opens: no temporary left" no_temps "$O/sig$i"
        check "SIG$sig after $n opens: no partial file under its name" complete_only "$S/t300" "$O/sig$i"
        # directories made are left with the source's modes (no group or other write while
        # filled), not 0700, as cp -r leaves them
        check "SIG$sig after $n opens: no directory left at 0700" \
            bash -c "[ -z \"\$(find '$O/sig$i' -type d -perm 700)\" ]"
    done
    # and real signals from outside at varied delays (the copy may finish first)
    for i in 1 2 3 4 5 6 7 8 9 10; do
        "$AFCP" -q -r "$S/t300" "$O/sigk$i" 2> /dev/null &
        local pid=$!
        sleep "0.0$((i * 7 % 10))$i"
        kill -"${sigs[i % 3]}" "$pid" 2> /dev/null
        wait "$pid"
        check "kill -${sigs[i % 3]} after 0.0$((i * 7 % 10))$i s: no temporary left" no_temps "$O/sigk$i"
        check "kill -${sigs[i % 3]} after 0.0$((i * 7 % 10))$i s: no partial file" complete_only "$S/t300" "$O/sigk$i"
    done
    AFCP_TEST_SIGNAL=TERM:40 "$AFCP" -q -r -j 8 --fsync "$S/t300" "$O/sigf" 2> /dev/null
    check "SIGTERM with --fsync, -j 8: no temporary left" no_temps "$O/sigf"
    # an ignored SIGINT (nohup, background jobs) stays ignored
    (trap '' INT; AFCP_TEST_SIGNAL=INT:10 exec "$AFCP" -q -r "$S/t300" "$O/sigign")
    check "ignored SIGINT: exit 0" [ $? -eq 0 ]
    check "ignored SIGINT: all copied" diff -r "$S/t300" "$O/sigign"
    check "--help tells the ignored signals" bash -c "'$AFCP' --help | grep -q 'ignored when afcp starts stays ignored'"
    rm -rf "$O"/sig*

    # ---- deep trees
    "$AFCP" -q -r "$S/deep" "$O/deep" 2> "$O/err"
    st=$?
    check "1,300 levels: exit 0 (status $st)" [ "$st" -eq 0 ]
    check "1,300 levels: the leaf copied" [ "$(cat "$O/deep/${deep_rel}leaf")" = leaf ]
    check "1,300 levels: final modes" bash -c "[ -z \"\$(find '$O/deep' -type d ! -perm 755)\" ]"
    "$AFCP" -q -r "$S/toolong" "$O/toolong" 2> "$O/err"
    check "past PATH_MAX: exit 1" [ $? -eq 1 ]
    check "past PATH_MAX: message" grep -q "^afcp: cannot stat '.*': File name too long$" "$O/err"
    check "past PATH_MAX: the rest copied" cmp -s "$S/toolong/top" "$O/toolong/top"
    check "past PATH_MAX: final modes" bash -c "[ -z \"\$(find '$O/toolong' -type d ! -perm 755)\" ]"
    rm -rf "$O/deep" "$O/toolong"

    # ---- trailing slashes
    echo keep > "$O/e"
    "$AFCP" -q "$S/a" "$O/e/" 2> "$O/err"
    check "file onto 'regular/': exit 1" [ $? -eq 1 ]
    check "file onto 'regular/': message" grep -qx "afcp: cannot stat '$O/e/': Not a directory" "$O/err"
    check "file onto 'regular/': kept" [ "$(cat "$O/e")" = keep ]
    "$AFCP" -q "$S/a" "$O/new/" 2> "$O/err"
    check "file onto 'missing/': exit 1" [ $? -eq 1 ]
    check "file onto 'missing/': message" grep -qx "afcp: cannot create regular file '$O/new/': Not a directory" "$O/err"
    check "file onto 'missing/': nothing made" [ ! -e "$O/new" ]
    check "-r dir onto 'missing/'" bash -c "'$AFCP' -q -r '$S/dir' '$O/newd/' && cmp -s '$S/dir/x' '$O/newd/x'"
    check "-r 'link/': exit 0" "$AFCP" -q -r "$S/dirlink/" "$O/viadir"
    check "-r 'link/': the directory copied" bash -c "[ -d '$O/viadir' ] && [ ! -L '$O/viadir' ] && cmp -s '$S/dir/x' '$O/viadir/x'"
    check "-r 'link' (no slash): the link copied" bash -c "'$AFCP' -q -r '$S/dirlink' '$O/vialink' && [ -L '$O/vialink' ]"
    # a trailing slash on a source that is no directory (a file, a link to one): not found,
    # as stat("SRC/") fails for cp
    ln -s a "$S/alink"
    for i in a alink; do
        "$AFCP" -q "$S/$i/" "$O/slash.$i" 2> "$O/err"
        check "'$i/' (not a directory) as source: exit 1" [ $? -eq 1 ]
        check "'$i/' (not a directory) as source: message" grep -qx "afcp: cannot stat '$S/$i/': Not a directory" "$O/err"
        check "'$i/' (not a directory) as source: nothing copied" [ ! -e "$O/slash.$i" ]
    done
    rm -f "$S/alink"

    # ---- files whose size lies: read until EOF (cmp -s trusts the sizes: compare a pipe)
    check "/proc/version (size 0)" bash -c "'$AFCP' -q /proc/version '$O/version' && [ -s '$O/version' ] && cat /proc/version | cmp -s - '$O/version'"
    if [[ -r /sys/devices/system/cpu/possible ]]; then
        check "sysfs (size 4096, less data)" bash -c "'$AFCP' -q /sys/devices/system/cpu/possible '$O/possible' && cat /sys/devices/system/cpu/possible | cmp -s - '$O/possible'"
    fi
    check "/dev/null without -r: an empty file" bash -c "'$AFCP' -q /dev/null '$O/null' && [ -f '$O/null' ] && [ ! -s '$O/null' ]"
    mkfifo "$O/fifo"
    head -c 300000 /dev/urandom > "$O/fifo.data"
    # the writer gives up after 20 s if nobody reads (opening a FIFO waits for a reader)
    timeout 20 bash -c "sleep 0.2; cat '$O/fifo.data' > '$O/fifo'" &
    "$AFCP" -q "$O/fifo" "$O/fromfifo" 2> "$O/err"
    st=$?
    wait
    check "FIFO without -r: read until EOF (status $st)" bash -c "[ $st -eq 0 ] && cmp -s '$O/fifo.data' '$O/fromfifo'"
    check "FIFO with -r: recreated" bash -c "'$AFCP' -q -r '$O/fifo' '$O/fifo2' && [ -p '$O/fifo2' ]"
    # a source whose size says nothing (/proc), written into an existing FIFO: read to its end
    mkfifo "$O/ff"
    cat "$O/ff" > "$O/ff.out" &
    local reader=$!
    "$AFCP" -q /proc/version "$O/ff"
    st=$?
    wait "$reader"
    check "/proc/version into a FIFO: every byte (status $st)" bash -c "[ $st -eq 0 ] && cat /proc/version | cmp -s - '$O/ff.out'"
    rm -f "$O/ff" "$O/ff.out"
    # --inplace over a file that was there: a read error leaves it (its links, its mode), as cp
    if ! cat /proc/self/mem > /dev/null 2>&1; then
        echo old > "$O/ip"; chmod 640 "$O/ip"; ln "$O/ip" "$O/ip2"
        "$AFCP" -q --inplace /proc/self/mem "$O/ip" 2> /dev/null
        st=$?
        check "--inplace, read error: status 1, the file kept with its links and mode (status $st)" \
            bash -c "[ $st -eq 1 ] && [ \"\$(stat -c '%h %a' '$O/ip')\" = '2 640' ]"
        rm -f "$O/ip" "$O/ip2"
    fi
    # a file that grows while it is copied (AFCP_TEST_GROW: bytes appended once its first
    # size is copied): copied to its new end, as cp reads to the end
    # (the cached path reads a file of up to 256 KiB at once: it grows after a larger one's
    # first read there)
    local gsize gpath
    for gpath in batch inline; do
        for gsize in 100 300000 524288 3000000; do
            [[ $gpath = inline && $gsize = 100 ]] && continue
            head -c $gsize /dev/urandom > "$O/grows"
            check "a file of $gsize bytes that grows during the copy ($gpath): copied to its end" bash -c "AFCP_TEST_PATH=$gpath AFCP_TEST_GROW=7 '$AFCP' -q '$O/grows' '$O/grown' && [ \$(stat -c %s '$O/grows') = $((gsize + 7)) ] && cmp -s '$O/grows' '$O/grown'"
            rm -f "$O/grows" "$O/grown"
        done
    done

    # ---- sparse files: holes stay holes on every path, the content is the same
    if ((sparse_ok)); then
        local v=0 args variants=("" "--no-copy-range" "--no-copy-range --direct")
        # every path under AUTO; the backends differ only in how the reads and writes go
        [[ -z ${BACKEND} ]] && variants+=("--no-copy-range --chunk-size 64K" "--inplace" "--copy-range-min 4K")
        for args in "${variants[@]}"; do
            v=$((v + 1))
            # shellcheck disable=SC2086
            "$AFCP" -q $args "$S/sparse" "$O/sp$v"
            check "sparse 1 GiB [$args]: exit 0" [ $? -eq 0 ]
            check "sparse 1 GiB [$args]: few blocks ($(stat -c %b "$O/sp$v"))" blocks_below "$O/sp$v" $((16 << 20))
            check "sparse 1 GiB [$args]: same size" [ "$(stat -c %s "$O/sp$v")" = 1073741824 ]
            check "sparse 1 GiB [$args]: same content" cmp -s "$S/sparse" "$O/sp$v"
            rm -f "$O/sp$v"
        done
        check "--sparse=never: dense" bash -c "'$AFCP' -q --sparse=never '$S/sparse8' '$O/sn' && cmp -s '$S/sparse8' '$O/sn' && (( \$(stat -c '%b*%B' '$O/sn') >= 8 << 20 ))"
        check "--sparse=always: zeros become holes" bash -c "'$AFCP' -q --sparse=always '$S/zeros' '$O/sa' && cmp -s '$S/zeros' '$O/sa' && (( \$(stat -c '%b*%B' '$O/sa') < 1 << 20 ))"
        check "--sparse=auto: written zeros stay written" bash -c "'$AFCP' -q --sparse=auto '$S/zeros' '$O/sz' && cmp -s '$S/zeros' '$O/sz' && (( \$(stat -c '%b*%B' '$O/sz') >= 4 << 20 ))"
        check "-r sparse in a tree" bash -c "mkdir -p '$O/spt' && cp --sparse=always '$S/sparse8' '$O/spt/' && '$AFCP' -q -r '$O/spt' '$O/spt2' && cmp -s '$S/sparse8' '$O/spt2/sparse8' && (( \$(stat -c '%b*%B' '$O/spt2/sparse8') < 1 << 20 ))"
    else
        echo "SKIP [${BACKEND:-auto}]: the file system of $T does not keep holes" >&2
    fi
    check "no temporary files at the end" no_temps "$O"
    rm -rf "$O"
}

AFCP_TEST_BACKENDS=${AFCP_TEST_BACKENDS:-auto threads}
run_backends "afcp (signals, deep trees, slashes, sizes, sparse)"

#!/usr/bin/env bash
# afcp end to end: files, trees, symlinks, permissions, -n/-f, destination symlinks, failures
# that must not stop the rest, byte-for-byte against cp -a. Runs the whole suite once per
# backend: AUTO (io_uring here), threads, sync (ASYNCFS_BACKEND).
# Usage: tests/afcp/test_afcp.sh path/to/afcp
set -uo pipefail

. "$(dirname "$0")/lib.sh" afcp_test "${1:-}"

# ---- fixtures (shared by every backend's run) ----
S=$T/src
mkdir -p "$S/tree/a/b/c" "$S/tree/empty_dir"
echo "hello afcp" > "$S/one"
: > "$S/empty"
head -c $((20 * 1024 * 1024)) /dev/urandom > "$S/big"
head -c 12345 /dev/urandom > "$S/odd"             # not a multiple of the block size
echo top > "$S/tree/top.txt"
for i in $(seq 1 40); do head -c $((i * 1000)) /dev/urandom > "$S/tree/a/f$i"; done
head -c 3000000 /dev/urandom > "$S/tree/a/b/mid"
echo deep > "$S/tree/a/b/c/deep"
ln -s ../top.txt "$S/tree/a/rel"                  # relative
ln -s /nonexistent/nowhere "$S/tree/a/b/dangling" # dangling
install -m 0600 /dev/null "$S/tree/p600"; echo secret > "$S/tree/p600"
install -m 0755 /dev/null "$S/tree/p755"; echo '#!/bin/sh' > "$S/tree/p755"
install -m 4755 /dev/null "$S/tree/suid"; echo suid > "$S/tree/suid"
touch -d '2001-02-03 04:05:06' "$S/tree/a/f1"
# Times past 2038, which a 32-bit time_t cannot hold: on 32-bit targets afcp must still
# stat, copy and keep them (make test-armhf runs this script under qemu-arm).
echo future > "$S/tree/a/b/y2040"
touch -d '2040-02-03 04:05:06.123456789' "$S/tree/a/b/y2040"
touch -d '2106-02-07 06:28:17' "$S/tree/a/b/c" # past 2^32 seconds too
mkdir "$T/ref" && cp -a "$S/tree" "$T/ref/tree"

# a file, a link to it, and a tree of links to files of another directory: each link, copied
# as a link over what it points to, would replace it by a link to itself
same_fixture() { # dir
    rm -rf "$1"; mkdir -p "$1/src" "$1/dst"
    echo precious > "$1/f"; ln -s f "$1/lnk"
    for i in 1 2 3; do echo "precious $i" > "$1/dst/f$i"; ln -s ../dst/f$i "$1/src/f$i"; done
}

run_suite() {
    local O=$T/out.${BACKEND:-auto}
    rm -rf "$O"; mkdir -p "$O"

    # single, empty, big (default, --direct, --inplace, small chunks, copy_file_range), odd size
    check "single file" bash -c "'$AFCP' -q '$S/one' '$O/one' && cmp -s '$S/one' '$O/one'"
    check "single file mode" [ "$(mode "$O/one")" = 644 ]
    check "empty file" bash -c "'$AFCP' -q '$S/empty' '$O/empty' && [ -f '$O/empty' ] && [ ! -s '$O/empty' ]"
    check "20 MiB file" bash -c "'$AFCP' -q '$S/big' '$O/big' && cmp -s '$S/big' '$O/big'"
    check "20 MiB --direct" bash -c "'$AFCP' -q --direct '$S/big' '$O/big.d' && cmp -s '$S/big' '$O/big.d'"
    check "odd size --direct" bash -c "'$AFCP' -q --direct '$S/odd' '$O/odd.d' && cmp -s '$S/odd' '$O/odd.d'"
    check "20 MiB --inplace" bash -c "'$AFCP' -q --inplace '$S/big' '$O/big.i' && cmp -s '$S/big' '$O/big.i'"
    check "20 MiB 64K chunks" bash -c "'$AFCP' -q --chunk-size 64K --chunk-jobs 16 '$S/big' '$O/big.c' && cmp -s '$S/big' '$O/big.c'"
    check "20 MiB copy_file_range" bash -c "'$AFCP' -q --copy-range-min 1M '$S/big' '$O/big.r' && cmp -s '$S/big' '$O/big.r'"
    check "overwrite existing" bash -c "echo old > '$O/ow'; '$AFCP' -q '$S/big' '$O/ow' && cmp -s '$S/big' '$O/ow'"

    # a tree, against cp -a's result
    check "tree copy" "$AFCP" -q -r "$S/tree" "$O/tree"
    check "tree == cp -a" diff -r --no-dereference "$T/ref/tree" "$O/tree"
    check "relative symlink kept" [ "$(readlink "$O/tree/a/rel")" = ../top.txt ]
    check "dangling symlink kept" [ "$(readlink "$O/tree/a/b/dangling")" = /nonexistent/nowhere ]
    check "empty dir" [ -d "$O/tree/empty_dir" ]
    check "0600 kept" [ "$(mode "$O/tree/p600")" = 600 ]
    check "0755 kept" [ "$(mode "$O/tree/p755")" = 755 ]
    check "setuid dropped without -p" [ "$(mode "$O/tree/suid")" = 755 ]
    check "no temporary files" no_temps "$O"
    check "tree again (merge)" "$AFCP" -q -r "$S/tree" "$O/tree2"
    check "tree again (merge) 2" "$AFCP" -q -r "$S/tree/." "$O/tree2"
    check "merge == cp -a" diff -r --no-dereference "$T/ref/tree" "$O/tree2"
    # --fsync: group syncs for small files, fdatasync for the big one
    check "tree --fsync" "$AFCP" -q -r --fsync "$S/tree" "$O/treef"
    check "--fsync == cp -a" diff -r --no-dereference "$T/ref/tree" "$O/treef"
    check "--fsync no temporary files" no_temps "$O/treef"
    check "20 MiB --fsync" bash -c "'$AFCP' -q --fsync '$S/big' '$O/big.f' && cmp -s '$S/big' '$O/big.f'"

    # -p
    check "-p copy" "$AFCP" -q -rp "$S/tree" "$O/treep"
    check "-p mtime" [ "$(stat -c %Y "$O/treep/a/f1")" = "$(stat -c %Y "$S/tree/a/f1")" ]
    check "-p dir mtime" [ "$(stat -c %Y "$O/treep/a")" = "$(stat -c %Y "$S/tree/a")" ]
    check "-p mtime past 2038" [ "$(stat -c %y "$O/treep/a/b/y2040")" = "$(stat -c %y "$S/tree/a/b/y2040")" ]
    check "-p dir mtime past 2106" [ "$(stat -c %y "$O/treep/a/b/c")" = "$(stat -c %y "$S/tree/a/b/c")" ]
    check "-p symlink mtime" [ "$(stat -c %Y "$O/treep/a/rel")" = "$(stat -c %Y "$S/tree/a/rel")" ]
    if [[ $(id -u) -eq 0 ]]; then
        check "-p as root keeps setuid" [ "$(mode "$O/treep/suid")" = 4755 ]
    else
        check "-p as user drops nothing it can keep" [ "$(mode "$O/treep/p600")" = 600 ]
    fi
    check "-p == cp -a" diff -r --no-dereference "$T/ref/tree" "$O/treep"

    # several sources into a directory, one missing: exit 1, message, the rest copied
    mkdir "$O/multi"
    "$AFCP" -q "$S/one" "$S/missing" "$S/odd" "$O/multi" 2> "$O/err"
    check "missing source exit 1" [ $? -eq 1 ]
    check "cp-like message" grep -qx "afcp: cannot stat '$S/missing': No such file or directory" "$O/err"
    check "others copied" bash -c "cmp -s '$S/one' '$O/multi/one' && cmp -s '$S/odd' '$O/multi/odd'"
    "$AFCP" -q "$S/one" "$S/odd" "$O/one" 2> /dev/null
    check "target not a directory" [ $? -eq 1 ]
    "$AFCP" -q "$S/tree" "$O/norec" 2> "$O/err"
    check "directory without -r" bash -c "[ ! -e '$O/norec' ] && grep -q 'omitting directory' '$O/err'"

    # -n: an existing file stays
    echo keep > "$O/nc"
    check "-n exit 0" "$AFCP" -q -n "$S/one" "$O/nc"
    check "-n kept" [ "$(cat "$O/nc")" = keep ]

    # a destination symlink is never followed
    echo victim > "$O/victim"
    ln -s victim "$O/dlink"
    "$AFCP" -q "$S/one" "$O/dlink" 2> "$O/err"
    check "dest symlink: exit 1" [ $? -eq 1 ]
    check "dest symlink: message" grep -q "not writing through symlink" "$O/err"
    check "dest symlink: victim intact" [ "$(cat "$O/victim")" = victim ]
    check "dest symlink: still a link" [ -L "$O/dlink" ]
    check "-f replaces the link" "$AFCP" -q -f "$S/one" "$O/dlink"
    check "-f: a regular file now" bash -c "[ ! -L '$O/dlink' ] && cmp -s '$S/one' '$O/dlink'"
    check "-f: victim intact" [ "$(cat "$O/victim")" = victim ]
    ln -s victim "$O/dlink2"
    check "--inplace -f replaces the link" "$AFCP" -q -f --inplace "$S/one" "$O/dlink2"
    check "--inplace -f: victim intact" bash -c "[ ! -L '$O/dlink2' ] && [ \"\$(cat '$O/victim')\" = victim ]"
    # -r into a tree whose subdirectory is a symlink elsewhere: not followed
    mkdir -p "$O/rt/tree" "$O/elsewhere"
    ln -s ../../elsewhere "$O/rt/tree/a"
    "$AFCP" -q -r "$S/tree" "$O/rt" 2> /dev/null
    check "-r dest dir symlink: exit 1" [ $? -eq 1 ]
    check "-r dest dir symlink: nothing written through it" [ -z "$(ls -A "$O/elsewhere")" ]
    check "-r dest dir symlink: the rest copied" cmp -s "$S/tree/p755" "$O/rt/tree/p755"
    # -f with --inplace: a read-only destination is removed and re-created (non-root only:
    # root may open it anyway)
    if [[ $(id -u) -ne 0 ]]; then
        echo ro > "$O/ro"; chmod 444 "$O/ro"
        "$AFCP" -q --inplace "$S/one" "$O/ro" 2> /dev/null
        check "--inplace read-only: exit 1" [ $? -eq 1 ]
        check "--inplace -f read-only" bash -c "'$AFCP' -q -f --inplace '$S/one' '$O/ro' && cmp -s '$S/one' '$O/ro'"
    fi

    # special files: a FIFO is recreated with -r (without it, it is read as cp reads it:
    # see test_afcp_fix.sh)
    mkfifo "$O/fifo_src"
    check "FIFO with -r" bash -c "'$AFCP' -q -r '$O/fifo_src' '$O/fifo_dst' && [ -p '$O/fifo_dst' ]"

    # an unreadable source file: exit 1, the rest copied, no partial file under its name; an
    # unreadable directory: made empty with its mode, as cp makes it
    mkdir -p "$O/ur/src/closed"
    echo a > "$O/ur/src/a"; echo secret > "$O/ur/src/locked"; echo c > "$O/ur/src/c"
    echo hidden > "$O/ur/src/closed/h"
    chmod 000 "$O/ur/src/locked" "$O/ur/src/closed"
    local runner=()
    if [[ $(id -u) -eq 0 ]]; then
        # root reads mode-000 files: run afcp as nobody instead (setpriv), with a destination
        # nobody may write; the test is skipped where that is impossible.
        if command -v setpriv > /dev/null; then
            runner=(setpriv --reuid=65534 --regid=65534 --clear-groups)
            chmod 755 "$T" "$O" "$O/ur"
            chmod -R a+rX "$O/ur/src"; chmod 000 "$O/ur/src/locked" "$O/ur/src/closed"
            mkdir "$O/ur/dst"; chmod 777 "$O/ur/dst"
        fi
    else
        runner=(env)
        mkdir "$O/ur/dst"
    fi
    if ((${#runner[@]})); then
        "${runner[@]}" "$AFCP" -q -r "$O/ur/src" "$O/ur/dst" 2> "$O/err"
        check "unreadable: exit 1" [ $? -eq 1 ]
        check "unreadable: message" grep -q "cannot open '$O/ur/src/locked' for reading: Permission denied" "$O/err"
        check "unreadable: rest copied" bash -c "cmp -s '$O/ur/src/a' '$O/ur/dst/src/a' && cmp -s '$O/ur/src/c' '$O/ur/dst/src/c'"
        check "unreadable: no partial file" bash -c "[ ! -e '$O/ur/dst/src/locked' ]"
        check "unreadable: no temporary files" no_temps "$O/ur/dst"
        check "unreadable directory: message" grep -q "cannot access '$O/ur/src/closed': Permission denied" "$O/err"
        check "unreadable directory: made, empty, mode 000 (as cp)" \
            bash -c "[ -d '$O/ur/dst/src/closed' ] && [ \"\$(stat -c %a '$O/ur/dst/src/closed')\" = 0 ]"
        chmod 755 "$O/ur/dst/src/closed" 2> /dev/null
    else
        echo "SKIP [${BACKEND:-auto}]: unreadable source (root without setpriv)" >&2
    fi
    chmod 755 "$O/ur/src/closed"

    # a directory into itself
    mkdir -p "$O/self/d"; echo x > "$O/self/d/x"
    "$AFCP" -q -r "$O/self/d" "$O/self/d/sub" 2> "$O/err"
    check "into itself: exit 1" [ $? -eq 1 ]
    check "into itself: message" grep -q "into itself" "$O/err"
    # the same with 100 directories made before the copy reaches its own (the set of made
    # directories grows past its first size); as cp, the entries before the copy's own in
    # cp's order (inode numbers) are copied, none after it
    mkdir -p "$O/self2/d"; for i in $(seq 1 100); do mkdir "$O/self2/d/s$i"; echo $i > "$O/self2/d/s$i/f"; done
    "$AFCP" -q -r "$O/self2/d" "$O/self2/d/zsub" 2> "$O/err"
    check "into itself, 100 dirs: exit 1" [ $? -eq 1 ]
    check "into itself, 100 dirs: message" grep -q "into itself" "$O/err"
    check "into itself, 100 dirs: those before its copy copied, none after" bash -c '
        z=$(stat -c %i "$1/zsub")
        for i in $(seq 1 100); do
            if [ "$(stat -c %i "$1/s$i")" -lt "$z" ]; then cmp -s "$1/s$i/f" "$1/zsub/s$i/f"
            else [ ! -e "$1/zsub/s$i" ]; fi || exit 1
        done' _ "$O/self2/d"
    check "into itself, 100 dirs: no copy of the copy" bash -c "[ ! -e '$O/self2/d/zsub/zsub' ]"

    # a symlink copied as one over the file it points to: refused, the file kept (replaced, it
    # would be a link to itself, its data gone), alone and in a tree of such links
    # (same_fixture makes it again for each case: a failed one must not spoil the next)
    local o
    for o in -P -d -a -r; do
        same_fixture "$O/same"
        "$AFCP" -q $o "$O/same/lnk" "$O/same/f" 2> "$O/err"
        check "$o link over its target: exit 1" [ $? -eq 1 ]
        check "$o link over its target: message" grep -qx "afcp: '$O/same/lnk' and '$O/same/f' are the same file" "$O/err"
        check "$o link over its target: the file kept" bash -c "[ ! -L '$O/same/f' ] && [ \"\$(cat '$O/same/f')\" = precious ]"
    done
    for o in -a -r; do
        same_fixture "$O/same"
        "$AFCP" -q $o "$O/same/src/." "$O/same/dst/" 2> "$O/err"
        check "$o tree of links over their targets: exit 1" [ $? -eq 1 ]
        check "$o tree of links over their targets: one message per file" [ "$(grep -c 'are the same file$' "$O/err")" -eq 3 ]
        check "$o tree of links over their targets: the files kept" \
            bash -c "for i in 1 2 3; do [ ! -L '$O/same/dst/f'\$i ] && [ \"\$(cat '$O/same/dst/f'\$i)\" = \"precious \$i\" ] || exit 1; done"
    done
    same_fixture "$O/same"
    "$AFCP" -q -f "$O/same/f" "$O/same/lnk" 2> "$O/err"
    check "-f file over a link to itself: exit 1" [ $? -eq 1 ]
    check "-f file over a link to itself: the link kept" [ "$(readlink "$O/same/lnk")" = f ]
    ln "$O/same/f" "$O/same/hard"
    check "-n file over a hard link to itself: exit 0, silent" \
        bash -c "'$AFCP' -q -n '$O/same/f' '$O/same/hard' 2> '$O/err' && [ ! -s '$O/err' ]"

    # durability: files are renamed into place only after their group's syncfs; a signal
    # mid-copy removes the temporaries (no partial file under any name). Once, under AUTO: it
    # writes a 512 MiB file.
    if [[ -z ${BACKEND} ]]; then
        truncate -s 512M "$T/sparse"
        mkdir "$O/sig"
        # afcp starts stopped (before exec) and runs in steps of a few ms, stopped between
        # them, until its temporary appears: the signal comes while the copy is under way.
        bash -c 'kill -STOP $$; exec "$@"' _ \
            "$AFCP" -q --no-copy-range --sparse=never --chunk-size 64K --chunk-jobs 1 "$T/sparse" "$O/sig/big" &
        local pid=$! i st
        for ((i = 0; i < 2000; i++)); do
            [[ -n $(find "$O/sig" -name '.afcp.*' 2> /dev/null) ]] && break
            kill -CONT "$pid" 2> /dev/null; sleep 0.002; kill -STOP "$pid" 2> /dev/null
        done
        kill -TERM "$pid" 2> /dev/null; kill -CONT "$pid" 2> /dev/null
        wait "$pid"; st=$?
        check "SIGTERM: came while the copy was under way" [ "$st" -ne 0 ]
        if ((st != 0)); then
            check "SIGTERM: died of it" [ "$st" -eq 143 ]
            check "SIGTERM: no temporary left" no_temps "$O/sig"
            check "SIGTERM: no partial file" [ ! -e "$O/sig/big" ]
        fi
        rm -f "$T/sparse"
    fi
    check "--help tells the durability rule" bash -c "'$AFCP' --help | grep -q 'a file takes its name only once its data is on disk'"

    # --help, --version, bad usage
    check "--help" bash -c "'$AFCP' --help | grep -q Usage"
    check "--version" bash -c "'$AFCP' --version | grep -q '^afcp '"
    "$AFCP" 2> /dev/null
    check "no operand: exit 1" [ $? -eq 1 ]
    check "-v prints" bash -c "'$AFCP' -v '$S/one' '$O/v1' | grep -qx \"'$S/one' -> '$O/v1'\""
    check "no temporary files at the end" no_temps "$O"
    rm -rf "$O"
}

run_backends "afcp"

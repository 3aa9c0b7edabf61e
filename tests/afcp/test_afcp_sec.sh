#!/usr/bin/env bash
# afcp and what it must never do: replace a device or FIFO at the destination, widen
# permissions through ACLs, drop an overwritten file's owner/mode/ACL, print a file name raw
# to the terminal. Also its messages against cp's (a source that shrinks, -v into a full
# stdout, -L/-H/-P, quotes in the C and C.UTF-8 locales), and what cp does as a user (the group kept by -a, a file written into
# where no new file may replace it, -f over a read-only file: as root, run as nobody). Runs the suite once per backend: AUTO (io_uring here), threads, sync.
# The cases that need root (device nodes, other owners) are skipped, saying so, as another
# user; ctest runs it both ways (as_user.sh).
# Usage: tests/afcp/test_afcp_sec.sh path/to/afcp
set -uo pipefail

. "$(dirname "$0")/lib.sh" afcp_sec "${1:-}"
root() { [[ $(id -u) -eq 0 ]]; }
acl_of() { getfacl -c -p "$1" 2> /dev/null; } # without the "# file" header

# Does the file system of $T keep POSIX ACLs? (tmpfs without CONFIG_TMPFS_POSIX_ACL, some
# FUSE and network file systems do not: the ACL cases are skipped there, saying so.)
HAVE_ACL=
if ! command -v setfacl > /dev/null; then
    ACL_WHY="setfacl not installed (Debian package acl)"
elif touch "$T/probe" && setfacl -m u:nobody:rwx "$T/probe" 2> /dev/null; then
    HAVE_ACL=1
else
    ACL_WHY="the file system of $T has no POSIX ACLs"
fi
rm -f "$T/probe"
NOBODY_GROUP=$(id -gn nobody 2> /dev/null)

# What cp does as a user other than root, done by cp and by afcp (run_as_user): as root the
# cases run as nobody (setpriv) with a second group (users, 100), so that the group can be
# kept, and another user's file is at hand for a sticky directory; as a user they run as the
# caller, with the groups it has. user_case.sh prints what is compared.
USER_AFCP=$AFCP USER_GROUP=
if root; then
    if command -v setpriv > /dev/null && [[ -n $NOBODY_GROUP ]]; then
        USER_GROUP=$(getent group users | cut -d: -f3); USER_GROUP=${USER_GROUP:-100}
        chmod 711 "$T"; install -m 755 "$AFCP" "$T/afcp.user"; USER_AFCP=$T/afcp.user
    else
        USER_AFCP= # no way to run as another user: skipped
    fi
else
    for g in $(id -G); do [[ $g != $(id -g) ]] && { USER_GROUP=$g; break; }; done
fi
cat > "$T/user_case.sh" <<'CASE'
# user_case.sh TOOL DIR GROUP [STICKY_FILE]: TOOL is cp or afcp; GROUP a group of the user's
# other than its primary one (or empty); STICKY_FILE another user's file it may write, in a
# sticky directory it may write (or empty).
tool=$1 g=$3 sticky=$4
umask 022; cd "$2" || exit 1
echo new > new; chmod 640 new
if [[ -n $g ]]; then # -a: the group and set-group-ID bit of what the user owns
    mkdir -p src/d; ln -s x src/l; mkfifo src/p; echo f > src/f
    chgrp -h "$g" src/d src/l src/p src/f; chmod 2750 src/d src/f; chmod 640 src/p
    "$tool" -a src a 2>&1; echo "-a: status $?"
    stat -c '%n %A %g' a/d a/l a/p a/f
fi
# overwriting a file the user may write, in a directory it may not write
mkdir ro; echo old > ro/f; chmod 555 ro
"$tool" new ro/f 2>&1; echo "read-only directory: status $?, $(cat ro/f), mode $(stat -c %a ro/f)"
ls -a ro; chmod 755 ro
# -f over the user's own read-only file: a new file, the source's mode (cp's open failed)
echo old > rof; chmod 444 rof
"$tool" -f new rof 2>&1; echo "-f over a read-only file: status $?, $(cat rof), mode $(stat -c %a rof)"
echo old > rw; chmod 664 rw
"$tool" -f new rw 2>&1; echo "-f over a writable file: status $?, $(cat rw), mode $(stat -c %a rw)"
if [[ -n $sticky ]]; then # another user's writable file in a sticky directory
    "$tool" new "$sticky" 2>&1; echo "sticky directory: status $?, $(cat "$sticky")"
    ls -a "${sticky%/*}"
fi
CASE
run_as_user() { # TOOL DIR STICKY_FILE
    if root; then
        chown nobody "$2"
        setpriv --reuid=nobody --regid="$NOBODY_GROUP" --groups="$USER_GROUP" \
            env HOME=/ bash "$T/user_case.sh" "$1" "$2" "$USER_GROUP" "$3"
    else
        bash "$T/user_case.sh" "$1" "$2" "$USER_GROUP" "$3"
    fi
}

run_suite() {
    local O=$T/out.${BACKEND:-auto}
    rm -rf "$O"; mkdir -p "$O"
    local src=$O/src big=$O/big
    echo "new data" > "$src"
    head -c 3000000 /dev/urandom > "$big"

    # ---- a device or FIFO at the destination is written into, never replaced ----
    if root; then
        mknod -m 600 "$O/null" c 1 3
        check "char device: copy succeeds" "$AFCP" -q "$src" "$O/null"
        check "char device: still the device" bash -c "[ -c '$O/null' ] && [ \$(stat -c %t,%T '$O/null') = 1,3 ]"
        check "char device -f --inplace: still the device" bash -c "'$AFCP' -q -f --inplace '$big' '$O/null' && [ -c '$O/null' ]"
        check "char device -p: still the device, its mode kept" bash -c "'$AFCP' -q -p '$src' '$O/null' && [ -c '$O/null' ] && [ \$(stat -c %a '$O/null') = 600 ]"
        mkdir -p "$O/dtree/t"; echo x > "$O/dtree/t/f"; mknod "$O/dtree/t/f2" c 1 3
        mkdir -p "$O/dtree/s"; echo x > "$O/dtree/s/f"; mkfifo "$O/dtree/s/f2"
        "$AFCP" -q -r "$O/dtree/s/." "$O/dtree/t" 2> "$O/err"
        check "-r special onto a device: exit 1" [ $? -eq 1 ]
        check "-r special onto a device: message" grep -q "cannot overwrite special file '.*/f2'" "$O/err"
        check "-r special onto a device: still the device" [ -c "$O/dtree/t/f2" ]
        # the same node over itself: a second -a run over a copy succeeds
        mknod "$O/dtree/s/null3" c 1 3; mkdir -p "$O/dtree/a"
        check "-a twice with a FIFO and a device: first run" "$AFCP" -q -a "$O/dtree/s/." "$O/dtree/a"
        check "-a twice with a FIFO and a device: second run" "$AFCP" -q -a "$O/dtree/s/." "$O/dtree/a"
        check "-a twice: still a FIFO and the device" bash -c "[ -p '$O/dtree/a/f2' ] && [ -c '$O/dtree/a/null3' ] && [ \$(stat -c %t,%T '$O/dtree/a/null3') = 1,3 ]"
        mknod "$O/dtree/a/other" c 1 5; mknod "$O/dtree/s/other" c 1 3
        "$AFCP" -q -r "$O/dtree/s/." "$O/dtree/a" 2> /dev/null
        check "-r a device over another device: exit 1" [ $? -eq 1 ]
        check "-r a device over another device: still the other" bash -c "[ \$(stat -c %t,%T '$O/dtree/a/other') = 1,5 ]"
        rm -f "$O/dtree/s/null3" "$O/dtree/s/other"
        ln -s x "$O/dtree/link"; mknod "$O/dtree/null2" c 1 3
        "$AFCP" -q -r "$O/dtree/link" "$O/dtree/null2" 2> /dev/null
        check "-r symlink onto a device: exit 1" [ $? -eq 1 ]
        check "-r symlink onto a device: still the device" [ -c "$O/dtree/null2" ]
        # a /dev/full-like node is written into, and the full device is reported
        mknod "$O/full" c 1 7
        "$AFCP" -q "$src" "$O/full" 2> "$O/err"
        check "full device: exit 1" [ $? -eq 1 ]
        check "full device: ENOSPC named" grep -q "error writing '$O/full': No space left on device" "$O/err"
        check "full device: still the device" [ -c "$O/full" ]
    else
        skip "device node destination (mknod needs root)"
    fi
    mkfifo "$O/fifo"
    timeout 60 cat "$O/fifo" > "$O/fifo.got" &
    local reader=$!
    timeout 60 "$AFCP" -q --chunk-size 64K "$big" "$O/fifo"
    check "FIFO: copy succeeds" [ $? -eq 0 ]
    wait "$reader"
    check "FIFO: the reader got the data" cmp -s "$big" "$O/fifo.got"
    check "FIFO: still a FIFO" [ -p "$O/fifo" ]
    check "FIFO: no temporary files" bash -c "[ -z \"\$(find '$O' -name '.afcp.*')\" ]"
    if command -v python3 > /dev/null; then
        python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$O/sock"
        "$AFCP" -q "$src" "$O/sock" 2> "$O/err"
        check "socket: exit 1" [ $? -eq 1 ]
        check "socket: cp's message" grep -qx "afcp: cannot create regular file '$O/sock': No such device or address" "$O/err"
        check "socket: still a socket" [ -S "$O/sock" ]
        # -f: replaced by the copy, as cp -f replaces it
        check "socket -f: copied" "$AFCP" -q -f "$src" "$O/sock"
        check "socket -f: a regular file with the data" cmp -s "$src" "$O/sock"
    fi

    # ---- a file the user may not write is not replaced without -f (cp's open would fail) ----
    if ! root; then
        echo old > "$O/ro"; chmod 444 "$O/ro"
        "$AFCP" -q "$src" "$O/ro" 2> "$O/err"
        check "read-only destination: exit 1" [ $? -eq 1 ]
        check "read-only destination: message" grep -q "cannot create regular file '$O/ro': Permission denied" "$O/err"
        check "read-only destination: kept" bash -c "[ \"\$(cat '$O/ro')\" = old ]"
        check "read-only destination -f: replaced" bash -c "'$AFCP' -q -f '$src' '$O/ro' && cmp -s '$src' '$O/ro'"
    fi

    # ---- ACLs: -p copies them; without -p the group gets no more than its own entry ----
    if [[ -n $HAVE_ACL ]]; then
        install -m 600 /dev/null "$O/acl"; echo secret > "$O/acl"
        setfacl -m u:nobody:rwx "$O/acl" # mode shows 0670: the group bits are the mask
        check "ACL: -p copy" "$AFCP" -q -p "$O/acl" "$O/acl.p"
        check "ACL: -p keeps the ACL" [ "$(acl_of "$O/acl.p")" = "$(acl_of "$O/acl")" ]
        check "ACL: -p mode" [ "$(mode "$O/acl.p")" = "$(mode "$O/acl")" ]
        check "ACL: copy without -p" "$AFCP" -q "$O/acl" "$O/acl.n"
        check "ACL: without -p the group gets what its entry had" [ "$(mode "$O/acl.n")" = 600 ]
        check "ACL: without -p no named entry" bash -c "! getfacl -c '$O/acl.n' 2>/dev/null | grep -q '^user:nobody'"
        mkdir -p "$O/adir/sub"; echo f > "$O/adir/sub/f"
        setfacl -m u:nobody:rx -d -m u:nobody:rx "$O/adir/sub"
        check "ACL: -a tree" "$AFCP" -q -a "$O/adir" "$O/adir.a"
        check "ACL: -a keeps a directory's access ACL" [ "$(acl_of "$O/adir.a/sub")" = "$(acl_of "$O/adir/sub")" ]
        check "ACL: -a keeps a directory's default ACL" [ "$(getfacl -c -d "$O/adir.a/sub" 2>/dev/null)" = "$(getfacl -c -d "$O/adir/sub" 2>/dev/null)" ]
        # -p from a file without an ACL into a directory with a default ACL: none, as the source
        mkdir "$O/inh"; setfacl -d -m u:nobody:rwx "$O/inh"
        check "ACL: -p of a file without ACL" "$AFCP" -q -p "$src" "$O/inh/plain"
        check "ACL: -p of a file without ACL has none" bash -c "! getfacl -c '$O/inh/plain' 2>/dev/null | grep -q '^user:nobody'"
        check "ACL: -p of a file without ACL: mode" [ "$(mode "$O/inh/plain")" = "$(mode "$src")" ]
    else
        skip "ACL cases: $ACL_WHY"
    fi

    # ---- overwriting: a new inode with the old file's owner, group, mode and ACL ----
    echo old > "$O/ow"; chmod 600 "$O/ow"
    check "overwrite: copy" "$AFCP" -q "$src" "$O/ow"
    check "overwrite: new data" cmp -s "$src" "$O/ow"
    check "overwrite: the old mode stays" [ "$(mode "$O/ow")" = 600 ]
    echo old > "$O/ow.p"; chmod 600 "$O/ow.p"
    check "overwrite -p: the source's mode" bash -c "'$AFCP' -q -p '$src' '$O/ow.p' && [ \$(stat -c %a '$O/ow.p') = \$(stat -c %a '$src') ]"
    echo old > "$O/ow.l"; ln "$O/ow.l" "$O/ow.l2"
    check "overwrite: hard link copy" "$AFCP" -q "$src" "$O/ow.l"
    check "overwrite: the other hard link keeps the old data" [ "$(cat "$O/ow.l2")" = old ]
    check "--help tells what happens to hard links" bash -c "'$AFCP' --help | grep -q 'other hard links of the old file keep the'"
    if [[ -n $HAVE_ACL ]]; then
        echo old > "$O/ow.a"; chmod 640 "$O/ow.a"; setfacl -m u:nobody:r "$O/ow.a"
        local before; before=$(acl_of "$O/ow.a")
        check "overwrite: ACL file copy" "$AFCP" -q "$src" "$O/ow.a"
        check "overwrite: the old ACL stays" [ "$(acl_of "$O/ow.a")" = "$before" ]
    fi
    if root && [[ -n $NOBODY_GROUP ]]; then
        echo old > "$O/ow.u"; chown nobody:"$NOBODY_GROUP" "$O/ow.u"; chmod 600 "$O/ow.u"
        check "overwrite as root: copy" "$AFCP" -q "$src" "$O/ow.u"
        check "overwrite as root: owner, group and mode stay" [ "$(stat -c %U:%G:%a "$O/ow.u")" = "nobody:$NOBODY_GROUP:600" ]
        echo old > "$O/ow.up"; chown nobody:"$NOBODY_GROUP" "$O/ow.up"
        check "overwrite -p as root: the source's owner" bash -c "'$AFCP' -q -p '$src' '$O/ow.up' && [ \$(stat -c %u '$O/ow.up') = \$(stat -c %u '$src') ]"
    else
        skip "overwriting another user's file (needs root)"
    fi

    # ---- as a user, as cp (user_case.sh): -a keeps the group and set-group-ID bit of a
    # directory, symlink, FIFO and file; a writable file is written into where no new file
    # may replace it; -f makes a new file only over a file the user may not write ----
    if [[ -n $USER_AFCP ]]; then
        local t sticky out
        for t in cp afcp; do
            mkdir -p "$O/user.$t"; chmod 755 "$O"
            sticky=
            if root; then # root's file, writable by all, in a sticky directory
                mkdir -m 1777 "$O/user.$t.sticky"; echo old > "$O/user.$t.sticky/g"
                chmod 666 "$O/user.$t.sticky/g"; sticky=$O/user.$t.sticky/g
            fi
            [[ $t == cp ]] && run_as_user cp "$O/user.$t" "$sticky" > "$O/user.$t.out"
            [[ $t == afcp ]] && run_as_user "$USER_AFCP" "$O/user.$t" "$sticky" > "$O/user.$t.out"
        done
        check "as a user: as cp ($(tr '\n' ';' < "$O/user.cp.out"))" \
            diff <(sed 's/^cp:/X:/; s/user\.cp/U/g' "$O/user.cp.out") \
                 <(sed "s/^afcp\(\.user\)\{0,1\}:/X:/; s/user\.afcp/U/g" "$O/user.afcp.out")
        [[ -n $USER_GROUP ]] || skip "-a as a user: the user is in no group but its primary one"
        root || skip "overwriting another user's file in a sticky directory (needs root)"
    else
        skip "as a user: no setpriv or no user nobody to run as"
    fi

    # ---- names in messages and -v: quoted as cp quotes them ----
    mkdir -p "$O/q/src" "$O/q/a" "$O/q/c"
    local names=($'\e]0;pwned\a\e[2J'x $'new\nline' "it's" "a'b\$" "a b" $'tab\there' 'é ü' $'del\x7f' $'bad\xff' "back\\slash" 'plain')
    local n
    for n in "${names[@]}"; do
        echo x > "$O/q/src/$n"
        (cd "$O/q/src" && cp -v -- "$n" ../a/) > "$O/q/cp.out" 2> /dev/null
        rm -f "$O/q/a/"*
        (cd "$O/q/src" && "$AFCP" -q -v -- "$n" ../a/) > "$O/q/afcp.out" 2> /dev/null
        rm -f "$O/q/a/"*
        check "-v quotes $(printf %q "$n") as cp" cmp -s "$O/q/afcp.out" "$O/q/cp.out"
        "$AFCP" -q "$O/q/src/$n.missing" "$O/q/a" 2>&1 | sed 's/^afcp:/cp:/' > "$O/q/afcp.err"
        cp "$O/q/src/$n.missing" "$O/q/c" 2> "$O/q/cp.err"
        check "messages quote $(printf %q "$n") as cp" cmp -s "$O/q/afcp.err" "$O/q/cp.err"
    done
    for n in "${names[@]}"; do mkdir -p "$O/q/dd/src/$n"; done
    "$AFCP" -q -r "$O/q/src" "$O/q/dd" 2> "$O/q/err"
    check "one message per name" [ "$(wc -l < "$O/q/err")" -eq ${#names[@]} ]
    check "no raw escape byte in messages" bash -c "! grep -q \$'\\e' '$O/q/err'"
    (cd "$O/q/src" && "$AFCP" -v -- $'\e]0;pwned\a\e[2J'x "it's" "a'b\$" ../a/) > "$O/q/out"
    check "quoted: escape sequence" grep -qxF "''\$'\\033'']0;pwned'\$'\\a\\033''[2Jx' -> '../a/'\$'\\033'']0;pwned'\$'\\a\\033''[2Jx'" "$O/q/out"
    check "quoted: a single quote alone" grep -qxF "\"it's\" -> \"../a/it's\"" "$O/q/out"
    check "quoted: a single quote and a dollar" grep -qxF "'a'\\''b\$' -> '../a/a'\\''b\$'" "$O/q/out"

    # ---- quotes per locale: cp quotes names (-v's lines, messages about files) the same in
    # every locale, its complaint about an option's argument between the locale's quotes
    # (U+2018 and U+2019 in a UTF-8 locale, with C escapes); it takes a word abbreviated
    # and refuses one that starts several ("ambiguous argument")
    local loc arg charmap
    for loc in C C.UTF-8; do
        charmap=ANSI_X3.4-1968; [[ $loc == *UTF-8 ]] && charmap=UTF-8
        if [[ $(LC_ALL=$loc locale charmap 2> /dev/null) != "$charmap" ]]; then
            skip "quotes in the locale $loc: not installed"
            continue
        fi
        for arg in --sparse=x --reflink=a --preserve=q --preserve= --no-preserve=mode,x \
                   "--sparse=it's" $'--sparse=a\nb' '--sparse=\303\251' '--sparse=a\b' \
                   $'--sparse=\303\251' --sparse=al --preserve=t,m --reflink=n; do
            rm -f "$O/lq.c" "$O/lq.a"
            LC_ALL=$loc cp "$arg" "$src" "$O/lq.c" > "$O/lq.c.out" 2>&1; echo "status $?" >> "$O/lq.c.out"
            LC_ALL=$loc "$AFCP" -q "$arg" "$src" "$O/lq.a" > "$O/lq.a.out" 2>&1
            echo "status $?" >> "$O/lq.a.out"
            check "$loc $(printf %q "$arg"): as cp ($(head -1 "$O/lq.c.out"))" \
                diff <(sed 's/cp/X/g' "$O/lq.c.out") <(sed 's/afcp/X/g' "$O/lq.a.out")
        done
        for n in 'é ü' "it's" $'new\nline' $'bad\xff' "é'x"; do
            echo x > "$O/q/src/$n"
            (cd "$O/q/src" && LC_ALL=$loc cp -v -- "$n" "$n.missing" ../a/ > ../cp.out 2>&1; echo "status $?" >> ../cp.out)
            rm -f "$O/q/a/"*
            (cd "$O/q/src" && LC_ALL=$loc "$AFCP" -q -v -- "$n" "$n.missing" ../a/ > ../afcp.out 2>&1
             echo "status $?" >> ../afcp.out)
            rm -f "$O/q/a/"*
            check "$loc $(printf %q "$n"): -v's line and the message as cp" \
                diff <(sed 's/^cp:/X:/' "$O/q/cp.out") <(sed 's/^afcp:/X:/' "$O/q/afcp.out")
        done
    done

    # ---- messages ----
    "$AFCP" -v "$src" "$O/v.full" > /dev/full 2> "$O/err"
    check "-v to a full stdout: exit 1" [ $? -eq 1 ]
    check "-v to a full stdout: write error" grep -q "^afcp: write error" "$O/err"
    # -L, -H, -P as cp
    mkdir -p "$O/lk/dir/in"; echo t > "$O/lk/dir/in/t"; echo f > "$O/lk/file"
    ln -s ../file "$O/lk/dir/flink"; ln -s in "$O/lk/dir/dlink"; ln -s dir "$O/lk/top"
    check "-L accepted" "$AFCP" -q -rL "$O/lk/top" "$O/lk/L"
    check "-L: no symlink left" bash -c "[ -z \"\$(find '$O/lk/L' -type l)\" ] && [ -f '$O/lk/L/flink' ] && [ -f '$O/lk/L/dlink/t' ]"
    cp -rL "$O/lk/top" "$O/lk/L.cp"
    check "-L == cp -rL" diff -r "$O/lk/L.cp" "$O/lk/L"
    check "-H accepted" "$AFCP" -q -rH "$O/lk/top" "$O/lk/H"
    check "-H: the operand followed, the rest kept" bash -c "[ -d '$O/lk/H' ] && [ ! -L '$O/lk/H' ] && [ -L '$O/lk/H/flink' ] && [ -L '$O/lk/H/dlink' ]"
    check "-P without -r: the link itself" bash -c "'$AFCP' -q -P '$O/lk/top' '$O/lk/P' && [ \"\$(readlink '$O/lk/P')\" = dir ]"
    ln -s .. "$O/lk/dir/in/loop"
    timeout 60 "$AFCP" -q -rL "$O/lk/dir" "$O/lk/loop.out" 2> "$O/err"
    check "-L with a loop: exit 1" [ $? -eq 1 ]
    check "-L with a loop: said so" grep -q "cyclic symbolic link" "$O/err"
    rm -f "$O/lk/dir/in/loop"

    # a source that shrinks under copy_file_range: named as the source, "file shrank". The
    # copy is stopped once its temporary exists, the source cut, and the copy resumed; a try
    # where the copy was already done does not count.
    if [[ -z ${BACKEND} ]]; then
        local tries st done_try=
        for ((tries = 0; tries < 5 && !done_try; tries++)); do
            head -c $((256 << 20)) /dev/zero | tr '\0' x > "$O/shrink"
            rm -rf "$O/sh"; mkdir "$O/sh"
            "$AFCP" -q --copy-range-min 1M "$O/shrink" "$O/sh/out" 2> "$O/err" &
            local pid=$! i
            for ((i = 0; i < 200000; i++)); do
                [[ -n $(compgen -G "$O/sh/.afcp.*") ]] && break
                kill -0 "$pid" 2> /dev/null || break
            done
            kill -STOP "$pid" 2> /dev/null
            truncate -s 1M "$O/shrink"
            kill -CONT "$pid" 2> /dev/null
            wait "$pid"; st=$?
            ((st == 1)) && done_try=1
        done
        if [[ -n $done_try ]]; then
            check "shrank: names the source" grep -qx "afcp: error reading '$O/shrink': file shrank during the copy" "$O/err"
            check "shrank: no partial file" [ ! -e "$O/sh/out" ]
        else
            skip "shrinking source: the copy was done before the source could be cut"
        fi
        rm -f "$O/shrink"
    fi
    rm -rf "$O"
}

run_backends "afcp security"

#!/usr/bin/env bash
# afcp against GNU cp on the same input, for what makes a cp replacement: sparse files (the
# blocks allocated), hard links (inode equality within the copy), extended attributes and
# ACLs (getfattr/getfacl output), zeros in a sparse file (--sparse=auto), symlinks under
# -L/-H/-P, -u, -i, -t, -T, -x (a tmpfs mounted in the source, as root), --reflink (an empty file too),
# cp's words for a file target, a dangling symlink and a socket at the destination,
# --fsync's directory sync (strace), a destination that fills up (a small tmpfs, as root),
# SIGINT on both paths (cached inline, batched), --help, -v's lines in cp's order, a
# directory copied into itself; what cp prints, stdout and stderr in one file, and what it
# leaves (vs_cases): a failing copy's line and error, "removed" lines, operands ending in
# "..", symlinks into the destination under -L; as a user (nobody, when run as root): a
# directory it may not search, FIFOs (and another user's files) with set-ID and sticky bits,
# another user's file and directory whose times cannot be kept. Runs on AUTO (io_uring here;
# the messages and exit codes are afcp's own code on every backend: test_afcp.sh and
# test_afcp_fix.sh run the others, AFCP_TEST_BACKENDS="auto threads" asks for more here, at
# twice the time); each case on both of afcp's paths where they differ (AFCP_TEST_PATH=batch
# forces the batched one).
# Usage: tests/afcp/test_afcp_cp.sh path/to/afcp
set -uo pipefail

. "$(dirname "$0")/lib.sh" afcp_cp "${1:-}"
command -v cp > /dev/null && cp --version 2>/dev/null | grep -q GNU ||
    { echo "SKIP: GNU cp is needed to compare with" >&2; exit 0; }
is_root=0; [[ $(id -u) -eq 0 ]] && is_root=1

# The same listing for two trees: type, mode, size, link count, symlink target, and which
# names share an inode (numbered in order of appearance, so that two copies compare).
# Fields: 1 name, 2 type, 3 mode, 4 size, 5 links, 6 inode (renumbered), 7 symlink target.
listing() { # dir
    (cd "$1" && find . -mindepth 1 -printf '%P|%y|%m|%s|%n|%i|%l\n' | LC_ALL=C sort |
        awk -F'|' -v OFS=' ' '{ if (!($6 in id)) id[$6] = ++n; $6 = "ino" id[$6]; print }')
}
xattrs() { (cd "$1" && getfattr -R -d -m - --absolute-names . 2>/dev/null | grep -v '^security\.selinux'); }
acls() { (cd "$1" && getfacl -R -p . 2>/dev/null); }

# ---- fixtures (shared by every backend's run) ----
S=$T/src
mkdir -p "$S/tree/d1/d2" "$S/tree/other"
echo one > "$S/tree/f1"
head -c 100000 /dev/urandom > "$S/tree/d1/big"
ln "$S/tree/f1" "$S/tree/d1/f1.link"          # three names of one inode
ln "$S/tree/f1" "$S/tree/d1/d2/f1.link2"
echo two > "$S/tree/other/f2"
ln "$S/tree/other/f2" "$S/tree/f2.link"        # two names
ln -s f1 "$S/tree/sym"                         # a symlink (stays one under -P)
ln -s d1 "$S/tree/dsym"                        # to a directory
# a 64 MiB sparse file with two data extents
truncate -s 64M "$S/tree/sparse"
head -c 65536 /dev/urandom | dd of="$S/tree/sparse" bs=1M seek=10 conv=notrunc status=none
head -c 4096 /dev/urandom | dd of="$S/tree/sparse" bs=4096 seek=$((16384 - 1)) conv=notrunc status=none
sparse_ok=1; [[ $(stat -c %b "$S/tree/sparse") -lt 2048 ]] || sparse_ok=0
# a sparse file with zeros written out in its data (cp's default --sparse=auto makes holes
# of them, as the source has holes)
mkdir -p "$S/zeros"
(head -c 1M /dev/urandom; head -c 2M /dev/zero; head -c 4096 /dev/urandom) > "$S/zeros/f"
truncate -s 8M "$S/zeros/f"
xattr_ok=1
setfattr -n user.color -v blue "$S/tree/f1" 2>/dev/null &&
    setfattr -n user.empty "$S/tree/other/f2" &&
    setfattr -n user.dir -v 'a directory' "$S/tree/d1" || xattr_ok=0
acl_ok=1
setfacl -m u:nobody:rw "$S/tree/d1/big" 2>/dev/null && setfacl -d -m u:nobody:rx "$S/tree/d1/d2" ||
    acl_ok=0
# symlink operands
mkdir "$S/op"; echo target > "$S/op/file"; ln -s file "$S/op/flink"; ln -s ../tree "$S/op/tlink"
# modes for --no-preserve=mode (cp's defaults less the umask, not the source's modes)
mkdir -p "$S/modes/private" "$S/modes/sticky"
echo x > "$S/modes/f750"; echo y > "$S/modes/private/f600"; mkfifo "$S/modes/fifo"
chmod 750 "$S/modes/f750"; chmod 600 "$S/modes/private/f600"; chmod 640 "$S/modes/fifo"
chmod 700 "$S/modes/private"; chmod 1777 "$S/modes/sticky"
# set-ID bits under --preserve=mode without ownership (cp keeps them; as root, owned by another)
mkdir -p "$S/setid/d"; echo s > "$S/setid/f"
chmod 6755 "$S/setid/f"; chmod 2775 "$S/setid/d"
((is_root)) && chown nobody "$S/setid/f" "$S/setid/d" 2> /dev/null
# for -v: directories, files, symlinks and FIFOs, and a large file first in cp's order (the
# lowest inode) that ends after the others
mkdir -p "$S/vtree"; head -c 8M /dev/urandom > "$S/vtree/big"
for d in 1 2 3; do
    mkdir -p "$S/vtree/d$d/sub"; echo s > "$S/vtree/d$d/sub/s"
    for i in $(seq 1 30); do echo "$i" > "$S/vtree/d$d/f$i"; done
    ln -s f1 "$S/vtree/d$d/l"; mkfifo "$S/vtree/d$d/p"
done
# what cp makes of it (the references)
R=$T/ref
mkdir "$R"
cp -r --preserve=mode "$S/setid" "$R/setid"
for u in 022 077; do
    (umask $u; cp -r --no-preserve=mode "$S/modes" "$R/nm$u"; cp -a --no-preserve=mode "$S/modes" "$R/anm$u")
done
cp -a "$S/tree" "$R/a"
cp -r "$S/tree" "$R/r"
cp "$S/zeros/f" "$R/zeros"
cp -r --preserve=xattr "$S/tree" "$R/x"
for m in L H P; do cp -r -$m "$S/op/tlink" "$R/op$m"; cp -$m "$S/op/flink" "$R/f$m"; done

# cp and afcp on two copies of one fixture: the function named by $2 makes it in an empty
# directory (per tool: c for cp, a for afcp), and the shell command $3 runs there, TOOL
# standing for cp or afcp and $as for the user it runs as (nobody when the suite runs as
# root: see vs_cases). Compared: what it prints, stdout and stderr in one file in the order
# they were written, as on a terminal (-v's line before the error of its entry, "removed"
# where cp removes a destination), with the program's name and the two directories
# written alike; its status; what it leaves. A command whose output depends on the order
# of a directory's entries (inode numbers) reads them from $VS/shared, one tree for both.
vs_cp() { # tag fixture command
    local tag=$1 fixture=$2 cmd=$3 t tool
    for t in c a; do
        rm -rf "${VS:?}/$t"; mkdir -p "$VS/$t"; chmod 777 "$VS/$t"
        (cd "$VS/$t" && $fixture)
        tool=cp; [[ $t == a ]] && tool=$VS_AFCP
        (cd "$VS/$t" && eval "${cmd//TOOL/$tool}") > "$VS/$t.out" 2>&1
        echo "status $?" >> "$VS/$t.out"
    done
    check "$tag '$cmd': prints as cp ($(head -c 160 "$VS/c.out" | tr '\n' ';'))" \
        diff <(sed "s|^cp:|X:|; s|? cp: |? X: |g; s|'cp --help'|'X --help'|; s|$VS/c|R|g" "$VS/c.out") \
             <(sed "s|^afcp:|X:|; s|? afcp: |? X: |g; s|'afcp --help'|'X --help'|; s|$VS/a|R|g" "$VS/a.out")
    check "$tag '$cmd': leaves what cp leaves" diff <(listing "$VS/c") <(listing "$VS/a")
}

# The fixtures of vs_cases (each makes its files in the current directory). A directory with
# more than one entry is read from $VS/shared, made once for both (see vs_cp).
vs_file() { echo data > f; chmod 644 f; mkdir ro; chmod 555 ro; echo secret > locked
            chmod 000 locked; echo old > x; chmod 444 x; }
vs_over() { echo data > f; ln -s f sl; mkfifo p; echo old > x; echo old2 > y; ln y y2
            mkdir -p d/s; echo o > d/s/l; echo o > d/s/p; echo o > d/s/f; }
vs_sock() { echo data > f; python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("x")'; }
vs_dots() { mkdir -p a/b w/x; echo 1 > a/f; echo 2 > file; }
vs_loop() { mkdir src; ln -s ../dst src/link; }
vs_loop_in() { mkdir src dst; ln -s ../dst src/link; }
vs_loop_sub() { mkdir -p sub dst; echo f > sub/f; ln -s dst/sub link; }
vs_loop_file() { mkdir src dst; echo data > data; ln -s ../dst/data src/zlink; }
vs_named() { mkdir d; ln -s d L; }
vs_links() { mkdir src; ln -s target src/sym; ln src/sym src/sym2; mkfifo src/fifo
             ln src/fifo src/fifo2; echo data > src/file; ln -s file src/link; mkdir o; }
vs_ulinks() { mkdir -p src dst; echo aaaa > src/a; ln src/a src/b; touch -d 2020-01-01 src/a
              echo newr > dst/a; echo newr > dst/c; ln src/a src/c; }
vs_setid() { echo new > a; for m in 4755 2755 6755 2745; do echo old > "b$m"; done
             if ((is_root)); then chown "nobody:$(id -gn nobody)" b*; fi # (a chown clears them)
             for m in 4755 2755 6755 2745; do chmod "$m" "b$m"; done; }
vs_merge() { mkdir -p a/d b/d d2/d; for i in $(seq 40); do echo "from a, a longer line $i" > "a/d/f$i"
             echo "b$i" > "b/d/f$i"; done; }
vs_ask() { echo data > f; echo old > x; mkdir -p s/sub d/s/sub; echo 2 > s/sub/g
           echo old > d/s/sub/g; echo ro > ro; chmod 4444 ro; }
vs_target() { mkdir -p a/s d; echo 1 > f; echo 2 > a/s/g; echo 3 > a/h; }
vs_relinks() { mkdir -p src/sub; echo hl > src/a; ln src/a src/b; ln src/a src/sub/c
               cp -a src dst; }
vs_elinks() { mkdir s; : > s/e; ln s/e s/e2; echo x > s/f; ln s/f s/f2; mkdir t; }
vs_ndir() { mkdir -p s/d1 s/d2 o; echo x > s/d1/x; echo x > s/d2/x; echo old > o/d1
            ln -s nowhere o/d2; echo old > of; }
vs_lfail() { mkdir -p s/a s/b o/a; echo data > s/a/f; ln s/a/f s/b/f2; ln s/a/f s/b/f3
             if ((is_root)); then chown -R "nobody:$(id -gn nobody)" s o; fi; chmod 555 o/a; }
vs_jc() { mkdir -p a/y b d1 d2; echo f > a/f; echo g > b/f; echo y > a/y/f; echo old > d2/f
          touch -d 2020-01-01 a/f; touch -d 2021-01-01 d2/f; touch -d 2022-01-01 b/f; }
vs_update() { echo new > f; touch -d 2022-01-01 f; mkdir -p d/f s; touch -d 2030-01-01 d/f
              cp -p f s/f; echo t > tn; touch -d 2030-01-01 tn; ln -s tn ln_new
              touch -h -d 2000-01-01 ln_new; ln -s nowhere ln_dang; touch -h -d 2030-01-01 ln_dang; }

# Where cp's output and result were not afcp's: -v's line of a copy that fails (before its
# error), "removed" where cp removes a destination, an operand ending in "..", a symlink
# into the destination under -L (cp copies the copy made so far, level after level, until
# a name reaches PATH_MAX), one that leads back to an ancestor, a directory met again under
# another name.
vs_cases() { # dir tag
    local VS=$1/vs tag=$2 VS_AFCP=$AFCP as= cmd f
    mkdir -p "$VS"
    if ((is_root)); then
        if command -v setpriv > /dev/null && id nobody > /dev/null 2>&1; then
            as="setpriv --reuid=nobody --regid=$(id -gn nobody) --clear-groups"
            chmod 711 "$T" "$1"; chmod 755 "$VS"
            install -m 755 "$AFCP" "$T/afcp.vs"; VS_AFCP=$T/afcp.vs
        else
            skip "$tag cp's output as a user: no setpriv or no user nobody"
        fi
    fi
    # the shared sources: files, one that cannot be read, a directory that cannot be read;
    # a symlink and a FIFO; a directory with a subdirectory; a symlink to an ancestor
    rm -rf "$VS/shared"; mkdir -p "$VS/shared/t/sub" "$VS/shared/t/closed" "$VS/shared/s" \
        "$VS/shared/a/b" "$VS/shared/up/in"
    for f in a b c d e; do echo "$f" > "$VS/shared/t/$f"; done
    echo s > "$VS/shared/t/sub/s"; echo z > "$VS/shared/t/closed/z"
    ln -s f "$VS/shared/s/l"; mkfifo "$VS/shared/s/p"
    echo 1 > "$VS/shared/a/f"; echo x > "$VS/shared/up/x"; ln -s .. "$VS/shared/up/in/loop"
    chmod -R a+rX "$VS/shared"
    chmod 000 "$VS/shared/t/c" "$VS/shared/t/closed"
    if [[ -n $as ]] || ((!is_root)); then
        for cmd in '$as TOOL -v locked y' '$as TOOL -v f ro/y' '$as TOOL -v f x' \
                   '$as TOOL -vf f x' "\$as TOOL -rv $VS/shared/t out"; do
            vs_cp "$tag" vs_file "$cmd"
        done
        # a user's own set-ID file overwritten: cp's write clears the bits, as the kernel does
        for cmd in '$as TOOL a b4755' '$as TOOL a b2755' '$as TOOL a b6755' '$as TOOL a b2745'; do
            vs_cp "$tag" vs_setid "$cmd"
        done
    fi
    for cmd in 'TOOL -vr sl x' 'TOOL -vr p x' 'TOOL -vrH p x' 'TOOL -vrL p x' \
               'TOOL -va f y' 'TOOL -v --preserve=links f y' 'TOOL -vd sl y' \
               "TOOL -vr $VS/shared/s/. d/s" "TOOL -vrH $VS/shared/s/. d/s"; do
        vs_cp "$tag" vs_over "$cmd"
    done
    if command -v python3 > /dev/null; then
        vs_cp "$tag" vs_sock 'TOOL -v f x'
        vs_cp "$tag" vs_sock 'TOOL -vf f x'
    fi
    for cmd in "TOOL -rv $VS/shared/a/b/.. x" "mkdir x; TOOL -rv $VS/shared/a/b/.. x" \
               "TOOL -rv $VS/shared/a/b/../ y; TOOL -rv $VS/shared/a/b/..// z" \
               "mkdir x; cd $VS/shared/a/b && TOOL -rv .. \$OLDPWD/x" \
               "mkdir x; TOOL -v $VS/shared/a/b/.. x" 'TOOL -rv a/b x/..' \
               'mkdir -p x/y; TOOL -rv a/b x/y/..' 'mkdir x; TOOL -v a/f x/..' \
               'TOOL -rv a/b nodir/sub; TOOL -v a/f nodir/g; TOOL -v a/f file/g' \
               'TOOL -rv a/b file/..; TOOL -v a/f nodir/..; TOOL a nodir/x' \
               "TOOL -rv $VS/shared/a z/; TOOL -rv $VS/shared/a/ z2//" \
               "mkdir z3; TOOL -rv $VS/shared/a/ z3//" 'TOOL -rv w/x/.. w/x'; do
        vs_cp "$tag" vs_dots "$cmd"
    done
    vs_cp "$tag" vs_loop 'TOOL -rLv src dst'
    vs_cp "$tag" vs_loop_in 'TOOL -rLv src dst'
    vs_cp "$tag" vs_loop_sub 'TOOL -rLv sub link dst'
    vs_cp "$tag" vs_loop_file 'TOOL -rLv data src dst'
    vs_cp "$tag" vs_dots "TOOL -rLv $VS/shared/up out"
    for cmd in 'TOOL -rv d L/sub' 'TOOL -rv L/ L/sub' 'TOOL -rHv L L/sub'; do
        vs_cp "$tag" vs_named "$cmd"
    done
    # --preserve=links: hard-linked symlinks and FIFOs; a file and a symlink to it, both
    # copied while links are followed (-L, -H for operands, cp's default without -r). No
    # -v: its lines follow the order of a directory's entries, which differs between the
    # two fixtures.
    for cmd in 'TOOL -a src dst' 'TOOL -r --preserve=links src dst' 'TOOL -aL src dst' \
               'TOOL -L --preserve=links src/file src/link o' 'TOOL -aH src/file src/link o' \
               'TOOL --preserve=links src/file src/link o' 'TOOL -aH src dst'; do
        vs_cp "$tag" vs_links "$cmd"
    done
    # operands of one name: "just-created" is what an earlier operand made, judged after
    # -n, -u and the same file (an earlier operand skipped, or failed, made nothing)
    for cmd in 'TOOL a/f b/f d1' 'TOOL -n a/f b/f d1' 'TOOL -u a/f b/f d1' \
               'TOOL -u a/f b/f d2' 'TOOL a/y/f a/f a/y'; do
        vs_cp "$tag" vs_jc "$cmd"
    done
    # hard links between empty files, in a tree and as two operands
    for cmd in 'TOOL -a s o' 'TOOL --preserve=links s/e s/e2 t'; do
        vs_cp "$tag" vs_elinks "$cmd"
    done
    # -n and a directory whose destination name is a file or a symlink
    for cmd in 'TOOL -rn s/. o' 'TOOL -rn s of' 'TOOL -rnT s of'; do
        vs_cp "$tag" vs_ndir "$cmd"
    done
    # the first name of an inode cannot be copied (its directory is read-only): the others
    # still share one copy
    # (not against cp's output: which name is copied first, and which one's error shows,
    # depends on the order the directories are walked in, which afcp's threads do not keep)
    if [[ -n $as ]] || ((!is_root)); then
        rm -rf "$VS/lfail"; mkdir "$VS/lfail"; chmod 777 "$VS/lfail"
        (cd "$VS/lfail" && vs_lfail && $as "$VS_AFCP" -a s/. o > /dev/null 2>&1)
        check "$tag -a, the first name's copy failing: the other names share one copy" \
            test "$(stat -c %h "$VS/lfail/o/b/f2" "$VS/lfail/o/b/f3" | tr '\n' ' ')" = "2 2 "
    fi
    # -u: a newer directory in a file's way, a symlink to a newer file, a dangling one
    for cmd in 'TOOL -uv f d' 'TOOL -ruv s/. d' 'TOOL -uv f ln_new' 'TOOL -uv f ln_dang'; do
        vs_cp "$tag" vs_update "$cmd"
    done
    # -u and --preserve=links: a destination left in place is its inode's copy for cp (the
    # other names link to it, or it becomes a link to the one copied first)
    vs_cp "$tag" vs_ulinks 'TOOL -au src/. dst'
    # -t DIR and -T, their misuse (-v only where no directory's entry order shows: the
    # fixture is made apart for each tool)
    for cmd in 'TOOL -t nope f' 'TOOL -t f f' 'TOOL -T f d' 'TOOL -T f d x' 'TOOL -t d -T f' \
               'TOOL -t d -t a f' 'TOOL -t d' 'TOOL -rT a d' 'TOOL -t d f a' 'TOOL -rt d f a' \
               'TOOL -T f newf' 'TOOL -rT a d/new' 'TOOL --target-directory=d f' \
               'TOOL -rT a f' 'TOOL -T a d' 'TOOL -rT a/ d/' 'TOOL --no-target-directory f d' \
               'TOOL -vt d f'; do
        vs_cp "$tag" vs_target "$cmd"
    done
    # -i: cp's questions, the answers taken from stdin, and the last of -i and -n (with -n
    # nothing reads stdin: no pipe into it, whose writer could die of SIGPIPE or not)
    for cmd in 'echo n | TOOL -i f x' 'echo y | TOOL -vi f x' 'TOOL -i f x < /dev/null' \
               'yes n | TOOL -ri s/sub d/s' 'yes | TOOL -vri s/sub d/s' 'TOOL -in f x < /dev/null' \
               'echo y | TOOL -ni f x' 'echo y | TOOL -iT f d' 'yes | TOOL -ri s/sub x' \
               'echo yes | TOOL -i f ro' 'echo n | TOOL -if f ro' 'echo Y | TOOL -ia f d/s/sub/g' \
               'TOOL -nf f x < /dev/null' 'TOOL -n -f -r s/sub d/s < /dev/null'; do
        vs_cp "$tag" vs_ask "$cmd"
    done
    # two operands' directories merged in the destination: the later one's files win, or
    # with -n the earlier one's stay
    for cmd in 'TOOL -r a/d b/d .' 'TOOL -r a/d b/d d2' 'TOOL -rn a/d b/d .' 'TOOL -rn a/d b/d d2'; do
        vs_cp "$tag" vs_merge "$cmd"
    done
    # again over a copy that has the links already: nothing to do, nothing left behind
    vs_cp "$tag" vs_relinks 'TOOL -au src/. dst; TOOL -au src/. dst'
    chmod -R u+rwx "$VS" 2> /dev/null
    rm -rf "$VS"
}

run_path() { # label; run with AFCP_TEST_PATH=$path
    local O=$1 p=$2 st
    local tag="[${p:-measured}]"
    rm -rf "$O"; mkdir -p "$O"
    export AFCP_TEST_PATH=$p

    # -a: hard links, sparse files, xattrs, ACLs, symlinks as cp -a
    "$AFCP" -q -a "$S/tree" "$O/a"; st=$?
    check "$tag -a: exit 0 (status $st)" [ "$st" -eq 0 ]
    check "$tag -a: same names, types, modes, sizes, links, inode sharing as cp -a" \
        diff <(listing "$R/a") <(listing "$O/a")
    check "$tag -a: f1 and its links are one inode" \
        [ "$(stat -c %i "$O/a/f1")" = "$(stat -c %i "$O/a/d1/d2/f1.link2")" ]
    check "$tag -a: bytes" diff -r --no-dereference "$R/a" "$O/a"
    if ((sparse_ok)); then
        check "$tag -a: sparse file keeps its holes ($(stat -c %b "$O/a/sparse") blocks, cp -a $(stat -c %b "$R/a/sparse"))" \
            [ "$(stat -c %b "$O/a/sparse")" -le "$(stat -c %b "$R/a/sparse")" ]
    else skip "the file system does not keep holes"; fi
    if ((xattr_ok)); then
        check "$tag -a: extended attributes as cp -a" diff <(xattrs "$R/a") <(xattrs "$O/a")
        check "$tag -a: user.color copied" bash -c "getfattr --absolute-names -n user.color --only-values '$O/a/f1' | grep -qx blue"
    else skip "no user xattrs here"; fi
    if ((acl_ok)); then
        check "$tag -a: ACLs as cp -a" diff <(acls "$R/a") <(acls "$O/a")
    else skip "no ACLs here"; fi
    check "$tag -a: mtimes as cp -a" bash -c "[ \"\$(stat -c %Y '$R/a/d1/big')\" = \"\$(stat -c %Y '$O/a/d1/big')\" ]"

    # -r: no links kept, no xattrs (as cp -r)
    "$AFCP" -q -r "$S/tree" "$O/r"
    check "$tag -r: names, types, links as cp -r" diff <(listing "$R/r" | cut -d' ' -f1,2,4,5,7) <(listing "$O/r" | cut -d' ' -f1,2,4,5,7)
    check "$tag -r: hard links become files, as cp -r" \
        [ "$(stat -c %i "$O/r/f1")" != "$(stat -c %i "$O/r/d1/f1.link")" ]
    if ((xattr_ok)); then
        check "$tag -r: no xattrs, as cp -r" diff <(xattrs "$R/r") <(xattrs "$O/r")
        "$AFCP" -q -r --preserve=xattr "$S/tree" "$O/x"
        check "$tag --preserve=xattr: as cp" diff <(xattrs "$R/x") <(xattrs "$O/x")
    fi
    if ((sparse_ok)); then
        check "$tag -r: sparse file stays sparse" [ "$(stat -c %b "$O/r/sparse")" -le "$(stat -c %b "$R/r/sparse")" ]
    fi
    if ((sparse_ok)); then
        "$AFCP" -q "$S/zeros/f" "$O/zeros"
        check "$tag zeros in a sparse file: holes as cp's (--sparse=auto: $(stat -c %b "$O/zeros") blocks, cp $(stat -c %b "$R/zeros"))" \
            [ "$(stat -c %b "$O/zeros")" -le "$(stat -c %b "$R/zeros")" ]
        check "$tag zeros in a sparse file: bytes" cmp -s "$S/zeros/f" "$O/zeros"
    fi
    "$AFCP" -q -r --preserve=links "$S/tree" "$O/l"
    check "$tag --preserve=links: inode sharing as cp -a" \
        diff <(listing "$R/a" | cut -d' ' -f1,2,5,6) <(listing "$O/l" | cut -d' ' -f1,2,5,6)
    # a second -a over the first: links are put back, nothing else changes
    "$AFCP" -q -a "$S/tree/." "$O/a"; st=$?
    check "$tag -a over itself: exit 0" [ "$st" -eq 0 ]
    check "$tag -a over itself: as cp -a" diff <(listing "$R/a") <(listing "$O/a")
    check "$tag -a over itself: no temporary" no_temps "$O/a"

    # --no-preserve=mode: cp's default modes, under two umasks, with -r and -a
    local u
    for u in 022 077; do
        (umask $u; "$AFCP" -q -r --no-preserve=mode "$S/modes" "$O/nm$u"
         "$AFCP" -q -a --no-preserve=mode "$S/modes" "$O/anm$u")
        check "$tag -r --no-preserve=mode, umask $u: modes as cp" \
            diff <(listing "$R/nm$u" | cut -d' ' -f1-3) <(listing "$O/nm$u" | cut -d' ' -f1-3)
        check "$tag -a --no-preserve=mode, umask $u: modes as cp" \
            diff <(listing "$R/anm$u" | cut -d' ' -f1-3) <(listing "$O/anm$u" | cut -d' ' -f1-3)
    done
    (umask 022; "$AFCP" -q --no-preserve=mode "$S/modes/f750" "$O/nm.f")
    check "$tag --no-preserve=mode on a file: 644 under umask 022" [ "$(stat -c %a "$O/nm.f")" = 644 ]

    "$AFCP" -q -r --preserve=mode "$S/setid" "$O/setid"
    check "$tag --preserve=mode: set-ID bits as cp ($(stat -c %a "$O/setid/f"), $(stat -c %a "$O/setid/d"))" \
        diff <(listing "$R/setid" | cut -d' ' -f1-3) <(listing "$O/setid" | cut -d' ' -f1-3)

    # two operands of one name into a directory: the second file is refused (both would be
    # in flight, the last renamed winning), the same file twice is copied once, two
    # directories merge; messages and status as cp's
    mkdir -p "$O/two/x" "$O/two/y" "$O/two/D" "$O/two/R" "$O/two/x/d" "$O/two/y/d"
    echo FIRST > "$O/two/x/f"; head -c 3000000 /dev/urandom > "$O/two/y/f"
    echo a > "$O/two/x/d/a"; echo b > "$O/two/y/d/b"
    local case
    for case in "x/f y/f" "x/f x/f" "x/d y/d" "x/f y/d x/d"; do
        rm -rf "$O/two/D"/* "$O/two/R"/*
        (cd "$O/two" && cp -r $case R 2> ../cp.err; echo $? >> ../cp.err
         "$AFCP" -r $case D 2> ../afcp.err; echo $? >> ../afcp.err)
        check "$tag operands '$case' into a directory: as cp (messages, status)" \
            diff <(sed 's/^cp: //; s/R/X/g' "$O/cp.err") <(sed 's/^afcp: //; s/D/X/g' "$O/afcp.err")
        check "$tag operands '$case' into a directory: same result as cp" diff -r "$O/two/R" "$O/two/D"
    done

    # the source and the destination the same file: cp refuses ("are the same file", status
    # 1) and leaves it. A symlink copied as one over the file it points to (alone, or in a
    # "link farm" of links to the destination's files) would leave a link to itself, the
    # file's data gone; a file over a link to itself likewise, -f or not. -n leaves it
    # silently (status 0); two names of one symlink too. A trailing slash on a file or on a
    # link to one is "Not a directory", nothing copied. An operand "dir/." under -H or -L is
    # no cyclic link. Also cp's words for a directory over a file, a missing target of
    # several sources and a source named twice. Messages sorted: the files of a tree come in
    # the order of their inodes.
    local args t
    while IFS= read -r args; do
        for t in c a; do
            rm -rf "$O/same.$t"; mkdir -p "$O/same.$t/src" "$O/same.$t/dst" "$O/same.$t/d"
            (cd "$O/same.$t" && echo hello > f && ln f hard && ln -s f lnk && ln -P lnk hlnk &&
                for n in 1 2 3; do echo "precious $n" > dst/f$n; ln -s ../dst/f$n src/f$n; done)
        done
        # shellcheck disable=SC2086
        (cd "$O/same.c" && cp $args 2> ../same.c.err; echo "status $?" >> ../same.c.err
         cd "$O/same.a" && "$AFCP" -q $args 2> ../same.a.err; echo "status $?" >> ../same.a.err)
        check "$tag same file, '$args': as cp (messages, status)" \
            diff <(sed 's/^cp: //' "$O/same.c.err" | LC_ALL=C sort) <(sed 's/^afcp: //' "$O/same.a.err" | LC_ALL=C sort)
        check "$tag same file, '$args': same result as cp" \
            diff <(listing "$O/same.c") <(listing "$O/same.a")
        check "$tag same file, '$args': same contents as cp" diff -r --no-dereference "$O/same.c" "$O/same.a"
    done <<'EOF'
-P lnk f
-d lnk f
-a lnk f
-r lnk f
-P src/f1 dst/f1
-a src/. dst/
-r src/. dst/
-rH src/. dst/
-rL src/. dst/
f lnk
-f f lnk
f hard
-n f hard
-rn f hard
-P lnk hlnk
-r d/. d
f/ x
lnk/ x
-r lnk/ x
-rH d/. x
-rL src/. x
-r d f
f hard nosuch
-r d d dst
f f dst
EOF

    # symlinks: -L, -H, -P, for a directory operand (with -r) and a file operand
    local m
    for m in L H P; do
        "$AFCP" -q -r -$m "$S/op/tlink" "$O/op$m"
        if [[ -L $R/op$m ]]; then
            check "$tag -r -$m on a symlink to a tree: a symlink, as cp" \
                [ "$(readlink "$R/op$m")" = "$(readlink "$O/op$m")" ]
        else
            check "$tag -r -$m on a symlink to a tree: as cp" diff <(listing "$R/op$m") <(listing "$O/op$m")
        fi
        "$AFCP" -q -$m "$S/op/flink" "$O/f$m"
        check "$tag -$m on a symlink to a file: as cp" \
            [ "$(stat -c '%F %s' "$R/f$m")" = "$(stat -c '%F %s' "$O/f$m")" ]
    done

    # -u: an older source leaves the destination; a newer one replaces it
    echo new > "$O/u.src"; echo old > "$O/u.dst"; echo old > "$O/u.ref"
    touch -d '2001-01-01' "$O/u.src"
    "$AFCP" -q -u "$O/u.src" "$O/u.dst"; cp -u "$O/u.src" "$O/u.ref"
    check "$tag -u, older source: kept, as cp -u" [ "$(cat "$O/u.dst")" = "$(cat "$O/u.ref")" ]
    check "$tag -u, older source: kept" [ "$(cat "$O/u.dst")" = old ]
    touch -d '2031-01-01' "$O/u.src"
    "$AFCP" -q -u "$O/u.src" "$O/u.dst"; cp -u "$O/u.src" "$O/u.ref"
    check "$tag -u, newer source: copied, as cp -u" [ "$(cat "$O/u.dst")" = "$(cat "$O/u.ref")" ]
    check "$tag -u, newer source: copied" [ "$(cat "$O/u.dst")" = new ]
    mkdir -p "$O/ut"; echo keep > "$O/ut/f1"; touch -d '2031-01-01' "$O/ut/f1"
    "$AFCP" -q -r -u "$S/tree/." "$O/ut"
    check "$tag -r -u: a newer file in the tree stays" [ "$(cat "$O/ut/f1")" = keep ]
    check "$tag -r -u: the missing ones come" cmp -s "$S/tree/d1/big" "$O/ut/d1/big"

    # --reflink: auto copies wherever; always fails where the file system cannot clone,
    # with cp's message and status
    "$AFCP" -q --reflink=auto "$S/tree/d1/big" "$O/ra"
    check "$tag --reflink=auto: copied" cmp -s "$S/tree/d1/big" "$O/ra"
    if ! cp --reflink=always "$S/tree/d1/big" "$O/rref" 2> "$O/rref.err"; then
        "$AFCP" -q --reflink=always "$S/tree/d1/big" "$O/rb" 2> "$O/rb.err"; st=$?
        check "$tag --reflink=always without clones: status 1, as cp" [ "$st" -eq 1 ]
        check "$tag --reflink=always without clones: cp's message" \
            diff <(sed 's/^cp:/X:/; s/rref/F/' "$O/rref.err") <(sed 's/^afcp:/X:/; s/rb/F/' "$O/rb.err")
        check "$tag --reflink=always without clones: no file, no temporary" \
            bash -c "[ ! -e '$O/rb' ] && [ -z \"\$(find '$O' -maxdepth 1 -name '.afcp.*')\" ]"
    else
        "$AFCP" -q --reflink=always "$S/tree/d1/big" "$O/rb"
        check "$tag --reflink=always: cloned, as cp" cmp -s "$S/tree/d1/big" "$O/rb"
    fi
    # an empty file too: cp asks for the clone of every file
    : > "$O/empty"
    cp --reflink=always "$O/empty" "$O/re.cp" 2> "$O/re.cp.err"; local cst=$?
    "$AFCP" -q --reflink=always "$O/empty" "$O/re.a" 2> "$O/re.a.err"; st=$?
    check "$tag --reflink=always, an empty file: status $st as cp's ($cst)" [ "$st" -eq "$cst" ]
    check "$tag --reflink=always, an empty file: cp's message" \
        diff <(sed 's/^cp:/X:/; s/re\.cp/F/' "$O/re.cp.err") <(sed 's/^afcp:/X:/; s/re\.a/F/' "$O/re.a.err")

    # cp's words: a last operand that is a file, a dangling symlink at the destination
    # (refused with -f too, as cp refuses it), a file onto a socket
    local what
    for t in c a; do
        rm -rf "$O/msg.$t"; mkdir -p "$O/msg.$t/w"
        (cd "$O/msg.$t" && echo a > a && echo b > b && echo f > file && ln -s nowhere w/dl &&
            { ! command -v python3 > /dev/null ||
              python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' x; })
    done
    local whats=("a b file" "a w/dl" "-f a w/dl" "-r a w/dl")
    if [[ -S $O/msg.a/x ]]; then whats+=("a x"); else skip "a file onto a socket: no python3 to make one"; fi
    for what in "${whats[@]}"; do
        # shellcheck disable=SC2086
        (cd "$O/msg.c" && cp $what 2> ../msg.c.err; echo "status $?" >> ../msg.c.err
         cd "$O/msg.a" && "$AFCP" -q $what 2> ../msg.a.err; echo "status $?" >> ../msg.a.err)
        check "$tag '$what': cp's message and status ($(head -1 "$O/msg.c.err"))" \
            diff <(sed 's/^cp: //' "$O/msg.c.err") <(sed 's/^afcp: //' "$O/msg.a.err")
        check "$tag '$what': the same result as cp" \
            diff <(listing "$O/msg.c" | cut -d' ' -f1,2,4,7) <(listing "$O/msg.a" | cut -d' ' -f1,2,4,7)
    done

    # -v: cp's lines, in cp's order (a directory before its entries, the entries of each
    # directory in the order cp copies them), whichever scheduler copied what and when
    local th vo
    for vo in -rv -av; do
        for th in 1 3; do
            rm -rf "$O/v.cp" "$O/v.afcp"
            cp $vo "$S/vtree" "$O/v.cp" > "$O/v.cp.out"
            "$AFCP" -q --threads=$th $vo "$S/vtree" "$O/v.afcp" > "$O/v.afcp.out"
            check "$tag $vo, $th threads: cp's lines in cp's order ($(wc -l < "$O/v.cp.out"))" \
                diff <(sed "s|'$O/v\.cp|'D|" "$O/v.cp.out") \
                     <(sed "s|'$O/v\.afcp|'D|" "$O/v.afcp.out")
        done
    done
    rm -rf "$O/v.cp" "$O/v.afcp"

    # a directory copied into itself: named as cp names it (the operand as written and its
    # copy, not the entries one level down), status 1. What is copied follows the order of
    # the entries (inode numbers): cp stops at the entry that goes into itself, in its
    # directory and every one above. Where the new copy lands in a directory with other
    # entries, its place among them is the file system's choice, different in the two trees
    # (a freed inode is taken again): those results are not compared. In a/b/c, empty, it
    # is the only entry, and a/z, made after a/b, comes after it (when the inode numbers
    # say so in both trees): cp does not copy it.
    local order
    for args in "a a/b" "a a/b/c/" "a/ a/b/c/d" "a/. a/b" "a ./a/x/"; do
        order=
        for t in c a; do
            rm -rf "$O/self.$t"; mkdir -p "$O/self.$t/a/b/c"; echo z > "$O/self.$t/a/z"
            # a/z after a/b, in inode order (usually: a freed inode taken again may change it)
            (($(stat -c %i "$O/self.$t/a/b") < $(stat -c %i "$O/self.$t/a/z"))) && order+=$t
        done
        # shellcheck disable=SC2086
        (cd "$O/self.c" && cp -r $args 2> ../self.c.err; echo "status $?" >> ../self.c.err
         cd "$O/self.a" && "$AFCP" -q -r $args 2> ../self.a.err; echo "status $?" >> ../self.a.err)
        check "$tag into itself, '$args': cp's message and status ($(head -1 "$O/self.c.err"))" \
            diff <(sed 's/^cp: //' "$O/self.c.err") <(sed 's/^afcp: //' "$O/self.a.err")
        case $args/$order in
        *a/b/c/*/ca)
            check "$tag into itself, '$args': the same result as cp" \
                diff <(listing "$O/self.c") <(listing "$O/self.a") ;;
        esac
    done

    # into itself through a symlink: a link to the source as the destination, and one inside
    # the source; cp opens a target directory, links followed ("la/a" is a name in a). What
    # is copied before the stop depends on inode order (see above): not compared.
    local setup
    for setup in "ln -s a la:a la" "ln -s a la:a/ la/" "ln -s b a/lb:a a/lb"; do
        args=${setup#*:}
        for t in c a; do
            rm -rf "$O/sl.$t"; mkdir -p "$O/sl.$t/a/b"; echo x > "$O/sl.$t/a/x"
            (cd "$O/sl.$t" && ${setup%%:*})
        done
        # shellcheck disable=SC2086
        (cd "$O/sl.c" && cp -r $args 2> ../sl.c.err; echo "status $?" >> ../sl.c.err
         cd "$O/sl.a" && "$AFCP" -q -r $args 2> ../sl.a.err; echo "status $?" >> ../sl.a.err)
        check "$tag into itself through a link, '$args': cp's message and status" \
            diff <(sed 's/^cp: //' "$O/sl.c.err") <(sed 's/^afcp: //' "$O/sl.a.err")
    done

    # a word an option does not take: cp's words, quoted as cp quotes them in the locale
    # the suite runs in (test_afcp_sec.sh tries C and C.UTF-8)
    "$AFCP" -q --reflink=sometimes a b 2> "$O/rf.err"; st=$?
    cp --reflink=sometimes a b 2> "$O/rf.cp.err"
    check "$tag --reflink=sometimes: refused with status 1" [ "$st" -eq 1 ]
    check "$tag --reflink=sometimes: says why, as cp" \
        diff <(sed 's/cp/X/g' "$O/rf.cp.err") <(sed 's/afcp/X/g' "$O/rf.err")
    "$AFCP" -q --preserve=colour a b 2> "$O/pf.err"; st=$?
    cp --preserve=colour a b 2> "$O/pf.cp.err"
    check "$tag --preserve=colour: refused with status 1" [ "$st" -eq 1 ]
    check "$tag --preserve=colour: says why, as cp" \
        diff <(sed 's/cp/X/g' "$O/pf.cp.err") <(sed 's/afcp/X/g' "$O/pf.err")

    vs_cases "$O" "$tag"
}

run_suite() {
    local O=$T/out.${BACKEND:-auto} st
    run_path "$O.m" ""
    run_path "$O.b" batch
    rm -rf "$O.m" "$O.b"
    mkdir -p "$O"
    unset AFCP_TEST_PATH

    # --fsync: each destination directory is fsynced after the last rename into it
    # (the sync backend makes every call a plain system call, which strace sees).
    if [[ ${BACKEND:-} == sync ]] && command -v strace > /dev/null; then
        strace -f -y -o "$O/trace" -e trace=renameat,renameat2,fsync "$AFCP" -q -r --fsync \
            "$S/tree/d1" "$O/fs" 2> /dev/null
        local last_rename dir_sync
        last_rename=$(grep -n "rename.*$O/fs/d2>" "$O/trace" | tail -1 | cut -d: -f1)
        dir_sync=$(grep -n "fsync([0-9]*<$O/fs/d2>)" "$O/trace" | tail -1 | cut -d: -f1)
        check "--fsync: the directory is fsynced after its renames (rename at line ${last_rename:-none}, fsync at ${dir_sync:-none})" \
            [ -n "$last_rename" ] && [ -n "$dir_sync" ] && [ "$dir_sync" -gt "$last_rename" ]
        dir_sync=$(grep -c "fsync([0-9]*<$O/fs>)" "$O/trace")
        check "--fsync: the top directory is fsynced" [ "$dir_sync" -ge 1 ]
        check "--fsync: copied" diff -r "$S/tree/d1" "$O/fs"
    fi

    # SIGINT in the middle of a tree, on both paths: no temporary survives
    local p n
    mkdir -p "$O/t200"
    for n in $(seq 1 200); do head -c $((n * 1000)) /dev/urandom > "$O/t200/f$n"; done
    for p in "" batch; do
        for n in 1 37 120; do
            # (env resets SIGINT: a shell running this in the background ignores it, and
            # afcp keeps a signal ignored at its start ignored)
            AFCP_TEST_PATH=$p AFCP_TEST_SIGNAL=INT:$n env --default-signal=INT \
                "$AFCP" -q -r "$O/t200" "$O/sig" 2> /dev/null
            st=$?
            check "SIGINT after $n creates [${p:-measured}]: died of it (status $st)" [ "$st" -eq 130 ]
            check "SIGINT after $n creates [${p:-measured}]: no temporary left" no_temps "$O/sig"
            check "SIGINT after $n creates [${p:-measured}]: no partial file under its name" \
                complete_only "$O/t200" "$O/sig"
            rm -rf "$O/sig"
        done
    done

    # every scheduler busy (--threads=4 on 2 CPUs): SIGINT at several points still leaves
    # no temporary and nothing partial under its name, on both paths
    for p in "" batch; do
        for n in 5 60 150; do
            AFCP_TEST_PATH=$p AFCP_TEST_SIGNAL=INT:$n env --default-signal=INT \
                "$AFCP" -q --threads=4 -r "$O/t200" "$O/sig" 2> /dev/null
            st=$?
            check "4 threads, SIGINT after $n creates [${p:-measured}]: died of it (status $st)" [ "$st" -eq 130 ]
            check "4 threads, SIGINT after $n creates [${p:-measured}]: no temporary left" no_temps "$O/sig"
            check "4 threads, SIGINT after $n creates [${p:-measured}]: no partial file under its name" \
                complete_only "$O/t200" "$O/sig"
            rm -rf "$O/sig"
        done
    done

    # the work spreads: a flat directory, and a tree of small directories, are copied by
    # more than one scheduler (AFCP_TEST_STATS prints each one's count of entries). The
    # walker's own scheduler copies only while the others are behind, which a quiet machine
    # may never see: with 3 schedulers the two others take the batches in turn, so at least
    # two copy whatever the machine's load.
    local spread
    mkdir -p "$O/flat" "$O/small"
    (cd "$O/flat" && seq 1 4000 | split -l 1 -a 4 - f)
    for n in $(seq 1 100); do mkdir "$O/small/d$n"; for f in a b c d e f g h; do echo "$n$f" > "$O/small/d$n/$f"; done; done
    for p in "" batch; do
        for src in flat small; do
            AFCP_TEST_PATH=$p AFCP_TEST_STATS=1 "$AFCP" -q --threads=3 -r "$O/$src" "$O/spread" 2> "$O/stats"
            spread=$(grep -c 'scheduler [0-9]*: [1-9][0-9]* entries' "$O/stats")
            check "$src over 3 threads [${p:-measured}]: two or more copy ($(grep -o 'scheduler [0-9]*: [0-9]* entries' "$O/stats" | tr '\n' ' '))" \
                [ "$spread" -ge 2 ]
            check "$src over 3 threads [${p:-measured}]: copied" diff -r "$O/$src" "$O/spread"
            rm -rf "$O/spread"
        done
    done

    # --help lists every option
    local opt
    for opt in -r -p -a -d -L -H -P -u -x -n -f -v -q -i -t -T --preserve --no-preserve \
               --reflink --sparse --fsync --one-file-system --update --dereference \
               --no-dereference --archive --recursive --inplace --direct --threads \
               --interactive --target-directory --no-target-directory; do
        check "--help lists $opt" bash -c "'$AFCP' --help | grep -q -- '$opt\\b'"
    done
    # and what it refuses
    for opt in --copy-contents --parents --attributes-only --remove-destination; do
        "$AFCP" -q "$opt" a b 2> /dev/null
        check "$opt is refused" [ $? -eq 1 ]
        check "--help lists $opt as not supported" bash -c \
            "'$AFCP' --help | sed -n '/^Not supported/,/^\$/p' | grep -q -- '$opt\\b'"
    done
}

# As root: what needs a mount (done once, not per backend).
mount_suite() {
    local O=$T/mnt st
    mkdir -p "$O"
    # -x: a tmpfs mounted inside the source is made, empty, as cp -x makes it
    mkdir -p "$O/src/sub" "$O/src/mnt"; echo a > "$O/src/sub/f"
    if mount -t tmpfs -o size=4m afcp_test "$O/src/mnt" 2> /dev/null; then
        echo b > "$O/src/mnt/g"; mkdir "$O/src/mnt/d"
        cp -rx "$O/src" "$O/ref"
        for p in "" batch; do
            AFCP_TEST_PATH=$p "$AFCP" -q -rx "$O/src" "$O/x$p"
            check "-x [${p:-measured}]: as cp -x" diff <(listing "$O/ref") <(listing "$O/x$p")
            check "-x [${p:-measured}]: nothing from the other file system" [ ! -e "$O/x$p/mnt/g" ]
            AFCP_TEST_PATH=$p "$AFCP" -q -r "$O/src" "$O/all$p"
            check "without -x [${p:-measured}]: the mount's files too" [ -e "$O/all$p/mnt/g" ]
        done
        umount "$O/src/mnt"
    else
        skip "-x: cannot mount a tmpfs here"
    fi
    # a destination that fills up: every failure reported with ENOSPC, nothing partial under
    # a final name, no temporary left
    mkdir -p "$O/full" "$O/fsrc"
    for n in $(seq 1 40); do head -c 200000 /dev/urandom > "$O/fsrc/f$n"; done
    if mount -t tmpfs -o size=2m afcp_full "$O/full" 2> /dev/null; then
        local pt threads fdst
        # (and with every scheduler busy: --threads=4 on 2 CPUs; and into a directory afcp
        # makes, whose files are written under their own names)
        for pt in ":" "batch:" ":--threads=4" "batch:--threads=4" "made:--threads=4" \
                  "made,batch:--threads=4"; do
            p=${pt%%:*} threads=${pt#*:} fdst=$O/full/c
            [[ $p == made* ]] && { p=${p#made}; p=${p#,}; fdst=$O/full/c/new; threads="$threads (new dir)"; }
            mkdir "$O/full/c"
            AFCP_TEST_PATH=$p "$AFCP" -q ${threads% (new dir)} -r "$O/fsrc/." "$fdst" 2> "$O/full.err"; st=$?
            check "full disk [${p:-measured}${threads:+ $threads}]: status 1" [ "$st" -eq 1 ]
            check "full disk [${p:-measured}${threads:+ $threads}]: ENOSPC reported per file" \
                bash -c "[ \$(grep -c 'No space left on device' '$O/full.err') -ge 20 ]"
            check "full disk [${p:-measured}${threads:+ $threads}]: only ENOSPC" \
                bash -c "! grep -v 'No space left on device' '$O/full.err'"
            local partial=0 f
            for f in "$fdst"/*; do
                [[ -e $f ]] || continue
                cmp -s "$f" "$O/fsrc/${f##*/}" || partial=$((partial + 1))
            done
            check "full disk [${p:-measured}${threads:+ $threads}]: nothing partial under a final name ($partial)" [ "$partial" -eq 0 ]
            check "full disk [${p:-measured}${threads:+ $threads}]: some files complete" bash -c "ls '$fdst' | grep -q ."
            check "full disk [${p:-measured}${threads:+ $threads}]: no temporary left" no_temps "$O/full"
            rm -rf "$O/full/c"
        done
        umount "$O/full"
        # copy_file_range failing (source and copy on the one file system; a file too big
        # for the inline path): cp's words
        mount -t tmpfs -o size=20m afcp_full "$O/full"
        head -c 12000000 /dev/urandom > "$O/full/big"
        "$AFCP" -q --copy-range-min=1 "$O/full/big" "$O/full/big2" 2> "$O/full.err"; st=$?
        check "full disk, copy_file_range: status 1" [ "$st" -eq 1 ]
        check "full disk, copy_file_range: cp's message" \
            grep -q "error copying '$O/full/big' to '$O/full/big2': No space left on device" "$O/full.err"
        check "full disk, copy_file_range: nothing under the final name" [ ! -e "$O/full/big2" ]
        check "full disk, copy_file_range: no temporary left" no_temps "$O/full"
        umount "$O/full"
    else
        skip "full disk: cannot mount a small tmpfs here"
    fi
    # an ACL the destination cannot hold (ramfs has no extended attributes): cp's message,
    # its quotes those of the locale (gnulib's quote())
    mkdir -p "$O/ram" "$O/aclsrc"
    echo a > "$O/aclsrc/f"
    if setfacl -m u:nobody:rw "$O/aclsrc/f" 2> /dev/null &&
       mount -t ramfs afcp_ram "$O/ram" 2> /dev/null; then
        local loc
        for loc in C C.UTF-8; do
            LC_ALL=$loc cp -a "$O/aclsrc/f" "$O/ram/c" 2> "$O/ram.cp"; echo "status $?" >> "$O/ram.cp"
            LC_ALL=$loc "$AFCP" -a "$O/aclsrc/f" "$O/ram/a" 2> "$O/ram.afcp"
            echo "status $?" >> "$O/ram.afcp"
            check "an ACL a ramfs cannot hold ($loc): cp's message" \
                diff <(sed "s|^cp:|X:|; s|$O/ram/c|D|" "$O/ram.cp") \
                     <(sed "s|^afcp:|X:|; s|$O/ram/a|D|" "$O/ram.afcp")
        done
        umount "$O/ram"
    else
        skip "ACL on ramfs: no setfacl, or cannot mount a ramfs here"
    fi
    # a file-size limit (ulimit -f): the file past it is reported (EFBIG) and left out, the
    # others copied, no temporary left (SIGXFSZ killed afcp mid-copy before)
    mkdir -p "$O/fz/src"
    for n in $(seq 1 20); do head -c 20000 /dev/urandom > "$O/fz/src/f$n"; done
    head -c 3000000 /dev/urandom > "$O/fz/src/big"
    for pt in ":" "batch:" "made:" "made,batch:"; do
        p=${pt%%:*} fdst=$O/fz/c
        [[ $p == made* ]] && { p=${p#made}; p=${p#,}; fdst=$O/fz/c/new; }
        mkdir "$O/fz/c"
        (ulimit -f 1024; AFCP_TEST_PATH=$p exec "$AFCP" -q -r "$O/fz/src/." "$fdst") 2> "$O/fz.err"; st=$?
        local what="file-size limit [${p:-measured}${fdst##*/c}]"
        check "$what: status 1 ($st)" [ "$st" -eq 1 ]
        check "$what: EFBIG reported" grep -q "File too large" "$O/fz.err"
        check "$what: the small files copied" bash -c "for n in \$(seq 1 20); do cmp -s '$O/fz/src/f'\$n '$fdst/f'\$n || exit 1; done"
        check "$what: no partial file under its name" [ ! -e "$fdst/big" ]
        check "$what: no temporary left" no_temps "$O/fz/c"
        rm -rf "$O/fz/c"
    done
    # a low descriptor limit (ulimit -n 40): every file copied, as cp copies them (afcp failed
    # most with "Too many open files" before: 64 files in flight, 3 descriptors each)
    mkdir -p "$O/nf/src"
    for d in $(seq 1 8); do
        mkdir "$O/nf/src/d$d"
        for n in $(seq 1 60); do echo "$d.$n" > "$O/nf/src/d$d/f$n"; done
    done
    head -c 3000000 /dev/urandom > "$O/nf/src/big"
    for p in "" batch; do
        (ulimit -n 40; AFCP_TEST_PATH=$p exec "$AFCP" -q -r "$O/nf/src" "$O/nf/c") 2> "$O/nf.err"; st=$?
        check "ulimit -n 40 [${p:-measured}]: status 0 ($st, $(head -c 200 "$O/nf.err"))" [ "$st" -eq 0 ]
        check "ulimit -n 40 [${p:-measured}]: every file copied" diff -r "$O/nf/src" "$O/nf/c"
        rm -rf "$O/nf/c"
    done
}

# Metadata cp keeps that afcp once lost, each against cp in the same run (once, on the
# default backend: none of it depends on one): an overwritten file keeps its owner, group and
# mode for what a partial --preserve does not take from the source; a directory keeps its
# set-group-ID bit (its own or its parent's); a directory made under a default ACL gets the
# mode the ACL gives; -a keeps the access times of operands (a directory afcp looked into, a
# symlink it did not follow); as root, the xattrs of a symlink and a FIFO, and a file
# capability (a chown clears it: it must come after the owner).
meta_suite() {
    local O=$T/meta st
    unset ASYNCFS_BACKEND
    mkdir -p "$O"
    # an overwritten file, --preserve of the times only / of the mode only
    local pv t
    for pv in timestamps mode; do
        for t in c a; do
            echo new > "$O/src.$t"; chmod 640 "$O/src.$t"
            echo old > "$O/dst.$pv.$t"; chmod 664 "$O/dst.$pv.$t"
            ((is_root)) && chown 1234:5678 "$O/dst.$pv.$t"
        done
        cp --preserve=$pv "$O/src.c" "$O/dst.$pv.c"
        "$AFCP" -q --preserve=$pv "$O/src.a" "$O/dst.$pv.a"
        check "overwrite --preserve=$pv: mode and owner as cp ($(stat -c '%a %u:%g' "$O/dst.$pv.c"))" \
            [ "$(stat -c '%a %u:%g' "$O/dst.$pv.c")" = "$(stat -c '%a %u:%g' "$O/dst.$pv.a")" ]
    done
    # set-group-ID directories: an existing destination's bit and a parent's
    for t in c a; do
        mkdir -p "$O/gs.$t/src" "$O/gd.$t/src" "$O/gp.$t"
        chmod 750 "$O/gs.$t/src"; chmod 2775 "$O/gd.$t/src"; chmod 2775 "$O/gp.$t"
    done
    cp -a "$O/gs.c/src/." "$O/gd.c/src"; "$AFCP" -q -a "$O/gs.a/src/." "$O/gd.a/src"
    check "-a into a set-group-ID directory: $(mode "$O/gd.c/src") as cp" \
        [ "$(mode "$O/gd.c/src")" = "$(mode "$O/gd.a/src")" ]
    cp -r "$O/gs.c/src" "$O/gp.c/new"; "$AFCP" -q -r "$O/gs.a/src" "$O/gp.a/new"
    check "-r under a set-group-ID parent: $(mode "$O/gp.c/new") as cp" \
        [ "$(mode "$O/gp.c/new")" = "$(mode "$O/gp.a/new")" ]
    # a directory made under a default ACL
    if ((acl_ok)); then
        for t in c a; do
            mkdir -p "$O/acl.$t/dst" "$O/acl.$t/src/sub"; echo f > "$O/acl.$t/src/sub/f"
            setfacl -d -m o::- "$O/acl.$t/dst"
        done
        cp -r "$O/acl.c/src/sub" "$O/acl.c/dst/"; "$AFCP" -q -r "$O/acl.a/src/sub" "$O/acl.a/dst/"
        check "-r under a default ACL: $(mode "$O/acl.c/dst/sub") as cp" \
            [ "$(mode "$O/acl.c/dst/sub")" = "$(mode "$O/acl.a/dst/sub")" ]
        # a default ACL that gives every right: a directory open to all (777) gets no group
        # or other write the umask would remove (cp omits them at its mkdir), under two umasks
        local u
        for u in 022 002; do
            for t in c a; do
                mkdir -p "$O/aclw$u.$t/dst" "$O/aclw$u.$t/src/w"; chmod 777 "$O/aclw$u.$t/src/w"
                setfacl -d -m g::rwx,o::rwx,m::rwx "$O/aclw$u.$t/dst"
            done
            (umask $u; cp -r "$O/aclw$u.c/src" "$O/aclw$u.c/dst/x"
             "$AFCP" -q -r "$O/aclw$u.a/src" "$O/aclw$u.a/dst/x")
            check "-r under a default ACL with every right, umask $u: modes as cp ($(mode "$O/aclw$u.c/dst/x") $(mode "$O/aclw$u.c/dst/x/w"))" \
                diff <(listing "$O/aclw$u.c/dst" | cut -d' ' -f1-3) <(listing "$O/aclw$u.a/dst" | cut -d' ' -f1-3)
            check "-r under a default ACL with every right, umask $u: ACLs as cp" \
                diff <(acls "$O/aclw$u.c/dst") <(acls "$O/aclw$u.a/dst")
        done
        # --no-preserve=mode under a default ACL: cp's defaults less the umask and no access
        # ACL from the default one (cp's set_acl), for files, a big file, directories and a
        # FIFO; with -p and -a a FIFO takes its source's ACL, as files do
        for t in c a; do
            mkdir -p "$O/acln.$t/src/sub" "$O/acln.$t/dst"; echo f > "$O/acln.$t/src/f"
            chmod 750 "$O/acln.$t/src/f"; echo g > "$O/acln.$t/src/sub/g"
            head -c 300000 /dev/zero > "$O/acln.$t/src/big"
            mkfifo -m 640 "$O/acln.$t/src/fifo"; mkfifo -m 660 "$O/acln.$t/src/afifo"
            setfacl -m u:nobody:rw "$O/acln.$t/src/afifo" 2>/dev/null || true
            setfacl -d -m g::rwx,o::rwx,m::rwx "$O/acln.$t/dst"
            setfacl -d -m u:nobody:rx "$O/acln.$t/dst" 2>/dev/null || true
        done
        local o n
        for o in "-r --no-preserve=mode" "-a --no-preserve=mode" "-rp" "-a"; do
            n=${o//[ =-]/}
            (umask 022; cp $o "$O/acln.c/src" "$O/acln.c/dst/$n"
             "$AFCP" -q $o "$O/acln.a/src" "$O/acln.a/dst/$n")
            check "$o under a default ACL: modes as cp" \
                diff <(listing "$O/acln.c/dst/$n" | cut -d' ' -f1-3) <(listing "$O/acln.a/dst/$n" | cut -d' ' -f1-3)
            check "$o under a default ACL: ACLs as cp" \
                diff <(acls "$O/acln.c/dst/$n") <(acls "$O/acln.a/dst/$n")
        done
    else skip "no ACLs here"; fi
    # the access times of operands under -a
    for t in c a; do
        mkdir -p "$O/at.$t/d/sub"; echo f > "$O/at.$t/d/f"; ln -s d "$O/at.$t/l"
        touch -h -d '2001-01-01 00:00:00' "$O/at.$t/d" "$O/at.$t/l"
    done
    cp -a "$O/at.c/d" "$O/at.c/d2"; cp -a "$O/at.c/l" "$O/at.c/l2"
    "$AFCP" -q -a "$O/at.a/d" "$O/at.a/d2"; "$AFCP" -q -a "$O/at.a/l" "$O/at.a/l2"
    check "-a: a directory operand's access time as cp" \
        [ "$(stat -c %X "$O/at.c/d2")" = "$(stat -c %X "$O/at.a/d2")" ]
    check "-a: a symlink operand's access time as cp" \
        [ "$(stat -c %X "$O/at.c/l2")" = "$(stat -c %X "$O/at.a/l2")" ]
    # -p keeps the access time the source had before the copy read it (relatime moves it:
    # older than the mtime), over an existing file too, and where the read that could have
    # been done inline was given up to a file task (giveup)
    local p o n
    for p in "" batch giveup; do
        for o in "-p f f2" "-p f old" "-a d d3"; do
            rm -rf "$O/atp"; mkdir -p "$O/atp/d"; echo new > "$O/atp/f"; echo old > "$O/atp/old"
            echo x > "$O/atp/d/f"; touch -d '2020-01-01' "$O/atp/f" "$O/atp/d/f"
            touch -a -d '2018-05-05 05:05:05.25' "$O/atp/f" "$O/atp/d/f" "$O/atp.ref"
            (cd "$O/atp" && AFCP_TEST_PATH=$p "$AFCP" -q $o)
            n=${o##* }; [[ $n == d3 ]] && n=d3/f
            check "$o [${p:-measured}]: the source's access time from before the copy" \
                [ "$(stat -c %x "$O/atp/$n")" = "$(stat -c %x "$O/atp.ref")" ]
        done
    done
    if ((is_root)) && ln -s x "$O/probe" && setfattr -h -n trusted.t -v tt "$O/probe" 2> /dev/null; then
        for t in c a; do
            mkdir -p "$O/x.$t"; ln -s f "$O/x.$t/sym"; mkfifo "$O/x.$t/fifo"; echo b > "$O/x.$t/bin"
            setfattr -h -n trusted.t -v tt "$O/x.$t/sym"; setfattr -n trusted.t -v tt "$O/x.$t/fifo"
            chown 1234:5678 "$O/x.$t/bin"
            # cap_net_raw, effective (struct vfs_cap_data, revision 2)
            setfattr -n security.capability -v 0x0100000200200000000000000000000000000000 "$O/x.$t/bin"
        done
        cp -a "$O/x.c" "$O/x.c2"; "$AFCP" -q -a "$O/x.a" "$O/x.a2"
        for t in sym fifo; do
            check "-a: the xattrs of a $t as cp" diff <(getfattr -h -d -m - --absolute-names "$O/x.c2/$t" | sed 1d) \
                <(getfattr -h -d -m - --absolute-names "$O/x.a2/$t" | sed 1d)
        done
        check "-a: a file capability of another owner's file kept, as cp" \
            bash -c "getfattr -n security.capability '$O/x.a2/bin' 2>/dev/null | grep -q capability"
    else skip "xattrs of symlinks: not root, or no trusted.* here"; fi
}

# What cp does as a user other than root, done by cp and by afcp in the same run (once, on the
# default backend): user_case.sh runs as nobody (setpriv) when the suite runs as root, with
# root's files at hand, and as the caller otherwise, with its own files only. It writes what
# is compared into res.* in its directory: messages (sorted where afcp's come in any order),
# statuses, modes.
cat > "$T/user_case.sh" <<'CASE'
# user_case.sh TOOL DIR [OTHERS RO STICKY]: TOOL is cp or afcp, DIR the user's; OTHERS a
# directory of another user's FIFOs and files; RO another user's directory holding f,
# another user's file the user may write; STICKY another user's directory writable by all.
tool=$1 others=${3:-} ro=${4:-} sticky=${5:-}
umask 022; cd "$2" || exit 1
# a directory that may be read but not searched (an operand, and one inside another): cp
# cannot stat its entries, and says so
mkdir -p r/sub u/s; echo x > r/f; echo y > r/sub/g; echo z > u/s/h; chmod 600 r u/s
{
    "$tool" -r r r.out 2>&1 | LC_ALL=C sort; echo "status ${PIPESTATUS[0]}"
    "$tool" -r u u.out 2>&1 | LC_ALL=C sort; echo "status ${PIPESTATUS[0]}"
} > res.unsearchable
chmod 700 r u/s
# FIFOs with set-user-ID, set-group-ID and sticky bits: the user's own (res.fifo_own), and
# another user's, of the user's group or not (res.fifo_other); another user's files so
# (res.file_other)
for m in 3754 6777 1640 2650; do mkfifo own.$m; chmod $m own.$m; done
for f in own.* ${others:+"$others"/*}; do
    res=res.file_other
    [[ -p $f ]] && res=res.fifo_other
    [[ $f == own.* ]] && res=res.fifo_own
    for o in -r -a -rp "-r --preserve=mode,ownership" "-r --preserve=ownership" \
             "-r --no-preserve=mode"; do
        rm -f copy
        # shellcheck disable=SC2086
        "$tool" $o "$f" copy 2>&1
        echo "$o ${f##*/}: status $?, $(stat -c '%A %U:%G' copy)"
    done >> "$res"
done
# -p onto another user's file the user may write, in a directory it may not write (written
# into), and -a into another user's directory: the times cannot be kept, and there cp stops
if [[ -n $ro ]]; then
    echo new > new; touch -d '2001-01-01' new
    mkdir -p tree; echo t > tree/t; touch -d '2001-01-01' tree
    {
        "$tool" -p new "$ro/f" 2>&1; echo "status $?, $(cat "$ro/f")"
        "$tool" -a tree/. "$sticky" 2>&1; echo "status $?"
    } > res.other
fi
CASE
user_suite() {
    local O=$T/user t m what uafcp=$AFCP BACKEND=
    unset ASYNCFS_BACKEND
    mkdir -p "$O"
    if ((is_root)); then
        if ! command -v setpriv > /dev/null || ! id nobody > /dev/null 2>&1; then
            skip "as a user: no setpriv or no user nobody to run as"
            return
        fi
        local ugroup; ugroup=$(id -gn nobody)
        chmod 711 "$T"; chmod 755 "$O"
        install -m 755 "$AFCP" "$T/afcp.user"; uafcp=$T/afcp.user
        mkdir -p "$O/others"
        for m in 3754 6777 1640 2650 4755; do
            mkfifo "$O/others/root.$m" "$O/others/group.$m"
            echo f > "$O/others/froot.$m"; echo f > "$O/others/fgroup.$m"
            chown root:root "$O/others/root.$m" "$O/others/froot.$m"
            chown root:"$ugroup" "$O/others/group.$m" "$O/others/fgroup.$m"
            chmod "$m" "$O/others/"*".$m"
        done
        for t in c a; do
            mkdir -p "$O/$t/work" "$O/$t/ro" "$O/$t/sticky"; chown nobody "$O/$t/work"
            chmod 755 "$O/$t" "$O/$t/ro"; chmod 1777 "$O/$t/sticky"
            echo old > "$O/$t/ro/f"; chmod 666 "$O/$t/ro/f"
            setpriv --reuid=nobody --regid="$ugroup" --clear-groups env HOME=/ bash \
                "$T/user_case.sh" "$([[ $t == c ]] && echo cp || echo "$uafcp")" "$O/$t/work" \
                "$O/others" "$O/$t/ro" "$O/$t/sticky"
        done
    else
        for t in c a; do
            mkdir -p "$O/$t/work"
            bash "$T/user_case.sh" "$([[ $t == c ]] && echo cp || echo "$uafcp")" "$O/$t/work"
        done
        skip "as a user: another user's FIFOs, file and directory need root"
    fi
    local -A about=(
        [unsearchable]="a directory it may read but not search: its entries cannot be stat'ed"
        [fifo_own]="its own FIFOs with set-ID and sticky bits: the modes"
        [fifo_other]="another user's FIFOs with set-ID and sticky bits: the modes"
        [file_other]="another user's files with set-ID and sticky bits: the modes"
        [other]="-p onto another user's file, -a into another user's directory: times only")
    for what in unsearchable fifo_own fifo_other file_other other; do
        [[ $what == *other ]] && ! ((is_root)) && continue
        if [[ ! -s $O/c/work/res.$what || ! -s $O/a/work/res.$what ]]; then
            bad "as a user, ${about[$what]}: not run (can the user reach $O?)"
            continue
        fi
        check "as a user, ${about[$what]}: as cp ($(tr '\n' ';' < "$O/c/work/res.$what" |
                                                    cut -c1-120)...)" \
            diff <(sed "s|^cp: |X: |; s|$O/c/|$O/X/|g" "$O/c/work/res.$what") \
                 <(sed "s|^afcp\(\.user\)\{0,1\}: |X: |; s|$O/a/|$O/X/|g" "$O/a/work/res.$what")
    done
    chmod -R u+rwx "$O" 2> /dev/null
    rm -rf "$O"
}

AFCP_TEST_BACKENDS=${AFCP_TEST_BACKENDS:-auto}
run_backends "afcp against cp"
st=$?
meta_suite
echo "afcp against cp, metadata: $passes passed, $fails failed, $skips skipped in all"
((fails == 0)) || st=1
user_suite
echo "afcp against cp, as a user: $passes passed, $fails failed, $skips skipped in all"
((fails == 0)) || st=1
if ((is_root)); then
    mount_suite
    echo "afcp against cp, mounts: $passes passed, $fails failed, $skips skipped in all"
    ((fails == 0)) || st=1
else
    echo "SKIP: -x and the full disk need mounts (root)" >&2
fi
exit $st

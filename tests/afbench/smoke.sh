#!/usr/bin/env bash
# afbench smoke test: every engine on a 4 MiB file for about a second (random reads, then
# random and sequential writes on one engine each), the JSON parsed and iops > 0; CSV is a
# header and one row; bad command lines exit 2 with a message naming the problem.
# uring-raw is skipped (not failed) where io_uring is unavailable (afbench exits 3).
# Usage: tests/afbench/smoke.sh path/to/afbench
set -uo pipefail
afbench=${1:?usage: smoke.sh path/to/afbench}
dir=$(mktemp -d "${TMPDIR:-/tmp}/afbench-smoke.XXXXXX")
trap 'rm -rf "$dir"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

check_json() { # name json
  python3 -c '
import json, sys
j = json.loads(sys.argv[1])
for k in ("engine", "rw", "bs", "iodepth", "direct", "ios", "runtime_s", "iops",
          "bw_bytes_per_s", "latency_us", "cpu_us_per_io", "syscalls_per_io"):
    assert k in j, "missing key " + k
for p in ("p50", "p90", "p99", "p99.9"):
    assert j["latency_us"][p] > 0, "latency " + p
assert j["latency_us"]["p50"] <= j["latency_us"]["p99"] <= j["latency_us"]["p99.9"]
assert j["iops"] > 0 and j["ios"] > 0, "no I/O"
assert j["syscalls_per_io"] > 0
if j["engine"] in ("corio", "queue"):
    assert j["counted_syscalls_per_io"] > 0, "no system call counted at the table"
print("ok   %-10s %-9s %10.0f IOPS  %.3f syscalls/IO" % (j["engine"], j["rw"], j["iops"], j["syscalls_per_io"]))
' "$2" || fail "$1: bad JSON: $2"
}

run() { # name args...
  local name=$1; shift
  local out rc
  out=$("$afbench" "$@" --output-format=json 2>"$dir/err"); rc=$?
  if [ $rc -eq 3 ]; then echo "skip $name: $(cat "$dir/err")"; return; fi
  if [ $rc -ne 0 ]; then fail "$name exited $rc: $(cat "$dir/err")"; return; fi
  check_json "$name" "$out"
}

f=$dir/data
for e in corio queue pread threads uring-raw; do
  run "$e randread" --engine=$e --rw=randread --bs=4k --iodepth=4 --size=4m --runtime=1 --filename="$f"
done
run "corio randwrite" --engine=corio --rw=randwrite --bs=4k --iodepth=4 --size=4m --runtime=1 --filename="$dir/w"
run "queue write" --engine=queue --rw=write --bs=64k --iodepth=4 --size=4m --runtime=1 --filename="$dir/w"
run "threads read" --engine=threads --rw=read --bs=64k --iodepth=2 --size=4m --filename="$f"

# The thread pool's transfers are system calls: its backend cannot look cheaper than one a
# read (queue engine, so every read goes to the pool).
out=$(ASYNCFS_BACKEND=threads "$afbench" --engine=queue --iodepth=8 --size=4m --runtime=0.3 \
      --filename="$f" --output-format=json 2>"$dir/err")
python3 -c '
import json, sys
j = json.loads(sys.argv[1])
assert j["backend"] == "threads" and j["syscalls_per_io"] >= 1, j["syscalls_per_io"]
print("ok   threads backend: %.3f syscalls/IO" % j["syscalls_per_io"])
' "$out" || fail "threads backend: syscalls_per_io below 1: $out $(cat "$dir/err")"

# A random job without --runtime writes every block once (fio's random map), on every
# engine: a new file of 1 MiB is whole, with every block allocated.
for e in corio queue pread threads uring-raw; do
  rm -f "$dir/rw"
  "$afbench" --engine=$e --rw=randwrite --bs=4k --size=1m --filename="$dir/rw" >/dev/null 2>"$dir/err"
  rc=$?
  if [ $rc -eq 3 ]; then echo "skip $e randwrite coverage: $(cat "$dir/err")"; continue; fi
  size=$(stat -c %s "$dir/rw" 2>/dev/null || echo 0)
  alloc=$(( $(stat -c %b "$dir/rw" 2>/dev/null || echo 0) * 512 ))
  if [ $rc -ne 0 ] || [ "$size" -ne 1048576 ] || [ "$alloc" -lt 1048576 ]; then
    fail "$e randwrite --size=1m: exit $rc, $size bytes, $alloc allocated: $(cat "$dir/err")"
  else
    echo "ok   $e randwrite covers all 256 blocks"
  fi
done

# The data file was created at --size for reads.
[ "$(stat -c %s "$f")" -eq $((4 << 20)) ] || fail "the read file is not 4 MiB"

# CSV: a header and one row with as many fields.
csv=$("$afbench" --engine=pread --rw=randread --size=4m --runtime=0.2 --filename="$f" --output-format=csv 2>/dev/null)
python3 -c '
import csv, io, sys
rows = list(csv.reader(io.StringIO(sys.argv[1])))
assert len(rows) == 2 and len(rows[0]) == len(rows[1]), rows
r = dict(zip(rows[0], rows[1]))
assert float(r["iops"]) > 0
print("ok   csv")
' "$csv" || fail "bad CSV: $csv"

# asyncfs on io_uring with O_DIRECT: --offload forces each regime, and --fixedbufs and
# --registerfiles reach the kernel (the library's counters say so). A file system without
# O_DIRECT or a backend other than io_uring skips these.
ddir=$(mktemp -d /var/tmp/afbench-smoke.XXXXXX 2>/dev/null || mktemp -d "$dir/d.XXXXXX")
trap 'rm -rf "$dir" "$ddir"' EXIT
knob() { # name python-condition args...
  local name=$1 cond=$2; shift 2
  local out rc
  out=$("$afbench" --engine=corio --rw=randread --bs=4k --iodepth=16 --size=4m --runtime=0.5 \
        --direct=1 --filename="$ddir/data" "$@" --output-format=json 2>"$dir/err"); rc=$?
  if [ $rc -ne 0 ] && grep -q "O_DIRECT" "$dir/err"; then echo "skip $name: no O_DIRECT here"; return; fi
  if [ $rc -ne 0 ]; then fail "$name exited $rc: $(cat "$dir/err")"; return; fi
  python3 -c '
import json, sys
j = json.loads(sys.argv[1])
if j["backend"] != "io_uring":
    print("skip %s: backend %s" % (sys.argv[3], j["backend"])); sys.exit(0)
assert eval(sys.argv[2]), "%s: %s" % (sys.argv[2], {k: j[k] for k in ("ios", "offloaded_ops", "fixed_buffer_ops", "fixed_file_ops", "offloading")})
print("ok   %-28s %s" % (sys.argv[3], sys.argv[2]))
' "$out" "$cond" "$name" || fail "$name: $out"
}
knob "--offload=always" 'j["offloaded_ops"] >= j["ios"] and j["offloading"] == 1' --offload=always
knob "--offload=never" 'j["offloaded_ops"] == 0 and j["offloading"] == 0' --offload=never
knob "--offload=auto" 'j["offload"] == "auto"' --offload=auto
knob "--fixedbufs" 'j["fixed_buffer_ops"] >= j["ios"] and j["fixed_file_ops"] == 0' --fixedbufs
knob "--registerfiles" 'j["fixed_file_ops"] >= j["ios"] and j["fixed_buffer_ops"] == 0' --registerfiles
knob "--io-workers=1" 'j["io_workers"] == 1' --io-workers=1 --offload=always

# Bad command lines: exit 2 and a message that names the problem.
bad() { # expected-words args...
  local want=$1; shift
  local rc
  timeout 30 "$afbench" "$@" >/dev/null 2>"$dir/err"; rc=$?
  if [ $rc -ne 2 ]; then fail "afbench $* exited $rc, not 2: $(cat "$dir/err")"; return; fi
  grep -q -- "$want" "$dir/err" || fail "afbench $*: message lacks '$want': $(cat "$dir/err")"
  echo "ok   exit 2: $(cat "$dir/err")"
}
bad "--rw" --rw=sideways --filename="$f"
bad "--bs" --bs=4q --filename="$f"
bad "--iodepth" --iodepth=0 --filename="$f"
bad "--engine" --engine=fio --filename="$f"
bad "--direct" --direct=yes --filename="$f"
bad "--output-format" --output-format=xml --filename="$f"
bad "unknown option" --frobnicate=1 --filename="$f"
bad "unknown option '--version'" --version
bad "needs a value" --filename="$f" --bs
bad "--filename" --rw=read
bad "O_DIRECT" --bs=1000 --direct=1 --filename="$f"
bad "give --size" --filename="$dir/missing"
bad "--offload" --offload=sometimes --filename="$f"
bad "--io-workers" --io-workers=many --filename="$f"
# A time limit is checked after its unit: 6,000,000 hours do not fit the clock.
bad "--runtime" --runtime=6000000h --filename="$f"
# Only regular files and block devices: a FIFO would block the open of a write job for ever,
# a character device reads nothing and cannot be synced. A directory is named as such.
mkfifo "$dir/fifo"
bad "not a regular file" --rw=write --size=4m --filename="$dir/fifo"
bad "not a regular file" --rw=randread --size=4m --filename="$dir/fifo"
bad "not a regular file" --rw=randread --size=4m --filename=/dev/null
bad "directory" --size=4m --filename="$dir"
# Buffers that cannot fit in memory are refused before any is allocated (address space
# capped here, so an afbench without the check fails cleanly instead of meeting the OOM
# killer; not under ASan, which needs a large address space).
if ldd "$afbench" 2>/dev/null | grep -q 'libasan'; then
  echo "skip memory check: afbench built with ASan"
else
  rc=0
  (ulimit -v $((1 << 20)); exec "$afbench" --engine=corio --rw=randwrite --bs=64m \
     --iodepth=4096 --size=64m --filename="$dir/big") >/dev/null 2>"$dir/err" || rc=$?
  if [ $rc -eq 2 ] && grep -q -- "--iodepth" "$dir/err"; then
    echo "ok   exit 2: $(cat "$dir/err")"
  else
    fail "--bs=64m --iodepth=4096 exited $rc, not 2: $(cat "$dir/err")"
  fi
  rm -f "$dir/big"
fi

# A backend name asked for in the environment that does not exist is named, and a file
# afbench created for a run that failed is not left behind.
ASYNCFS_BACKEND=bogus "$afbench" --runtime=0.1 --size=1m --filename="$dir/new" >/dev/null 2>"$dir/err"
grep -q "ASYNCFS_BACKEND=bogus" "$dir/err" && echo "ok   $(tail -1 "$dir/err")" ||
  fail "ASYNCFS_BACKEND=bogus: message lacks the variable: $(cat "$dir/err")"
[ -e "$dir/new" ] && fail "a failed run left the file it created"

# The results are the output: a full standard output is an error, not a silent success.
rc=0
"$afbench" --engine=pread --runtime=0.1 --filename="$f" >/dev/full 2>"$dir/err" || rc=$?
if [ $rc -eq 1 ] && grep -q "standard output" "$dir/err"; then echo "ok   exit 1: $(cat "$dir/err")"
else fail "stdout on /dev/full exited $rc: $(cat "$dir/err")"; fi

# As a user who may not write: the error that stopped afbench, not the one of a retry. Root
# runs this as nobody (setpriv); skipped where neither works.
as_user=()
if [ "$(id -u)" -eq 0 ]; then
  command -v setpriv >/dev/null && as_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
fi
if [ "$(id -u)" -ne 0 ] || [ ${#as_user[@]} -gt 0 ]; then
  chmod 755 "$dir"
  mkdir "$dir/ro" && cp "$f" "$dir/ro/data" && chmod 444 "$dir/ro/data" && chmod 555 "$dir/ro"
  user_bad() { # expected-words args...
    local want=$1 rc; shift
    timeout 30 "${as_user[@]}" "$afbench" "$@" >/dev/null 2>"$dir/err"; rc=$?
    if [ $rc -eq 1 ] && grep -q -- "$want" "$dir/err"; then echo "ok   exit 1: $(cat "$dir/err")"
    else fail "afbench $* as a user exited $rc: $(cat "$dir/err")"; fi
  }
  user_bad "Permission denied" --size=4m --filename="$dir/ro/new"
  user_bad "read-only" --size=8m --filename="$dir/ro/data"
  [ -e "$dir/ro/new" ] && fail "a file was created in a read-only directory"
  chmod 700 "$dir/ro" "$dir"
else
  echo "skip user checks: root without setpriv"
fi

[ $fails -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"

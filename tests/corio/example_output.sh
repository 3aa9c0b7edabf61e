#!/usr/bin/env bash
# Runs an example and compares what it prints, byte for byte, with the expected text.
#   example_output.sh PROGRAM EXPECTED_FILE
set -euo pipefail
prog=$1 expected=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$prog" > "$out"
if ! cmp -s "$out" "$expected"; then
  echo "$(basename "$prog"): the output differs from $(basename "$expected"):" >&2
  diff "$expected" "$out" >&2 || true
  exit 1
fi
echo "$(basename "$prog"): output identical to $(basename "$expected") ($(wc -c < "$out") bytes)"

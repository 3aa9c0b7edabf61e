# Sourced by the benchmark scripts: every run leaves a CSV under bench/results/ whose rows
# carry where and when they were measured, so that each figure in a table can be traced to
# the run that produced it (bench/report.sh builds the tables from these files).
#
#   results_open KIND "col1,col2,..."   starts bench/results/KIND-<UTC time>-<host>.csv
#   results_row  "v1,v2,..."            appends a row (values must not contain commas)
#
# Every row starts with: kind, date (UTC, ISO 8601), host, cpu model, CPUs, kernel, machine,
# git commit of the tree that was measured. RESULTS_DIR overrides bench/results.

results_open() { # kind columns
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  local dir=${RESULTS_DIR:-$root/bench/results}
  mkdir -p "$dir"
  RESULTS_KIND=$1
  local stamp host cpu
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  host=$(hostname 2>/dev/null || uname -n)
  host=${host//[^A-Za-z0-9._-]/_}
  cpu=$(awk -F: '/^model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo 2>/dev/null ||
        sysctl -n machdep.cpu.brand_string 2>/dev/null || echo unknown)
  cpu=${cpu//,/ }
  local commit
  commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$root" diff --quiet HEAD 2>/dev/null || commit="$commit+dirty"
  RESULTS_PREFIX="$1,$(date -u +%Y-%m-%dT%H:%M:%SZ),$host,$cpu,$(nproc 2>/dev/null || echo 0),$(uname -r),$(uname -m),$commit"
  RESULTS_FILE=$dir/$1-$stamp-$host.csv
  echo "kind,date,host,cpu,ncpu,kernel,machine,commit,$2" > "$RESULTS_FILE"
  echo "results: $RESULTS_FILE" >&2
}

results_row() { # values
  echo "$RESULTS_PREFIX,$1" >> "$RESULTS_FILE"
}

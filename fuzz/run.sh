#!/bin/sh
# fuzz/run.sh DIR TARGET SECONDS - runs build/fuzz/fuzz_TARGET for SECONDS,
# prints executions and coverage, fails on a crash, leak or timeout.
set -u
dir=$1 t=$2 secs=$3
mkdir -p "$dir/corpus-$t"
if ! "$dir/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -max_len=8192 -print_final_stats=1 -artifact_prefix="$dir/crash-$t-" \
    "$dir/corpus-$t" "fuzz/corpus/$t" > "$dir/$t.log" 2>&1; then
  tail -n 40 "$dir/$t.log"
  echo "fuzz $t: FAILED (log $dir/$t.log; the crashing input is $dir/crash-$t-*)"
  exit 1
fi
awk -v t="$t" '/stat::number_of_executed_units/ {e = $2}
  /cov: / {c = $0; sub(/.*cov: /, "", c); split(c, a, " "); cov = a[1]}
  /ft: / {f = $0; sub(/.*ft: /, "", f); split(f, b, " "); ft = b[1]}
  END {printf "fuzz %s: %s executions, coverage %s edges (%s features), no crash\n", t, e, cov, ft}' \
  "$dir/$t.log"

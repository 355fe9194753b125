#!/bin/sh
# bench/profile.sh - where build/wshub spends its time per delivery.
#
# Starts build/wshub (embedded, or with --redis and its own redis-server),
# runs scenario A at 10,000 subscribers (or the scenario given in LOADGEN
# arguments) against it with build/wshub-loadgen, records the server with
# `perf record` for PROFILE_SECONDS during the publish phase, and prints
# the load generator's RESULT line, the time split between kernel, wshub
# and libraries, and the top functions with their cost in ns per delivery.
#
#   bench/profile.sh [BUILD] [embedded|redis] [loadgen args...]
#   make bench-profile [PROFILE_BACKPLANE=redis]
#
# Every process is started here and stopped by its pid.  Needs perf.
set -eu
BUILD=${1:-build}
BP=${2:-embedded}
[ $# -ge 2 ] && shift 2 || shift $#
[ $# -gt 0 ] || set -- --conns 10000 --channels 1 --msgs 2000 --size 64 \
  --pub-conns 4 --window 16 --max-outstanding 64
SECS=${PROFILE_SECONDS:-4}
TOP=${PROFILE_TOP:-25}
OUT=$BUILD/bench/profile
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "profile: perf is not installed (apt-get install linux-perf)"; exit 1; }

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

RPID= ; SPID= ; LPID=
cleanup() {
  for p in $LPID $SPID $RPID; do kill "$p" 2>/dev/null || true; done
  for p in $LPID $SPID $RPID; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

EXTRA=
if [ "$BP" = redis ]; then
  RPORT=$(free_port)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no >"$OUT/redis.log" 2>&1 &
  RPID=$!
  EXTRA="--redis redis://127.0.0.1:$RPORT"
  sleep 0.3
fi
PORT=$(free_port)
# shellcheck disable=SC2086
"$BUILD/wshub" --listen "127.0.0.1:$PORT" --max-queue-msgs 4096 \
  --shutdown-timeout 1 $EXTRA >"$OUT/wshub.log" 2>&1 &
SPID=$!
i=0
until /usr/bin/python3 -c 'import sys, urllib.request
sys.exit(urllib.request.urlopen(sys.argv[1], timeout=1).status != 200)' \
  "http://127.0.0.1:$PORT/healthz" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 100 ] || { echo "profile: wshub did not start"; exit 1; }
  sleep 0.1
done
"$BUILD/wshub-loadgen" --server "127.0.0.1:$PORT" --pid "wshub=$SPID" \
  --label "scenario=profile backplane=$BP" "$@" >"$OUT/loadgen.out" \
  2>"$OUT/loadgen.err" &
LPID=$!
# Skip the connect phase: start recording once deliveries flow.
sleep "${PROFILE_DELAY:-2}"
perf record -F 1999 -p "$SPID" -o "$OUT/perf.data" -- sleep "$SECS" \
  >/dev/null 2>&1
wait "$LPID"; LPID=
cat "$OUT/loadgen.out"
CPU=$(tr ' ' '\n' <"$OUT/loadgen.out" | sed -n 's/^cpu_us_per_deliv_wshub=//p')
echo
echo "time split (perf, server only):"
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null |
  grep -E '^ +[0-9]' | head -8
echo
echo "top functions (self time; ns per delivery = share x ${CPU} us):"
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio 2>/dev/null |
  grep -E '^ +[0-9]' | head -"$TOP" |
  awk -v cpu="$CPU" '{ p = $1; sub("%", "", p);
    printf "  %6.2f%%  %6.1f ns  %s %s\n", p, p * cpu * 10, $2, $3 }'
echo
echo "perf data: $OUT/perf.data (perf report -i ...)"

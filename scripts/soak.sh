#!/usr/bin/env bash
# A long overloaded season, repeatable: the simulator in its own process (USERS users making
# about RATE new entities a second in all, far beyond what Polar's rate limit lets anyone
# fetch, 2% of deliveries dropped), hookrace (release build, the adaptive safety net) with the
# users connected through the OAuth flow and its webhook created by `hookrace webhook create`,
# sampled every 30 s into a CSV: the daemon's RSS, the fetch backlog (all of it, and how long it
# would take to drain), the 429s, the misses caught and their delays, and /status's latency.
# Then SIGTERM (timed) and a summary by scripts/soak_report.py (the RSS slope over the last 30
# minutes, an SVG plot beside the CSV).
#   scripts/soak.sh [DURATION_MIN=60] [USERS=50] [RATE=10] [OUT=target/soak]
# CACHE_MB=N sets `store.cache_mb` (sled's page cache; default 64): the plateau RSS reaches is set
# by it, and a small one reaches its plateau within the hour.
# HEAPTRACK=1 attaches heaptrack (apt-get install heaptrack gdb) to the running daemon once its
# users are connected, and writes its report of what the heap holds at the end, by allocation
# site, to OUT/heap.txt (latencies are then pessimistic: every allocation is traced).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-60}
USERS=${2:-50}
RATE=${3:-10}
OUT=${4:-target/soak}
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release --locked --quiet
BIN=target/release/hookrace
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM_PORT=$(port); HOOK_PORT=$(port); ADMIN_PORT=$(port)
SIM=http://127.0.0.1:$SIM_PORT
# Each user makes a new exercise every USERS/RATE seconds on average (exponential).
EVERY_MS=$(python3 -c "print(int(1000 * $USERS / $RATE))")
"$BIN" sim --listen "127.0.0.1:$SIM_PORT" --users "$USERS" --seed 43 \
  --exercise-every "${EVERY_MS}ms" --activity-every 10m --sleep-every 0s --heart-rate-every 0s \
  --drop-rate 0.02 --redirect-uri "http://127.0.0.1:$HOOK_PORT/oauth/callback" \
  > "$OUT/sim.out" 2> "$OUT/sim.log" &
SIM_PID=$!
cleanup() { kill "$SIM_PID" 2>/dev/null || true; [ -n "${DAEMON_PID:-}" ] && kill "$DAEMON_PID" 2>/dev/null || true; }
trap cleanup EXIT
python3 - "$OUT/config.json" <<PY
import json, sys
json.dump({
  "webhook": {"listen": "127.0.0.1:$HOOK_PORT", "check_every": "5m", "reactivate": True},
  "admin": {"listen": "127.0.0.1:$ADMIN_PORT"},
  "accesslink": {"base_url": "$SIM", "client_id": "hookrace-sim", "client_secret": "hookrace-sim-secret",
                 "authorize_url": "$SIM/oauth2/authorization", "token_url": "$SIM/v2/oauth2/token",
                 "redirect_uri": "http://127.0.0.1:$HOOK_PORT/oauth/callback"},
  "poller": {"strategy": "adaptive", "every": "1m", "max_every": "15m"},
  "store": {"path": "$OUT/store", "cache_mb": ${CACHE_MB:-64}},
}, open(sys.argv[1], "w"))
PY
python3 - "$OUT/config.json" "$OUT/config.toml" <<'PY'
import json, sys
def toml(d, prefix=""):
    out, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict): tables.append((k, v))
        else: out.append(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}")
    text = "\n".join(out) + ("\n" if out else "")
    for k, v in tables:
        name = f"{prefix}{k}"
        text += f"\n[{name}]\n" + toml(v, name + ".")
    return text
open(sys.argv[2], "w").write(toml(json.load(open(sys.argv[1]))))
PY
chmod 600 "$OUT/config.toml" "$OUT/config.json"
until curl -sf "$SIM/sim/users" >/dev/null; do sleep 0.2; done
RUST_LOG=warn,hookrace=info "$BIN" run -c "$OUT/config.toml" > "$OUT/daemon.out" 2> "$OUT/daemon.log" &
DAEMON_PID=$!
until curl -sf "http://127.0.0.1:$ADMIN_PORT/livez" >/dev/null; do sleep 0.2; done
# Every simulator user connects through the OAuth flow, as a person would in a browser.
for uid in $(curl -s "$SIM/sim/users" | python3 -c 'import json,sys; print(" ".join(str(u["user_id"]) for u in json.load(sys.stdin)))'); do
  jar=$(mktemp)
  # /oauth/connect answers 429 beyond 20 requests a second: a person is slower than this loop.
  loc=
  while [ -z "$loc" ]; do
    loc=$(curl -s -c "$jar" -o /dev/null -w '%{redirect_url}' "http://127.0.0.1:$HOOK_PORT/oauth/connect")
    [ -n "$loc" ] || sleep 0.2
  done
  curl -s -b "$jar" -c "$jar" -L -o /dev/null "$loc&user_id=$uid"
  rm -f "$jar"
done
"$BIN" webhook create --url "http://127.0.0.1:$HOOK_PORT/acl_webhook" -c "$OUT/config.toml" > "$OUT/webhook.out"
if [ "${HEAPTRACK:-0}" = 1 ]; then
  heaptrack --output "$OUT/heap" --pid "$DAEMON_PID" > "$OUT/heaptrack.out" 2>&1 &
  HEAPTRACK_PID=$!
  sleep 5
fi
echo "soak: $USERS users connected, webhook created; sampling for $MINUTES min into $OUT/samples.csv"
echo "t_s,rss_mb,backlog_jobs,backlog_in_memory,drain_s,answered_429,fetches_ok,accepted,misses_caught,catch_p50_ms,catch_max_ms,poll_requests,status_ms,fetches_held_by" > "$OUT/samples.csv"
START=$(date +%s)
while [ $(( $(date +%s) - START )) -lt $(( MINUTES * 60 )) ]; do
  T=$(( $(date +%s) - START ))
  RSS=$(awk '/VmRSS/ {print $2/1024}' "/proc/$DAEMON_PID/status")
  STATUS_MS=$(curl -s -o "$OUT/status.json" -w '%{time_total}' "http://127.0.0.1:$ADMIN_PORT/status" | python3 -c 'import sys; print(round(float(sys.stdin.read())*1000,1))')
  python3 - "$OUT/status.json" "$T" "$RSS" "$STATUS_MS" >> "$OUT/samples.csv" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); t, rss, ms = sys.argv[2:5]
w, p, r = s["webhook"], s["poll"], s["accesslink"]["rate_limit"]
b = w["fetch_backlog"]
print(",".join(str(x) for x in [t, rss, b["jobs"], b["in_memory"], b["drain_seconds"], r["answered_429"],
    w["fetches"]["ok"], w["accepted"], p["misses_caught"], p["catch_delay_ms"]["p50"], p["catch_delay_ms"]["max"],
    p["requests"], ms, r["fetches_held_by"]]))
PY
  sleep 30
done
curl -s "$SIM/sim/truth" > "$OUT/truth.json"
curl -s "http://127.0.0.1:$ADMIN_PORT/status" > "$OUT/status.json"
T0=$(date +%s.%N)
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID" || true
T1=$(date +%s.%N)
python3 -c "print(round($T1 - $T0, 2))" > "$OUT/sigterm_s.txt"
DAEMON_PID=
if [ -n "${HEAPTRACK_PID:-}" ]; then
  wait "$HEAPTRACK_PID" || true
  # What the heap held at its peak and at the end (not freed by the exit), by call site.
  heaptrack_print --print-peaks 1 --print-leaks 1 --print-allocators 0 --print-temporary 0 \
    --peak-limit 15 -f "$(ls "$OUT"/heap*.zst "$OUT"/heap*.gz 2>/dev/null | head -1)" > "$OUT/heap.txt" 2>&1 || true
fi
python3 scripts/soak_report.py "$OUT"

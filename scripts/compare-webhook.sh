#!/usr/bin/env bash
# Side-by-side: hookrace versus adnanh/webhook (Debian's `webhook` package) with an HMAC-SHA256
# rule, under the same wrk load on loopback. Both must verify the signature before answering;
# hookrace also stores each delivery durably before its 200, webhook runs a command (/bin/true).
#   apt-get install -y wrk webhook && cargo build --release && scripts/compare-webhook.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
SECRET=abe1f3ae-fd33-11e8-8eb2-f2801f1b9fd1
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
BIN=${BIN:-target/release/hookrace}

# 400,000 distinct signed deliveries (more than a 10 s run sends at 30,000 req/s), cycled by wrk.
python3 - "$WORK" "$SECRET" <<'PY'
import hmac, hashlib, sys
work, secret = sys.argv[1], sys.argv[2].encode()
with open(f"{work}/requests.txt", "w") as f:
    for i in range(400000):
        body = ('{"event":"EXERCISE","user_id":475,"entity_id":"w%d","timestamp":"2026-11-28T10:00:00Z",'
                '"url":"https://www.polaraccesslink.com/v3/exercises/w%d"}') % (i, i)
        f.write(hmac.new(secret, body.encode(), hashlib.sha256).hexdigest() + "\t" + body + "\n")
with open(f"{work}/requests.lua", "w") as f:
    f.write("""
local sigs, bodies = {}, {}
for line in io.lines("%s/requests.txt") do
  local tab = line:find("\t", 1, true)
  sigs[#sigs + 1] = line:sub(1, tab - 1)
  bodies[#bodies + 1] = line:sub(tab + 1)
end
-- Each wrk thread has its own Lua state: thread k of n sends bodies k+1, k+1+n, ... so no
-- two requests of a run repeat a body (every delivery is a new entity, none a duplicate).
local threads = {}
function setup(thread)
  thread:set("first", #threads)
  table.insert(threads, thread)
end
function init(args)
  step = tonumber(os.getenv("WRK_THREADS") or "2")
  i = first - step
end
request = function()
  i = (i + step) %% #bodies
  local sig, body = sigs[i + 1], bodies[i + 1]
  return wrk.format("POST", nil, {["Content-Type"]="application/json",
    ["Polar-Webhook-Event"]="EXERCISE", ["Polar-Webhook-Signature"]=sig}, body)
end
""" % work)
PY

cat > "$WORK/hookrace.toml" <<TOML
[webhook]
listen = "127.0.0.1:18080"
[admin]
listen = "127.0.0.1:19090"
[accesslink]
client_id = "bench"
client_secret = "x"
webhook_secret = "$SECRET"
[poller]
enabled = false
[store]
path = "$WORK/store"
TOML
cat > "$WORK/hooks.json" <<JSON
[{"id": "polar", "execute-command": "/bin/true", "response-message": "ok",
  "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": "$SECRET",
                             "parameter": {"source": "header", "name": "Polar-Webhook-Signature"}}}}]
JSON

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# Prints wrk's summary lines and saves them in $WORK/$2.txt for the ratio at the end.
run_wrk() {
  WRK_THREADS=2 wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$WORK/requests.lua" "$1" \
    | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" | tee "$WORK/$2.txt"
}
# wrk's latency as milliseconds ("850.00us", "1.20ms", "1.02s").
ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) print v/1000; else if (v ~ /ms$/) print v+0; else if (v ~ /s$/) print v*1000; else print v }'; }
rate() { awk '/Requests\/sec/ { print $2 }' "$WORK/$1.txt"; }
p99() { ms "$(awk '$1 == "99%" { print $2 }' "$WORK/$1.txt")"; }

echo "== hookrace ($("$BIN" --version)), durable 200"
RUST_LOG=error "$BIN" run -c "$WORK/hookrace.toml" 2>/dev/null & wait_port 18080
run_wrk http://127.0.0.1:18080/acl_webhook hookrace
# What hookrace stored: every request a new entity (no duplicate), each answered 200 only once durable.
curl -s http://127.0.0.1:19090/status | python3 -c 'import json, sys; w = json.load(sys.stdin)["webhook"]
print("    stored: %d new entities, %d duplicates" % (w["accepted"], w["duplicates"]))'
kill %1; wait %1 2>/dev/null || true

echo "== adnanh/webhook ($(webhook -version 2>&1 | head -1)), HMAC rule, runs /bin/true"
webhook -hooks "$WORK/hooks.json" -ip 127.0.0.1 -port 18081 > /dev/null 2>&1 & wait_port 18081
run_wrk http://127.0.0.1:18081/hooks/polar webhook
kill %1; wait %1 2>/dev/null || true

echo "== same run: hookrace $(rate hookrace) req/s (p99 $(p99 hookrace) ms), webhook $(rate webhook) req/s (p99 $(p99 webhook) ms)"
awk -v a="$(rate hookrace)" -v b="$(rate webhook)" -v pa="$(p99 hookrace)" -v pb="$(p99 webhook)" \
  'BEGIN { printf "ratio hookrace / webhook: %.2f x the request rate (target >= 3), p99 %s (%.2f vs %.2f ms)\n", a / b, (pa < pb ? "lower" : "NOT lower"), pa, pb }'

#!/usr/bin/env python3
"""A Standard Webhooks receiver built on the specification's reference library for Python
(`pip install standardwebhooks`), for the dialects lesson (docs/educators.md) and as the outside
proof that `hookrace check-receiver --dialect standard-webhooks` grades what that library does.

    python3 examples/standard_receiver.py [HOST:PORT] [--naive]

- It listens on 127.0.0.1:8001 (or HOST:PORT) at /webhook and reads its secrets at each delivery
  from `receiver.env` in its working directory (`check-receiver --env-file receiver.env` writes
  it): POLAR_WEBHOOK_SECRET (a whsec_ secret), POLAR_ACCESS_TOKENS=user=token,user=token.
- The library verifies each delivery: the three headers, the timestamp within 5 minutes, one v1
  signature of `id.timestamp.body` matching (several are allowed, for key rotation). A failure
  is answered 401 and nothing else happens.
- A verified delivery is answered 204 at once; a webhook-id seen before is answered 204 and not
  handled again. Its `data.url` is then fetched with the token of `data.user_id` (the simulator's
  events carry Polar's payload in the envelope hookrace's notify events use); an event type it
  does not know is only acknowledged.
- `--naive` skips the check and the de-duplication: what the grader must fail.
- `--no-fetch` verifies and acknowledges only, as an app receiving hookrace's own notify events
  (which carry their data) would: the grader judges it by its answers.
"""

import json
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

NAIVE = "--naive" in sys.argv
NO_FETCH = "--no-fetch" in sys.argv
KNOWN = {"EXERCISE", "SLEEP", "ACTIVITY_SUMMARY", "CONTINUOUS_HEART_RATE"}
seen_ids = set()
seen_lock = threading.Lock()


def settings():
    values = {}
    try:
        with open("receiver.env") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                values[key] = value
    except FileNotFoundError:
        pass
    tokens = {}
    for pair in values.get("POLAR_ACCESS_TOKENS", "").split(","):
        user, _, token = pair.partition("=")
        if token:
            tokens[user] = token
    return values.get("POLAR_WEBHOOK_SECRET", ""), tokens


def fetch(url, token):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}",
                                                   "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
    except Exception as e:  # the data may be gone (404); a real receiver would log and move on
        print(f"fetching {url}: {e}", file=sys.stderr)


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        secret, tokens = settings()
        if NAIVE:
            event = json.loads(body)
        else:
            try:
                event = Webhook(secret).verify(body, dict(self.headers.items()))
            except (WebhookVerificationError, ValueError) as e:
                self.answer(401, f"refused: {e}\n")
                return
            with seen_lock:
                repeat = self.headers["webhook-id"] in seen_ids
                seen_ids.add(self.headers["webhook-id"])
            if repeat:
                self.answer(204)
                return
        self.answer(204)
        data = event.get("data") or {}
        token = tokens.get(str(data.get("user_id")))
        if data.get("type") in KNOWN and data.get("url") and token and not NO_FETCH:
            threading.Thread(target=fetch, args=(data["url"], token), daemon=True).start()

    def answer(self, status, text=""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    address = next((a for a in sys.argv[1:] if not a.startswith("--")), "127.0.0.1:8001")
    host, _, port = address.rpartition(":")
    print(f"listening on http://{address}/webhook{' (naive)' if NAIVE else ''}", flush=True)
    ThreadingHTTPServer((host, int(port)), Receiver).serve_forever()

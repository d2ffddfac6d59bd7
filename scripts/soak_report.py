#!/usr/bin/env python3
"""Summarises a soak run (scripts/soak.sh): what the closing note and docs/performance.md quote,
and an SVG plot of RSS and the fetch backlog over time beside the CSV.

    scripts/soak_report.py target/soak
"""
import csv
import json
import pathlib
import sys


def slope(points):
    """Least-squares slope of (x, y) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def plot(rows, path):
    """RSS (MB) and the fetch backlog (jobs) against minutes, as one SVG."""
    w, h, pad = 720, 320, 50
    t = [float(r["t_s"]) / 60 for r in rows]
    series = [("RSS (MB)", [float(r["rss_mb"]) for r in rows], "#d95f02"),
              ("fetch backlog (jobs / 1000)", [float(r["backlog_jobs"]) / 1000 for r in rows], "#1b9e77")]
    tmax = max(t) or 1
    ymax = max(max(v) for _, v, _ in series) or 1
    x = lambda m: pad + (w - 2 * pad) * m / tmax
    y = lambda v: h - pad - (h - 2 * pad) * v / ymax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="#888"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="#888"/>',
           f'<text x="{w/2}" y="{h-12}" text-anchor="middle">minutes</text>',
           f'<text x="{pad-6}" y="{pad}" text-anchor="end">{ymax:.0f}</text>',
           f'<text x="{w-pad}" y="{h-pad+16}" text-anchor="end">{tmax:.0f}</text>']
    for i, (name, values, colour) in enumerate(series):
        pts = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(t, values))
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        out.append(f'<text x="{pad+10}" y="{pad+16*(i+1)}" fill="{colour}">{name}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/soak")
    rows = list(csv.DictReader(open(out / "samples.csv")))
    if not rows:
        sys.exit("no samples")
    last_t = float(rows[-1]["t_s"])
    tail = [(float(r["t_s"]) / 60, float(r["rss_mb"])) for r in rows if float(r["t_s"]) >= last_t - 1800]
    status = json.load(open(out / "status.json"))
    truth = json.load(open(out / "truth.json"))
    announced = {(d["event"], d["user_id"], d["entity_id"]) for d in truth["deliveries"]
                 if d["outcome"] == "sent" and d["event"] != "PING"}
    generated = len(truth["entities"])
    never_announced = generated - len({(e["type"], e["user_id"], e["entity_id"]) for e in truth["entities"]} & announced)
    plot(rows, out / "soak.svg")
    status_ms = sorted(float(r["status_ms"]) for r in rows)
    summary = {
        "minutes": round(last_t / 60, 1),
        "rss_mb_first_last_max": [float(rows[0]["rss_mb"]), float(rows[-1]["rss_mb"]), max(float(r["rss_mb"]) for r in rows)],
        "rss_slope_mb_per_min_last_30": round(slope(tail), 3),
        "backlog_jobs_max": max(int(r["backlog_jobs"]) for r in rows),
        "backlog_jobs_last": int(rows[-1]["backlog_jobs"]),
        "drain_s_last": rows[-1]["drain_s"],
        "answered_429": int(rows[-1]["answered_429"]),
        "entities_generated": generated,
        "announced_by_a_delivery": len(announced),
        "accepted_by_hookrace": status["webhook"]["accepted"],
        "announced_but_not_stored": len(announced) - status["webhook"]["accepted"],
        "never_announced": never_announced,
        "misses_caught": status["poll"]["misses_caught"],
        "catch_delay_ms": status["poll"]["catch_delay_ms"],
        "status_ms_p50_p99": [status_ms[len(status_ms) // 2], status_ms[min(len(status_ms) - 1, int(len(status_ms) * 0.99))]],
        "sigterm_s": float((out / "sigterm_s.txt").read_text()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

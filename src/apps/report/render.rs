//! The report as text: a terminal table, Markdown, or JSON (the [`Report`] as it is).

use std::fmt::Write as _;
use std::time::Duration;

use super::{Report, TYPICAL_ITEMS_PER_USER_DAY};

pub(super) fn ms(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.abs() >= 10_000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) if v.abs() >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
    }
}

pub(super) fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "–".into())
}

pub(super) fn num(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into())
}

/// The rows of the main comparison: label, webhook, poll and, with a notify sink, your app.
pub(super) fn rows(r: &Report) -> Vec<Vec<String>> {
    let of = |n: u64| match &r.truth {
        Some(t) => format!("{n} of {}", t.entities_generated),
        None => n.to_string(),
    };
    let app = r.your_app.as_ref();
    let app_delay =
        |f: fn(&crate::race::LatencyStats) -> Option<f64>| app.map(|a| ms(f(&a.delay_ms)));
    let dash = || Some("–".to_string());
    type Stat = fn(&crate::race::LatencyStats) -> Option<f64>;
    let delays: [(&str, Stat); 4] = [
        ("median delay", |l| l.p50),
        ("p95 delay", |l| l.p95),
        ("max delay", |l| l.max),
        ("mean delay", |l| l.mean),
    ];
    let delay_rows = delays.map(|(label, f)| {
        let row = (label, ms(f(&r.webhook.delay_ms)), ms(f(&r.poll.delay_ms)));
        (row.0, row.1, row.2, app_delay(f))
    });
    let mut rows: Vec<(&str, String, String, Option<String>)> = vec![
        (
            "entities seen",
            of(r.webhook.entities_seen),
            of(r.poll.entities_seen),
            app.map(|a| of(a.events)),
        ),
        (
            "seen first (or alone)",
            r.webhook.seen_first.to_string(),
            r.poll.seen_first.to_string(),
            dash(),
        ),
    ];
    rows.extend(delay_rows);
    rows.extend([
        (
            "HTTP requests",
            r.webhook.requests.to_string(),
            r.poll.requests.to_string(),
            app.map(|a| a.requests.to_string()),
        ),
        (
            "requests per entity seen first",
            opt(r.webhook.requests_per_entity),
            opt(r.poll.requests_per_entity),
            dash(),
        ),
        (
            "empty (wasted) polls",
            "–".into(),
            pct(r.poll.empty_share),
            dash(),
        ),
        (
            "missed by the other channel, caught here",
            (r.webhook.entities_seen - r.seen_by_both).to_string(),
            r.webhook_missed_poll_caught.to_string(),
            dash(),
        ),
    ]);
    rows.into_iter()
        .map(|(label, w, p, a)| {
            let mut row = vec![label.to_string(), w, p];
            if app.is_some() {
                row.push(a.unwrap_or_else(|| "–".into()));
            }
            row
        })
        .collect()
}

/// The main comparison's header row.
pub(super) fn header(r: &Report) -> Vec<String> {
    let mut h = vec![String::new(), "webhook".into(), "poll".into()];
    if r.your_app.is_some() {
        h.push("your app".into());
    }
    h
}

pub(super) fn theory_rows(r: &Report) -> Vec<Vec<String>> {
    // A rate limit that stretched the interval: theory is taken at the interval kept.
    let (half, whole) = match r.theory.stretched_interval_s {
        // Gaps are between cycle starts: a cycle that waits for the window inside itself adds
        // that wait to an item's delay, so the longest gap is no bound (a review measured 70.3 s
        // against a longest gap of 57.6 s).
        Some(_) => (
            "Σg²/2Σg, gaps g kept",
            "longest gap kept, + waits inside a cycle",
        ),
        None => ("interval / 2", "interval"),
    };
    let (empty_label, empty_measured) = match &r.race_window {
        Some(w) => (
            format!(
                "empty polls ({} while data was made)",
                plural(w.cycles, "cycle", "cycles")
            ),
            w.empty_share(),
        ),
        None => ("empty polls".to_string(), r.poll.empty_share),
    };
    let rows: Vec<(String, String, String)> = vec![
        (
            "mean poll delay".into(),
            ms(r.poll.delay_ms.mean),
            r.theory
                .mean_poll_delay_ms
                .map(|v| format!("{} ({half})", ms(Some(v))))
                .unwrap_or_else(|| "–".into()),
        ),
        (
            "max poll delay".into(),
            ms(r.poll.delay_ms.max),
            r.theory
                .max_poll_delay_ms
                .map(|v| format!("{} ({whole})", ms(Some(v))))
                .unwrap_or_else(|| "–".into()),
        ),
        (
            empty_label,
            pct(empty_measured),
            r.theory
                .empty_poll_share
                .map(|v| match r.theory.stretched_interval_s {
                    Some(_) => format!("{} (mean of e^(−λg))", pct(Some(v))),
                    None => format!("{} (e^(−λT))", pct(Some(v))),
                })
                .unwrap_or_else(|| "–".into()),
        ),
        (
            "empty polls, Zapier 2013".into(),
            "–".into(),
            format!("{} of 30 M polls", pct(Some(r.theory.zapier_wasted_share))),
        ),
    ];
    rows.into_iter().map(|(a, b, c)| vec![a, b, c]).collect()
}

/// An aligned table: the first column left-aligned, the others right-aligned.
fn table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |out: &mut String, cells: &[String]| {
        let mut text = String::from(" ");
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let _ = match i {
                0 => write!(text, " {c:<w$}"),
                _ => write!(text, "   {c:>w$}"),
            };
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(out, header);
    let total = widths.iter().sum::<usize>() + 3 * (widths.len() - 1);
    let _ = writeln!(out, "  {}", "─".repeat(total));
    for r in rows {
        line(out, r);
    }
}

fn cost_rows(r: &Report, scenario: &str) -> Vec<(String, String, String, String)> {
    let mark = |v: f64, limit: u64| {
        if v > limit as f64 {
            format!("{} (over)", num(v))
        } else {
            num(v)
        }
    };
    r.cost_per_day
        .iter()
        .filter(|c| c.scenario == scenario)
        .map(|c| {
            (
                num(c.users as f64),
                format!(
                    "{} ({} to Polar)",
                    num(c.webhook_requests_per_day),
                    mark(c.webhook_api_requests_per_day, c.polar_daily_limit)
                ),
                mark(c.poll_requests_per_day, c.polar_daily_limit),
                num(c.polar_daily_limit as f64),
            )
        })
        .collect()
}

fn cost_title(scenario: &str) -> String {
    match scenario {
        "race" => "at this race's data rate".to_string(),
        _ => format!(
            "for typical users ({TYPICAL_ITEMS_PER_USER_DAY:.0} new items per user per day)"
        ),
    }
}

pub(super) fn settings_line(r: &Report) -> String {
    match &r.settings {
        Some(s) => {
            let rate: f64 = s.item_rate_per_user_s.values().sum();
            format!(
                "{} users, poll {} ({} mode), about {:.1} new items per user per minute ({})",
                s.users,
                match (&s.adaptive, s.poll_interval_s) {
                    (Some(a), _) => a.clone(),
                    (None, Some(t)) => format!(
                        "every {}",
                        humantime::format_duration(Duration::from_secs_f64(t.round()))
                    ),
                    (None, None) => "on a cron schedule".into(),
                },
                s.poll_mode,
                rate * 60.0,
                s.rates_from
            )
        }
        None => "settings unknown".into(),
    }
}

/// The safety-net section's lines (empty without one).
pub(super) fn safety_net_lines(r: &Report) -> Vec<String> {
    let Some(n) = &r.safety_net else {
        return Vec::new();
    };
    let secs = |s: f64| humantime::format_duration(Duration::from_secs_f64(s.round())).to_string();
    let pace = match n.max_every_s {
        Some(max) => format!(
            "{} auditor, between every {} and {}",
            n.strategy,
            secs(n.every_s),
            secs(max)
        ),
        None => format!("{} polling every {}", n.strategy, secs(n.every_s)),
    };
    let bound = format!(
        "the bound of {}: max_every + one cycle",
        ms(Some(n.bound_ms))
    );
    let against_bound = match n.catch_delay_ms.max {
        Some(max) if max <= n.bound_ms => format!("within {bound}"),
        Some(_) => format!("OVER {bound}"),
        // Nothing caught: the bound alone (before, "bound the bound of …").
        None => bound,
    };
    let ratio = match n.fixed_requests {
        0 => "–".to_string(),
        f => format!("{:.2}×", n.poll_requests as f64 / f as f64),
    };
    vec![
        format!("safety net ({pace}):"),
        format!(
            "  misses caught      {} of {} no webhook delivered",
            n.caught,
            plural(n.lost, "entity", "entities")
        ),
        format!(
            "  catch delay        median {}, max {} ({against_bound})",
            ms(n.catch_delay_ms.p50),
            ms(n.catch_delay_ms.max),
        ),
        format!(
            "  poll requests      {} (fixed polling every {} would have made {}: {ratio})",
            n.poll_requests,
            secs(n.every_s),
            n.fixed_requests
        ),
        format!(
            "  webhook watch      found it inactive {} time(s), reactivated {}; {} starved cycle(s)",
            n.deactivated_seen, n.reactivations, n.starved
        ),
    ]
}

/// "60 s of data, 70 s measured" (a demo) or "70 s measured".
pub(super) fn duration_text(r: &Report) -> String {
    match r.generated_for_s {
        Some(g) => format!(
            "{g:.0} s of new data, {:.0} s measured (until the last delivery and poll cycle)",
            r.measured_for_s
        ),
        None => format!("{:.0} s measured", r.measured_for_s),
    }
}

/// What the simulator's ground truth says, in one line (a demo's report).
pub(super) fn truth_line(r: &Report) -> Option<String> {
    let t = r.truth.as_ref()?;
    Some(format!(
        "{} generated, {} dropped, {} duplicated; {} never announced by a webhook",
        plural(t.entities_generated, "entity", "entities"),
        plural(t.deliveries_dropped, "delivery", "deliveries"),
        t.deliveries_duplicated,
        plural(t.entities_never_delivered, "entity", "entities")
    ))
}

/// Lines that explain numbers the table cannot: a rate limit that made the poller wait, and
/// webhook delays that include a lost first delivery.
pub(super) fn explanations(r: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    if r.paced > 0 || r.poll_rate_limited > 0 {
        let mut line = format!(
            "rate limit: requests to AccessLink waited {} for a window to reset ({:.1} s in all); {} answered 429",
            plural(r.paced, "time", "times"),
            r.paced_s,
            plural(r.poll_rate_limited, "poll request", "poll requests")
        );
        if let (Some(kept), Some(set)) = (
            r.theory.stretched_interval_s,
            r.settings.as_ref().and_then(|s| s.poll_interval_s),
        ) {
            line.push_str(&format!(
                "; the poll interval stretched from {} to {} on average (expected below: at the gaps kept)",
                ms(Some(set * 1000.0)),
                ms(Some(kept * 1000.0))
            ));
        }
        lines.push(line);
    }
    if let Some(t) = r.truth.as_ref().filter(|t| t.entities_announced_late > 0) {
        lines.push(format!(
            "webhook: {} announced only by a later delivery (the first was lost, or came \
             before the webhook existed; an activity update of the same day came later): their webhook delay, up to {}, is that wait, \
             not the network",
            plural(t.entities_announced_late, "entity was", "entities were"),
            ms(t.announced_late_max_ms)
        ));
    }
    lines
}

/// The report as an aligned plain-text table (for a terminal).
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hookrace: webhooks versus polling, {}",
        duration_text(r)
    );
    let _ = writeln!(out, "  {}", settings_line(r));
    let _ = writeln!(out);
    table(&mut out, &header(r), &rows(r));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  webhook lead over polling (entities both saw): median {}, p95 {}, max {}",
        ms(r.webhook_lead_ms.p50),
        ms(r.webhook_lead_ms.p95),
        ms(r.webhook_lead_ms.max)
    );
    let _ = writeln!(
        out,
        "  {} in all, {} seen by both; {} (duplicates, activity updates) answered 200 and stored once",
        plural(r.entities_total, "entity", "entities"),
        r.seen_by_both,
        plural(
            r.duplicate_deliveries,
            "repeated delivery",
            "repeated deliveries"
        )
    );
    if let Some(line) = truth_line(r) {
        let _ = writeln!(out, "  simulator: {line}");
    }
    for line in explanations(r) {
        let _ = writeln!(out, "  {line}");
    }
    if let Some(line) = your_app_line(r) {
        let _ = writeln!(out, "  {line}");
    }
    let net = safety_net_lines(r);
    if !net.is_empty() {
        let _ = writeln!(out);
        for line in net {
            let _ = writeln!(out, "  {line}");
        }
    }
    let _ = writeln!(out);
    let theory_header = ["measured versus expected", "measured", "expected"].map(String::from);
    table(&mut out, &theory_header, &theory_rows(r));
    for scenario in ["race", "typical"] {
        cost_table(&mut out, r, scenario);
    }
    if !r.cost_per_day.is_empty() {
        let _ = writeln!(
            out,
            "  (Polar's limit counts the requests a client makes: polls and fetches, not the deliveries it receives.)"
        );
    }
    out
}

/// The line about your app (the notify sink the demo started), if there was one.
fn your_app_line(r: &Report) -> Option<String> {
    let a = r.your_app.as_ref()?;
    let checked = match (a.verified, a.refused) {
        (Some(v), Some(0)) => format!(", {v} signatures verified by the app"),
        (Some(v), Some(x)) => {
            format!(", {v} signatures verified, {x} requests REFUSED by the app")
        }
        _ => String::new(),
    };
    Some(format!(
        "your app (sink {:?}): told of {} by hookrace once stored{checked}; {} pending, {} failed",
        a.sink,
        plural(a.events, "entity", "entities"),
        a.pending,
        a.failed
    ))
}

/// The projected requests per day at this interval for one scenario (`race` or `typical`), as
/// an aligned table; nothing when the report has none.
fn cost_table(out: &mut String, r: &Report, scenario: &str) {
    let rows = cost_rows(r, scenario);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  requests per day, polling at this interval, {} (projected):",
        cost_title(scenario)
    );
    let h = ["users", "webhook", "poll", "Polar daily limit"];
    let w: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .map(|r| [&r.0, &r.1, &r.2, &r.3][i].chars().count())
                .chain([h[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let _ = writeln!(
        out,
        "  {:>a$}   {:>b$}   {:>c$}   {:>d$}",
        h[0],
        h[1],
        h[2],
        h[3],
        a = w[0],
        b = w[1],
        c = w[2],
        d = w[3]
    );
    for (u, wh, p, l) in rows {
        let _ = writeln!(
            out,
            "  {u:>a$}   {wh:>b$}   {p:>c$}   {l:>d$}",
            a = w[0],
            b = w[1],
            c = w[2],
            d = w[3]
        );
    }
}

/// The report as Markdown tables (for a README or a lesson).
pub fn render_markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### hookrace: webhooks versus polling ({})\n",
        duration_text(r)
    );
    let _ = writeln!(out, "{}\n", settings_line(r));
    let head = header(r);
    let _ = writeln!(
        out,
        "| {} |\n|---|{}",
        head.join(" | "),
        "---:|".repeat(head.len() - 1)
    );
    for row in rows(r) {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    let _ = writeln!(
        out,
        "| webhook lead (median / p95) | {} / {} |{}",
        ms(r.webhook_lead_ms.p50),
        ms(r.webhook_lead_ms.p95),
        " |".repeat(head.len() - 2)
    );
    let _ = writeln!(
        out,
        "\n| measured versus expected | measured | expected |\n|---|---:|---:|"
    );
    for row in theory_rows(r) {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    for scenario in ["race", "typical"] {
        let rows = cost_rows(r, scenario);
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\nRequests per day, polling at this interval, {} (projected):\n\n| users | webhook | poll | Polar daily limit |\n|---:|---:|---:|---:|",
            cost_title(scenario)
        );
        for (u, w, p, l) in rows {
            let _ = writeln!(out, "| {u} | {w} | {p} | {l} |");
        }
    }
    let net = safety_net_lines(r);
    if !net.is_empty() {
        let _ = writeln!(out, "\n```\n{}\n```", net.join("\n"));
    }
    if let Some(t) = &r.truth {
        let _ = writeln!(
            out,
            "\nSimulator ground truth: {} generated, {} dropped, {} duplicated.",
            plural(t.entities_generated, "entity", "entities"),
            plural(t.deliveries_dropped, "delivery", "deliveries"),
            t.deliveries_duplicated
        );
    }
    for line in explanations(r) {
        let _ = writeln!(out, "\n{line}");
    }
    out
}

/// The report as pretty JSON.
pub fn render_json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

//! The comparison report: the two channels side by side, next to what theory predicts and what
//! the industry reported, with a projection of the daily request cost.
//!
//! Every measured number comes from the status document ([`StatusDoc`]), which is built from the
//! store alone, so a report and `/status` for the same store agree exactly. Theory needs the poll
//! interval and the rate of new data: the demo knows them exactly; `hookrace report` takes them
//! from the configuration (the simulator's settings) or estimates the rate from the store.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::PollMode;
use crate::race::LatencyStats;
use crate::status::StatusDoc;

/// Zapier's published figure (resthooks.org, 2013): share of polls that found nothing.
pub const ZAPIER_WASTED_SHARE: f64 = 0.985;

/// What theory needs to know about the race.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaceSettings {
    /// The poll interval; `None` for a cron schedule (no single interval).
    pub poll_interval_s: Option<f64>,
    pub poll_mode: String,
    pub users: u64,
    /// New items per user per second, by type (an activity update counts as an item).
    pub item_rate_per_user_s: BTreeMap<String, f64>,
    /// Where the rates come from: `"simulator settings"` or `"estimated from the store"`.
    pub rates_from: String,
}

/// The simulator's ground truth, when known.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroundTruth {
    pub entities_generated: u64,
    pub deliveries_decided: u64,
    pub deliveries_dropped: u64,
    pub deliveries_duplicated: u64,
    /// Entities for which no delivery reached the receiver (all dropped, failed or not sent).
    pub entities_never_delivered: u64,
    /// Requests the simulator served, by endpoint.
    pub requests: BTreeMap<String, u64>,
}

impl GroundTruth {
    /// Summarises the simulator's `/sim/truth` document.
    pub fn from_truth(t: &crate::sim::Truth) -> GroundTruth {
        GroundTruth {
            entities_generated: t.entities.len() as u64,
            deliveries_decided: t.deliveries.iter().filter(|d| !d.duplicate).count() as u64,
            deliveries_dropped: t
                .deliveries
                .iter()
                .filter(|d| d.outcome == "dropped")
                .count() as u64,
            deliveries_duplicated: t.deliveries.iter().filter(|d| d.duplicate).count() as u64,
            entities_never_delivered: t
                .entities
                .iter()
                .filter(|e| {
                    !t.deliveries.iter().any(|d| {
                        d.outcome == "sent"
                            && d.event == e.kind
                            && d.user_id == e.user_id
                            && d.entity_id == e.entity_id
                    })
                })
                .count() as u64,
            requests: t.requests.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelReport {
    /// Entities this channel saw at all.
    pub entities_seen: u64,
    /// Entities this channel saw first (or alone).
    pub seen_first: u64,
    /// Delay from availability at the source to this channel seeing it.
    pub delay_ms: LatencyStats,
    pub requests: u64,
    pub requests_per_entity: Option<f64>,
    /// Poll only: share of cycles that found nothing.
    pub empty_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Theory {
    /// Interval polling: mean delay = interval / 2.
    pub mean_poll_delay_ms: Option<f64>,
    /// Interval polling: worst delay = interval.
    pub max_poll_delay_ms: Option<f64>,
    /// Share of polls that find nothing when data arrives at random at rate λ: e^(−λ·T).
    pub empty_poll_share: Option<f64>,
    pub zapier_wasted_share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CostRow {
    /// `"race"`: the race's own data rate; `"typical"`: 3 new items per user per day.
    pub scenario: String,
    pub users: u64,
    /// Deliveries received plus fetches made.
    pub webhook_requests_per_day: f64,
    /// Of those, the requests made to AccessLink (the fetches): what its rate limit counts.
    pub webhook_api_requests_per_day: f64,
    /// Every poll request is made to AccessLink.
    pub poll_requests_per_day: f64,
    /// Polar's per-client daily limit for this many users: 5000 + users × 100.
    pub polar_daily_limit: u64,
}

/// New items per user per day in the "typical" projection (an exercise, an activity summary and
/// one more: a rough figure for an active user, not a measurement).
pub const TYPICAL_ITEMS_PER_USER_DAY: f64 = 3.0;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub measured_for_s: f64,
    pub settings: Option<RaceSettings>,
    pub webhook: ChannelReport,
    pub poll: ChannelReport,
    pub entities_total: u64,
    pub seen_by_both: u64,
    /// Entities no delivery announced (dropped, lost) that polling caught.
    pub webhook_missed_poll_caught: u64,
    /// How much earlier the webhook saw what both saw (negative: polling won).
    pub webhook_lead_ms: LatencyStats,
    pub duplicate_deliveries: u64,
    /// 429 answers the poller received (it then waits for the window to reset).
    pub poll_rate_limited: u64,
    pub theory: Theory,
    pub cost_per_day: Vec<CostRow>,
    pub truth: Option<GroundTruth>,
}

/// Builds the report.
pub fn build(
    status: &StatusDoc,
    settings: Option<RaceSettings>,
    truth: Option<GroundTruth>,
) -> Report {
    let e = &status.entities;
    let w = &status.webhook;
    let p = &status.poll;
    let webhook_requests = w.accepted + w.duplicates + w.fetch_requests;
    let interval = settings.as_ref().and_then(|s| s.poll_interval_s);
    let lambda_total = settings
        .as_ref()
        .map(|s| s.users as f64 * s.item_rate_per_user_s.values().sum::<f64>());
    let theory = Theory {
        mean_poll_delay_ms: interval.map(|t| t * 1000.0 / 2.0),
        max_poll_delay_ms: interval.map(|t| t * 1000.0),
        empty_poll_share: interval
            .zip(lambda_total)
            .map(|(t, l)| round4((-l * t).exp())),
        zapier_wasted_share: ZAPIER_WASTED_SHARE,
    };
    let cost_per_day = match &settings {
        Some(s) => {
            let typical = RaceSettings {
                item_rate_per_user_s: [(
                    "EXERCISE".to_string(),
                    TYPICAL_ITEMS_PER_USER_DAY / 86_400.0,
                )]
                .into(),
                ..s.clone()
            };
            [(s, "race"), (&typical, "typical")]
                .into_iter()
                .flat_map(|(s, name)| {
                    [1, 100, 10_000]
                        .into_iter()
                        .filter_map(move |n| cost_row(s, n, name))
                })
                .collect()
        }
        None => Vec::new(),
    };
    Report {
        measured_for_s: status.uptime_seconds,
        webhook: ChannelReport {
            entities_seen: e.seen_by_both + e.webhook_only,
            seen_first: e.first_by_webhook,
            delay_ms: w.latency_ms.clone(),
            requests: webhook_requests,
            requests_per_entity: status.race.requests_per_entity.webhook,
            empty_share: None,
        },
        poll: ChannelReport {
            entities_seen: e.seen_by_both + e.poll_only,
            seen_first: e.first_by_poll,
            delay_ms: p.latency_ms.clone(),
            requests: p.requests,
            requests_per_entity: status.race.requests_per_entity.poll,
            empty_share: status.race.wasted_poll_share,
        },
        entities_total: e.total,
        seen_by_both: e.seen_by_both,
        webhook_missed_poll_caught: e.poll_only,
        webhook_lead_ms: status.race.webhook_lead_ms.clone(),
        duplicate_deliveries: w.duplicates,
        poll_rate_limited: p.rate_limited,
        theory,
        cost_per_day,
        settings,
        truth,
    }
}

/// Requests per day for `users` users with the same per-user rates and interval.
fn cost_row(s: &RaceSettings, users: u64, scenario: &str) -> Option<CostRow> {
    let t = s.poll_interval_s?;
    let day = 86_400.0;
    let n = users as f64;
    let cycles = day / t;
    let items_per_day: f64 = s.item_rate_per_user_s.values().map(|r| n * r * day).sum();
    // Each item: one delivery and one fetch.
    let webhook = 2.0 * items_per_day;
    let poll = if s.poll_mode == "list" {
        // A list call per user per cycle, plus one fetch per new exercise.
        let exercises = s
            .item_rate_per_user_s
            .get("EXERCISE")
            .copied()
            .unwrap_or(0.0)
            * n
            * day;
        n * cycles + exercises
    } else {
        // One notifications call per cycle; per user and type with data waiting: create, list,
        // commit, plus one request per item.
        let transactions: f64 = s
            .item_rate_per_user_s
            .values()
            .map(|r| n * cycles * (1.0 - (-r * t).exp()))
            .sum();
        cycles + 3.0 * transactions + items_per_day
    };
    Some(CostRow {
        scenario: scenario.to_string(),
        users,
        webhook_requests_per_day: webhook.round(),
        webhook_api_requests_per_day: items_per_day.round(),
        poll_requests_per_day: poll.round(),
        polar_daily_limit: 5000 + users * 100,
    })
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Settings from a validated configuration: the simulator's rates when it is enabled, else the
/// rate of entities the store has seen since it was created.
pub fn settings_from_config(
    cfg: &crate::config::Config,
    status: &StatusDoc,
    store_age: Option<Duration>,
) -> RaceSettings {
    let poll_interval_s = match &cfg.poller.schedule {
        crate::config::PollSchedule::Every(d) => Some(d.as_secs_f64()),
        crate::config::PollSchedule::Cron(_) => None,
    };
    let poll_mode = match cfg.poller.mode {
        PollMode::Transactions => "transactions",
        PollMode::List => "list",
    }
    .to_string();
    if cfg.simulator.enabled {
        let mut rates = BTreeMap::new();
        rates.insert(
            "EXERCISE".to_string(),
            1.0 / cfg.simulator.exercise_every.as_secs_f64(),
        );
        rates.insert(
            "ACTIVITY_SUMMARY".to_string(),
            1.0 / cfg.simulator.activity_every.as_secs_f64(),
        );
        return RaceSettings {
            poll_interval_s,
            poll_mode,
            users: u64::from(cfg.simulator.users),
            item_rate_per_user_s: rates,
            rates_from: "simulator settings".into(),
        };
    }
    let users = status.users.known.max(1);
    let age = store_age.map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let rates = status
        .entities
        .by_type
        .iter()
        .filter(|_| age > 0.0)
        .map(|(k, n)| (k.clone(), *n as f64 / age / users as f64))
        .collect();
    RaceSettings {
        poll_interval_s,
        poll_mode,
        users,
        item_rate_per_user_s: rates,
        rates_from: "estimated from the store".into(),
    }
}

// ---- rendering ----

fn ms(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.abs() >= 10_000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) if v.abs() >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "–".into())
}

fn num(v: f64) -> String {
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

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into())
}

/// The rows of the main comparison: (label, webhook, poll).
fn rows(r: &Report) -> Vec<(String, String, String)> {
    let of = |n: u64| match &r.truth {
        Some(t) => format!("{n} of {}", t.entities_generated),
        None => n.to_string(),
    };
    vec![
        (
            "entities seen".into(),
            of(r.webhook.entities_seen),
            of(r.poll.entities_seen),
        ),
        (
            "seen first (or alone)".into(),
            r.webhook.seen_first.to_string(),
            r.poll.seen_first.to_string(),
        ),
        (
            "median delay".into(),
            ms(r.webhook.delay_ms.p50),
            ms(r.poll.delay_ms.p50),
        ),
        (
            "p95 delay".into(),
            ms(r.webhook.delay_ms.p95),
            ms(r.poll.delay_ms.p95),
        ),
        (
            "max delay".into(),
            ms(r.webhook.delay_ms.max),
            ms(r.poll.delay_ms.max),
        ),
        (
            "mean delay".into(),
            ms(r.webhook.delay_ms.mean),
            ms(r.poll.delay_ms.mean),
        ),
        (
            "HTTP requests".into(),
            r.webhook.requests.to_string(),
            r.poll.requests.to_string(),
        ),
        (
            "requests per entity seen first".into(),
            opt(r.webhook.requests_per_entity),
            opt(r.poll.requests_per_entity),
        ),
        (
            "empty (wasted) polls".into(),
            "–".into(),
            pct(r.poll.empty_share),
        ),
        (
            "missed by the other channel, caught here".into(),
            (r.webhook.entities_seen - r.seen_by_both).to_string(),
            r.webhook_missed_poll_caught.to_string(),
        ),
    ]
}

fn theory_rows(r: &Report) -> Vec<(String, String, String)> {
    vec![
        (
            "mean poll delay".into(),
            ms(r.poll.delay_ms.mean),
            r.theory
                .mean_poll_delay_ms
                .map(|v| format!("{} (interval / 2)", ms(Some(v))))
                .unwrap_or_else(|| "–".into()),
        ),
        (
            "max poll delay".into(),
            ms(r.poll.delay_ms.max),
            r.theory
                .max_poll_delay_ms
                .map(|v| format!("{} (interval)", ms(Some(v))))
                .unwrap_or_else(|| "–".into()),
        ),
        (
            "empty polls".into(),
            pct(r.poll.empty_share),
            r.theory
                .empty_poll_share
                .map(|v| format!("{} (e^(−λT))", pct(Some(v))))
                .unwrap_or_else(|| "–".into()),
        ),
        (
            "empty polls, Zapier 2013".into(),
            "–".into(),
            format!("{} of 30 M polls", pct(Some(r.theory.zapier_wasted_share))),
        ),
    ]
}

fn table(out: &mut String, header: [&str; 3], rows: &[(String, String, String)]) {
    let w0 = rows
        .iter()
        .map(|r| r.0.chars().count())
        .chain([header[0].len()])
        .max()
        .unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r.1.chars().count())
        .chain([header[1].len()])
        .max()
        .unwrap_or(0);
    let w2 = rows
        .iter()
        .map(|r| r.2.chars().count())
        .chain([header[2].len()])
        .max()
        .unwrap_or(0);
    let line = |out: &mut String, a: &str, b: &str, c: &str| {
        let _ = writeln!(out, "  {a:<w0$}   {b:>w1$}   {c:>w2$}");
    };
    line(out, header[0], header[1], header[2]);
    let _ = writeln!(out, "  {}", "─".repeat(w0 + w1 + w2 + 6));
    for (a, b, c) in rows {
        line(out, a, b, c);
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

fn settings_line(r: &Report) -> String {
    match &r.settings {
        Some(s) => {
            let rate: f64 = s.item_rate_per_user_s.values().sum();
            format!(
                "{} users, poll {} ({} mode), about {:.1} new items per user per minute ({})",
                s.users,
                s.poll_interval_s
                    .map(|t| format!(
                        "every {}",
                        humantime::format_duration(Duration::from_secs_f64(t.round()))
                    ))
                    .unwrap_or_else(|| "on a cron schedule".into()),
                s.poll_mode,
                rate * 60.0,
                s.rates_from
            )
        }
        None => "settings unknown".into(),
    }
}

/// The report as an aligned plain-text table (for a terminal).
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hookrace: webhooks versus polling, {:.0} s measured",
        r.measured_for_s
    );
    let _ = writeln!(out, "  {}", settings_line(r));
    let _ = writeln!(out);
    table(&mut out, ["", "webhook", "poll"], &rows(r));
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
    if let Some(t) = &r.truth {
        let _ = writeln!(
            out,
            "  simulator: {} entities generated, {} deliveries dropped, {} duplicated; {} entities never announced by a webhook",
            t.entities_generated,
            t.deliveries_dropped,
            t.deliveries_duplicated,
            t.entities_never_delivered
        );
    }
    let _ = writeln!(out);
    table(
        &mut out,
        ["measured versus expected", "measured", "expected"],
        &theory_rows(r),
    );
    for scenario in ["race", "typical"] {
        let rows = cost_rows(r, scenario);
        if rows.is_empty() {
            continue;
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
    if !r.cost_per_day.is_empty() {
        let _ = writeln!(
            out,
            "  (Polar's limit counts the requests a client makes: polls and fetches, not the deliveries it receives.)"
        );
    }
    out
}

/// The report as Markdown tables (for a README or a lesson).
pub fn render_markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### hookrace: webhooks versus polling ({:.0} s measured)\n",
        r.measured_for_s
    );
    let _ = writeln!(out, "{}\n", settings_line(r));
    let _ = writeln!(out, "| | webhook | poll |\n|---|---:|---:|");
    for (a, b, c) in rows(r) {
        let _ = writeln!(out, "| {a} | {b} | {c} |");
    }
    let _ = writeln!(
        out,
        "| webhook lead (median / p95) | {} / {} | |",
        ms(r.webhook_lead_ms.p50),
        ms(r.webhook_lead_ms.p95)
    );
    let _ = writeln!(
        out,
        "\n| measured versus expected | measured | expected |\n|---|---:|---:|"
    );
    for (a, b, c) in theory_rows(r) {
        let _ = writeln!(out, "| {a} | {b} | {c} |");
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
    if let Some(t) = &r.truth {
        let _ = writeln!(
            out,
            "\nSimulator ground truth: {} entities generated, {} deliveries dropped, {} duplicated.",
            t.entities_generated, t.deliveries_dropped, t.deliveries_duplicated
        );
    }
    out
}

/// The report as pretty JSON.
pub fn render_json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Output formats of `report` and `demo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

pub fn render(r: &Report, format: Format) -> String {
    match format {
        Format::Table => render_table(r),
        Format::Json => render_json(r),
        Format::Markdown => render_markdown(r),
    }
}

/// `hookrace report`: the report for the store the configuration names. When the daemon holds
/// the store open, the numbers come from its `/status` instead (the same document).
pub async fn from_config(cfg: &crate::config::Config) -> anyhow::Result<Report> {
    use anyhow::Context;
    let (status, age) = match crate::store::Store::open(&cfg.store.path) {
        Ok(store) => {
            let created = store.created_at().unwrap_or_else(chrono::Utc::now);
            let rt = crate::status::Runtime {
                started_at: created,
                poll_enabled: cfg.poller.enabled,
                last_cycle_at: None,
                next_cycle_at: None,
            };
            let doc = crate::status::build(&store, &rt)?;
            (doc, (chrono::Utc::now() - created).to_std().ok())
        }
        Err(open_err) => {
            let url = format!("http://{}/status", cfg.admin.listen);
            let mut req = reqwest::Client::new().get(&url);
            if let Some(t) = &cfg.admin.token {
                req = req.bearer_auth(t.expose());
            }
            let res = req.send().await.with_context(|| {
                format!("the store could not be opened ({open_err:#}) and the daemon's {url} did not answer")
            })?;
            anyhow::ensure!(res.status().is_success(), "{url} answered {}", res.status());
            let doc: StatusDoc = res.json().await.with_context(|| format!("reading {url}"))?;
            let age = Duration::from_secs_f64(doc.uptime_seconds.max(0.0));
            (doc, Some(age))
        }
    };
    let settings = settings_from_config(cfg, &status, age);
    Ok(build(&status, Some(settings), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RaceSettings {
        RaceSettings {
            poll_interval_s: Some(30.0),
            poll_mode: "transactions".into(),
            users: 3,
            item_rate_per_user_s: [("EXERCISE".to_string(), 1.0 / 600.0)].into(),
            rates_from: "test".into(),
        }
    }

    #[test]
    fn cost_projection_follows_the_model() {
        let s = settings();
        let one = cost_row(&s, 1, "race").unwrap();
        // 144 items a day → 288 webhook requests.
        assert_eq!(one.webhook_requests_per_day, 288.0);
        assert_eq!(one.webhook_api_requests_per_day, 144.0);
        // 2880 cycles; p = 1 − e^(−30/600) ≈ 0.04877 → 140.5 transactions × 3 + 144 items.
        let expected = 2880.0 + 3.0 * 2880.0 * (1.0 - (-0.05f64).exp()) + 144.0;
        assert_eq!(one.poll_requests_per_day, expected.round());
        assert_eq!(one.polar_daily_limit, 5100);
        let mut list = s;
        list.poll_mode = "list".into();
        assert_eq!(
            cost_row(&list, 100, "race").unwrap().poll_requests_per_day,
            288_000.0 + 14_400.0
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(1234567.0), "1,234,567");
        assert_eq!(num(12.0), "12");
        assert_eq!(ms(Some(250.4)), "250 ms");
        assert_eq!(ms(Some(2500.0)), "2.50 s");
        assert_eq!(ms(Some(15000.0)), "15.0 s");
        assert_eq!(pct(Some(0.985)), "98.5%");
    }
}

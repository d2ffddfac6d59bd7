//! The comparison report: the two channels side by side, next to what theory predicts and what
//! the industry reported, with a projection of the daily request cost.
//!
//! Every measured number comes from the status document ([`StatusDoc`]), which is built from the
//! store alone, so a report and `/status` for the same store agree exactly. Theory needs the poll
//! interval and the rate of new data: the demo knows them exactly; `hookrace report` takes them
//! from the configuration (the simulator's settings) or estimates the rate from the store.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::PollMode;

mod html;
mod render;
use crate::observe::status::StatusDoc;
use crate::race::LatencyStats;
pub use render::{render_json, render_markdown, render_table};

/// The `meta` key of the settings a demo raced with (JSON), for a report read from its store
/// later: it shows them rather than those of whatever configuration names the store.
pub const SAVED_SETTINGS: &str = "demo.race_settings";
/// The `meta` key of the whole report a demo printed (JSON), so `report --store` prints the same
/// report again.
pub const SAVED_REPORT: &str = "demo.race_report";
/// The report in `format` (the HTML page builds on the text renderers' helpers, so the choice
/// is made here, above both).
pub fn render(r: &Report, format: Format) -> String {
    match format {
        Format::Table => render_table(r),
        Format::Json => render_json(r),
        Format::Markdown => render_markdown(r),
        Format::Html => html::page(r),
    }
}

/// Zapier's published figure (resthooks.org, 2013): share of polls that found nothing.
pub const ZAPIER_WASTED_SHARE: f64 = 0.985;

/// What theory needs to know about the race.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaceSettings {
    /// The poll interval; `None` for a cron schedule (no single interval).
    pub poll_interval_s: Option<f64>,
    pub poll_mode: crate::config::PollMode,
    pub users: u64,
    /// New items per user per second, by type (an activity update counts as an item).
    pub item_rate_per_user_s: BTreeMap<String, f64>,
    /// Where the rates come from: `"simulator settings"` or `"estimated from the store"`.
    pub rates_from: String,
    /// How the adaptive auditor paced itself (`None`: a fixed schedule; then the interval above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<String>,
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
    /// Entities whose first delivery was lost while a later one (an activity update of the same
    /// day) reached the receiver: the webhook saw them, late. Their webhook delays, the slowest.
    #[serde(default)]
    pub entities_announced_late: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced_late_max_ms: Option<f64>,
    /// Requests the simulator served, by endpoint.
    pub requests: BTreeMap<String, u64>,
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

/// The callback's second hop: the first notify sink (`[[notify]]`), i.e. your app, told by
/// hookrace once the data was stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct YourAppReport {
    pub sink: String,
    /// Events your app took (one per entity).
    pub events: u64,
    /// From availability at the source to your app taking the event: end-to-end freshness.
    pub delay_ms: LatencyStats,
    /// Requests (or command runs) hookrace made to tell it, retries included.
    pub requests: u64,
    pub pending: u64,
    pub failed: u64,
    /// The demo's stand-in app: events whose Standard Webhooks signature it verified, and
    /// requests it refused (a bad or missing signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<u64>,
}

/// The safety net: what the poll caught that webhooks lost, how late, and at what cost next to
/// fixed polling (the demo fills it in from the simulator's ground truth).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SafetyNet {
    /// `fixed` or `adaptive`.
    pub strategy: String,
    /// The fastest interval (`every`) and, adaptive, the slowest (`max_every`), in seconds.
    pub every_s: f64,
    pub max_every_s: Option<f64>,
    /// Entities no delivery reached the receiver for (simulator: dropped, lost in an outage,
    /// not sent while the webhook was inactive).
    pub lost: u64,
    /// Of those, the entities the poll found.
    pub caught: u64,
    /// Availability → poll sighting for the caught ones.
    pub catch_delay_ms: LatencyStats,
    /// The promised bound: `max_every` plus one fast cycle (fixed: `every`).
    pub bound_ms: f64,
    /// What the poller spent (every request, as counted by hookrace).
    pub poll_requests: u64,
    /// Adaptive: the audits that ran, the listings they read and the entities they fetched
    /// (what no webhook had announced).
    #[serde(default)]
    pub cycles: u64,
    #[serde(default)]
    pub listings: u64,
    #[serde(default)]
    pub fetched: u64,
    /// What fixed polling at `every` would have spent over the same time, counted by the
    /// simulator from what it made available when.
    pub fixed_requests: u64,
    /// The webhook watch: times it found the webhook inactive, and reactivations.
    pub deactivated_seen: u64,
    pub reactivations: u64,
    /// Auditor cycles put off to leave the budget to webhook fetches.
    pub starved: u64,
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
    /// The interval the poll cycles actually kept when a rate limit stretched it (by more than
    /// a fifth): the expected delays and empty share above are then taken at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stretched_interval_s: Option<f64>,
}

impl Theory {
    /// What theory expects at the race's settings, at the interval the cycles kept (`window`)
    /// when a rate limit stretched it.
    pub fn at(settings: Option<&RaceSettings>, window: Option<&PollWindow>) -> Theory {
        let set = settings.and_then(|s| s.poll_interval_s);
        let lambda_total =
            settings.map(|s| s.users as f64 * s.item_rate_per_user_s.values().sum::<f64>());
        let kept = window.and_then(PollWindow::interval_s);
        let stretched = set.zip(kept).and_then(|(t, k)| (k > t * 1.2).then_some(k));
        // Uneven gaps (a limit makes the poller wait for a window, then run on): data that
        // arrives at random lands in a long gap more often, so the mean delay is Σg² / 2Σg, the
        // worst is the longest gap, and a gap g is empty with e^(−λg). Even gaps: T/2, T, e^(−λT).
        let gaps: Vec<f64> = match (stretched, window) {
            (Some(_), Some(w)) => w.gaps_s.clone(),
            _ => set.into_iter().collect(),
        };
        let sum: f64 = gaps.iter().sum();
        let sq: f64 = gaps.iter().map(|g| g * g).sum();
        let n = gaps.len() as f64;
        let some = !gaps.is_empty();
        Theory {
            mean_poll_delay_ms: some.then(|| sq / (2.0 * sum) * 1000.0),
            max_poll_delay_ms: some.then(|| gaps.iter().copied().fold(0.0, f64::max) * 1000.0),
            empty_poll_share: lambda_total
                .filter(|_| some)
                .map(|l| round4(gaps.iter().map(|g| (-l * g).exp()).sum::<f64>() / n)),
            zapier_wasted_share: ZAPIER_WASTED_SHARE,
            stretched_interval_s: stretched,
        }
    }
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
    /// How long the simulator made data (a demo; the rest of the measured time is the wait for
    /// the last deliveries and poll cycle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_for_s: Option<f64>,
    /// The poll cycles that ran while data was made, each covering a whole interval of it (a
    /// demo: the first cycle, before any data, and those after the generator stopped are left
    /// out): what the expected empty share and delays describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub race_window: Option<PollWindow>,
    /// Times the client waited for a rate-limit window (pacing before Polar's limit, or after a
    /// 429), and how long in all.
    #[serde(default)]
    pub paced: u64,
    #[serde(default)]
    pub paced_s: f64,
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
    /// With `[[notify]]`: the third column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub your_app: Option<YourAppReport>,
    /// The demo's safety-net section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_net: Option<SafetyNet>,
    /// For the html page's timeline and delay charts: each entity's sightings (the newest
    /// [`SIGHTINGS_MAX`]), gathered only for `--format html`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sightings: Vec<Sighting>,
    /// For the html page's requests chart: `(seconds, webhook requests, poll requests)` as the
    /// demo sampled them while it ran (a report from a store has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<(f64, u64, u64)>,
}

/// Poll cycles over a stretch of the race: how many, how many found nothing, and the time
/// between one cycle's start and the next's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollWindow {
    pub cycles: u64,
    pub empty: u64,
    pub gaps_s: Vec<f64>,
}

impl PollWindow {
    /// The share of empty cycles.
    pub fn empty_share(&self) -> Option<f64> {
        (self.cycles > 0).then(|| self.empty as f64 / self.cycles as f64)
    }
    /// The mean interval the cycles kept (a rate limit stretches it).
    pub fn interval_s(&self) -> Option<f64> {
        (!self.gaps_s.is_empty())
            .then(|| self.gaps_s.iter().sum::<f64>() / self.gaps_s.len() as f64)
    }
}

/// The most entities the html page draws.
pub const SIGHTINGS_MAX: usize = 5000;

/// One entity on the html page: when it became available and when each channel saw it, in seconds
/// from the start of the measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sighting {
    pub available_s: f64,
    pub webhook_s: Option<f64>,
    pub poll_s: Option<f64>,
}

/// The newest entities of `store` as sightings, timed from `start`.
pub fn sightings(
    store: &crate::store::Store,
    start: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<Sighting>> {
    let views: Vec<crate::race::EntityView> = store
        .newest_entities(SIGHTINGS_MAX, None)?
        .iter()
        .map(|e| e.view())
        .collect();
    Ok(sightings_of(&views, start))
}

/// Entity views (from a store, or a running daemon's `/entities`) as sightings, timed from
/// `start`.
pub fn sightings_of(
    views: &[crate::race::EntityView],
    start: chrono::DateTime<chrono::Utc>,
) -> Vec<Sighting> {
    let secs = |t: chrono::DateTime<chrono::Utc>| (t - start).num_milliseconds() as f64 / 1000.0;
    views
        .iter()
        .filter_map(|e| {
            Some(Sighting {
                available_s: secs(e.available_at?),
                webhook_s: e.webhook_at.map(secs),
                poll_s: e.poll_at.map(secs),
            })
        })
        .collect()
}

impl Report {
    /// Sets the poll cycles that ran while data was made, and takes theory at the interval they
    /// kept.
    pub fn set_race_window(&mut self, window: PollWindow) {
        self.theory = Theory::at(self.settings.as_ref(), Some(&window));
        self.race_window = Some(window);
    }
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
    let theory = Theory::at(settings.as_ref(), None);
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
    let rate = status.accesslink.as_ref().map(|a| &a.rate_limit);
    Report {
        measured_for_s: status.uptime_seconds,
        generated_for_s: None,
        race_window: None,
        paced: rate.map_or(0, |r| r.paced),
        paced_s: rate.map_or(0.0, |r| r.paced_seconds),
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
        your_app: status.notify.first().map(|n| YourAppReport {
            sink: n.name.clone(),
            events: n.sent,
            // Per entity, from its availability as known now (as the other two columns are).
            delay_ms: status.race.app_latency_ms.clone(),
            requests: n.attempts,
            pending: n.pending,
            failed: n.failed,
            verified: None,
            refused: None,
        }),
        safety_net: None,
        sightings: Vec::new(),
        samples: Vec::new(),
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
    let poll = if s.poll_mode == PollMode::List {
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
    // An adaptive auditor has no single interval: theory and projections need one.
    let (poll_interval_s, adaptive) = match (&cfg.poller.schedule, cfg.poller.strategy) {
        (
            crate::config::PollSchedule::Every(d),
            crate::config::PollStrategy::Adaptive { max_every },
        ) => (None, Some(adaptive_text(*d, max_every))),
        (crate::config::PollSchedule::Every(d), _) => (Some(d.as_secs_f64()), None),
        (crate::config::PollSchedule::Cron(_), _) => (None, None),
    };
    let poll_mode = cfg.poller.mode;
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
            adaptive,
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
        adaptive,
    }
}

/// "adaptively, every 10s to 1m".
pub fn adaptive_text(every: Duration, max_every: Duration) -> String {
    format!(
        "adaptively, every {} to {}",
        humantime::format_duration(every),
        humantime::format_duration(max_every)
    )
}

// ---- rendering ----

/// Output formats of `report` and `demo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Markdown,
    /// One self-contained page (no network): the report with its charts, to hand out.
    Html,
}

/// `hookrace report`: the report for the store the configuration names. When the daemon holds
/// the store open, the numbers come from its `/status` instead (the same document).
pub async fn from_config(cfg: &crate::config::Config, format: Format) -> anyhow::Result<Report> {
    use crate::operations::manage::{Target, existing_target};
    use anyhow::Context;
    let mut sighted = Vec::new();
    let mut saved = None;
    let (status, age) = match existing_target(cfg)? {
        Target::Store(store) => {
            // Read, then close the store (a command's handle, like the daemon's, is closed
            // explicitly: the next start then has nothing to recount). Err: the report a demo
            // printed, as it printed it.
            let read = (|| -> anyhow::Result<Result<(StatusDoc, Option<Duration>), Report>> {
                // A demo's store: the report it printed, as it printed it.
                let printed = store
                    .saved(SAVED_REPORT)
                    .and_then(|json| serde_json::from_slice::<Report>(&json).ok());
                if let Some(mut report) = printed {
                    if format == Format::Html && report.sightings.is_empty() {
                        let created = store.created_at().unwrap_or_else(chrono::Utc::now);
                        report.sightings = sightings(&store, created)?;
                    }
                    return Ok(Err(report));
                }
                saved = store
                    .saved(SAVED_SETTINGS)
                    .and_then(|json| serde_json::from_slice::<RaceSettings>(&json).ok());
                let created = store.created_at().unwrap_or_else(chrono::Utc::now);
                let rt = crate::process::Runtime {
                    started_at: created,
                    poll_enabled: cfg.poller.enabled,
                    last_cycle_at: None,
                    next_cycle_at: None,
                    notify_sinks: cfg.notify.iter().map(Into::into).collect(),
                    webhook_health: Default::default(),
                    poll_pace: Default::default(),
                    listeners: Vec::new(),
                };
                // The notify numbers are counted from the records (a scan of the store).
                let queues = match cfg.notify.is_empty() {
                    true => crate::observe::Queues::default(),
                    false => crate::observe::Queues::scanned(&store)?,
                };
                let summary = store.follow_tally()?.summary();
                let doc = crate::observe::status::build(&store, &queues, &summary, &rt)?;
                if format == Format::Html {
                    sighted = sightings(&store, created)?;
                }
                Ok(Ok((doc, (chrono::Utc::now() - created).to_std().ok())))
            })();
            store.close()?;
            match read? {
                Ok(status) => status,
                Err(printed) => return Ok(printed),
            }
        }
        Target::Daemon(admin) => {
            let what = "reading the running daemon's status";
            let res = admin
                .call(reqwest::Method::GET, "/status", None, what)
                .await?;
            let doc: StatusDoc = res.json().await.context(what)?;
            let age = Duration::from_secs_f64(doc.uptime_seconds.max(0.0));
            if format == Format::Html {
                // The entities to draw come from the daemon too (it owns the store): before,
                // the page said "No entities to draw" while its table counted them.
                let what = "reading the running daemon's entities";
                let path = format!("/entities?limit={SIGHTINGS_MAX}");
                let res = admin.call(reqwest::Method::GET, &path, None, what).await?;
                let views: Vec<crate::race::EntityView> = res.json().await.context(what)?;
                sighted = sightings_of(&views, doc.started_at);
            }
            (doc, Some(age))
        }
    };
    // A demo's store says what the race ran with; otherwise the configuration does.
    let settings = saved.unwrap_or_else(|| settings_from_config(cfg, &status, age));
    let mut report = build(&status, Some(settings), None);
    report.sightings = sighted;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::render::{ms, num, pct};
    use super::*;

    fn settings() -> RaceSettings {
        RaceSettings {
            poll_interval_s: Some(30.0),
            poll_mode: PollMode::Transactions,
            users: 3,
            item_rate_per_user_s: [("EXERCISE".to_string(), 1.0 / 600.0)].into(),
            rates_from: "test".into(),
            adaptive: None,
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
        list.poll_mode = PollMode::List;
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

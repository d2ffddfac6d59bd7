//! The status document (`GET /status`): counters from the store plus the entity summary, in the
//! exact shape the status contract fixes. Built from the store alone, so `hookrace report` on the same store
//! says the same numbers.

use std::collections::BTreeMap;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::counter::{self, CounterName};
use crate::process::{Runtime, WebhookHealth};
use crate::race::{self, LatencyStats, Summary};
use crate::store::Store;

/// The version of the status document's shape, `schema_version` in it: raised when a field
/// changes meaning or goes away (fields are added without raising it). The shape is
/// `docs/status.schema.json`, checked against what the daemon serves.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDoc {
    /// [`SCHEMA_VERSION`] when built (documents from before it read as 0).
    #[serde(default)]
    pub schema_version: u32,
    pub service: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub uptime_seconds: f64,
    pub webhook: WebhookStatus,
    pub poll: PollStatus,
    pub entities: EntitiesStatus,
    pub race: RaceStatus,
    pub users: UsersStatus,
    /// The notify sinks (`[[notify]]`), in configuration order: your app's side of the race.
    #[serde(default)]
    pub notify: Vec<NotifyStatus>,
    /// The running daemon's view of AccessLink (absent when built from a store alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accesslink: Option<AccessLinkStatus>,
    /// Each listener's load: a full listener is load, shown here, not a fault.
    #[serde(default)]
    pub listeners: Vec<ListenerStatus>,
}

/// One listener's connections against its cap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// `webhook` or `admin`.
    pub name: String,
    pub open_connections: usize,
    pub max_connections: usize,
    /// Since when it is full (new connections wait in the backlog), if it is.
    pub full_since: Option<DateTime<Utc>>,
    /// Times it became full since the start.
    pub times_full: u64,
}

/// One notify sink: what it was sent, what waits, and how fresh the data was when it arrived.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyStatus {
    pub name: String,
    /// `webhook`, `exec` or `ntfy`.
    pub kind: String,
    /// Its URL, or its command.
    pub target: String,
    /// Events the sink took (2xx, or exit 0).
    pub sent: u64,
    /// Attempts made (requests, or command runs), retries included.
    pub attempts: u64,
    /// Events waiting to be sent, retrying ones included.
    pub pending: u64,
    /// Pending events whose last attempt failed.
    pub retrying: u64,
    /// Events parked as failed (retried too long, or the sink answered 410).
    pub failed: u64,
    /// Age of the oldest pending event, in seconds.
    pub oldest_pending_s: Option<f64>,
    /// The sink answered 410 Gone, and nothing is sent to it until `POST /notify/retry`.
    pub gone: Option<String>,
    /// From availability at Polar to the sink taking the event: end-to-end freshness.
    pub latency_ms: LatencyStats,
}

/// What AccessLink last said of this client's rate limit, and whether requests wait on it now.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccessLinkStatus {
    pub rate_limit: RateLimitStatus,
}

/// One figure per window (`short`: 15 minutes, `long`: 24 hours), as Polar's `RateLimit-*`
/// headers last reported them; `null` before the first answer carried them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RateLimitStatus {
    pub usage: Option<Windows<u64>>,
    pub limit: Option<Windows<u64>>,
    pub resets_at: Option<Windows<DateTime<Utc>>>,
    /// Requests wait for a window to reset now (the reserve is reached, or after a 429).
    pub waiting: bool,
    pub waiting_until: Option<DateTime<Utc>>,
    /// What requests wait for: `short` (15-minute window), `daily`, or `429`.
    #[serde(default)]
    pub waiting_for: Option<String>,
    /// Seconds left to wait (a wait of hours is worth an alert).
    #[serde(default)]
    pub waiting_seconds: f64,
    /// Times requests waited for a window (pacing before the limit, or after a 429), and how
    /// long in all (an episode still running counts up to now).
    #[serde(default)]
    pub paced: u64,
    #[serde(default)]
    pub paced_seconds: f64,
    /// Answers 429 (Too Many Requests) since the start, whichever part of hookrace asked.
    #[serde(default)]
    pub answered_429: u64,
    /// Until when the webhook fetches (the bulk lane) wait while the others may still go: they
    /// leave a tenth of each window to the auditor and the rest, and are spread over the day.
    #[serde(default)]
    pub fetches_waiting_until: Option<DateTime<Utc>>,
    /// Why: `daily_share` or `short_share` (their part of a window is used), `paced` (ahead
    /// of an even spread over the day).
    #[serde(default)]
    pub fetches_held_by: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Windows<T> {
    pub short: T,
    pub long: T,
}

impl RateLimitStatus {
    /// From the client's rate state (monotonic instants become wall-clock times).
    pub fn from_client(r: &crate::accesslink::client::RateState) -> RateLimitStatus {
        let now = tokio::time::Instant::now();
        let wall = |at: tokio::time::Instant| {
            Utc::now()
                + chrono::Duration::from_std(at.saturating_duration_since(now)).unwrap_or_default()
        };
        let until = r.blocked_until.filter(|t| *t > now);
        let bulk = r.bulk_blocked_until.filter(|t| *t > now);
        RateLimitStatus {
            usage: r.usage.map(|(short, long)| Windows { short, long }),
            limit: r.limit.map(|(short, long)| Windows { short, long }),
            resets_at: r.resets_at.map(|(s, l)| Windows {
                short: wall(s),
                long: wall(l),
            }),
            waiting: until.is_some(),
            waiting_until: until.map(wall),
            waiting_for: until.and(r.blocked_by).map(|w| {
                use crate::accesslink::client::Window;
                match w {
                    Window::Short => "short",
                    Window::Daily => "daily",
                    Window::TooManyRequests => "429",
                }
                .to_string()
            }),
            waiting_seconds: until.map_or(0.0, |t| (t - now).as_secs_f64()),
            paced: r.paced,
            paced_seconds: (r.paced_for + r.pacing_since.map_or(Duration::ZERO, |t| t.elapsed()))
                .as_secs_f64(),
            answered_429: r.answered_429,
            fetches_waiting_until: bulk.map(wall),
            fetches_held_by: bulk.and(r.bulk_held_by).map(|h| {
                use crate::accesslink::client::{BulkHold, Window};
                match h {
                    BulkHold::Share(Window::Short) => "short_share",
                    BulkHold::Share(_) => "daily_share",
                    BulkHold::Paced => "paced",
                }
                .to_string()
            }),
        }
    }
}

/// The users whose data hookrace reads (tokens are never shown).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsersStatus {
    pub known: u64,
    /// Users whose token AccessLink refused (401): reconnect them.
    pub disconnected: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookStatus {
    pub deliveries: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub pings: u64,
    pub rejected: Rejected,
    pub fetches: Fetches,
    /// HTTP requests made to fetch webhook data (retries included).
    pub fetch_requests: u64,
    /// Fetches still to do: how many, and how long the first has been due (a backlog that
    /// grows means AccessLink's rate limit lets hookrace fetch less than is announced).
    #[serde(default)]
    pub fetch_backlog: FetchBacklogStatus,
    pub latency_ms: LatencyStats,
    pub last_delivery_at: Option<DateTime<Utc>>,
    /// What the webhook watch found at AccessLink.
    #[serde(default)]
    pub health: WebhookHealth,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct FetchBacklogStatus {
    /// Fetch jobs waiting, all of them (due now or retrying later).
    pub jobs: u64,
    /// Of those, the ones the fetcher's queue holds in memory (at most 10,000, the earliest
    /// due; the rest are read back from the records when those are done).
    #[serde(default)]
    pub in_memory: u64,
    /// More than the queue holds wait in the records.
    #[serde(default)]
    pub more_in_records: bool,
    pub oldest_due_seconds: f64,
    /// How long the backlog would take to drain at AccessLink's rate limit as last reported
    /// (a fetch is a request; the windows' budgets left now, then their limits): `null` while
    /// the limit is unknown, 0 when nothing waits.
    #[serde(default)]
    pub drain_seconds: Option<f64>,
}

impl FetchBacklogStatus {
    /// [`FetchBacklogStatus::drain_seconds`] at the rate limit `rate` reports, as the fetches
    /// (the client's bulk lane) may go: their part of the short window, then whole short
    /// windows; their part of the daily window spread evenly over the day (an hour's worth
    /// ahead); beyond today's part, whole days after the daily window resets.
    pub fn drain_at(&self, rate: &RateLimitStatus, reserve: u64) -> Option<f64> {
        use crate::accesslink::client::{DAY_S, bulk_part};
        if self.jobs == 0 {
            return Some(0.0);
        }
        let (usage, limit, resets) = (rate.usage?, rate.limit?, rate.resets_at?);
        let now = Utc::now();
        let secs = |at: DateTime<Utc>| (at - now).num_milliseconds().max(0) as f64 / 1000.0;
        let (part_short, part_long) = (
            bulk_part(limit.short, reserve),
            bulk_part(limit.long, reserve),
        );
        let n = self.jobs;
        let today_left = part_long.saturating_sub(usage.long);
        if n > today_left {
            let more = (n - today_left) as f64;
            return Some(
                secs(resets.long) + (more / part_long.max(1) as f64).floor() * DAY_S as f64,
            );
        }
        let short = match n.checked_sub(part_short.saturating_sub(usage.short)) {
            None | Some(0) => 0.0,
            Some(more) => {
                secs(resets.short) + (more as f64 / part_short.max(1) as f64).floor() * 900.0
            }
        };
        let per_s = part_long as f64 / DAY_S as f64;
        let elapsed = DAY_S as f64 - secs(resets.long).min(DAY_S as f64);
        let paced = ((usage.long + n) as f64 / per_s - 3600.0 - elapsed).max(0.0);
        Some(short.max(paced))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejected {
    pub signature: u64,
    pub malformed: u64,
    pub too_large: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fetches {
    pub ok: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollStatus {
    pub enabled: bool,
    pub cycles: u64,
    pub empty_cycles: u64,
    pub requests: u64,
    pub requests_by_endpoint: BTreeMap<String, u64>,
    /// Ticks skipped because the previous cycle was still running.
    pub skipped: u64,
    pub errors: u64,
    pub rate_limited: u64,
    pub items: u64,
    pub new_entities: u64,
    pub latency_ms: LatencyStats,
    pub last_cycle_at: Option<DateTime<Utc>>,
    pub next_cycle_at: Option<DateTime<Utc>>,
    /// `fixed` or `adaptive`.
    #[serde(default)]
    pub strategy: String,
    /// The interval in force, in milliseconds (`null` for a cron schedule).
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// Why the auditor polls at this pace (adaptive only).
    #[serde(default)]
    pub pace_reason: Option<String>,
    /// Entities the poll found that webhooks never announced: the misses the safety net caught.
    #[serde(default)]
    pub misses_caught: u64,
    /// Availability → poll sighting, for those entities only.
    #[serde(default)]
    pub catch_delay_ms: LatencyStats,
    /// Auditor cycles put off to leave the rate-limit budget to webhook fetches.
    #[serde(default)]
    pub starved: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntitiesStatus {
    pub total: u64,
    pub by_type: BTreeMap<String, u64>,
    pub seen_by_both: u64,
    pub webhook_only: u64,
    pub poll_only: u64,
    pub first_by_webhook: u64,
    pub first_by_poll: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaceStatus {
    pub webhook_lead_ms: LatencyStats,
    /// From availability to your app being told (the first notify sink taking the event), over
    /// the entities it was told of: the callback's second hop, end to end.
    #[serde(default)]
    pub app_latency_ms: LatencyStats,
    pub requests_per_entity: RequestsPerEntity,
    pub wasted_poll_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestsPerEntity {
    pub webhook: Option<f64>,
    pub poll: Option<f64>,
}

/// A counter's value by its name (0 when never counted).
type Get<'a> = &'a dyn Fn(counter::Counter) -> u64;

/// Builds the status document from the store, the consumers' queues and the race's figures.
pub fn build(
    store: &Store,
    queues: &super::Queues,
    summary: &Summary,
    rt: &Runtime,
) -> anyhow::Result<StatusDoc> {
    let c = store.counters()?;
    let count = |name: &dyn CounterName| c.get(&*name.name()).copied().unwrap_or(0);
    let get = |counter: counter::Counter| count(&counter);
    let users = crate::credentials::all_users(store)?;
    let webhook = webhook_status(store, queues, summary, rt, &get);
    let poll = poll_status(summary, rt, &get);
    // A webhook's cost: each valid delivery plus each request made to fetch its data.
    let webhook_requests = webhook.accepted + webhook.duplicates + webhook.fetch_requests;
    let race = RaceStatus {
        webhook_lead_ms: summary.webhook_lead.stats(),
        app_latency_ms: summary.app_latency.stats(),
        requests_per_entity: RequestsPerEntity {
            webhook: race::requests_per_entity(webhook_requests, summary.first_by_webhook),
            poll: race::requests_per_entity(poll.requests, summary.first_by_poll),
        },
        wasted_poll_share: race::wasted_share(poll.empty_cycles, poll.cycles),
    };
    Ok(StatusDoc {
        schema_version: SCHEMA_VERSION,
        accesslink: None,
        listeners: listener_status(rt),
        notify: notify_status(store, queues, rt, &|a| count(&a)),
        service: "hookrace".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: rt.started_at,
        uptime_seconds: seconds_since(rt.started_at),
        webhook,
        poll,
        entities: EntitiesStatus {
            total: summary.total,
            by_type: summary.by_type.clone(),
            seen_by_both: summary.seen_by_both,
            webhook_only: summary.webhook_only,
            poll_only: summary.poll_only,
            first_by_webhook: summary.first_by_webhook,
            first_by_poll: summary.first_by_poll,
        },
        race,
        users: UsersStatus {
            known: users.len() as u64,
            disconnected: users
                .iter()
                .filter(|u| u.disconnected_at.is_some())
                .map(|u| u.user_id.0)
                .collect(),
        },
    })
}

/// Seconds from `t` until now, never negative.
fn seconds_since(t: chrono::DateTime<Utc>) -> f64 {
    ((Utc::now() - t).num_milliseconds() as f64 / 1000.0).max(0.0)
}

/// Each notify sink: its outbox's counts, its attempts and whether it is gone.
fn notify_status(
    store: &Store,
    queues: &super::Queues,
    rt: &Runtime,
    attempts: &dyn Fn(crate::notify::SinkAttempts<'_>) -> u64,
) -> Vec<NotifyStatus> {
    rt.notify_sinks
        .iter()
        .map(|s| {
            let mut c = queues.outbox.counts(&s.name);
            c.gone = crate::notify::sink_gone(store, &s.name);
            NotifyStatus {
                name: s.name.clone(),
                kind: s.kind.clone(),
                target: s.target.clone(),
                sent: c.sent,
                attempts: attempts(crate::notify::SinkAttempts(&s.name)),
                pending: c.pending,
                retrying: c.retrying,
                failed: c.failed,
                oldest_pending_s: c.oldest_pending.map(seconds_since),
                gone: c.gone,
                latency_ms: c.latency,
            }
        })
        .collect()
}

/// Each listener's load.
fn listener_status(rt: &Runtime) -> Vec<ListenerStatus> {
    rt.listeners
        .iter()
        .map(|l| ListenerStatus {
            name: l.name.to_string(),
            open_connections: l.open(),
            max_connections: l.max,
            full_since: l.full_since(),
            times_full: l.times_full(),
        })
        .collect()
}

/// The webhook channel: deliveries by outcome, fetches, the fetch backlog, latency, health.
fn webhook_status(
    store: &Store,
    queues: &super::Queues,
    summary: &Summary,
    rt: &Runtime,
    get: Get<'_>,
) -> WebhookStatus {
    let backlog = queues.fetches.backlog_now();
    WebhookStatus {
        deliveries: get(counter::Counter::WebhookDeliveries),
        accepted: get(counter::Counter::WebhookAccepted),
        duplicates: get(counter::Counter::WebhookDuplicates),
        pings: get(counter::Counter::WebhookPings),
        rejected: Rejected {
            signature: get(counter::Counter::WebhookRejectedSignature),
            malformed: get(counter::Counter::WebhookRejectedMalformed),
            too_large: get(counter::Counter::WebhookRejectedTooLarge),
        },
        fetches: Fetches {
            ok: get(counter::Counter::WebhookFetchesOk),
            failed: get(counter::Counter::WebhookFetchesFailed),
        },
        fetch_requests: get(counter::Counter::WebhookFetchRequests),
        fetch_backlog: FetchBacklogStatus {
            // The whole backlog, as the store counts its records' jobs (the queue in memory
            // holds at most 10,000 of them).
            jobs: get(counter::Counter::WebhookFetchesPending).max(backlog.jobs as u64),
            in_memory: backlog.jobs as u64,
            more_in_records: backlog.more_in_records,
            oldest_due_seconds: backlog.oldest_due_seconds,
            drain_seconds: None,
        },
        latency_ms: summary.webhook_latency.stats(),
        last_delivery_at: store.last_delivery_at(),
        health: rt.webhook_health.clone(),
    }
}

/// The poll channel: cycles, requests by endpoint, outcomes, latency, the pace in force.
fn poll_status(summary: &Summary, rt: &Runtime, get: Get<'_>) -> PollStatus {
    let requests_by_endpoint: BTreeMap<String, u64> = counter::PollEndpoint::ALL
        .into_iter()
        .map(|e| (e.name().to_string(), get(counter::Counter::PollRequests(e))))
        .collect();
    PollStatus {
        enabled: rt.poll_enabled,
        cycles: get(counter::Counter::PollCycles),
        empty_cycles: get(counter::Counter::PollEmptyCycles),
        requests: requests_by_endpoint.values().sum(),
        requests_by_endpoint,
        skipped: get(counter::Counter::PollSkipped),
        errors: get(counter::Counter::PollErrors),
        rate_limited: get(counter::Counter::PollRateLimited),
        items: get(counter::Counter::PollItems),
        new_entities: get(counter::Counter::PollNewEntities),
        latency_ms: summary.poll_latency.stats(),
        last_cycle_at: rt.last_cycle_at,
        next_cycle_at: rt.next_cycle_at,
        strategy: rt.poll_pace.strategy.clone(),
        interval_ms: rt.poll_pace.interval.map(crate::units::millis),
        pace_reason: rt.poll_pace.reason.clone(),
        misses_caught: summary.poll_only,
        catch_delay_ms: summary.catch_delay.stats(),
        starved: get(counter::Counter::PollStarved),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drain time of a backlog at the limit last reported: nothing while today's budget
    /// and this short window hold it; whole short windows after this one resets while today's
    /// budget holds it; whole days after the daily window resets beyond that.
    #[test]
    fn a_backlog_drains_at_the_rate_limit_last_reported() {
        let now = Utc::now();
        let rate = RateLimitStatus {
            usage: Some(Windows {
                short: 10,
                long: 100,
            }),
            limit: Some(Windows {
                short: 100,
                long: 1000,
            }),
            resets_at: Some(Windows {
                short: now + chrono::Duration::seconds(300),
                long: now + chrono::Duration::seconds(7200),
            }),
            ..RateLimitStatus::default()
        };
        let drain = |jobs: u64| {
            let b = FetchBacklogStatus {
                jobs,
                ..FetchBacklogStatus::default()
            };
            b.drain_at(&rate, 5).unwrap()
        };
        let about = |got: f64, want: f64| assert!((got - want).abs() < 2.0, "{got} vs {want}");
        assert_eq!(drain(0), 0.0);
        // The fetches' parts: 100 − 10 − 5 = 85 of the short window (75 left), 1000 − 100 − 5
        // = 895 of the day (795 left). The day is 22 h in, so its even spread (plus an hour)
        // allows all of it: the short window paces.
        assert_eq!(drain(75), 0.0);
        about(drain(76), 300.0);
        about(drain(75 + 85 + 1), 300.0 + 900.0);
        // Beyond today's part: the daily window resets in 2 h, then 895 a day.
        about(drain(795 + 1), 7200.0);
        about(drain(795 + 895 + 1), 7200.0 + 86_400.0);
        // Early in a day, the even spread is what paces: at 100 used with the day 1 h in,
        // 100 more are due once 200 + … are earned.
        let early = RateLimitStatus {
            resets_at: Some(Windows {
                short: now + chrono::Duration::seconds(300),
                long: now + chrono::Duration::seconds(82_800),
            }),
            ..rate.clone()
        };
        let b = FetchBacklogStatus {
            jobs: 300,
            ..FetchBacklogStatus::default()
        };
        let per_s = 895.0 / 86_400.0;
        let want = (100.0 + 300.0) / per_s - 3600.0 - 3600.0;
        let got = b.drain_at(&early, 5).unwrap();
        assert!((got - want).abs() < 5.0, "{got} vs {want}");
        let unknown = FetchBacklogStatus {
            jobs: 5,
            ..FetchBacklogStatus::default()
        };
        assert_eq!(unknown.drain_at(&RateLimitStatus::default(), 5), None);
    }
}

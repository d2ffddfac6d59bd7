//! The adaptive safety net (`[poller] strategy = "adaptive"`): the poller as an auditor of the
//! webhooks, polling slowly while they are complete and fast when they miss data.
//!
//! The pace ([`Pace`]) is a pure function of what each cycle found ([`Evidence`]):
//! - any evidence that webhooks are missing data sets the interval to `every` (the fastest);
//! - a cycle with none returns it to `max_every` (the slowest), the bound on how late a lost
//!   delivery's data is found while webhooks look healthy;
//! - neither comes sooner than the day's budget allows once the day's usage runs ahead of an
//!   even spread of the daily limit: what is left of it is spread over what is left of the day
//!   (before, a 65-minute overloaded soak spent 1,771 of the day's 10,000 requests, 1,277 of
//!   them the net's, on course to spend the day in 6 hours; with many users, or many data types
//!   each, this floor is the bound, and `/status`'s `poll.pace_reason` says so).
//!
//! Evidence: an entity the poll found that no delivery announced within [`GRACE`] of its
//! availability (a webhook still in flight is not a miss: such an entity is checked again at the
//! next cycle); a delivery whose fetch failed for good; deliveries silent over an interval in
//! which the poll found data; the webhook watch finding the webhook inactive, missing or pointing
//! elsewhere (and until it is healthy); and a start of hookrace (deliveries sent while it was down
//! are lost), so the first cycle runs at once and fast. The watch wakes a sleeping auditor when it
//! finds the webhook unhealthy, so that cycle runs at once. Cycles never overlap (each is awaited),
//! and the client's rate limit is shared: announced data is fetched first, and the auditor waits
//! while fetches are due or the budget is nearly spent (a *starved* cycle, counted and logged),
//! but never past `max_every` since its last cycle: the net's guaranteed share of the budget,
//! so its bound holds under any fetch backlog. The client holds that share too: the fetches are
//! its bulk lane ([`crate::accesslink::client::Client::bulk`]), which stops at nine tenths of
//! each window and spreads its daily part over the day, so the auditor's requests still go out
//! when the fetches wait.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::channels::poller::Poller;
use crate::counter;

/// How long after its availability an entity may still be announced by a delivery: a poll that
/// finds it sooner does not count it as missed yet.
pub const GRACE: Duration = Duration::from_secs(30);

/// The share of a rate-limit window the auditor leaves to the fetcher.
const FETCH_RESERVE: f64 = 0.1;

/// The shortest interval after a cycle that spent `requests` for the audits to stay within
/// their share of a daily limit of `per_day` requests, sustained over days: an audit reads a
/// listing per user, so with many users even the fast pace is set by the budget (10,000 users:
/// about 14 minutes), not by `every`. The what-if model paces its audits by it over its week;
/// the daemon's auditor, which sees the day's usage, spreads what is left of the day instead
/// once that usage runs ahead (`day_floor`).
pub fn budget_floor(requests: u64, per_day: u64) -> Duration {
    if per_day == 0 {
        return Duration::ZERO;
    }
    let share = per_day as f64 * (1.0 - FETCH_RESERVE);
    Duration::from_secs_f64(requests as f64 * 86_400.0 / share)
}

/// The interval the day's budget sets after a cycle of `requests`, when the day's usage (the
/// fetches' and the net's) is ahead of an even spread of the daily limit plus an hour's worth:
/// then what remains of the day's limit is spread over what remains of the day, so the day is
/// never spent before it ends (the net's requests would then wait in the client for the reset,
/// and its bound with them). While the day is on pace (any short run, a quiet day) the evidence
/// alone sets the pace.
fn day_floor(rate: &crate::accesslink::rate::RateState, requests: u64) -> Option<Duration> {
    let ((_, used), (_, limit), (_, resets_at)) = (rate.usage?, rate.limit?, rate.resets_at?);
    let reset_in = resets_at.saturating_duration_since(tokio::time::Instant::now());
    ahead_of_day_pace(used, limit, reset_in)
        .then(|| spread(requests, limit - used.min(limit), reset_in))
}

/// The interval at which cycles of `requests` spend `left` requests evenly over `time` (all
/// of it when nothing is left).
fn spread(requests: u64, left: u64, time: Duration) -> Duration {
    if left == 0 {
        return time;
    }
    time.mul_f64((requests as f64 / left as f64).min(1.0))
}

/// Whether `used` requests of a daily `limit` are ahead of the even spread (plus an hour's
/// worth) with the window resetting in `reset_in`.
fn ahead_of_day_pace(used: u64, limit: u64, reset_in: Duration) -> bool {
    used as f64 > crate::accesslink::rate::spread_allows(limit, reset_in.as_secs())
}

/// What one cycle (and the time since the previous) says about the webhooks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Entities the poll found that no delivery announced within the grace period.
    pub missed: u64,
    /// Fetches of announced data that failed for good since the last cycle.
    pub fetch_failures: u64,
    /// No delivery arrived since the last cycle, yet the poll found data.
    pub silent: bool,
    /// The webhook watch says the webhook is not healthy, or found it so since the last cycle.
    pub webhook_unhealthy: bool,
    /// hookrace just started.
    pub restart: bool,
}

impl Evidence {
    /// Why the auditor must poll fast, if it must.
    pub fn reason(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.restart {
            why.push("hookrace started (deliveries sent while it was down are lost)".to_string());
        }
        if self.missed > 0 {
            why.push(format!(
                "{} entit{} no webhook announced",
                self.missed,
                if self.missed == 1 { "y" } else { "ies" }
            ));
        }
        if self.fetch_failures > 0 {
            why.push(format!("{} failed webhook fetches", self.fetch_failures));
        }
        if self.silent {
            why.push("webhooks silent while the poll finds data".into());
        }
        if self.webhook_unhealthy {
            why.push("the webhook is not healthy at AccessLink".into());
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// The auditor's interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pace {
    pub every: Duration,
    pub max_every: Duration,
    pub interval: Duration,
}

impl Pace {
    pub fn new(every: Duration, max_every: Duration) -> Pace {
        Pace {
            every,
            max_every,
            interval: every,
        }
    }

    /// The interval until the next cycle, given what this one found.
    pub fn after(&mut self, evidence: &Evidence) -> Duration {
        self.interval = match evidence.reason() {
            Some(_) => self.every,
            None => self.max_every,
        };
        self.interval
    }
}

/// Entities found by the poll alone, waiting for the grace period to tell whether a delivery
/// was merely late.
#[derive(Debug, Default)]
struct Suspects {
    keys: Vec<(crate::accesslink::identity::EntityKey, DateTime<Utc>)>,
}

/// The auditor's state between cycles: its pace, the entities still in their grace period, and
/// the counts the next cycle's evidence is measured against. The poll loop
/// (`channels::poll_loop`) asks it when the next cycle is due ([`Auditor::due`]) and tells it
/// what each cycle found ([`Auditor::after`]).
pub struct Auditor {
    pace: Pace,
    suspects: Suspects,
    /// Deliveries, failed fetches and "deactivated" sightings at the last cycle.
    last: (u64, u64, u64),
    evidence: Evidence,
    starved_logged: bool,
    /// When the last cycle started (none yet: the first runs at once).
    last_cycle: Option<tokio::time::Instant>,
}

impl Auditor {
    pub fn new(poller: &Poller, every: Duration, max_every: Duration) -> Auditor {
        let mut auditor = Auditor {
            pace: Pace::new(every, max_every),
            suspects: Suspects::default(),
            last: (0, 0, 0),
            // A start is evidence: deliveries sent while hookrace was down are lost.
            evidence: Evidence {
                restart: true,
                ..Evidence::default()
            },
            starved_logged: false,
            last_cycle: None,
        };
        auditor.last = auditor.observed(poller);
        auditor
    }

    /// Deliveries, failed fetches, and (whether the webhook is active, "deactivated" sightings).
    fn observed(&self, poller: &Poller) -> (u64, u64, u64) {
        let count = |c: counter::Counter| poller.store.counter(c);
        (
            count(counter::Counter::WebhookAccepted) + count(counter::Counter::WebhookDuplicates),
            count(counter::Counter::WebhookFetchesFailed),
            self.webhook_health(poller).1,
        )
    }

    fn webhook_health(&self, poller: &Poller) -> (Option<bool>, u64) {
        poller
            .runtime
            .read()
            .map(|rt| (rt.webhook_health.active, rt.webhook_health.deactivated_seen))
            .unwrap_or_default()
    }

    /// When the next cycle is due by the pace (now, before the first).
    pub fn next_at(&self) -> tokio::time::Instant {
        match self.last_cycle {
            Some(t) => t + self.pace.interval,
            None => tokio::time::Instant::now(),
        }
    }

    /// Returns when the next cycle should run: at the pace's time, or at once when the webhook
    /// watch raises the alarm; then, while the fetcher needs the budget, later (a *starved*
    /// turn, counted), but never past `max_every` since the last cycle: the net's guaranteed
    /// share of the budget, so its bound (a lost delivery's data is found within `max_every`
    /// plus a cycle) holds under any fetch backlog.
    pub async fn due(&mut self, poller: &Poller) {
        if self.last_cycle.is_some() {
            tokio::select! {
                _ = tokio::time::sleep_until(self.next_at()) => {}
                // The watch found the webhook unhealthy: poll now, not after a slow interval.
                _ = poller.alarm.notified() => {}
            }
        }
        loop {
            let since = self.last_cycle.map(|t| t.elapsed());
            let Some(why) = waits(starved(poller), since, self.pace.max_every) else {
                break;
            };
            poller.store.incr(counter::Counter::PollStarved, 1);
            if !self.starved_logged {
                tracing::warn!(
                    reason = why,
                    "the auditor waits: fetching announced data comes first"
                );
                self.starved_logged = true;
            }
            set_pace(poller, self.pace.every, Some(format!("starved: {why}")));
            tokio::time::sleep(self.pace.every.min(Duration::from_secs(5))).await;
        }
        if self.starved_logged {
            tracing::info!("the auditor polls again");
            self.starved_logged = false;
        }
        self.last_cycle = Some(tokio::time::Instant::now());
    }

    /// Reads what a cycle (and the time since the last) says about the webhooks, and sets the
    /// pace from it.
    pub fn after(&mut self, poller: &Poller, report: &crate::channels::poller::CycleReport) {
        let store = &poller.store;
        let now = Utc::now();
        for (key, available) in &report.new_keys {
            self.suspects
                .keys
                .push((key.clone(), available.unwrap_or(now)));
        }
        let grace_ago = now - chrono::Duration::from_std(GRACE).unwrap_or_default();
        let (due, waiting): (Vec<_>, Vec<_>) = self
            .suspects
            .keys
            .drain(..)
            .partition(|(_, available)| *available <= grace_ago);
        self.suspects.keys = waiting;
        self.evidence.missed = due
            .iter()
            .filter(|(key, _)| {
                store
                    .entity(key)
                    .ok()
                    .flatten()
                    .is_some_and(|e| e.webhook_at.is_none())
            })
            .count() as u64;
        let (d, f, seen) = self.observed(poller);
        let active = self.webhook_health(poller).0;
        self.evidence.fetch_failures = f.saturating_sub(self.last.1);
        self.evidence.silent = d == self.last.0 && report.items > 0;
        self.evidence.webhook_unhealthy = active == Some(false) || seen > self.last.2;
        self.last = (d, f, seen);
        let paced = self.pace.after(&self.evidence);
        // The reason the log gives is the one `/status` shows (`poll.pace_reason`).
        let mut reason = self
            .evidence
            .reason()
            .unwrap_or_else(|| "webhooks complete".to_string());
        // What the next cycles will cost: this one's requests, but no more than the steady
        // listings (a start reads every listing once) plus this cycle's fetches.
        let fetches = report.requests.saturating_sub(report.listings);
        let steady = poller.audit_plan.steady_listings(&poller.store) + fetches;
        let floor = day_floor(&poller.client.rate_state(), report.requests.min(steady));
        let interval = paced.max(floor.unwrap_or_default());
        if let Some(floor) = floor.filter(|f| *f > paced) {
            reason.push_str(&format!(
                "; the day's usage is ahead of an even spread: what is left of it allows a cycle of {} requests every {} s",
                report.requests,
                floor.as_secs()
            ));
        }
        self.pace.interval = interval;
        if self.evidence.reason().is_some() || interval != self.pace.every {
            tracing::info!(
                interval_s = interval.as_secs_f64(),
                reason = reason.as_str(),
                "auditor pace"
            );
        }
        set_pace(poller, interval, Some(reason));
        self.evidence = Evidence::default();
    }
}

/// Whether the auditor leaves this turn to the fetcher (and why): when it is starved, unless its
/// guaranteed share is due (no cycle yet, or `max_every` since the last one).
fn waits(
    starved: Option<String>,
    since_last: Option<Duration>,
    max_every: Duration,
) -> Option<String> {
    starved.filter(|_| since_last.is_some_and(|d| d < max_every))
}

/// Why the auditor must leave the budget to the fetcher now, if it must.
fn starved(poller: &Poller) -> Option<String> {
    if let Ok(Some((_, job))) = poller.fetches.next_due(&poller.store) {
        if job.next_at <= Utc::now() {
            return Some("webhook fetches are due".into());
        }
    }
    let rate = poller.client.rate_state();
    if rate
        .blocked_until
        .is_some_and(|b| b > tokio::time::Instant::now())
    {
        return Some("AccessLink's rate limit is reached".into());
    }
    if let (Some((us, ul)), Some((ls, ll))) = (rate.usage, rate.limit) {
        let nearly = |used: u64, limit: u64| {
            limit > 0 && used as f64 >= limit as f64 * (1.0 - FETCH_RESERVE)
        };
        if nearly(us, ls) || nearly(ul, ll) {
            return Some(format!(
                "{}% of a rate-limit window is kept for webhook fetches",
                crate::units::u32_saturating(crate::units::round_u64(FETCH_RESERVE * 100.0))
            ));
        }
    }
    None
}

/// The pace `/status` shows (`poll.interval_s`, `poll.pace_reason`); the poll loop writes
/// `next_cycle_at`.
fn set_pace(poller: &Poller, interval: Duration, reason: Option<String>) {
    if let Ok(mut rt) = poller.runtime.write() {
        rt.poll_pace.interval = Some(interval);
        rt.poll_pace.reason = reason;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch backlog or a spent window starves the auditor, but never past `max_every` since
    /// its last cycle (before, a 60-minute soak with a standing backlog never polled once, and
    /// the entities whose only delivery was dropped stayed missing).
    #[test]
    fn a_starved_auditor_still_polls_every_max_every() {
        let max = Duration::from_secs(900);
        let starved = || Some("webhook fetches are due".to_string());
        assert_eq!(waits(None, Some(Duration::from_secs(1)), max), None);
        assert!(waits(starved(), Some(Duration::from_secs(60)), max).is_some());
        assert_eq!(waits(starved(), Some(max), max), None, "the share is due");
        assert_eq!(waits(starved(), Some(max * 4), max), None);
        assert_eq!(
            waits(starved(), None, max),
            None,
            "the first cycle runs at once"
        );
    }

    /// A 65-minute overloaded soak spent 1,771 of the day's 10,000 requests, 1,277 of them the
    /// net's: ahead of the day's pace, which would have spent the day in 6 hours. Ahead of the
    /// pace, a cycle is spaced by what the day can sustain; on pace, not at all.
    #[test]
    fn the_net_slows_only_when_the_day_is_ahead_of_its_pace() {
        let hour = Duration::from_secs(3600);
        let day = 10_000;
        // 65 minutes into the day: an even spread plus an hour allows about 868.
        let reset_in = Duration::from_secs(86_400) - hour - Duration::from_secs(300);
        assert!(ahead_of_day_pace(1_771, day, reset_in));
        assert!(!ahead_of_day_pace(800, day, reset_in));
        // A fresh window: an hour's worth may go at once.
        assert!(!ahead_of_day_pace(400, day, Duration::from_secs(86_400)));
        assert!(ahead_of_day_pace(500, day, Duration::from_secs(86_400)));
        // Late in the day nearly all of it may be used.
        assert!(!ahead_of_day_pace(9_900, day, Duration::from_secs(60)));
        // 100 listings a cycle (50 users, 2 data types) with 9,405 of the day's 10,000 left
        // and 23.75 hours to go: once every 909 s (the 15-minute bound nearly holds).
        let left_day = Duration::from_secs(85_500);
        assert_eq!(spread(100, 9_405, left_day).as_secs(), 909);
        assert_eq!(
            spread(100, 0, left_day),
            left_day,
            "spent: wait for the reset"
        );
        assert_eq!(spread(500, 100, left_day), left_day);
    }

    #[test]
    fn evidence_makes_it_fast_and_a_clean_cycle_makes_it_slow_again() {
        let (fast, slow) = (Duration::from_secs(10), Duration::from_secs(900));
        let mut pace = Pace::new(fast, slow);
        assert_eq!(pace.interval, fast, "a start is evidence");
        assert_eq!(pace.after(&Evidence::default()), slow);
        for e in [
            Evidence {
                missed: 1,
                ..Default::default()
            },
            Evidence {
                fetch_failures: 2,
                ..Default::default()
            },
            Evidence {
                silent: true,
                ..Default::default()
            },
            Evidence {
                webhook_unhealthy: true,
                ..Default::default()
            },
        ] {
            assert_eq!(pace.after(&e), fast, "{e:?}");
            assert_eq!(pace.after(&Evidence::default()), slow);
        }
    }
}

//! The what-if model: a seeded discrete-event simulation of the race in simulated time (no
//! sockets, no sleeping), beside the closed forms where they exist.
//!
//! Each user's new items arrive as a Poisson process; each is announced by a webhook after a delay
//! drawn from the delivery range, or lost with the drop probability. A fixed poller cycles every
//! `T` from time 0, as hookrace's does (it starts with a cycle), and spends what hookrace's
//! `transactions` mode spends: one `GET /v3/notifications` per cycle and, per user with new items,
//! a transaction (create, list, one get per item, commit). The adaptive net runs the auditor's own
//! pace code ([`crate::channels::auditor::Pace`]) on the evidence the model can see: an entity the
//! poll found that no delivery announced; it spends what the net's audit spends
//! (`channels::audit`): a listing per user and data type each cycle, and one get per day's data
//! no webhook had announced by then (an exercise none: its listing carries it whole). The
//! daemon spreads what is left of a day once the day's usage runs ahead; over the model's week
//! that comes to the sustained share ([`budget_floor`]), which the model applies to every cycle.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};
use serde::{Deserialize, Serialize};

use crate::channels::auditor::{Evidence, GRACE, Pace, budget_floor};
use crate::race::{LatencyStats, SignedHistogram};

/// What the model runs, typed: from the command line (`hookrace whatif`) or from a race's
/// report (the html page's curve), without going through the command line's strings.
#[derive(Debug, Clone)]
pub struct Model {
    pub scenario: Scenario,
    /// The fixed poll intervals to model, one row each.
    pub poll_every: Vec<Duration>,
    /// The adaptive auditor's slowest interval, when it is modelled too (its fastest is the
    /// fastest of `poll_every`).
    pub adaptive_max_every: Option<Duration>,
    /// How the poll reads AccessLink, so what a cycle costs.
    pub mode: crate::config::PollMode,
}

/// The answer: the scenario and a row per strategy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhatIf {
    /// The recorded traffic it ran on, instead of the scenario's Poisson process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<super::trace::TraceFacts>,
    pub scenario: Scenario,
    pub polar_limit_15m: u64,
    pub polar_limit_day: u64,
    pub rows: Vec<Row>,
}

/// Runs `m`: a row per poll interval, the webhooks alone, and the adaptive net when asked.
pub fn run(m: &Model) -> anyhow::Result<WhatIf> {
    let s = &m.scenario;
    let mut a = arrivals(s);
    if m.mode == crate::config::PollMode::List {
        a.cost = PollCost::List { users: s.users };
    }
    let mut rows: Vec<Row> = m
        .poll_every
        .iter()
        .map(|every| fixed_on(s, &a, *every))
        .collect();
    rows.push(webhooks_on(s, &a));
    if let Some(max_every) = m.adaptive_max_every {
        let fastest = m.poll_every.iter().min().copied().unwrap_or_default();
        anyhow::ensure!(
            max_every >= fastest,
            "--max-every must not be shorter than the fastest --poll-every"
        );
        rows.push(adaptive_on(s, &a, fastest, max_every));
    }
    let (short, day) = polar_limits(s.users);
    Ok(WhatIf {
        trace: None,
        scenario: s.clone(),
        polar_limit_15m: short,
        polar_limit_day: day,
        rows,
    })
}

/// Polar's per-client limits: `500 + 20 × users` per 15 minutes, `5000 + 100 × users` per day.
pub fn polar_limits(users: u64) -> (u64, u64) {
    (500 + 20 * users, 5000 + 100 * users)
}

const DAY_S: f64 = 86_400.0;
const WINDOW_S: f64 = 900.0;

/// What the model is asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    pub users: u64,
    pub items_per_user_day: f64,
    pub drop_rate: f64,
    /// Delivery delay range, seconds.
    pub webhook_delay_s: (f64, f64),
    pub days: f64,
    pub seed: u64,
}

/// One strategy's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// `poll every 30s`, `webhooks`, `webhooks + adaptive net (30s..15m)`.
    pub label: String,
    /// The poll interval in seconds (`None` for webhooks alone).
    pub interval_s: Option<f64>,
    /// Availability → first sighting, over every entity seen.
    pub delay_ms: LatencyStats,
    /// Share of poll cycles that found nothing.
    pub empty_share: Option<f64>,
    /// Requests hookrace makes to Polar per day (polls and fetches).
    pub requests_per_day: f64,
    /// Requests over the whole run (a trace's span, or the simulated days).
    #[serde(default)]
    pub requests: u64,
    /// Deliveries hookrace receives per day (not counted by Polar).
    pub received_per_day: f64,
    /// The most requests in any 15-minute window, and whether it or the day exceeds Polar's limit.
    pub peak_15m: u64,
    pub over_limit: bool,
    /// Entities no channel of this strategy saw (webhooks alone lose the dropped ones; polling
    /// misses the types its mode never reads).
    pub lost: u64,
    /// Of the entities webhooks lost, availability → poll sighting.
    pub catch_delay_ms: LatencyStats,
    /// The closed forms, where they exist (fixed polling only).
    pub theory: Option<Theory>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Theory {
    /// T / 2.
    pub mean_delay_ms: f64,
    /// 0.95 T.
    pub p95_delay_ms: f64,
    /// T.
    pub max_delay_ms: f64,
    /// e^(−λT), λ the rate of new items over all users.
    pub empty_share: f64,
    /// Cycles per day × (1 + 3 × the expected users with new items per cycle) + one get per item.
    pub requests_per_day: f64,
}

/// The arrivals: (time s, group), sorted, where a group is what one poll transaction covers (a
/// user, or in a trace a user's data type); for each, its webhook's arrival (None: lost), whether
/// the poll can see it at all, and the user it belongs to.
pub(crate) struct Arrivals {
    pub(crate) items: Vec<(f64, u64)>,
    pub(crate) webhook_at: Vec<Option<f64>>,
    pub(crate) pollable: Vec<bool>,
    /// Whether the safety net's audit lists the item's data type (SleepWise it cannot).
    pub(crate) auditable: Vec<bool>,
    /// Whether the listing carries the item whole (an exercise, physical information), so a
    /// miss costs the audit no fetch; a day's data is fetched.
    pub(crate) listed_whole: Vec<bool>,
    /// The listings an audit reads each cycle: per user, the data types they have.
    pub(crate) audit_listings: u64,
    pub(crate) horizon: f64,
    /// What a poll cycle costs.
    pub(crate) cost: PollCost,
}

/// What a poll cycle spends, by hookrace's poll modes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PollCost {
    /// `GET /v3/notifications`, then per group with new items a transaction: create, list, one
    /// get per item, commit.
    Transactions,
    /// Per user a list of exercises, then one get per new exercise.
    List { users: u64 },
}

fn arrivals(s: &Scenario) -> Arrivals {
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let horizon = s.days * DAY_S;
    let mut items = Vec::new();
    if s.items_per_user_day > 0.0 {
        // `new` only fails for a rate that is not positive and finite, ruled out above.
        let exp = Exp::new(s.items_per_user_day / DAY_S).expect("a positive rate");
        for user in 0..s.users {
            let mut t = exp.sample(&mut rng);
            while t < horizon {
                items.push((t, user));
                t += exp.sample(&mut rng);
            }
        }
    }
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (lo, hi) = s.webhook_delay_s;
    let webhook_at = items
        .iter()
        .map(|(t, _)| {
            let lost = s.drop_rate > 0.0 && rng.random_bool(s.drop_rate.clamp(0.0, 1.0));
            (!lost).then(|| {
                t + if hi > lo {
                    rng.random_range(lo..=hi)
                } else {
                    lo
                }
            })
        })
        .collect();
    Arrivals {
        pollable: vec![true; items.len()],
        auditable: vec![true; items.len()],
        // One data type, exercises: a listing per user, which carries them whole.
        listed_whole: vec![true; items.len()],
        audit_listings: s.users,
        items,
        webhook_at,
        horizon,
        cost: PollCost::Transactions,
    }
}

/// Requests counted into 15-minute windows.
#[derive(Default)]
struct Spend {
    total: u64,
    windows: BTreeMap<u64, u64>,
}

impl Spend {
    fn add(&mut self, at: f64, n: u64) {
        self.total += n;
        *self
            .windows
            .entry(crate::units::round_u64((at / WINDOW_S).floor()))
            .or_default() += n;
    }
    fn peak(&self) -> u64 {
        self.windows.values().copied().max().unwrap_or(0)
    }

    /// Each delivered item: received, then one fetch when it arrives. Returns the deliveries.
    fn fetches(&mut self, a: &Arrivals) -> u64 {
        let mut received = 0;
        for w in a.webhook_at.iter().flatten() {
            received += 1;
            self.add(*w, 1);
        }
        received
    }

    /// Requests per day over `horizon`, the busiest 15 minutes, and whether either exceeds
    /// Polar's limits for `users`.
    fn against_limits(&self, users: u64, horizon: f64) -> (f64, u64, bool) {
        let (short, long) = polar_limits(users);
        let per_day = per_day(self.total, horizon);
        let peak = self.peak();
        (per_day, peak, peak > short || per_day > long as f64)
    }
}

/// A poller's run over the arrivals: cycles at the times `next` gives, each spending what
/// hookrace's transactions mode spends. Returns the sighting time of each item (None: after the
/// horizon), the cycles and the empty ones.
struct PollRun {
    seen_at: Vec<Option<f64>>,
    cycles: u64,
    empty: u64,
}

fn poll(
    a: &Arrivals,
    spend: &mut Spend,
    audit: bool,
    mut next_interval: impl FnMut(&[usize], f64, u64) -> f64,
) -> PollRun {
    let mut run = PollRun {
        seen_at: vec![None; a.items.len()],
        cycles: 0,
        empty: 0,
    };
    let (mut t, mut next) = (0.0, 0usize);
    while t <= a.horizon {
        let mut by_user: BTreeMap<u64, u64> = BTreeMap::new();
        let mut found = Vec::new();
        while next < a.items.len() && a.items[next].0 <= t {
            if (audit && a.auditable[next]) || (!audit && a.pollable[next]) {
                *by_user.entry(a.items[next].1).or_default() += 1;
                run.seen_at[next] = Some(t);
                found.push(next);
            }
            next += 1;
        }
        run.cycles += 1;
        // The audit finds only what no delivery had announced by then, and fetches what of it
        // the listing does not carry whole.
        let unannounced: Vec<usize> = found
            .iter()
            .copied()
            .filter(|i| a.webhook_at[*i].is_none_or(|w| w > t))
            .collect();
        let fetched = unannounced.iter().filter(|i| !a.listed_whole[**i]).count() as u64;
        let unannounced = unannounced.len() as u64;
        run.empty += u64::from(if audit {
            unannounced == 0
        } else {
            found.is_empty()
        });
        let cost = match (audit, a.cost) {
            (true, _) => a.audit_listings + fetched,
            (false, PollCost::Transactions) => 1 + by_user.values().map(|n| 3 + n).sum::<u64>(),
            (false, PollCost::List { users }) => users + found.len() as u64,
        };
        spend.add(t, cost);
        t += next_interval(&found, t, cost);
    }
    run
}

fn stats(values: impl Iterator<Item = f64>) -> LatencyStats {
    let mut h = SignedHistogram::new();
    for ms in values {
        h.record_ms(ms);
    }
    h.stats()
}

fn per_day(n: u64, horizon: f64) -> f64 {
    n as f64 * DAY_S / horizon
}

/// Fixed polling every `every`.
pub fn fixed(s: &Scenario, every: Duration) -> Row {
    fixed_on(s, &arrivals(s), every)
}

/// Fixed polling every `every` over arrivals `a` (the closed forms from `s`).
pub(crate) fn fixed_on(s: &Scenario, a: &Arrivals, every: Duration) -> Row {
    let mut spend = Spend::default();
    let t = every.as_secs_f64();
    let run = poll(a, &mut spend, false, |_, _, _| t);
    let delays = || {
        a.items
            .iter()
            .zip(&run.seen_at)
            .filter_map(|((at, _), seen)| seen.map(|s| (s - at) * 1000.0))
    };
    let lost_by_webhooks = a
        .items
        .iter()
        .zip(&run.seen_at)
        .zip(&a.webhook_at)
        .filter(|(_, w)| w.is_none())
        .filter_map(|(((at, _), seen), _)| seen.map(|s| (s - at) * 1000.0));
    let (per_day_requests, peak_15m, over_limit) = spend.against_limits(s.users, a.horizon);
    let lambda = s.users as f64 * s.items_per_user_day / DAY_S;
    let per_user = s.items_per_user_day / DAY_S;
    let cycles_per_day = DAY_S / t;
    Row {
        label: format!("poll every {}", humantime::format_duration(every)),
        interval_s: Some(t),
        delay_ms: stats(delays()),
        empty_share: (run.cycles > 0).then(|| run.empty as f64 / run.cycles as f64),
        requests_per_day: per_day_requests,
        requests: spend.total,
        received_per_day: 0.0,
        peak_15m,
        over_limit,
        // What this mode never reads (a trace's types other than its own); an item after the
        // last cycle is simply not polled yet.
        lost: a.pollable.iter().filter(|p| !**p).count() as u64,
        catch_delay_ms: stats(lost_by_webhooks),
        theory: Some(Theory {
            mean_delay_ms: t * 500.0,
            p95_delay_ms: t * 950.0,
            max_delay_ms: t * 1000.0,
            empty_share: (-lambda * t).exp(),
            requests_per_day: cycles_per_day
                * (1.0 + 3.0 * s.users as f64 * (1.0 - (-per_user * t).exp()))
                + lambda * DAY_S,
        }),
    }
}

/// Webhooks alone: each delivered item costs one fetch; a lost one is never seen.
pub fn webhooks(s: &Scenario) -> Row {
    webhooks_on(s, &arrivals(s))
}

/// Webhooks alone over arrivals `a`.
pub(crate) fn webhooks_on(s: &Scenario, a: &Arrivals) -> Row {
    let mut spend = Spend::default();
    let received = spend.fetches(a);
    let (per_day_requests, peak_15m, over_limit) = spend.against_limits(s.users, a.horizon);
    Row {
        label: "webhooks alone".into(),
        interval_s: None,
        delay_ms: stats(
            a.items
                .iter()
                .zip(&a.webhook_at)
                .filter_map(|((at, _), w)| w.map(|w| (w - at) * 1000.0)),
        ),
        empty_share: None,
        requests_per_day: per_day_requests,
        requests: spend.total,
        received_per_day: per_day(received, a.horizon),
        peak_15m,
        over_limit,
        lost: a.webhook_at.iter().filter(|w| w.is_none()).count() as u64,
        catch_delay_ms: LatencyStats::default(),
        theory: None,
    }
}

/// Webhooks with the adaptive auditor between `every` and `max_every`, paced by the auditor's
/// own code: a cycle that found an entity no delivery announced (past the grace) is evidence.
pub fn adaptive(s: &Scenario, every: Duration, max_every: Duration) -> Row {
    adaptive_on(s, &arrivals(s), every, max_every)
}

/// The adaptive net over arrivals `a`.
pub(crate) fn adaptive_on(s: &Scenario, a: &Arrivals, every: Duration, max_every: Duration) -> Row {
    let mut spend = Spend::default();
    let received = spend.fetches(a);
    let mut pace = Pace::new(every, max_every);
    let grace = GRACE.as_secs_f64();
    // Entities the poll found before any delivery, waiting for the grace to judge them.
    let mut suspects: Vec<usize> = Vec::new();
    let daily_limit = polar_limits(s.users).1;
    let run = poll(a, &mut spend, true, |found, now, cost| {
        suspects.extend(
            found
                .iter()
                .copied()
                .filter(|i| a.webhook_at[*i].is_none_or(|w| w > now)),
        );
        let (due, waiting): (Vec<usize>, Vec<usize>) = suspects
            .drain(..)
            .partition(|i| a.items[*i].0 <= now - grace);
        suspects = waiting;
        let missed = due
            .iter()
            .filter(|i| a.webhook_at[**i].is_none_or(|w| w > now))
            .count() as u64;
        // As the daemon's auditor over days: never faster than its share of the daily budget.
        pace.after(&Evidence {
            missed,
            ..Evidence::default()
        })
        .max(budget_floor(cost, daily_limit))
        .as_secs_f64()
    });
    // Each entity is seen by whichever channel came first.
    let first = |i: usize| match (a.webhook_at[i], run.seen_at[i]) {
        (Some(w), Some(p)) => Some(w.min(p)),
        (w, p) => w.or(p),
    };
    let (per_day_requests, peak_15m, over_limit) = spend.against_limits(s.users, a.horizon);
    Row {
        label: format!(
            "webhooks + adaptive net ({}..{})",
            humantime::format_duration(every),
            humantime::format_duration(max_every)
        ),
        interval_s: None,
        delay_ms: stats(
            (0..a.items.len()).filter_map(|i| first(i).map(|f| (f - a.items[i].0) * 1000.0)),
        ),
        empty_share: (run.cycles > 0).then(|| run.empty as f64 / run.cycles as f64),
        requests_per_day: per_day_requests,
        requests: spend.total,
        received_per_day: per_day(received, a.horizon),
        peak_15m,
        over_limit,
        // Items in the last stretch may simply not have been polled yet when the simulation ends.
        lost: (0..a.items.len())
            .filter(|i| a.items[*i].0 <= a.horizon - (every + max_every).as_secs_f64())
            .filter(|i| first(*i).is_none())
            .count() as u64,
        catch_delay_ms: stats(
            (0..a.items.len())
                .filter(|i| a.webhook_at[*i].is_none())
                .filter_map(|i| run.seen_at[i].map(|p| (p - a.items[i].0) * 1000.0)),
        ),
        theory: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(users: u64) -> Scenario {
        Scenario {
            users,
            items_per_user_day: 3.0,
            drop_rate: 0.02,
            webhook_delay_s: (0.02, 0.4),
            days: 7.0,
            seed: 1,
        }
    }

    #[test]
    fn simulation_and_closed_forms_agree_within_sampling_error() {
        for (users, every) in [(100, 60), (10_000, 30), (1, 300)] {
            let row = fixed(&scenario(users), Duration::from_secs(every));
            let th = row.theory.clone().unwrap();
            let n = row.delay_ms.count as f64;
            // The mean of a uniform(0, T) sample: standard error T / sqrt(12 n).
            let se = every as f64 * 1000.0 / (12.0 * n).sqrt();
            let mean = row.delay_ms.mean.unwrap();
            assert!(
                (mean - th.mean_delay_ms).abs() < 4.0 * se + 1.0,
                "{users} users every {every}s: mean {mean} vs {}",
                th.mean_delay_ms
            );
            let empty = row.empty_share.unwrap();
            assert!(
                (empty - th.empty_share).abs() < 0.02,
                "{users} users every {every}s: empty {empty} vs {}",
                th.empty_share
            );
            let rel = (row.requests_per_day - th.requests_per_day).abs() / th.requests_per_day;
            assert!(
                rel < 0.02,
                "{users} users every {every}s: {} vs {} requests/day",
                row.requests_per_day,
                th.requests_per_day
            );
            // Never later than one interval (within the histogram's 3 significant digits).
            assert!(row.delay_ms.max.unwrap() <= every as f64 * 1000.0 * 1.001);
        }
    }

    #[test]
    fn webhooks_lose_what_is_dropped_and_the_net_finds_it_within_its_bound() {
        // Few losses a day: the net spends most of its time at max_every. (With a loss every few
        // minutes, as for 1,000 users, it stays fast and costs what fixed polling at `every` costs.)
        let s = scenario(10);
        let alone = webhooks(&s);
        let expected = 10.0 * 3.0 * 7.0 * 0.02;
        assert!(
            (alone.lost as f64 - expected).abs() < 4.0 * expected.sqrt(),
            "{alone:?}"
        );
        let (every, max) = (Duration::from_secs(30), Duration::from_secs(900));
        let net = adaptive(&s, every, max);
        assert_eq!(net.lost, 0);
        assert!(net.catch_delay_ms.max.unwrap() <= (900.0 + 30.0) * 1000.0);
        // It spends far less than polling every 30 s.
        let fast = fixed(&s, every);
        assert!(
            net.requests_per_day < fast.requests_per_day / 2.0,
            "{net:?} {fast:?}"
        );
    }

    #[test]
    fn ten_thousand_users_for_a_week_run_in_simulated_time() {
        let row = fixed(&scenario(10_000), Duration::from_secs(10));
        // About 10,000 × 3 × 7 = 210,000 entities; the limit grows with the users.
        assert!(row.delay_ms.count > 200_000, "{row:?}");
        assert!(!row.over_limit, "{row:?}");
        // One user polling every 10 s spends 8,640 requests a day: over the 5,100 allowed.
        let one = fixed(&scenario(1), Duration::from_secs(10));
        assert!(one.over_limit && one.requests_per_day > 8_600.0, "{one:?}");
    }
}

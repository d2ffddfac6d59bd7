//! Statistics over many entities: signed latency histograms, the [`Summary`] the status document
//! and the report share, and [`LiveSummary`], the running tally `race::Tally` keeps up to date as
//! commits make entity changes durable, so that nobody has to read every entity to answer `/status`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{Channel, Entity, delay_ms, first_channel, millis};

/// count, p50, p95, p99, max and mean of a set of millisecond values; `null`s when empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

/// A histogram of signed millisecond values at microsecond resolution, 3 significant digits.
///
/// hdrhistogram records unsigned values, so negatives (a poll that beat the webhook) go into a
/// second histogram of magnitudes; quantiles walk the negatives from the most negative up, then
/// the non-negatives.
#[derive(Clone)]
pub struct SignedHistogram {
    negative: Histogram<u64>,
    non_negative: Histogram<u64>,
    sum_us: i128,
}

impl Default for SignedHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl SignedHistogram {
    pub fn new() -> Self {
        // `new(3)` only fails for significant figures outside 0..=5.
        let h = || Histogram::<u64>::new(3).expect("3 significant figures are valid");
        SignedHistogram {
            negative: h(),
            non_negative: h(),
            sum_us: 0,
        }
    }

    pub fn record_ms(&mut self, ms: f64) {
        self.record_us(to_us(ms), 1);
    }

    fn record_us(&mut self, us: i64, n: u64) {
        self.sum_us += i128::from(us) * i128::from(n);
        let (h, v) = if us < 0 {
            (&mut self.negative, us.unsigned_abs())
        } else {
            (&mut self.non_negative, us as u64)
        };
        // `record_n` grows the auto-resizing histogram; should growing ever fail, clamp instead.
        if h.record_n(v, n).is_err() {
            h.saturating_record_n(v, n);
        }
    }

    /// Takes the values of `other` out of this histogram; fails (leaving `self` partly changed)
    /// when `other` holds a value this one does not.
    fn subtract(&mut self, other: &SignedHistogram) -> Result<(), hdrhistogram::SubtractionError> {
        self.negative.subtract(&other.negative)?;
        self.non_negative.subtract(&other.non_negative)?;
        self.sum_us -= other.sum_us;
        Ok(())
    }

    /// The recorded values as `(microseconds, count)` pairs, for persisting.
    fn recorded(&self) -> Vec<(i64, u64)> {
        let neg = self.negative.iter_recorded().map(|v| {
            let m = i64::try_from(v.value_iterated_to()).unwrap_or(i64::MAX);
            (-m, v.count_at_value())
        });
        let pos = self.non_negative.iter_recorded().map(|v| {
            let m = i64::try_from(v.value_iterated_to()).unwrap_or(i64::MAX);
            (m, v.count_at_value())
        });
        neg.chain(pos).collect()
    }

    pub fn count(&self) -> u64 {
        self.negative.len() + self.non_negative.len()
    }

    /// Sum of all values in milliseconds.
    pub fn sum_ms(&self) -> f64 {
        self.sum_us as f64 / 1000.0
    }

    /// How many values are at most `ms` (within the histogram's precision): for buckets.
    pub fn count_at_most_ms(&self, ms: f64) -> u64 {
        let us = to_us(ms);
        if us < 0 {
            let m = us.unsigned_abs();
            if self.negative.is_empty() || m > self.negative.max() {
                return 0;
            }
            self.negative.count_between(m, self.negative.max())
        } else {
            let pos = if self.non_negative.is_empty() {
                0
            } else {
                self.non_negative.count_between(0, us as u64)
            };
            self.negative.len() + pos
        }
    }

    /// The value at quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = accesslink::units::round_u64((q * n as f64).ceil()).clamp(1, n);
        let neg = self.negative.len();
        let us = if rank <= neg {
            // The rank-th smallest signed value is the (neg - rank + 1)-th smallest magnitude.
            let k = neg - rank + 1;
            // Round magnitudes down: like hdrhistogram's upper bound for positives, this errs
            // towards +infinity, by at most the histogram's precision.
            let v = self.negative.value_at_quantile(k as f64 / neg as f64);
            -(self.negative.lowest_equivalent(v) as f64)
        } else {
            let k = rank - neg;
            let pos = self.non_negative.len();
            self.non_negative.value_at_quantile(k as f64 / pos as f64) as f64
        };
        Some(us / 1000.0)
    }

    pub fn stats(&self) -> LatencyStats {
        let n = self.count();
        if n == 0 {
            return LatencyStats::default();
        }
        let max_us = if !self.non_negative.is_empty() {
            self.non_negative.max() as f64
        } else {
            -(self.negative.min() as f64)
        };
        LatencyStats {
            count: n,
            p50: self.quantile_ms(0.50),
            p95: self.quantile_ms(0.95),
            p99: self.quantile_ms(0.99),
            max: Some(max_us / 1000.0),
            mean: Some(round3(self.sum_us as f64 / n as f64 / 1000.0)),
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Everything the status document and the report say about entities.
#[derive(Clone, Default)]
pub struct Summary {
    pub total: u64,
    pub by_type: BTreeMap<String, u64>,
    pub seen_by_both: u64,
    pub webhook_only: u64,
    pub poll_only: u64,
    pub first_by_webhook: u64,
    pub first_by_poll: u64,
    pub webhook_latency: SignedHistogram,
    pub poll_latency: SignedHistogram,
    pub webhook_lead: SignedHistogram,
    /// Availability → your app told (entities a notify sink took).
    pub app_latency: SignedHistogram,
    /// Availability → poll, for the entities only the poll saw (the misses it caught).
    pub catch_delay: SignedHistogram,
}

/// The parts of a stored entity the summary needs, decoded without allocating its strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EntityTimes<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub data_available_at: Option<DateTime<Utc>>,
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub webhook_timestamp: Option<DateTime<Utc>>,
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub webhook_at: Option<DateTime<Utc>>,
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub poll_at: Option<DateTime<Utc>>,
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub notified_at: Option<DateTime<Utc>>,
}

impl Entity {
    /// What the summary counts of this entity.
    pub fn times(&self) -> EntityTimes<'_> {
        EntityTimes {
            kind: Cow::Borrowed(self.kind.as_str()),
            data_available_at: self.data_available_at,
            webhook_timestamp: self.webhook_timestamp,
            webhook_at: self.webhook_at,
            poll_at: self.poll_at,
            notified_at: self.notified_at,
        }
    }
}

impl EntityTimes<'_> {
    pub fn into_owned(self) -> EntityTimes<'static> {
        EntityTimes {
            kind: Cow::Owned(self.kind.into_owned()),
            data_available_at: self.data_available_at,
            webhook_timestamp: self.webhook_timestamp,
            webhook_at: self.webhook_at,
            poll_at: self.poll_at,
            notified_at: self.notified_at,
        }
    }
}

/// One entity's part in a summary: worked out once, then added (or taken out) whole, so taking
/// an entity out undoes exactly what adding it did.
struct Contribution<'a> {
    kind: &'a str,
    /// (seen by both, webhook only, poll only)
    seen: (bool, bool, bool),
    first: Option<Channel>,
    webhook_latency_us: Option<i64>,
    poll_latency_us: Option<i64>,
    webhook_lead_us: Option<i64>,
    app_latency_us: Option<i64>,
    catch_delay_us: Option<i64>,
}

impl<'a> Contribution<'a> {
    fn of(t: &'a EntityTimes<'_>) -> Self {
        // At the precision the store keeps (microseconds), so that an entity counted as it is
        // written and the same entity read back count the same.
        let stored = |at: Option<DateTime<Utc>>| at.map(|at| at.trunc_subsecs(6));
        let (webhook_at, poll_at) = (stored(t.webhook_at), stored(t.poll_at));
        let (w, p) = (webhook_at.is_some(), poll_at.is_some());
        let available = stored(t.data_available_at.or(t.webhook_timestamp));
        let delay = |at: Option<DateTime<Utc>>| {
            available
                .zip(at)
                .and_then(|(a, at)| delay_ms(a, at))
                .map(to_us)
        };
        Contribution {
            kind: t.kind.as_ref(),
            seen: (w && p, w && !p, p && !w),
            first: first_channel(webhook_at, poll_at),
            webhook_latency_us: delay(webhook_at),
            poll_latency_us: delay(poll_at),
            webhook_lead_us: webhook_at.zip(poll_at).map(|(w, p)| to_us(millis(p - w))),
            app_latency_us: delay(stored(t.notified_at)),
            catch_delay_us: if p && !w { delay(poll_at) } else { None },
        }
    }
}

fn to_us(ms: f64) -> i64 {
    accesslink::units::round_i64(ms * 1000.0)
}

impl Summary {
    pub fn add(&mut self, e: &Entity) {
        self.add_times(&e.times());
    }

    /// Adds one entity given only its times (see [`EntityTimes`]).
    pub fn add_times(&mut self, t: &EntityTimes<'_>) {
        let c = Contribution::of(t);
        self.total += 1;
        match self.by_type.get_mut(c.kind) {
            Some(n) => *n += 1,
            None => {
                self.by_type.insert(c.kind.to_string(), 1);
            }
        }
        let (both, webhook, poll) = c.seen;
        self.seen_by_both += u64::from(both);
        self.webhook_only += u64::from(webhook);
        self.poll_only += u64::from(poll);
        match c.first {
            Some(Channel::Webhook) => self.first_by_webhook += 1,
            Some(Channel::Poll) => self.first_by_poll += 1,
            None => {}
        }
        for (h, v) in [
            (&mut self.webhook_latency, c.webhook_latency_us),
            (&mut self.poll_latency, c.poll_latency_us),
            (&mut self.webhook_lead, c.webhook_lead_us),
            (&mut self.app_latency, c.app_latency_us),
            (&mut self.catch_delay, c.catch_delay_us),
        ] {
            if let Some(v) = v {
                h.record_us(v, 1);
            }
        }
    }
}

/// Summarises any collection of entities.
pub fn summarize<'a>(entities: impl IntoIterator<Item = &'a Entity>) -> Summary {
    let mut s = Summary::default();
    for e in entities {
        s.add(e);
    }
    s
}

/// A summary kept up to date as entities change, without reading the others again.
///
/// hdrhistogram cannot forget one value, so values taken out are recorded in a second set of
/// histograms and subtracted when a [`Summary`] is asked for. Changes may be applied out of
/// order by concurrent writers (an entity's new version taken out just before it is added):
/// the tallies are signed and a snapshot that would go below zero is refused for that moment.
#[derive(Default)]
pub struct LiveSummary {
    added: Summary,
    removed: Summary,
}

impl LiveSummary {
    /// Starts from a summary of what exists.
    pub fn new(start: Summary) -> Self {
        LiveSummary {
            added: start,
            removed: Summary::default(),
        }
    }

    /// Accounts for one entity changing from `old` to `new` (`None`: absent).
    pub fn change(&mut self, old: Option<&EntityTimes<'_>>, new: Option<&EntityTimes<'_>>) {
        if old == new {
            return;
        }
        if let Some(t) = old {
            self.removed.add_times(t);
        }
        if let Some(t) = new {
            self.added.add_times(t);
        }
    }

    /// The summary now: what was added less what was taken out. `None` while a change applied
    /// out of order leaves a value taken out before it was added (try again a moment later).
    pub fn snapshot(&self) -> Option<Summary> {
        let (a, r) = (&self.added, &self.removed);
        let mut by_type = a.by_type.clone();
        for (kind, n) in &r.by_type {
            let left = by_type.get(kind).copied().unwrap_or(0).checked_sub(*n)?;
            if left == 0 {
                by_type.remove(kind);
            } else {
                by_type.insert(kind.clone(), left);
            }
        }
        let histogram = |a: &SignedHistogram, r: &SignedHistogram| {
            let mut h = a.clone();
            h.subtract(r).ok().map(|()| h)
        };
        Some(Summary {
            total: a.total.checked_sub(r.total)?,
            by_type,
            seen_by_both: a.seen_by_both.checked_sub(r.seen_by_both)?,
            webhook_only: a.webhook_only.checked_sub(r.webhook_only)?,
            poll_only: a.poll_only.checked_sub(r.poll_only)?,
            first_by_webhook: a.first_by_webhook.checked_sub(r.first_by_webhook)?,
            first_by_poll: a.first_by_poll.checked_sub(r.first_by_poll)?,
            webhook_latency: histogram(&a.webhook_latency, &r.webhook_latency)?,
            poll_latency: histogram(&a.poll_latency, &r.poll_latency)?,
            webhook_lead: histogram(&a.webhook_lead, &r.webhook_lead)?,
            app_latency: histogram(&a.app_latency, &r.app_latency)?,
            catch_delay: histogram(&a.catch_delay, &r.catch_delay)?,
        })
    }
}

/// A [`Summary`] as the store keeps it across a clean restart (histograms as value/count pairs).
#[derive(Serialize, Deserialize)]
pub struct SavedSummary {
    total: u64,
    by_type: BTreeMap<String, u64>,
    seen_by_both: u64,
    webhook_only: u64,
    poll_only: u64,
    first_by_webhook: u64,
    first_by_poll: u64,
    /// webhook latency, poll latency, webhook lead, your app's latency, catch delay:
    /// `(microseconds, count)` pairs (each value its bucket's upper end) and the exact sums in
    /// microseconds. A summary saved by an earlier version has fewer; the missing ones are
    /// recounted from the records (see [`SavedSummary::is_complete`]).
    histograms: Vec<Vec<(i64, u64)>>,
    sums_us: Vec<i128>,
}

/// The histograms a summary saved by this version holds.
const SAVED_HISTOGRAMS: usize = 5;

impl SavedSummary {
    /// Whether it holds every figure this version counts (else the store recounts).
    pub fn is_complete(&self) -> bool {
        self.histograms.len() == SAVED_HISTOGRAMS && self.sums_us.len() == SAVED_HISTOGRAMS
    }
}

impl From<&Summary> for SavedSummary {
    fn from(s: &Summary) -> Self {
        SavedSummary {
            total: s.total,
            by_type: s.by_type.clone(),
            seen_by_both: s.seen_by_both,
            webhook_only: s.webhook_only,
            poll_only: s.poll_only,
            first_by_webhook: s.first_by_webhook,
            first_by_poll: s.first_by_poll,
            histograms: vec![
                s.webhook_latency.recorded(),
                s.poll_latency.recorded(),
                s.webhook_lead.recorded(),
                s.app_latency.recorded(),
                s.catch_delay.recorded(),
            ],
            sums_us: vec![
                s.webhook_latency.sum_us,
                s.poll_latency.sum_us,
                s.webhook_lead.sum_us,
                s.app_latency.sum_us,
                s.catch_delay.sum_us,
            ],
        }
    }
}

impl From<SavedSummary> for Summary {
    fn from(s: SavedSummary) -> Self {
        let mut histograms = s.histograms.into_iter();
        let mut sums = s.sums_us.into_iter();
        let mut next = || {
            (
                histograms.next().unwrap_or_default(),
                sums.next().unwrap_or_default(),
            )
        };
        let ((w, ws), (p, ps), (l, ls), (a, as_)) = (next(), next(), next(), next());
        let (c, cs) = next();
        let histogram = |values: Vec<(i64, u64)>, sum_us: i128| {
            let mut h = SignedHistogram::new();
            for (us, n) in values {
                h.record_us(us, n);
            }
            h.sum_us = sum_us;
            h
        };
        Summary {
            total: s.total,
            by_type: s.by_type,
            seen_by_both: s.seen_by_both,
            webhook_only: s.webhook_only,
            poll_only: s.poll_only,
            first_by_webhook: s.first_by_webhook,
            first_by_poll: s.first_by_poll,
            webhook_latency: histogram(w, ws),
            poll_latency: histogram(p, ps),
            webhook_lead: histogram(l, ls),
            app_latency: histogram(a, as_),
            catch_delay: histogram(c, cs),
        }
    }
}

/// Requests a channel spent per entity it saw first or alone; `None` when it saw none first.
pub fn requests_per_entity(requests: u64, entities_first: u64) -> Option<f64> {
    (entities_first > 0).then(|| round3(requests as f64 / entities_first as f64))
}

/// Share of poll cycles that found nothing; `None` before the first cycle.
pub fn wasted_share(empty_cycles: u64, cycles: u64) -> Option<f64> {
    (cycles > 0).then(|| round3(empty_cycles as f64 / cycles as f64))
}
/// Everything a reader of a summary can see, for tests that compare two summaries (the store's
/// tests too, so it is public but hidden).
#[doc(hidden)]
pub fn visible(s: &Summary) -> impl PartialEq + std::fmt::Debug + use<> {
    (
        (
            s.total,
            s.by_type.clone(),
            s.seen_by_both,
            s.webhook_only,
            s.poll_only,
        ),
        (s.first_by_webhook, s.first_by_poll),
        [&s.webhook_latency, &s.poll_latency, &s.webhook_lead].map(|h| {
            (
                h.stats(),
                h.sum_ms(),
                h.count_at_most_ms(-500.0),
                h.recorded(),
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use accesslink::identity::{EventType, UserId};
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn signed_quantiles_cover_both_signs() {
        let mut h = SignedHistogram::new();
        for v in [-30.0, -10.0, 0.0, 10.0, 20.0] {
            h.record_ms(v);
        }
        let s = h.stats();
        // hdrhistogram keeps 3 significant digits: within 0.1%.
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() <= b.abs() * 0.001;
        assert_eq!(s.count, 5);
        assert_eq!(s.p50, Some(0.0));
        assert!(close(h.quantile_ms(0.0), -30.0), "{:?}", h.quantile_ms(0.0));
        assert!(close(h.quantile_ms(0.4), -10.0), "{:?}", h.quantile_ms(0.4));
        assert!(close(s.max, 20.0), "{s:?}");
        assert_eq!(s.mean, Some(-2.0));
        let mut only_neg = SignedHistogram::new();
        only_neg.record_ms(-5.0);
        assert!(close(only_neg.stats().max, -5.0));
        assert_eq!(SignedHistogram::new().stats(), LatencyStats::default());
    }

    #[test]
    fn percentiles_are_within_histogram_precision() {
        let mut h = SignedHistogram::new();
        for ms in 1..=1000 {
            h.record_ms(ms as f64);
        }
        let s = h.stats();
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() <= b * 0.001 + 0.001;
        assert!(close(s.p50, 500.0), "{s:?}");
        assert!(close(s.p95, 950.0), "{s:?}");
        assert!(close(s.p99, 990.0), "{s:?}");
        assert!(close(s.max, 1000.0), "{s:?}");
    }

    #[test]
    fn summary_counts_each_entity_once() {
        let mut a = Entity::new(&EventType::Exercise, UserId(1), "a");
        a.webhook_at = Some(t(1));
        a.poll_at = Some(t(10));
        let mut b = Entity::new(&EventType::Exercise, UserId(1), "b");
        b.poll_at = Some(t(3));
        let mut c = Entity::new(&EventType::Sleep, UserId(2), "2024-01-01");
        c.webhook_at = Some(t(4));
        let s = summarize([&a, &b, &c]);
        assert_eq!(
            (s.total, s.seen_by_both, s.webhook_only, s.poll_only),
            (3, 1, 1, 1)
        );
        assert_eq!((s.first_by_webhook, s.first_by_poll), (2, 1));
        assert_eq!(s.by_type["EXERCISE"], 2);
        assert_eq!(requests_per_entity(10, 2), Some(5.0));
        assert_eq!(requests_per_entity(10, 0), None);
    }

    #[test]
    fn a_live_summary_agrees_with_a_full_recount() {
        use std::collections::HashMap;
        let mut live = LiveSummary::default();
        let mut entities: HashMap<u64, Entity> = HashMap::new();
        // A fixed walk through creations, both channels, fetches and merges (deletions).
        let mut x: u64 = 7;
        for step in 0..3_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = (x >> 33) % 200;
            let old = entities.get(&id).cloned();
            let new = match (x >> 20) % 6 {
                0 => None,
                k => {
                    let kind = if id % 3 == 0 {
                        EventType::Sleep
                    } else {
                        EventType::Exercise
                    };
                    let mut e = old
                        .clone()
                        .unwrap_or_else(|| Entity::new(&kind, UserId(1), &id.to_string()));
                    let at = t(step as i64);
                    match k {
                        1 => e.webhook_at = e.webhook_at.or(Some(at)),
                        2 => {
                            e.poll_at = e.poll_at.or(Some(
                                at + chrono::Duration::milliseconds((x % 5000) as i64 - 2500),
                            ))
                        }
                        3 => e.webhook_timestamp = Some(at - chrono::Duration::seconds(3)),
                        4 => {
                            e.data_available_at =
                                Some(at - chrono::Duration::seconds((x % 90) as i64))
                        }
                        _ => e.webhook_deliveries += 1,
                    }
                    Some(e)
                }
            };
            live.change(
                old.as_ref().map(|e| e.times()).as_ref(),
                new.as_ref().map(|e| e.times()).as_ref(),
            );
            match new {
                Some(e) => entities.insert(id, e),
                None => entities.remove(&id),
            };
        }
        let now = live.snapshot().expect("every change was applied in order");
        assert!(
            now.total > 50,
            "the walk leaves entities behind: {}",
            now.total
        );
        assert_eq!(visible(&now), visible(&summarize(entities.values())));
        // What a clean restart keeps reads back the same.
        let saved = serde_json::to_vec(&SavedSummary::from(&now)).unwrap();
        let back: SavedSummary = serde_json::from_slice(&saved).unwrap();
        assert_eq!(visible(&Summary::from(back)), visible(&now));
    }

    #[test]
    fn a_change_taken_out_before_it_was_added_waits_for_its_addition() {
        let mut v1 = Entity::new(&EventType::Exercise, UserId(1), "a");
        v1.webhook_at = Some(t(2));
        v1.webhook_timestamp = Some(t(0));
        let mut v2 = v1.clone();
        v2.poll_at = Some(t(30));
        let mut live = LiveSummary::default();
        // The second writer's change lands first.
        live.change(Some(&v1.times()), Some(&v2.times()));
        assert!(live.snapshot().is_none());
        live.change(None, Some(&v1.times()));
        let s = live.snapshot().unwrap();
        assert_eq!((s.total, s.seen_by_both, s.webhook_only), (1, 1, 0));
        assert_eq!(s.webhook_lead.stats().count, 1);
    }
}

//! The measurement model: what an entity is, which channel saw it first, and the latency and lead
//! statistics over many entities. Pure functions and data, no I/O: the store persists [`Entity`],
//! the status document and the report both summarise through [`summarize`], so they agree exactly.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The two ways hookrace learns about new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Webhook,
    Poll,
}

/// One piece of new data at the source, as both channels saw it. Stored as JSON with times in
/// microseconds since the epoch (a report reads a million of them: integers decode fast); absent
/// values and the key (the store's key for the record) are not written, to keep records small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// Store key: `TYPE/user/id` (not serialized: the store sets it from the record's key).
    #[serde(default, skip_serializing)]
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub user_id: u64,
    /// The hashed exercise id, a date, or another source identity.
    pub entity_id: String,
    /// When the source says the data became available (`upload-time`, `created`), once fetched.
    #[serde(
        default,
        with = "chrono::serde::ts_microseconds_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub data_available_at: Option<DateTime<Utc>>,
    /// The `timestamp` of the first valid delivery: stands in for availability until data is fetched.
    #[serde(
        default,
        with = "chrono::serde::ts_microseconds_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub webhook_timestamp: Option<DateTime<Utc>>,
    /// When the first valid delivery was received.
    #[serde(
        default,
        with = "chrono::serde::ts_microseconds_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub webhook_at: Option<DateTime<Utc>>,
    /// When the poller first stored it.
    #[serde(
        default,
        with = "chrono::serde::ts_microseconds_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub poll_at: Option<DateTime<Utc>>,
    /// Valid deliveries received for it (more than one means duplicates).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub webhook_deliveries: u32,
    /// Where the data is fetched from, as the delivery named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Links the records of this entity seen through different ids (see `accesslink::data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The webhook's data has been fetched (or the fetch gave up: see `fetch_error`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fetched: bool,
    /// Why fetching the webhook's data failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Entity {
    /// A new entity with no sighting yet.
    pub fn new(kind: &str, user_id: u64, entity_id: &str) -> Self {
        Entity {
            key: format!("{kind}/{user_id}/{entity_id}"),
            kind: kind.to_string(),
            user_id,
            entity_id: entity_id.to_string(),
            data_available_at: None,
            webhook_timestamp: None,
            webhook_at: None,
            poll_at: None,
            webhook_deliveries: 0,
            url: None,
            fingerprint: None,
            fetched: false,
            fetch_error: None,
        }
    }

    /// Folds `other`, another record of the same entity, into this one.
    pub fn absorb(&mut self, other: &Entity) {
        let earliest = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if other.webhook_at.is_some()
            && (self.webhook_at.is_none() || other.webhook_at < self.webhook_at)
        {
            self.webhook_timestamp = other.webhook_timestamp;
            self.url = other.url.clone().or(self.url.take());
        }
        self.webhook_at = earliest(self.webhook_at, other.webhook_at);
        self.poll_at = earliest(self.poll_at, other.poll_at);
        self.webhook_deliveries = self
            .webhook_deliveries
            .saturating_add(other.webhook_deliveries);
        self.data_available_at = self.data_available_at.or(other.data_available_at);
        self.webhook_timestamp = self.webhook_timestamp.or(other.webhook_timestamp);
        self.url = self.url.take().or(other.url.clone());
        self.fingerprint = self.fingerprint.take().or(other.fingerprint.clone());
        self.fetched |= other.fetched;
    }

    /// When it became available: from the data when fetched, else the webhook's timestamp.
    pub fn available_at(&self) -> Option<DateTime<Utc>> {
        self.data_available_at.or(self.webhook_timestamp)
    }

    /// The channel that saw it first (a tie goes to the webhook, which was not worse).
    pub fn first_channel(&self) -> Option<Channel> {
        first_channel(self.webhook_at, self.poll_at)
    }

    /// Milliseconds from availability to the webhook (clamped at 0: clocks differ).
    pub fn webhook_latency_ms(&self) -> Option<f64> {
        delay_ms(self.available_at()?, self.webhook_at?)
    }

    /// Milliseconds from availability to the poll.
    pub fn poll_latency_ms(&self) -> Option<f64> {
        delay_ms(self.available_at()?, self.poll_at?)
    }

    /// poll_at − webhook_at in milliseconds, for entities seen by both (negative: polling won).
    pub fn webhook_lead_ms(&self) -> Option<f64> {
        Some(millis(self.poll_at? - self.webhook_at?))
    }

    /// The JSON object `/entities` serves for it.
    pub fn view(&self) -> EntityView {
        EntityView {
            key: self.key.clone(),
            kind: self.kind.clone(),
            user_id: self.user_id,
            entity_id: self.entity_id.clone(),
            available_at: self.available_at(),
            webhook_at: self.webhook_at,
            poll_at: self.poll_at,
            first_channel: self.first_channel(),
        }
    }
}

/// The public shape of an entity (`GET /entities`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityView {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub user_id: u64,
    pub entity_id: String,
    pub available_at: Option<DateTime<Utc>>,
    pub webhook_at: Option<DateTime<Utc>>,
    pub poll_at: Option<DateTime<Utc>>,
    pub first_channel: Option<Channel>,
}

fn first_channel(
    webhook_at: Option<DateTime<Utc>>,
    poll_at: Option<DateTime<Utc>>,
) -> Option<Channel> {
    match (webhook_at, poll_at) {
        (Some(w), Some(p)) if p < w => Some(Channel::Poll),
        (Some(_), _) => Some(Channel::Webhook),
        (None, Some(_)) => Some(Channel::Poll),
        (None, None) => None,
    }
}

fn millis(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds()
        .map(|us| us as f64 / 1000.0)
        .unwrap_or(d.num_milliseconds() as f64)
}

fn delay_ms(from: DateTime<Utc>, to: DateTime<Utc>) -> Option<f64> {
    Some(millis(to - from).max(0.0))
}

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
        let us = (ms * 1000.0).round() as i64;
        self.sum_us += i128::from(us);
        let (h, v) = if us < 0 {
            (&mut self.negative, us.unsigned_abs())
        } else {
            (&mut self.non_negative, us as u64)
        };
        // `record` grows the auto-resizing histogram; should growing ever fail, clamp instead.
        if h.record(v).is_err() {
            h.saturating_record(v);
        }
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
        let us = (ms * 1000.0).round() as i64;
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
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
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
#[derive(Default)]
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
}

/// The parts of a stored entity the summary needs, decoded without allocating its strings.
#[derive(Deserialize)]
pub struct EntityTimes<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: std::borrow::Cow<'a, str>,
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub data_available_at: Option<DateTime<Utc>>,
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub webhook_timestamp: Option<DateTime<Utc>>,
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub webhook_at: Option<DateTime<Utc>>,
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub poll_at: Option<DateTime<Utc>>,
}

impl Summary {
    pub fn add(&mut self, e: &Entity) {
        self.add_times(&EntityTimes {
            kind: std::borrow::Cow::Borrowed(&e.kind),
            data_available_at: e.data_available_at,
            webhook_timestamp: e.webhook_timestamp,
            webhook_at: e.webhook_at,
            poll_at: e.poll_at,
        });
    }

    /// Adds one entity given only its times (see [`EntityTimes`]).
    pub fn add_times(&mut self, t: &EntityTimes<'_>) {
        self.total += 1;
        match self.by_type.get_mut(t.kind.as_ref()) {
            Some(n) => *n += 1,
            None => {
                self.by_type.insert(t.kind.to_string(), 1);
            }
        }
        match (t.webhook_at.is_some(), t.poll_at.is_some()) {
            (true, true) => self.seen_by_both += 1,
            (true, false) => self.webhook_only += 1,
            (false, true) => self.poll_only += 1,
            (false, false) => {}
        }
        match first_channel(t.webhook_at, t.poll_at) {
            Some(Channel::Webhook) => self.first_by_webhook += 1,
            Some(Channel::Poll) => self.first_by_poll += 1,
            None => {}
        }
        let available = t.data_available_at.or(t.webhook_timestamp);
        if let Some(ms) = available
            .zip(t.webhook_at)
            .and_then(|(a, w)| delay_ms(a, w))
        {
            self.webhook_latency.record_ms(ms);
        }
        if let Some(ms) = available.zip(t.poll_at).and_then(|(a, p)| delay_ms(a, p)) {
            self.poll_latency.record_ms(ms);
        }
        if let (Some(w), Some(p)) = (t.webhook_at, t.poll_at) {
            self.webhook_lead.record_ms(millis(p - w));
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

/// Requests a channel spent per entity it saw first or alone; `None` when it saw none first.
pub fn requests_per_entity(requests: u64, entities_first: u64) -> Option<f64> {
    (entities_first > 0).then(|| round3(requests as f64 / entities_first as f64))
}

/// Share of poll cycles that found nothing; `None` before the first cycle.
pub fn wasted_share(empty_cycles: u64, cycles: u64) -> Option<f64> {
    (cycles > 0).then(|| round3(empty_cycles as f64 / cycles as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn first_channel_and_lead() {
        let mut e = Entity::new("EXERCISE", 1, "a");
        assert_eq!(e.first_channel(), None);
        e.data_available_at = Some(t(0));
        e.webhook_at = Some(t(2));
        assert_eq!(e.first_channel(), Some(Channel::Webhook));
        e.poll_at = Some(t(30));
        assert_eq!(e.webhook_lead_ms(), Some(28_000.0));
        assert_eq!(e.webhook_latency_ms(), Some(2_000.0));
        e.poll_at = Some(t(1));
        assert_eq!(e.first_channel(), Some(Channel::Poll));
        assert_eq!(e.webhook_lead_ms(), Some(-1_000.0));
    }

    #[test]
    fn webhook_timestamp_stands_in_until_data_is_fetched() {
        let mut e = Entity::new("SLEEP", 1, "2024-01-01");
        e.webhook_timestamp = Some(t(5));
        assert_eq!(e.available_at(), Some(t(5)));
        e.data_available_at = Some(t(1));
        assert_eq!(e.available_at(), Some(t(1)));
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
        let mut a = Entity::new("EXERCISE", 1, "a");
        a.webhook_at = Some(t(1));
        a.poll_at = Some(t(10));
        let mut b = Entity::new("EXERCISE", 1, "b");
        b.poll_at = Some(t(3));
        let mut c = Entity::new("SLEEP", 2, "2024-01-01");
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
}

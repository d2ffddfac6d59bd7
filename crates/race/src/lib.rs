//! The measurement model: what an entity is, which channel saw it first, and the latency and lead
//! statistics over many entities. Pure functions and data, no I/O: the store persists [`Entity`],
//! the status document and the report both summarise through [`Summary`] (in `summary`), so they
//! agree exactly.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use accesslink::identity::{EntityKey, EventType, UserId};

mod summary;
mod tally;

#[doc(hidden)]
pub use summary::visible;
pub use summary::{
    EntityTimes, LatencyStats, LiveSummary, SavedSummary, SignedHistogram, Summary,
    requests_per_entity, summarize, wasted_share,
};
pub use tally::{Retimed, Tally};

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
    #[serde(skip)]
    pub key: EntityKey,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub user_id: UserId,
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
    /// When your app was told (the first notify sink took the entity's event): the end of the
    /// callback's second hop.
    #[serde(
        default,
        with = "chrono::serde::ts_microseconds_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub notified_at: Option<DateTime<Utc>>,
    /// Valid deliveries received for it (more than one means duplicates).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub webhook_deliveries: u32,
    /// When each valid delivery after the first arrived (a duplicate, or an update of the same
    /// entity), oldest first and at most [`LATER_DELIVERIES_KEPT`]: a recorded trace's timing.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "later_deliveries"
    )]
    pub later_deliveries_at: Vec<DateTime<Utc>>,
    /// Where the data is fetched from, as the delivery named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Links the records of this entity seen through different ids (see `accesslink::data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Stored form of [`FetchState`] (two fields, as stores of earlier versions hold it): the
    /// webhook's data has been fetched...
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    fetched: bool,
    /// ... or fetching it failed for good, and why. Read and written through
    /// [`Entity::fetch_state`] and [`Entity::set_fetch_state`] only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fetch_error: Option<String>,
}

/// Where fetching a webhook's data for an entity stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchState {
    /// Not fetched: nothing announced it, or its fetch is still to come.
    NotFetched,
    Fetched,
    /// Given up for good, with the reason.
    Failed(String),
}

/// How many later deliveries' times an entity keeps (a record stays small whatever a sender
/// repeats; the count, [`Entity::webhook_deliveries`], goes on).
pub const LATER_DELIVERIES_KEPT: usize = 32;

/// Later deliveries' times as microseconds since the epoch, like the record's other times.
mod later_deliveries {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(times: &[DateTime<Utc>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(times.iter().map(DateTime::timestamp_micros))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DateTime<Utc>>, D::Error> {
        let micros = Vec::<i64>::deserialize(d)?;
        micros
            .into_iter()
            .map(|m| {
                DateTime::from_timestamp_micros(m)
                    .ok_or_else(|| serde::de::Error::custom(format!("time {m} out of range")))
            })
            .collect()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Entity {
    /// A new entity with no sighting yet.
    pub fn new(kind: &EventType, user_id: UserId, entity_id: &str) -> Self {
        Entity {
            key: EntityKey::new(kind, user_id, entity_id),
            kind: kind.clone(),
            user_id,
            entity_id: entity_id.to_string(),
            data_available_at: None,
            webhook_timestamp: None,
            webhook_at: None,
            poll_at: None,
            notified_at: None,
            webhook_deliveries: 0,
            later_deliveries_at: Vec::new(),
            url: None,
            fingerprint: None,
            fetched: false,
            fetch_error: None,
        }
    }

    pub fn fetch_state(&self) -> FetchState {
        match (&self.fetch_error, self.fetched) {
            (Some(reason), _) => FetchState::Failed(reason.clone()),
            (None, true) => FetchState::Fetched,
            (None, false) => FetchState::NotFetched,
        }
    }

    pub fn set_fetch_state(&mut self, state: FetchState) {
        (self.fetched, self.fetch_error) = match state {
            FetchState::NotFetched => (false, None),
            FetchState::Fetched => (true, None),
            FetchState::Failed(reason) => (false, Some(reason)),
        };
    }

    /// Records a later delivery's arrival (see [`Entity::later_deliveries_at`]).
    pub fn note_later_delivery(&mut self, at: DateTime<Utc>) {
        if self.later_deliveries_at.len() < LATER_DELIVERIES_KEPT {
            self.later_deliveries_at.push(at);
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
        self.notified_at = earliest(self.notified_at, other.notified_at);
        self.webhook_deliveries = self
            .webhook_deliveries
            .saturating_add(other.webhook_deliveries);
        // Both records' deliveries, the first of the later one included when this one's came
        // earlier (it is then a later delivery of the whole entity).
        let mut later: Vec<DateTime<Utc>> = self
            .later_deliveries_at
            .iter()
            .chain(&other.later_deliveries_at)
            .copied()
            .chain([self.webhook_at, other.webhook_at].into_iter().flatten())
            .collect();
        later.sort();
        later.dedup();
        let first = earliest(self.webhook_at, other.webhook_at);
        later.retain(|t| Some(*t) != first);
        later.truncate(LATER_DELIVERIES_KEPT);
        self.later_deliveries_at = later;
        self.data_available_at = self.data_available_at.or(other.data_available_at);
        self.webhook_timestamp = self.webhook_timestamp.or(other.webhook_timestamp);
        self.url = self.url.take().or(other.url.clone());
        self.fingerprint = self.fingerprint.take().or(other.fingerprint.clone());
        if self.fetch_state() == FetchState::NotFetched {
            self.set_fetch_state(other.fetch_state());
        }
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

    /// Milliseconds from availability to your app being told.
    pub fn app_latency_ms(&self) -> Option<f64> {
        delay_ms(self.available_at()?, self.notified_at?)
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
            key: self.key.to_string(),
            kind: self.kind.to_string(),
            user_id: self.user_id.0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn first_channel_and_lead() {
        let mut e = Entity::new(&EventType::Exercise, UserId(1), "a");
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
        let mut e = Entity::new(&EventType::Sleep, UserId(1), "2024-01-01");
        e.webhook_timestamp = Some(t(5));
        assert_eq!(e.available_at(), Some(t(5)));
        e.data_available_at = Some(t(1));
        assert_eq!(e.available_at(), Some(t(1)));
    }
}

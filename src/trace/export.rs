//! A trace from a store: every entity with its sightings and delivery times, between two times,
//! with its ids kept or replaced by keyed pseudonyms. Reads only: the store is opened by the
//! caller, and a store a daemon holds is refused there (see `apps::traffic`).

use chrono::{DateTime, Utc};

use super::{FirstBy, Header, IdKind, MadeFrom, Pseudonyms, Trace, TracedEntity};
use crate::race::{Channel, Entity};
use crate::store::Store;

/// What to export, and how to name it.
pub struct ExportOptions {
    /// Entities made at or after this time (default: all), which is then the origin.
    pub since: Option<DateTime<Utc>>,
    /// Entities made before this time (default: all), which is then the end.
    pub until: Option<DateTime<Utc>>,
    /// `None`: keep AccessLink's ids.
    pub pseudonyms: Option<Pseudonyms>,
    /// What the recording knows of its own window: a demo saved how long it measured and its
    /// poll interval.
    pub recorded: Recorded,
}

/// A recording's own window, where its owner saved one.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub measured_for_s: Option<f64>,
    pub poll_every_s: Option<f64>,
}

/// The trace of `store` under `o`, sorted by when the data was made.
pub fn from_store(store: &Store, o: &ExportOptions) -> anyhow::Result<Trace> {
    let mut entities = Vec::new();
    let mut latest: Option<DateTime<Utc>> = None;
    store.for_each_entity(|e| {
        let Some(traced) = traced(&e, o) else {
            return;
        };
        if o.since.is_some_and(|s| traced.made_at < s)
            || o.until.is_some_and(|u| traced.made_at >= u)
        {
            return;
        }
        let last = traced
            .deliveries
            .last()
            .copied()
            .into_iter()
            .chain(traced.polled_at)
            .max();
        latest = latest.max(last);
        entities.push(traced);
    })?;
    entities.sort_by(|a, b| (a.made_at, &a.entity).cmp(&(b.made_at, &b.entity)));
    let created = store.created_at();
    let origin = o
        .since
        .or(created)
        .or(entities.first().map(|e| e.made_at))
        .unwrap_or_else(Utc::now);
    let recorded_end = o
        .recorded
        .measured_for_s
        .and_then(|s| chrono::Duration::try_milliseconds(crate::units::round_i64(s * 1000.0)))
        .and_then(|d| created.map(|c| c + d));
    let until = o
        .until
        .or(recorded_end.max(latest))
        .unwrap_or(origin)
        .max(origin);
    // The users connected count too (Polar's limits and a list poll grow with them), with or
    // without data in the window.
    let seen: std::collections::BTreeSet<&str> = entities.iter().map(|e| e.user.as_str()).collect();
    let connected = crate::credentials::all_users(store)?.len();
    let header = Header {
        format: super::FORMAT.into(),
        version: super::VERSION,
        exported_at: Utc::now(),
        origin,
        until,
        ids: match o.pseudonyms {
            Some(_) => IdKind::Pseudonymous,
            None => IdKind::Kept,
        },
        users: seen.len().max(connected) as u64,
        entities: entities.len() as u64,
        poll_every_s: o.recorded.poll_every_s,
    };
    Ok(Trace { header, entities })
}

/// One entity's line; `None` for a record no channel saw (none is written so).
fn traced(e: &Entity, o: &ExportOptions) -> Option<TracedEntity> {
    let first_seen = [e.webhook_at, e.poll_at].into_iter().flatten().min()?;
    let (made_at, made_from) = match (e.data_available_at, e.webhook_timestamp) {
        (Some(t), _) => (t, MadeFrom::Source),
        (None, Some(t)) => (t, MadeFrom::Delivery),
        (None, None) => (first_seen, MadeFrom::Sighting),
    };
    let user = e.user_id.0.to_string();
    let (user, entity) = match &o.pseudonyms {
        Some(p) => (p.of("u", &user), p.of("e", e.key.as_str())),
        None => (user, e.entity_id.clone()),
    };
    let mut deliveries: Vec<DateTime<Utc>> = e.webhook_at.into_iter().collect();
    deliveries.extend(&e.later_deliveries_at);
    deliveries.sort();
    Some(TracedEntity {
        kind: e.kind.as_str().to_string(),
        user,
        entity,
        made_at,
        made_from,
        deliveries_total: e
            .webhook_deliveries
            .max(crate::units::u32_saturating(deliveries.len() as u64)),
        deliveries,
        polled_at: e.poll_at,
        first: match e.first_channel() {
            Some(Channel::Poll) => FirstBy::Poll,
            _ => FirstBy::Webhook,
        },
    })
}

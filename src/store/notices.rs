//! The notify events in the records: for every new entity, one event per configured sink, kept
//! in the entity's record and written in the same write that stores its data (see
//! `docs/notify.md`).
//!
//! A [`Notice`] is created once per entity, when its data is first stored (by the poll or the
//! webhook's fetch) or its fetch fails for good, and only then: the record says whether it has one,
//! so a second channel, a duplicate delivery or a restart never makes another. The data itself is
//! written first (its own tree), the record with the notice second: a crash between the two leaves
//! data without a notice, and the channel that stored it stores it again (an uncommitted
//! transaction is offered again; a failed fetch record is fetched again), which creates the notice.
//!
//! The queue of events to send is the notify outbox's (`notify/outbox.rs`): it gets an event
//! from the commit that made it durable (`changes.rs`), so nothing is sent that a crash could
//! forget. This module writes the events' state in their records as the senders report it.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::*;

/// An entity's event to the sinks, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// Creation order (a user's events are sent in it).
    pub seq: u64,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub created_at: DateTime<Utc>,
    /// When the data became available at Polar, as known when the event was made: the start of
    /// the end-to-end delay (availability → your app).
    #[serde(
        default,
        with = "chrono::serde::ts_microseconds_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub available_at: Option<DateTime<Utc>>,
    pub sinks: Vec<SinkNotice>,
}

/// Where one sink's copy of an event stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkNotice {
    pub sink: String,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not before this time.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub next_at: DateTime<Utc>,
    /// When retrying began (creation, or the last `POST /notify/retry`): the give-up window.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub since: DateTime<Utc>,
    #[serde(flatten)]
    pub state: NoticeState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NoticeState {
    Pending {
        /// Why the last attempt failed, if one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
    },
    /// The sink answered 2xx (or the command exited 0) at `at`.
    Sent {
        #[serde(with = "chrono::serde::ts_microseconds")]
        at: DateTime<Utc>,
    },
    /// Parked: retried for too long, or the sink answered 410. `POST /notify/retry` sends again.
    Failed {
        #[serde(with = "chrono::serde::ts_microseconds")]
        at: DateTime<Utc>,
        reason: String,
    },
}

impl NoticeState {
    pub fn is_pending(&self) -> bool {
        matches!(self, NoticeState::Pending { .. })
    }
}

/// Which sink wants which event types (set once at start from the configuration).
#[derive(Debug, Clone)]
pub struct NoticeRoute {
    pub sink: String,
    /// `None`: every type.
    pub events: Option<Vec<EventType>>,
}

/// An event due for a sink, with what its payload is made of.
#[derive(Debug, Clone)]
pub struct DueNotice {
    /// The key the entity's record lives under now.
    pub key: EntityKey,
    pub entity: Entity,
    pub notice: Notice,
    pub attempts: u32,
    pub since: DateTime<Utc>,
    pub next_at: DateTime<Utc>,
}

impl Store {
    /// Sets which sinks get which event types; entities stored from now on get their notices.
    /// With no routes (no `[[notify]]`), no notice is ever made.
    pub fn set_notice_routes(&self, routes: Vec<NoticeRoute>) {
        *self
            .notice_routes
            .write()
            .unwrap_or_else(|p| p.into_inner()) = routes;
    }

    /// A new notice for an entity of `kind` (not yet in any record), or `None` when no sink wants
    /// this type. Its sequence is taken now; one that ends up unused leaves only a gap.
    pub(super) fn new_notice(
        &self,
        kind: &EventType,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Notice>> {
        let routes = self.notice_routes.read().unwrap_or_else(|p| p.into_inner());
        let sinks: Vec<SinkNotice> = routes
            .iter()
            .filter(|r| r.events.as_ref().is_none_or(|e| e.contains(kind)))
            .map(|r| SinkNotice {
                sink: r.sink.clone(),
                attempts: 0,
                next_at: now,
                since: now,
                state: NoticeState::Pending { last_error: None },
            })
            .collect();
        if sinks.is_empty() {
            return Ok(None);
        }
        Ok(Some(Notice {
            seq: self.db.generate_id().context("generating a sequence")?,
            created_at: now,
            available_at: None,
            sinks,
        }))
    }

    /// Attaches `notice` to the record when this write is the one that first gives the entity its
    /// data (or its final fetch failure): no notice yet, and no data stored before.
    pub(super) fn attach_notice(rec: &mut Record, notice: &Option<Notice>, had_data: bool) {
        if had_data || rec.notify.is_some() {
            return;
        }
        if let Some(n) = notice {
            let mut n = n.clone();
            n.available_at = rec
                .entity
                .data_available_at
                .or(rec.entity.webhook_timestamp);
            rec.notify = Some(n);
        }
    }

    /// The event of the entity at `key` for `sink`, as its record holds it now, if it is still
    /// pending (`None`: sent, parked, or no such record).
    pub fn pending_notice(&self, key: &EntityKey, sink: &str) -> anyhow::Result<Option<DueNotice>> {
        Ok(self.record(key.as_str())?.and_then(|(at, r)| {
            let n = r.notify?;
            let s = n.sinks.iter().find(|s| s.sink == sink)?.clone();
            // The record was read under `at`: its entity carries that key.
            s.state.is_pending().then(|| DueNotice {
                key: EntityKey::stored(at),
                entity: r.entity,
                notice: n,
                attempts: s.attempts,
                since: s.since,
                next_at: s.next_at,
            })
        }))
    }

    /// Changes one sink's copy of an event in its record; returns the key it lives under.
    fn update_notice(
        &self,
        key: &str,
        sink: &str,
        f: impl Fn(&mut SinkNotice),
    ) -> anyhow::Result<String> {
        self.update_record(key, |r| {
            if let Some(n) = &mut r.notify {
                if let Some(s) = n.sinks.iter_mut().find(|s| s.sink == sink) {
                    f(s);
                }
            }
        })
        .with_context(|| format!("recording the {sink} event of {key}"))
    }

    /// The sink took the event at `at`; the first sink to take it marks the entity as told
    /// (`notified_at`: the end of the end-to-end delay the race reports). Returns the key the
    /// record lives under and when the entity's data became available (for the latency).
    pub fn notice_sent(
        &self,
        key: &EntityKey,
        sink: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<(EntityKey, Option<DateTime<Utc>>)> {
        let mut available = None;
        let k = self
            .update_record(key.as_str(), |r| {
                if let Some(n) = &mut r.notify {
                    if let Some(s) = n.sinks.iter_mut().find(|s| s.sink == sink) {
                        s.attempts += 1;
                        s.state = NoticeState::Sent { at };
                    }
                    available = n.available_at;
                }
                r.entity.notified_at = r.entity.notified_at.or(Some(at));
            })
            .with_context(|| format!("recording the {sink} event of {key} as sent"))?;
        self.changed();
        Ok((EntityKey::stored(k), available))
    }

    /// The attempt failed for a passing reason: try again at `next_at`. Returns the event as the
    /// record now holds it.
    pub fn notice_retry(
        &self,
        key: &EntityKey,
        sink: &str,
        next_at: DateTime<Utc>,
        reason: &str,
    ) -> anyhow::Result<Option<DueNotice>> {
        self.update_notice(key.as_str(), sink, |s| {
            s.attempts += 1;
            s.next_at = next_at;
            s.state = NoticeState::Pending {
                last_error: Some(reason.to_string()),
            };
        })?;
        self.changed();
        self.pending_notice(key, sink)
    }

    /// Parks the event: it is not sent again until `POST /notify/retry`. Returns the key the
    /// record lives under.
    pub fn notice_failed(
        &self,
        key: &EntityKey,
        sink: &str,
        reason: &str,
    ) -> anyhow::Result<EntityKey> {
        let now = Utc::now();
        let k = self.update_notice(key.as_str(), sink, |s| {
            s.state = NoticeState::Failed {
                at: now,
                reason: reason.to_string(),
            };
        })?;
        self.changed();
        Ok(EntityKey::stored(k))
    }

    /// Makes every parked event (of `sink`, or of every sink) pending again; returns the events
    /// made pending, by sink (the outbox gets them from the commit, as any other). Reads every
    /// record (blocking).
    pub fn requeue_failed_notices(&self, sink: Option<&str>) -> anyhow::Result<Vec<String>> {
        let wanted = |s: &str| sink.is_none_or(|x| x == s);
        let now = Utc::now();
        let mut requeued = Vec::new();
        for kv in self.entities.iter() {
            let (k, v) = kv.context("reading entities")?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let r: OutboxOnly =
                serde_json::from_slice(&v).with_context(|| format!("decoding entity {key}"))?;
            let parked: Vec<String> = r
                .notify
                .iter()
                .flat_map(|n| &n.sinks)
                .filter(|s| matches!(s.state, NoticeState::Failed { .. }) && wanted(&s.sink))
                .map(|s| s.sink.clone())
                .collect();
            for s in parked {
                self.update_notice(&key, &s, |x| {
                    if matches!(x.state, NoticeState::Failed { .. }) {
                        x.attempts = 0;
                        x.next_at = now;
                        x.since = now;
                        x.state = NoticeState::Pending { last_error: None };
                    }
                })?;
                requeued.push(s);
            }
        }
        self.changed();
        Ok(requeued)
    }
}

/// The one field of a record the re-queue scan needs.
#[derive(Deserialize)]
struct OutboxOnly {
    #[serde(default)]
    notify: Option<Notice>,
}

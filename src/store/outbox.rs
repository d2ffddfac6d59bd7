//! The notify outbox: for every new entity, one event per configured sink, kept in the entity's
//! record and written in the same write that stores its data (see `docs/notify.md`).
//!
//! A [`Notice`] is created once per entity, when its data is first stored (by the poll or the
//! webhook's fetch) or its fetch fails for good, and only then: the record says whether it has one,
//! so a second channel, a duplicate delivery or a restart never makes another. The data itself is
//! written first (its own tree), the record with the notice second: a crash between the two leaves
//! data without a notice, and the channel that stored it stores it again (an uncommitted
//! transaction is offered again; a failed fetch record is fetched again), which creates the notice.
//!
//! Sending happens after a commit covered the notice (its `seq` is a durability mark, as an
//! entity's creation sequence is). The in-memory queue here orders what is pending per sink and,
//! within a sink, per user: only each user's oldest pending event is offered, so one user's
//! events arrive in order and a failing one holds back only that user's later events. Like the
//! fetch queue it is rebuilt from the records at start ([`Store::load_pending`]), and an entry is
//! only a pointer: the record decides whether an event is still due.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::*;
use crate::race::{LatencyStats, SignedHistogram};

/// An entity's event to the sinks, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// Creation order; also the durability mark (sent only once a commit covered it).
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

/// One sink's numbers, for `/status` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct SinkCounts {
    pub sent: u64,
    /// Pending events whose last attempt failed.
    pub retrying: u64,
    /// Pending events, retrying ones included.
    pub pending: u64,
    /// Parked events (until `POST /notify/retry`).
    pub failed: u64,
    /// When the oldest pending event was created.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Availability at Polar → delivered to this sink, over the events sent: the end-to-end
    /// freshness.
    pub latency: LatencyStats,
    /// Why the sink stopped taking events (it answered 410), if it did.
    pub gone: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Outbox {
    inner: Mutex<Queues>,
}

#[derive(Debug, Default)]
struct Queues {
    /// (sink, key) → the pending event's place.
    entries: HashMap<(String, String), Entry>,
    /// (sink, user) → that user's pending events for the sink, oldest first.
    by_user: BTreeMap<(String, UserId), BTreeSet<(u64, String)>>,
    /// sink → sent and parked counts and delivery latencies.
    done: HashMap<String, Done>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    user: UserId,
    seq: u64,
    due_ms: i64,
    created_ms: i64,
    retrying: bool,
}

#[derive(Default)]
struct Done {
    sent: u64,
    failed: u64,
    latency: SignedHistogram,
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Done")
            .field("sent", &self.sent)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Done {
    fn sent(&mut self, available: Option<DateTime<Utc>>, at: DateTime<Utc>) {
        self.sent += 1;
        if let Some(from) = available {
            self.latency
                .record_ms((at - from).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // Every change keeps the maps consistent before it can panic; a poisoned queue is whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts (or moves) the pending event of `key` for `sink`.
    fn put(&self, sink: &str, key: &str, user: UserId, notice: &Notice, s: &SinkNotice) {
        let mut q = self.lock();
        q.remove(sink, key);
        let entry = Entry {
            user,
            seq: notice.seq,
            due_ms: s.next_at.timestamp_millis(),
            created_ms: notice.created_at.timestamp_millis(),
            retrying: s.attempts > 0,
        };
        q.by_user
            .entry((sink.to_string(), user))
            .or_default()
            .insert((entry.seq, key.to_string()));
        q.entries.insert((sink.to_string(), key.to_string()), entry);
    }

    fn remove(&self, sink: &str, key: &str) {
        self.lock().remove(sink, key);
    }

    /// The next event for `sink`: among each user's oldest pending event, the one due first.
    fn next(&self, sink: &str) -> Option<String> {
        let q = self.lock();
        let from = (sink.to_string(), UserId(0));
        q.by_user
            .range(from..)
            .take_while(|((s, _), _)| s == sink)
            .filter_map(|(_, events)| events.first())
            .filter_map(|(_, key)| {
                q.entries
                    .get(&(sink.to_string(), key.clone()))
                    .map(|e| (e.due_ms, key))
            })
            .min()
            .map(|(_, key)| key.clone())
    }

    fn keys(&self, sink: &str) -> Vec<String> {
        let q = self.lock();
        q.entries
            .keys()
            .filter(|(s, _)| s == sink)
            .map(|(_, k)| k.clone())
            .collect()
    }

    fn done(&self, sink: &str, f: impl FnOnce(&mut Done)) {
        f(self.lock().done.entry(sink.to_string()).or_default());
    }

    fn counts(&self, sink: &str) -> SinkCounts {
        let q = self.lock();
        let mut c = SinkCounts::default();
        for ((s, _), e) in &q.entries {
            if s == sink {
                c.pending += 1;
                c.retrying += u64::from(e.retrying);
                let created = DateTime::from_timestamp_millis(e.created_ms);
                c.oldest_pending = match (c.oldest_pending, created) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        if let Some(d) = q.done.get(sink) {
            c.sent = d.sent;
            c.failed = d.failed;
            c.latency = d.latency.stats();
        }
        c
    }
}

impl Queues {
    fn remove(&mut self, sink: &str, key: &str) {
        if let Some(e) = self.entries.remove(&(sink.to_string(), key.to_string())) {
            let user_key = (sink.to_string(), e.user);
            if let Some(set) = self.by_user.get_mut(&user_key) {
                set.remove(&(e.seq, key.to_string()));
                if set.is_empty() {
                    self.by_user.remove(&user_key);
                }
            }
        }
    }
}

const META_GONE_PREFIX: &str = "notify.gone.";

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

    /// After a record write: queues the record's pending events and wakes the senders.
    pub(super) fn queue_notices(&self, key: &str, rec: &Record) {
        let Some(n) = &rec.notify else { return };
        let mut any = false;
        for s in n.sinks.iter().filter(|s| s.state.is_pending()) {
            self.outbox.put(&s.sink, key, rec.entity.user_id, n, s);
            any = true;
        }
        if any {
            self.written_seq.fetch_max(n.seq, Ordering::AcqRel);
            self.notices_ready.notify_waiters();
        }
    }

    /// Woken whenever events are queued (or re-queued): the senders wait on it.
    pub fn notices_ready(&self) -> &tokio::sync::Notify {
        &self.notices_ready
    }

    /// The durable sequence, published after every commit: a notice with a sequence up to it
    /// may be sent.
    pub fn durable_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.durable.watch()
    }

    /// Whether a commit has covered the notice with this sequence (it may be sent).
    pub fn notice_durable(&self, seq: u64) -> bool {
        seq <= self.durable_seq.load(Ordering::Acquire)
    }

    /// The event to send next to `sink` (see the module docs for the order), as its record holds
    /// it now; `None` when nothing is pending for the sink.
    pub fn next_notice(&self, sink: &str) -> anyhow::Result<Option<DueNotice>> {
        while let Some(key) = self.outbox.next(sink) {
            let found = self.record(&key)?.and_then(|(at, r)| {
                let n = r.notify?;
                let s = n.sinks.iter().find(|s| s.sink == sink)?.clone();
                s.state.is_pending().then_some((at, r.entity, n, s))
            });
            match found {
                Some((at, mut entity, notice, s)) => {
                    entity.key = EntityKey::stored(at.clone());
                    if at != key {
                        // Merged meanwhile: the event moved with the record.
                        self.outbox.remove(sink, &key);
                        self.outbox.put(sink, &at, entity.user_id, &notice, &s);
                    }
                    return Ok(Some(DueNotice {
                        key: EntityKey::stored(at),
                        entity,
                        notice,
                        attempts: s.attempts,
                        since: s.since,
                        next_at: s.next_at,
                    }));
                }
                // Sent or parked meanwhile, or the entry is stale.
                None => self.outbox.remove(sink, &key),
            }
        }
        Ok(None)
    }

    /// Changes one sink's copy of an event in its record; returns the key it lives under.
    fn update_notice(
        &self,
        key: &str,
        sink: &str,
        f: impl Fn(&mut SinkNotice),
    ) -> anyhow::Result<(String, Option<Notice>, UserId)> {
        let mut after = None;
        let mut user = UserId(0);
        let at = self
            .update_record(key, |r| {
                user = r.entity.user_id;
                if let Some(n) = &mut r.notify {
                    if let Some(s) = n.sinks.iter_mut().find(|s| s.sink == sink) {
                        f(s);
                    }
                }
                after = r.notify.clone();
            })
            .with_context(|| format!("recording the {sink} event of {key}"))?;
        Ok((at, after, user))
    }

    /// The sink took the event at `at`; the first sink to take it marks the entity as told
    /// (`notified_at`: the end of the end-to-end delay the race reports).
    pub fn notice_sent(
        &self,
        key: &EntityKey,
        sink: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut available = None;
        let k = self
            .update_record(key, |r| {
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
        self.outbox.remove(sink, &k);
        self.outbox.remove(sink, key);
        self.outbox.done(sink, |d| d.sent(available, at));
        self.changed();
        Ok(())
    }

    /// The attempt failed for a passing reason: try again at `next_at`.
    pub fn notice_retry(
        &self,
        key: &EntityKey,
        sink: &str,
        next_at: DateTime<Utc>,
        reason: &str,
    ) -> anyhow::Result<()> {
        let (k, n, user) = self.update_notice(key, sink, |s| {
            s.attempts += 1;
            s.next_at = next_at;
            s.state = NoticeState::Pending {
                last_error: Some(reason.to_string()),
            };
        })?;
        if let Some(n) = &n {
            if let Some(s) = n.sinks.iter().find(|s| s.sink == sink) {
                self.outbox.put(sink, &k, user, n, s);
            }
        }
        self.changed();
        Ok(())
    }

    /// Parks the event: it is not sent again until `POST /notify/retry`.
    pub fn notice_failed(&self, key: &EntityKey, sink: &str, reason: &str) -> anyhow::Result<()> {
        let now = Utc::now();
        let (k, _, _) = self.update_notice(key, sink, |s| {
            s.state = NoticeState::Failed {
                at: now,
                reason: reason.to_string(),
            };
        })?;
        self.outbox.remove(sink, &k);
        self.outbox.remove(sink, key);
        self.outbox.done(sink, |d| d.failed += 1);
        self.changed();
        Ok(())
    }

    /// Records that `sink` answered 410 Gone: nothing more is sent to it (this run or the next)
    /// until `POST /notify/retry`.
    pub fn set_sink_gone(&self, sink: &str, reason: &str) -> anyhow::Result<()> {
        self.meta
            .insert(format!("{META_GONE_PREFIX}{sink}"), reason.as_bytes())
            .with_context(|| format!("recording that the sink {sink} is gone"))?;
        Ok(())
    }

    /// Why `sink` takes no more events, if it answered 410.
    pub fn sink_gone(&self, sink: &str) -> Option<String> {
        let v = self.meta.get(format!("{META_GONE_PREFIX}{sink}")).ok()??;
        Some(String::from_utf8_lossy(&v).into_owned())
    }

    /// Re-queues every parked event (of `sink`, or of every sink) and forgets that a sink was
    /// gone; returns how many events were re-queued. Reads every record (blocking).
    pub fn requeue_failed_notices(&self, sink: Option<&str>) -> anyhow::Result<u64> {
        let wanted = |s: &str| sink.is_none_or(|x| x == s);
        for kv in self.meta.scan_prefix(META_GONE_PREFIX) {
            let (k, _) = kv.context("reading the sinks' state")?;
            let name = String::from_utf8_lossy(&k[META_GONE_PREFIX.len()..]).into_owned();
            if wanted(&name) {
                self.meta.remove(&k).context("clearing a gone sink")?;
            }
        }
        let now = Utc::now();
        let mut requeued = 0;
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
                let (at, n, user) = self.update_notice(&key, &s, |x| {
                    if matches!(x.state, NoticeState::Failed { .. }) {
                        x.attempts = 0;
                        x.next_at = now;
                        x.since = now;
                        x.state = NoticeState::Pending { last_error: None };
                    }
                })?;
                if let Some(n) = n {
                    if let Some(sn) = n.sinks.iter().find(|x| x.sink == s) {
                        self.outbox.put(&s, &at, user, &n, sn);
                        self.outbox
                            .done(&s, |d| d.failed = d.failed.saturating_sub(1));
                        requeued += 1;
                    }
                }
            }
        }
        if requeued > 0 {
            self.notices_ready.notify_waiters();
        }
        self.changed();
        Ok(requeued)
    }

    /// One sink's numbers (pending ones from the queue, the rest counted since start-up's scan).
    pub fn sink_counts(&self, sink: &str) -> SinkCounts {
        let mut c = self.outbox.counts(sink);
        c.gone = self.sink_gone(sink);
        c
    }

    /// Every sink's pending events, for tests and `/status`.
    pub fn pending_notices(&self, sink: &str) -> Vec<String> {
        self.outbox.keys(sink)
    }

    /// Start-up: queues a record's pending events and counts its finished ones.
    pub(super) fn load_notices(&self, key: &str, user: UserId, notice: &Notice) {
        for s in &notice.sinks {
            match &s.state {
                NoticeState::Pending { .. } => self.outbox.put(&s.sink, key, user, notice, s),
                NoticeState::Sent { at } => self
                    .outbox
                    .done(&s.sink, |d| d.sent(notice.available_at, *at)),
                NoticeState::Failed { .. } => self.outbox.done(&s.sink, |d| d.failed += 1),
            }
        }
    }
}

/// The one field of a record the re-queue scan needs.
#[derive(Deserialize)]
struct OutboxOnly {
    #[serde(default)]
    notify: Option<Notice>,
}

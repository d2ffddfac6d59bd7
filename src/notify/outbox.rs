//! The notify outbox: the events waiting for each sink, in the order they are sent, and what
//! each sink was sent (counts and latencies for `/status` and `/metrics`).
//!
//! Every event lives in its entity's record (`store/notices.rs`); this queue holds pointers. It
//! is filled by the start-up scan of the records and fed by every commit (a [`Keeper`]), so it
//! only ever holds events that are durable: a crash cannot send an event it then forgets. The
//! order is per sink and, within a sink, per user: only each user's oldest pending event is
//! offered, so one user's events arrive in order and a failing one holds back only that user's
//! later events. The record decides whether an event is still due: a stale pointer costs one
//! read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::accesslink::identity::{EntityKey, UserId};
use crate::race::{LatencyStats, SignedHistogram};
use crate::store::{Change, DueNotice, Keeper, Notice, NoticeState, SinkNotice, Store, Work};

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

/// The events waiting for each sink (pointers to their records), and what each sink was sent.
#[derive(Debug, Default)]
pub struct Outbox {
    inner: Mutex<Queues>,
    /// Woken whenever events are queued (or re-queued): the senders wait on it.
    ready: Notify,
    /// Events were queued since the last wake.
    queued: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Queues {
    /// (sink, key) → the pending event's place.
    entries: HashMap<(String, EntityKey), Entry>,
    /// (sink, user) → that user's pending events for the sink, oldest first.
    by_user: BTreeMap<(String, UserId), BTreeSet<(u64, EntityKey)>>,
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
    pub fn put(&self, sink: &str, key: &EntityKey, user: UserId, notice: &Notice, s: &SinkNotice) {
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
            .insert((entry.seq, key.clone()));
        q.entries.insert((sink.to_string(), key.clone()), entry);
    }

    pub fn remove(&self, sink: &str, key: &EntityKey) {
        self.lock().remove(sink, key);
    }

    /// The next event for `sink`: among each user's oldest pending event, the one due first.
    fn next(&self, sink: &str) -> Option<EntityKey> {
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

    /// The keys of the events pending for `sink`.
    pub fn keys(&self, sink: &str) -> Vec<EntityKey> {
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

    /// The end-to-end latencies (availability at Polar → the sink took the event) of the events
    /// `sink` was sent, as a histogram: what `/metrics` exposes.
    pub fn latency_histogram(&self, sink: &str) -> SignedHistogram {
        let q = self.lock();
        q.done
            .get(sink)
            .map(|d| d.latency.clone())
            .unwrap_or_default()
    }

    /// One sink's numbers (pending ones from the queue, the rest counted since start-up's scan);
    /// `gone` is left for the caller (the store keeps it).
    pub fn counts(&self, sink: &str) -> SinkCounts {
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
    fn remove(&mut self, sink: &str, key: &EntityKey) {
        if let Some(e) = self.entries.remove(&(sink.to_string(), key.clone())) {
            let user_key = (sink.to_string(), e.user);
            if let Some(set) = self.by_user.get_mut(&user_key) {
                set.remove(&(e.seq, key.clone()));
                if set.is_empty() {
                    self.by_user.remove(&user_key);
                }
            }
        }
    }
}

impl Outbox {
    /// The event to send next to `sink` (see the module docs for the order), as its record holds
    /// it now; `None` when nothing is pending for the sink.
    pub fn next_due(&self, store: &Store, sink: &str) -> anyhow::Result<Option<DueNotice>> {
        while let Some(key) = self.next(sink) {
            match store.pending_notice(&key, sink)? {
                Some(due) => {
                    if due.key != key {
                        // Merged meanwhile: the event moved with the record.
                        self.remove(sink, &key);
                        self.put_due(sink, &due);
                    }
                    return Ok(Some(due));
                }
                // Sent or parked meanwhile, or the entry is stale.
                None => self.remove(sink, &key),
            }
        }
        Ok(None)
    }

    /// Puts an event back after an attempt that will be retried.
    pub fn put_due(&self, sink: &str, due: &DueNotice) {
        if let Some(s) = due.notice.sinks.iter().find(|s| s.sink == sink) {
            self.put(sink, &due.key, due.entity.user_id, &due.notice, s);
        }
    }

    /// The sink took the event of `key` (living under `at`) at `sent_at`.
    pub fn sent(
        &self,
        sink: &str,
        key: &EntityKey,
        at: &EntityKey,
        available: Option<DateTime<Utc>>,
        sent_at: DateTime<Utc>,
    ) {
        self.remove(sink, key);
        self.remove(sink, at);
        self.done(sink, |d| d.sent(available, sent_at));
    }

    /// The event of `key` (living under `at`) was parked.
    pub fn parked(&self, sink: &str, key: &EntityKey, at: &EntityKey) {
        self.remove(sink, key);
        self.remove(sink, at);
        self.done(sink, |d| d.failed += 1);
    }

    /// Parked events of `sinks` (one entry per event) were made pending again: they are no longer
    /// counted as failed (the commit brings them back into the queue).
    pub fn unparked(&self, sinks: &[String]) {
        for s in sinks {
            self.done(s, |d| d.failed = d.failed.saturating_sub(1));
        }
    }

    /// Waits until events are queued (enable the future before looking, as `Notify` says).
    pub fn arrived(&self) -> tokio::sync::futures::Notified<'_> {
        self.ready.notified()
    }

    /// A record's event as the scan or a commit found it: its pending copies queued; a scan's
    /// sent and parked ones counted.
    fn keep(&self, key: &EntityKey, user: UserId, notice: &Notice, count_done: bool) {
        for s in &notice.sinks {
            match &s.state {
                NoticeState::Pending { .. } => {
                    self.put(&s.sink, key, user, notice, s);
                    self.queued
                        .store(true, std::sync::atomic::Ordering::Release);
                }
                NoticeState::Sent { at } if count_done => {
                    self.done(&s.sink, |d| d.sent(notice.available_at, *at))
                }
                NoticeState::Failed { .. } if count_done => self.done(&s.sink, |d| d.failed += 1),
                _ => {}
            }
        }
    }
}

impl Keeper for Outbox {
    fn scanned(&self, work: &Work<'_>) {
        if let Some(n) = work.notice {
            self.keep(&work.key, work.user_id, n, true);
        }
    }

    fn committed(&self, change: &Change) {
        if let Some(n) = &change.notice {
            self.keep(&change.key, change.user_id, n, false);
        }
    }

    fn wake(&self) {
        if self.queued.swap(false, std::sync::atomic::Ordering::AcqRel) {
            self.ready.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::Outbox;
    use crate::accesslink::identity::UserId;
    use crate::race::FetchState;
    use crate::store::tests::{delivery, exercise_identity, k, reopen, routes};
    use crate::store::{Follower, Keeper, Store};

    /// Commits what was written and hands it to the outbox, as the daemon's feed does.
    fn commit(store: &Store, follower: &mut Follower, outbox: &Outbox) {
        store.flush().unwrap();
        while let Some(changes) = follower.try_next() {
            for c in &changes.changes {
                outbox.committed(c);
            }
        }
    }

    #[test]
    fn an_entity_gets_one_event_whichever_channels_store_its_data_and_it_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            routes(&store);
            let outbox = Outbox::default();
            let mut follower = store.follow();
            // The poll stores it first (under its own id), the webhook's delivery and fetch
            // follow: the two records are merged; one event, for the sink that wants exercises.
            let data = serde_json::json!({"id": "p1"});
            store
                .record_poll(UserId(7), &exercise_identity("p1"), &data, Utc::now())
                .unwrap();
            assert!(outbox.keys("app").is_empty(), "not queued before a commit");
            commit(&store, &mut follower, &outbox);
            assert_eq!(outbox.keys("app").len(), 1);
            assert!(outbox.keys("phone").is_empty());
            let (d, body) = delivery("w1");
            store.record_delivery(&d, &body, Utc::now(), true).unwrap();
            store
                .record_fetched(&k("EXERCISE/7/w1"), &exercise_identity("w1"), &data)
                .unwrap();
            // The poll again, and a duplicate delivery: nothing new.
            store
                .record_poll(UserId(7), &exercise_identity("p1"), &data, Utc::now())
                .unwrap();
            store.record_delivery(&d, &body, Utc::now(), true).unwrap();
            commit(&store, &mut follower, &outbox);
            let due = outbox
                .next_due(&store, "app")
                .unwrap()
                .expect("one event due");
            assert_eq!(due.key, "EXERCISE/7/w1", "the event moved with the merge");
            assert_eq!(outbox.keys("app").len(), 1);
        }
        // After a restart (the sender never ran): still exactly one event pending.
        let store = reopen(dir.path());
        routes(&store);
        let outbox = Outbox::default();
        let mut pending = 0;
        store
            .scan_work(|w| {
                outbox.scanned(&w);
                pending += w.notice.map_or(0, |n| n.sinks.len());
            })
            .unwrap();
        assert_eq!(pending, 1);
        let due = outbox.next_due(&store, "app").unwrap().unwrap();
        let now = Utc::now();
        let (at, available) = store.notice_sent(&due.key, "app", now).unwrap();
        outbox.sent("app", &due.key, &at, available, now);
        assert!(outbox.next_due(&store, "app").unwrap().is_none());
        let c = outbox.counts("app");
        assert_eq!((c.sent, c.pending, c.failed), (1, 0, 0));
        assert_eq!(c.latency.count, 1);
    }

    #[test]
    fn a_failed_fetch_makes_an_event_without_data_and_a_users_events_go_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        routes(&store);
        let outbox = Outbox::default();
        let mut follower = store.follow();
        let (d1, b1) = delivery("a");
        let (d2, b2) = delivery("b");
        store.record_delivery(&d1, &b1, Utc::now(), true).unwrap();
        store.record_delivery(&d2, &b2, Utc::now(), true).unwrap();
        commit(&store, &mut follower, &outbox);
        assert!(
            outbox.next_due(&store, "app").unwrap().is_none(),
            "no data yet"
        );
        store
            .fetch_failed(
                &k("EXERCISE/7/a"),
                &crate::accesslink::identity::EventType::Exercise,
                "404",
            )
            .unwrap();
        store
            .record_fetched(
                &k("EXERCISE/7/b"),
                &exercise_identity("b"),
                &serde_json::json!({}),
            )
            .unwrap();
        commit(&store, &mut follower, &outbox);
        // The first event fails for now: the user's second waits behind it, even once due.
        let first = outbox.next_due(&store, "app").unwrap().unwrap();
        assert_eq!(first.key, "EXERCISE/7/a");
        assert_eq!(first.entity.fetch_state(), FetchState::Failed("404".into()));
        let later = Utc::now() + chrono::Duration::seconds(60);
        let again = store
            .notice_retry(&first.key, "app", later, "500")
            .unwrap()
            .unwrap();
        outbox.put_due("app", &again);
        let next = outbox.next_due(&store, "app").unwrap().unwrap();
        assert_eq!(next.key, "EXERCISE/7/a");
        // Stored to the microsecond.
        assert_eq!(next.next_at.timestamp_micros(), later.timestamp_micros());
        assert_eq!(outbox.counts("app").retrying, 1);
        // Parked, it lets the next one go; a re-queue brings it back (with the commit).
        let at = store.notice_failed(&first.key, "app", "gave up").unwrap();
        outbox.parked("app", &first.key, &at);
        assert_eq!(
            outbox.next_due(&store, "app").unwrap().unwrap().key,
            "EXERCISE/7/b"
        );
        assert_eq!(outbox.counts("app").failed, 1);
        let requeued = store.requeue_failed_notices(None).unwrap();
        assert_eq!(requeued, ["app"]);
        outbox.unparked(&requeued);
        commit(&store, &mut follower, &outbox);
        assert_eq!(outbox.counts("app").failed, 0);
        assert_eq!(
            outbox.next_due(&store, "app").unwrap().unwrap().key,
            "EXERCISE/7/a"
        );
    }
}

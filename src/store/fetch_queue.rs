//! The webhook fetches still to do.
//!
//! A pending fetch is part of its entity's record ([`FetchJob`] in `Record::fetch`): it is written
//! in the same single write as the delivery that calls for it, so no crash can separate the two.
//! This module keeps the in-memory order of those jobs by due time, so the fetcher takes the next
//! one without scanning; the order is rebuilt from the records when the fetcher starts
//! ([`Store::load_pending`]). An entry here is only a pointer: the record decides whether a
//! fetch is still due, so a stale entry costs one read, never a second fetch.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::{FetchJob, Notice, Store};
use crate::accesslink::identity::UserId;

#[derive(Debug, Default)]
pub(super) struct FetchQueue {
    inner: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    by_due: BTreeSet<(i64, String)>,
    due: HashMap<String, i64>,
}

impl FetchQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Every change keeps the two maps consistent before it can panic; a poisoned queue is whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts (or moves) the entity at `key` to `due`.
    pub(super) fn put(&self, key: &str, due: DateTime<Utc>) {
        let ms = due.timestamp_millis();
        let mut q = self.lock();
        if let Some(old) = q.due.insert(key.to_string(), ms) {
            q.by_due.remove(&(old, key.to_string()));
        }
        q.by_due.insert((ms, key.to_string()));
    }

    pub(super) fn remove(&self, key: &str) {
        let mut q = self.lock();
        if let Some(old) = q.due.remove(key) {
            q.by_due.remove(&(old, key.to_string()));
        }
    }

    fn first(&self) -> Option<String> {
        self.lock().by_due.first().map(|(_, k)| k.clone())
    }

    fn keys(&self) -> Vec<String> {
        self.lock().by_due.iter().map(|(_, k)| k.clone()).collect()
    }

    fn is_empty(&self) -> bool {
        self.lock().due.is_empty()
    }

    /// How many jobs wait, and the earliest due time among them.
    fn backlog(&self) -> (usize, Option<i64>) {
        let q = self.lock();
        (q.due.len(), q.by_due.first().map(|(ms, _)| *ms))
    }
}

/// The webhook fetches still to do, for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FetchBacklog {
    /// Jobs waiting (due now or retrying later).
    pub jobs: usize,
    /// How long the job due first has been due (0 when none is due yet).
    pub oldest_due_seconds: f64,
}

impl Store {
    /// The job due first, as its record holds it: the entity key and the job.
    pub fn next_fetch(&self) -> anyhow::Result<Option<(String, FetchJob)>> {
        while let Some(key) = self.fetch_queue.first() {
            match self
                .record(&key)?
                .and_then(|(k, r)| r.fetch.map(|j| (k, j)))
            {
                Some((at, job)) => {
                    if at != key {
                        // Merged meanwhile: the job moved with the record.
                        self.fetch_queue.remove(&key);
                        self.fetch_queue.put(&at, job.next_at);
                    }
                    return Ok(Some((at, job)));
                }
                // Done or given up meanwhile: nothing left to do for it.
                None => self.fetch_queue.remove(&key),
            }
        }
        Ok(None)
    }

    /// Schedules the entity's pending fetch again (a retry with its new attempt count and time).
    pub fn reschedule_fetch(&self, key: &str, job: &FetchJob) -> anyhow::Result<()> {
        let key = self
            .update_record(key, |r| {
                r.fetch = Some(job.clone());
            })
            .with_context(|| format!("rescheduling the fetch of {key}"))?;
        self.fetch_queue.put(&key, job.next_at);
        Ok(())
    }

    /// Every pending fetch, by entity key, in due order.
    pub fn queued_fetches(&self) -> anyhow::Result<Vec<(String, FetchJob)>> {
        let mut out = Vec::new();
        for key in self.fetch_queue.keys() {
            if let Some((k, r)) = self.record(&key)? {
                if let Some(job) = r.fetch {
                    out.push((k, job));
                }
            }
        }
        Ok(out)
    }

    /// The fetch backlog now: its size and how long its first job has been due.
    pub fn fetch_backlog(&self) -> FetchBacklog {
        let (jobs, first) = self.fetch_queue.backlog();
        let now = Utc::now().timestamp_millis();
        FetchBacklog {
            jobs,
            oldest_due_seconds: first.map_or(0.0, |ms| (now - ms).max(0) as f64 / 1000.0),
        }
    }

    /// Whether no fetch is pending.
    pub fn fetch_queue_is_empty(&self) -> bool {
        self.fetch_queue.is_empty()
    }

    /// Reads every record once (blocking; the daemon runs it on the blocking pool at start):
    /// puts each pending fetch in due order, queues each pending notify event (and counts the
    /// sent and parked ones) and, after an unclean stop, restores the newest-first index entries
    /// that a crash between a record and its index entry left out.
    pub fn load_pending(&self) -> anyhow::Result<Loaded> {
        /// The fields this scan needs (the rest of each record is skipped, not decoded).
        #[derive(serde::Deserialize)]
        struct Pending {
            #[serde(default)]
            seq: Option<u64>,
            #[serde(default)]
            fetch: Option<FetchJob>,
            user_id: UserId,
            #[serde(default)]
            notify: Option<Notice>,
        }
        let mut loaded = Loaded::default();
        for kv in self.entities.iter() {
            let (k, v) = kv.context("reading entities")?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let r: Pending =
                serde_json::from_slice(&v).with_context(|| format!("decoding entity {key}"))?;
            if let Some(job) = &r.fetch {
                self.fetch_queue.put(&key, job.next_at);
                loaded.fetches += 1;
            }
            if let Some(n) = &r.notify {
                self.load_notices(&key, r.user_id, n);
                loaded.notices += n.sinks.iter().filter(|s| s.state.is_pending()).count();
            }
            if self.unclean {
                if let Some(seq) = r.seq {
                    if self.recent.get(seq.to_be_bytes())?.is_none() {
                        self.recent.insert(seq.to_be_bytes(), key.as_bytes())?;
                    }
                }
            }
        }
        if loaded.notices > 0 {
            self.notices_ready.notify_waiters();
        }
        Ok(loaded)
    }
}

/// What [`Store::load_pending`] queued.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub fetches: usize,
    /// Notify events still to send (one per sink).
    pub notices: usize,
}

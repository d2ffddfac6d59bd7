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
use crate::accesslink::identity::{EntityKey, UserId};

#[derive(Debug)]
pub(super) struct FetchQueue {
    inner: Mutex<Queue>,
}

/// At most this many jobs are held in memory (the earliest due): a backlog of any size costs a
/// bounded amount of memory. The rest stay in their records (each job is a field of its
/// entity's record) and are read again by one scan when the jobs in memory are done.
pub const FETCH_JOBS_IN_MEMORY: usize = 10_000;

#[derive(Debug)]
struct Queue {
    by_due: BTreeSet<(i64, String)>,
    due: HashMap<String, i64>,
    cap: usize,
    /// Jobs exist in the records that are not in memory (the cap was reached).
    spilled: bool,
}

impl Default for FetchQueue {
    fn default() -> Self {
        FetchQueue::with_cap(FETCH_JOBS_IN_MEMORY)
    }
}

impl FetchQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Every change keeps the two maps consistent before it can panic; a poisoned queue is whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn with_cap(cap: usize) -> FetchQueue {
        FetchQueue {
            inner: Mutex::new(Queue {
                by_due: BTreeSet::new(),
                due: HashMap::new(),
                cap: cap.max(1),
                spilled: false,
            }),
        }
    }

    /// Puts (or moves) the entity at `key` to `due`. At the cap, the job due last stays only in
    /// its record (the new one, or one it displaces), and the queue remembers to read again.
    pub(super) fn put(&self, key: &str, due: DateTime<Utc>) {
        let ms = due.timestamp_millis();
        let mut q = self.lock();
        if let Some(old) = q.due.insert(key.to_string(), ms) {
            q.by_due.remove(&(old, key.to_string()));
            q.by_due.insert((ms, key.to_string()));
            return;
        }
        q.by_due.insert((ms, key.to_string()));
        if q.due.len() > q.cap {
            q.spilled = true;
            if let Some((_, last)) = q.by_due.pop_last() {
                q.due.remove(&last);
            }
        }
    }

    /// Whether the jobs in memory are done while others wait in the records (then read them).
    fn needs_refill(&self) -> bool {
        let q = self.lock();
        q.due.is_empty() && q.spilled
    }

    /// Starts a refill: what the scan finds beyond the cap will set `spilled` again.
    fn refilling(&self) {
        self.lock().spilled = false;
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
        let q = self.lock();
        q.due.is_empty() && !q.spilled
    }

    /// How many jobs wait in memory, whether more wait in the records, and the earliest due
    /// time among them.
    fn backlog(&self) -> (usize, bool, Option<i64>) {
        let q = self.lock();
        (q.due.len(), q.spilled, q.by_due.first().map(|(ms, _)| *ms))
    }
}

/// The webhook fetches still to do, for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FetchBacklog {
    /// Jobs waiting (due now or retrying later), as many as memory holds ([`FETCH_JOBS_IN_MEMORY`]).
    pub jobs: usize,
    /// More jobs than that wait in the records.
    pub more_in_records: bool,
    /// How long the job due first has been due (0 when none is due yet).
    pub oldest_due_seconds: f64,
}

impl Store {
    /// The job due first, as its record holds it: the entity key and the job.
    pub fn next_fetch(&self) -> anyhow::Result<Option<(EntityKey, FetchJob)>> {
        if self.fetch_queue.needs_refill() {
            self.refill_fetches()?;
        }
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
                    return Ok(Some((EntityKey::stored(at), job)));
                }
                // Done or given up meanwhile: nothing left to do for it.
                None => self.fetch_queue.remove(&key),
            }
        }
        Ok(None)
    }

    /// Reads the jobs the cap kept out of memory back from the records (one scan; the earliest
    /// due are kept, and a later refill reads the rest).
    fn refill_fetches(&self) -> anyhow::Result<()> {
        #[derive(serde::Deserialize)]
        struct OnlyFetch {
            #[serde(default)]
            fetch: Option<FetchJob>,
        }
        self.fetch_queue.refilling();
        let mut found = 0usize;
        for kv in self.entities.iter() {
            let (k, v) = kv.context("reading entities for the fetch backlog")?;
            let r: OnlyFetch = serde_json::from_slice(&v)
                .with_context(|| format!("decoding entity {}", String::from_utf8_lossy(&k)))?;
            if let Some(job) = r.fetch {
                self.fetch_queue
                    .put(&String::from_utf8_lossy(&k), job.next_at);
                found += 1;
            }
        }
        tracing::info!(jobs = found, "read the fetch backlog back from the records");
        Ok(())
    }

    /// Schedules the entity's pending fetch again (a retry with its new attempt count and time).
    pub fn reschedule_fetch(&self, key: &EntityKey, job: &FetchJob) -> anyhow::Result<()> {
        let key = self
            .update_record(key, |r| {
                r.fetch = Some(job.clone());
            })
            .with_context(|| format!("rescheduling the fetch of {key}"))?;
        self.fetch_queue.put(&key, job.next_at);
        Ok(())
    }

    /// Every pending fetch, by entity key, in due order.
    pub fn queued_fetches(&self) -> anyhow::Result<Vec<(EntityKey, FetchJob)>> {
        let mut out = Vec::new();
        for key in self.fetch_queue.keys() {
            if let Some((k, r)) = self.record(&key)? {
                if let Some(job) = r.fetch {
                    out.push((EntityKey::stored(k), job));
                }
            }
        }
        Ok(out)
    }

    /// The fetch backlog now: its size and how long its first job has been due.
    pub fn fetch_backlog(&self) -> FetchBacklog {
        let (jobs, more_in_records, first) = self.fetch_queue.backlog();
        let now = Utc::now().timestamp_millis();
        FetchBacklog {
            jobs,
            more_in_records,
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

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::FetchQueue;

    /// At the cap the jobs due last stay out of memory, and the queue knows to read again.
    #[test]
    fn the_queue_keeps_the_earliest_jobs_up_to_its_cap() {
        let q = FetchQueue::with_cap(3);
        let t0 = Utc::now();
        for (i, key) in ["e", "d", "c", "b", "a"].iter().enumerate() {
            // a is due first, e last.
            q.put(key, t0 - Duration::seconds(i as i64));
        }
        assert_eq!(q.keys(), ["a", "b", "c"]);
        assert!(!q.needs_refill(), "jobs are still in memory");
        for k in ["a", "b", "c"] {
            q.remove(k);
        }
        assert!(q.needs_refill(), "d and e wait in the records");
        // Moving a job already in memory never spills.
        let q = FetchQueue::with_cap(2);
        q.put("a", t0);
        q.put("b", t0);
        q.put("a", t0 + Duration::seconds(5));
        assert_eq!(q.backlog().0, 2);
        assert!(!q.backlog().1);
    }
}

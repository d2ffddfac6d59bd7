//! The fetcher's queue: the webhook fetches still to do, in due order.
//!
//! A pending fetch is part of its entity's record ([`FetchJob`] in the record): it is written in
//! the same single write as the delivery that calls for it, so no crash can separate the two.
//! This queue is the fetcher's own: it keeps those jobs in due order so the fetcher takes the
//! next one without scanning. It is filled from the records at start and fed by every commit
//! (a [`Keeper`]: it only ever holds jobs that are durable), and the fetcher updates it with its
//! own results. An entry is only a pointer: the record decides whether a fetch is still due, so
//! a stale entry costs one read, never a second fetch.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::accesslink::identity::EntityKey;
use crate::store::{Change, FetchJob, Keeper, Store, Work};

#[derive(Debug)]
pub struct FetchQueue {
    inner: Mutex<Queue>,
    /// Woken when jobs arrive (the fetcher waits on it).
    ready: Notify,
    /// Jobs arrived since the last wake.
    arrived: std::sync::atomic::AtomicBool,
}

/// At most this many jobs are held in memory (the earliest due): a backlog of any size costs a
/// bounded amount of memory. The rest stay in their records (each job is a field of its
/// entity's record) and are read again by one scan when the jobs in memory are done.
pub const FETCH_JOBS_IN_MEMORY: usize = 10_000;

#[derive(Debug)]
struct Queue {
    by_due: BTreeSet<(i64, EntityKey)>,
    due: HashMap<EntityKey, i64>,
    cap: usize,
    /// Jobs exist in the records that are not in memory (the cap was reached).
    spilled: bool,
    /// Jobs the fetcher is working on (taken, not yet released): never handed out twice.
    in_flight: std::collections::HashSet<EntityKey>,
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

    pub fn with_cap(cap: usize) -> FetchQueue {
        FetchQueue {
            inner: Mutex::new(Queue {
                by_due: BTreeSet::new(),
                due: HashMap::new(),
                cap: cap.max(1),
                spilled: false,
                in_flight: Default::default(),
            }),
            ready: Notify::new(),
            arrived: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Puts (or moves) the entity at `key` to `due`. At the cap, the job due last stays only in
    /// its record (the new one, or one it displaces), and the queue remembers to read again.
    pub fn put(&self, key: &EntityKey, due: DateTime<Utc>) {
        let ms = due.timestamp_millis();
        let mut q = self.lock();
        if let Some(old) = q.due.insert(key.clone(), ms) {
            q.by_due.remove(&(old, key.clone()));
            q.by_due.insert((ms, key.clone()));
            return;
        }
        q.by_due.insert((ms, key.clone()));
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

    pub fn remove(&self, key: &EntityKey) {
        let mut q = self.lock();
        if let Some(old) = q.due.remove(key) {
            q.by_due.remove(&(old, key.clone()));
        }
    }

    fn keys(&self) -> Vec<EntityKey> {
        self.lock().by_due.iter().map(|(_, k)| k.clone()).collect()
    }

    /// Whether no fetch is pending (none in memory, none left in the records).
    pub fn is_empty(&self) -> bool {
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

/// What [`FetchQueue::take_due`] found.
#[derive(Debug)]
pub enum Due {
    /// A job due now, taken: release it with [`FetchQueue::release`] when done.
    Job(EntityKey, FetchJob),
    /// The first job not in flight is due in this long.
    Later(std::time::Duration),
    /// No job waits (beyond those in flight).
    Nothing,
}

impl FetchQueue {
    /// Takes the first job that is due and not in flight (as its record holds it), marking it
    /// in flight; or says when the next one is due.
    pub fn take_due(&self, store: &Store) -> anyhow::Result<Due> {
        let Some((at, job)) = self.first_job(store, true)? else {
            return Ok(Due::Nothing);
        };
        let now = Utc::now();
        if job.next_at > now {
            return Ok(Due::Later((job.next_at - now).to_std().unwrap_or_default()));
        }
        self.lock().in_flight.insert(at.clone());
        Ok(Due::Job(at, job))
    }

    /// The first job in due order (skipping those in flight when asked), as its record holds it.
    /// Entries whose record moved (a merge) or changed its due time (a write whose change has not
    /// arrived yet) are put where the record says; entries whose job ended are dropped.
    fn first_job(
        &self,
        store: &Store,
        skip_in_flight: bool,
    ) -> anyhow::Result<Option<(EntityKey, FetchJob)>> {
        if self.needs_refill() {
            self.refill(store)?;
        }
        loop {
            let first = {
                let q = self.lock();
                q.by_due
                    .iter()
                    .find(|(_, k)| !(skip_in_flight && q.in_flight.contains(k)))
                    .cloned()
            };
            let Some((due_ms, key)) = first else {
                return Ok(None);
            };
            match store.fetch_job(&key)? {
                Some((at, job)) if at != key || job.next_at.timestamp_millis() != due_ms => {
                    self.remove(&key);
                    self.put(&at, job.next_at);
                }
                Some(found) => return Ok(Some(found)),
                None => self.remove(&key),
            }
        }
    }

    /// The fetcher is done with a job it took (its record says what is left of it).
    pub fn release(&self, key: &EntityKey) {
        self.lock().in_flight.remove(key);
    }

    /// The job due first, as its record holds it: the entity key and the job.
    pub fn next_due(&self, store: &Store) -> anyhow::Result<Option<(EntityKey, FetchJob)>> {
        self.first_job(store, false)
    }

    /// Waits until jobs arrive (or a job put earlier is due sooner).
    pub async fn arrived(&self) {
        self.ready.notified().await;
    }

    /// Reads the jobs the cap kept out of memory back from the records (one scan; the earliest
    /// due are kept, and a later refill reads the rest).
    fn refill(&self, store: &Store) -> anyhow::Result<()> {
        self.refilling();
        let mut found = 0usize;
        store.scan_work(|w| {
            if let Some(job) = w.fetch {
                self.put(&w.key, job.next_at);
                found += 1;
            }
        })?;
        tracing::info!(jobs = found, "read the fetch backlog back from the records");
        Ok(())
    }

    /// Every pending fetch, by entity key, in due order.
    pub fn queued(&self, store: &Store) -> anyhow::Result<Vec<(EntityKey, FetchJob)>> {
        let mut out = Vec::new();
        for key in self.keys() {
            if let Some(found) = store.fetch_job(&key)? {
                out.push(found);
            }
        }
        Ok(out)
    }

    /// The fetch backlog now: its size and how long its first job has been due.
    pub fn backlog_now(&self) -> FetchBacklog {
        let (jobs, more_in_records, first) = self.backlog();
        let now = Utc::now().timestamp_millis();
        FetchBacklog {
            jobs,
            more_in_records,
            oldest_due_seconds: first.map_or(0.0, |ms| (now - ms).max(0) as f64 / 1000.0),
        }
    }
}

impl Keeper for FetchQueue {
    fn scanned(&self, work: &Work<'_>) {
        if let Some(job) = work.fetch {
            self.put(&work.key, job.next_at);
            self.arrived
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    fn committed(&self, change: &Change) {
        if let Some(job) = &change.fetch {
            self.put(&change.key, job.next_at);
            self.arrived
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    fn wake(&self) {
        if self
            .arrived
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            self.ready.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::FetchQueue;
    use crate::accesslink::identity::EntityKey;

    /// At the cap the jobs due last stay out of memory, and the queue knows to read again.
    #[test]
    fn the_queue_keeps_the_earliest_jobs_up_to_its_cap() {
        let key = |k: &str| EntityKey::stored(k);
        let q = FetchQueue::with_cap(3);
        let t0 = Utc::now();
        for (i, k) in ["e", "d", "c", "b", "a"].iter().enumerate() {
            // a is due first, e last.
            q.put(&key(k), t0 - Duration::seconds(i as i64));
        }
        assert_eq!(q.keys(), ["a", "b", "c"].map(key));
        assert!(!q.needs_refill(), "jobs are still in memory");
        for k in ["a", "b", "c"] {
            q.remove(&key(k));
        }
        assert!(q.needs_refill(), "d and e wait in the records");
        // Moving a job already in memory never spills.
        let q = FetchQueue::with_cap(2);
        q.put(&key("a"), t0);
        q.put(&key("b"), t0);
        q.put(&key("a"), t0 + Duration::seconds(5));
        assert_eq!(q.backlog().0, 2);
        assert!(!q.backlog().1);
    }

    /// A fetch backlog of any size holds a bounded number of jobs in memory (the earliest due);
    /// the rest stay in their records and come back, in order, once those are done. Before the
    /// fix every job was held (28,304 of them in a 60-minute soak over the rate limit).
    #[tokio::test]
    async fn a_fetch_backlog_beyond_the_cap_waits_in_the_records_and_comes_back() {
        use crate::accesslink::identity::EntityKey;
        use crate::store::tests::{delivery, k};
        use crate::store::{Follow, Keeper, Store};

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let queue = FetchQueue::with_cap(3);
        let mut follower = store.follow();
        let ids = ["a1", "a2", "a3", "a4", "a5", "a6", "a7"];
        for id in ids {
            let (d, body) = delivery(id);
            store.record_delivery(&d, &body, Utc::now(), true).unwrap();
        }
        assert!(queue.is_empty(), "nothing before a commit");
        store.durable().await.unwrap();
        let Follow::Durable(changes) = follower.next().await else {
            panic!("the commit hands its changes over");
        };
        for c in &changes.changes {
            queue.committed(c);
        }
        let backlog = queue.backlog_now();
        assert_eq!((backlog.jobs, backlog.more_in_records), (3, true));
        // Done one by one (as the fetcher would, giving up here): every job comes, none twice.
        let mut done = Vec::new();
        while let Some((key, _)) = queue.next_due(&store).unwrap() {
            assert!(!done.contains(&key), "{key} twice");
            store
                .fetch_failed(
                    &key,
                    &crate::accesslink::identity::EventType::Exercise,
                    "test",
                )
                .unwrap();
            queue.remove(&key);
            done.push(key);
            assert!(queue.backlog_now().jobs <= 3);
        }
        done.sort();
        let all: Vec<EntityKey> = ids.iter().map(|i| k(&format!("EXERCISE/7/{i}"))).collect();
        assert_eq!(done, all);
        assert!(queue.is_empty());
    }

    /// The fetcher works on several jobs at once: a job taken is not handed out again until it
    /// is released, and the next due job comes instead.
    #[test]
    fn a_job_in_flight_is_never_taken_twice() {
        use super::Due;
        use crate::store::Store;
        use crate::store::tests::{delivery, k};

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let queue = FetchQueue::default();
        for id in ["t1", "t2"] {
            let (d, body) = delivery(id);
            let r = store.record_delivery(&d, &body, Utc::now(), true).unwrap();
            let (key, due) = r.fetch_queued.unwrap();
            queue.put(&key, due);
        }
        let taken = |q: &FetchQueue| match q.take_due(&store).unwrap() {
            Due::Job(key, _) => Some(key),
            _ => None,
        };
        let first = taken(&queue).unwrap();
        let second = taken(&queue).unwrap();
        assert_ne!(first, second);
        assert!(taken(&queue).is_none(), "both are in flight");
        queue.release(&first);
        assert_eq!(
            taken(&queue),
            Some(first),
            "released and still due in its record"
        );
        store
            .fetch_failed(
                &k("EXERCISE/7/t2"),
                &crate::accesslink::identity::EventType::Exercise,
                "test",
            )
            .unwrap();
        queue.release(&second);
        assert!(taken(&queue).is_none(), "t1 is in flight again, t2 is done");
    }
}

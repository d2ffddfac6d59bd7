//! Group commit and durability: many concurrent writers, one commit, one real sync.
//!
//! A caller of [`Store::durable`](super::Store::durable) queues a waiter; one task takes every
//! waiter queued so far and runs a single [`Durable::commit`] on the blocking pool for them all:
//! the in-memory counters and the last delivery time are written as one batch, sled's `flush()`
//! writes its log, and then `fdatasync` makes the log file durable. sled's `flush()` alone ends in
//! `sync_file_range` on Linux, which neither flushes the drive's write cache nor a grown file's
//! size: without the `fdatasync` a 200 would survive a killed process but not a power cut.
//!
//! A waiter queued during a commit waits for the next one, so each answer comes from a commit that
//! began after that caller's writes. The committing task is owned by whoever opened the store for
//! a long run (the daemon awaits it at shutdown); commits run one at a time under a lock, so a
//! direct commit (open, close, a command without a committer) never races the committer.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::DateTime;
use tokio::sync::{mpsc, oneshot};

use super::changes::Journal;
use super::error::CommitError;
use super::{META_COUNTERS, META_LAST_DELIVERY_AT, poisoned};

/// The counters, kept in memory and written with every commit as one value (`meta` key
/// `counters`: a single insert, so a commit never takes sled's global batch lock).
///
/// Counting is then a map update, not a sled write per event. After a crash the counters on disk
/// may lag the records by the writes of the last unfinished commit; the counters that describe
/// records (accepted, duplicates, fetches) are recounted from the records when the store is opened
/// after an unclean stop (see `Store::open`).
#[derive(Debug, Default)]
pub(super) struct Counters {
    values: Mutex<BTreeMap<String, u64>>,
    dirty: AtomicBool,
}

impl Counters {
    /// The counters as the last commit wrote them (a store of an earlier version kept them in
    /// the `counters` tree, one key each: read those first).
    pub(super) fn load(legacy: &sled::Tree, meta: &sled::Tree) -> anyhow::Result<Counters> {
        let mut values = BTreeMap::new();
        for kv in legacy.iter() {
            let (k, v) = kv.context("reading counters")?;
            values.insert(String::from_utf8_lossy(&k).into_owned(), super::be_u64(&v));
        }
        if let Some(v) = meta.get(META_COUNTERS).context("reading counters")? {
            let saved: BTreeMap<String, u64> =
                serde_json::from_slice(&v).context("decoding the counters")?;
            values.extend(saved);
        }
        Ok(Counters {
            values: Mutex::new(values),
            dirty: AtomicBool::new(false),
        })
    }

    pub(super) fn add(&self, name: &str, by: u64) {
        // A poisoned map still holds valid counts: every update is a single add.
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        match v.get_mut(name) {
            Some(n) => *n = n.wrapping_add(by),
            None => {
                v.insert(name.to_string(), by);
            }
        }
        self.dirty.store(true, Ordering::Release);
    }

    /// Lowers a count (never below zero).
    pub(super) fn sub(&self, name: &str, by: u64) {
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = v.get_mut(name) {
            *n = n.saturating_sub(by);
        }
        self.dirty.store(true, Ordering::Release);
    }

    pub(super) fn set(&self, name: &str, value: u64) {
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        v.insert(name.to_string(), value);
        self.dirty.store(true, Ordering::Release);
    }

    pub(super) fn get(&self, name: &str) -> u64 {
        let v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        v.get(name).copied().unwrap_or(0)
    }

    pub(super) fn all(&self) -> BTreeMap<String, u64> {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every counter as one value, if any changed since the last call.
    fn take_changed(&self) -> Option<Vec<u8>> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return None;
        }
        serde_json::to_vec(&self.all()).ok()
    }
}

/// Everything one commit touches. The flushing task holds it only while it commits, so dropping
/// the store closes the database at once.
pub(super) struct Durable {
    pub(super) db: sled::Db,
    /// The highest creation sequence written; read when a commit starts.
    written_seq: Arc<AtomicU64>,
    /// Raised to that mark when the commit has finished.
    durable_seq: Arc<AtomicU64>,
    /// The changes written and not yet committed; each commit broadcasts the ones it covered.
    journal: Arc<Journal>,
    pub(super) meta: sled::Tree,
    pub(super) counters: Arc<Counters>,
    /// The newest delivery time in milliseconds (`i64::MIN`: none yet).
    pub(super) last_delivery_ms: Arc<AtomicI64>,
    /// The value of `last_delivery_ms` written by the last commit.
    persisted_delivery_ms: AtomicI64,
    files: SyncedFiles,
    /// The first commit that failed, and why: sled's write errors are sticky (a full disk leaves
    /// the open store failing after space is back), so the store reports itself unhealthy and the
    /// watchdog restarts the daemon; the reopened store recovers.
    failed: Mutex<Option<String>>,
    /// Held by each commit from taking the journal to publishing it: commits run one at a time,
    /// whoever asks, so they publish their changes in the order they took them.
    commit_lock: Mutex<()>,
}

impl Durable {
    pub(super) fn new(
        db: sled::Db,
        written_seq: Arc<AtomicU64>,
        durable_seq: Arc<AtomicU64>,
        meta: sled::Tree,
        counters: Arc<Counters>,
        last_delivery_ms: Arc<AtomicI64>,
        path: &Path,
    ) -> anyhow::Result<Durable> {
        let persisted = last_delivery_ms.load(Ordering::Acquire);
        Ok(Durable {
            db,
            written_seq,
            durable_seq,
            journal: Arc::new(Journal::new()),
            meta,
            counters,
            last_delivery_ms,
            persisted_delivery_ms: AtomicI64::new(persisted),
            files: SyncedFiles::open(path)?,
            failed: Mutex::new(None),
            commit_lock: Mutex::new(()),
        })
    }

    /// The journal this commit publishes (writers add to it).
    pub(super) fn journal(&self) -> Arc<Journal> {
        self.journal.clone()
    }

    /// Why the store is unusable until a restart, if a commit has failed.
    pub(super) fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes everything written before the call durable: counters and the last delivery time
    /// into their trees, sled's log written, then synced to the device. Blocking. A failure is
    /// kept: the store is unhealthy from then on (see `failed`).
    pub(super) fn commit(&self) -> anyhow::Result<()> {
        // A commit that panicked left nothing half-done that the next one would trust.
        let _one_at_a_time = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let result = self.try_commit();
        tracing::debug!(
            ms = crate::units::millis(started.elapsed()),
            ok = result.is_ok(),
            "committed"
        );
        if let Err(e) = &result {
            let mut failed = self
                .failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if failed.is_none() {
                tracing::error!(
                    store = %self.files.dir.display(),
                    error = format_args!("{e:#}"),
                    "a commit of the store failed: deliveries are refused with 500 and the store \
                     reports itself unhealthy until hookrace restarts (the reopened store recovers)"
                );
                *failed = Some(format!("{:#}", e));
            }
        }
        result
    }

    fn try_commit(&self) -> anyhow::Result<()> {
        // Records written before this point are in the flush below.
        let mark = self.written_seq.load(Ordering::Acquire);
        let changes = self.journal.take();
        if let Some(counters) = self.counters.take_changed() {
            self.meta
                .insert(META_COUNTERS, counters)
                .context("saving the counters")?;
        }
        let ms = self.last_delivery_ms.load(Ordering::Acquire);
        if ms != i64::MIN && self.persisted_delivery_ms.swap(ms, Ordering::AcqRel) != ms {
            if let Some(t) = DateTime::from_timestamp_millis(ms) {
                self.meta
                    .insert(META_LAST_DELIVERY_AT, t.to_rfc3339().as_bytes())
                    .context("saving the last delivery time")?;
            }
        }
        self.db
            .flush()
            .with_context(|| format!("flushing the store at {}", self.files.dir.display()))?;
        self.files.sync()?;
        self.durable_seq.fetch_max(mark, Ordering::AcqRel);
        // A failed commit drops its changes with the store's health: the records keep the
        // work, and the restart that the unhealthy store calls for reads it again.
        self.journal.publish(changes);
        Ok(())
    }
}

/// The files of a sled store that must reach the device: the log file `db` (sled writes every
/// record there), and any blob file (sled puts an oversized page in `blobs/`, one file each)
/// together with the directory entries that name new files.
struct SyncedFiles {
    dir: PathBuf,
    log: File,
    /// Blob files already synced (with their directory entry).
    blobs: Mutex<HashSet<OsString>>,
}

impl SyncedFiles {
    fn open(dir: &Path) -> anyhow::Result<SyncedFiles> {
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .with_context(|| format!("opening {} to sync it", log_path.display()))?;
        let files = SyncedFiles {
            dir: dir.to_path_buf(),
            log,
            blobs: Mutex::new(HashSet::new()),
        };
        // sled may have just created the directory and its files: make their names durable.
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        files
            .log
            .sync_all()
            .with_context(|| format!("syncing {}", log_path.display()))?;
        files.sync()?;
        Ok(files)
    }

    fn sync(&self) -> anyhow::Result<()> {
        if BENCHMARK_SKIP_FDATASYNC.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.log
            .sync_data()
            .with_context(|| format!("syncing {}", self.dir.join("db").display()))?;
        let blob_dir = self.dir.join("blobs");
        let Ok(entries) = std::fs::read_dir(&blob_dir) else {
            return Ok(()); // no blob directory: nothing to sync
        };
        let mut seen = self.blobs.lock().map_err(poisoned)?;
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", blob_dir.display()))?;
            let name = entry.file_name();
            if !seen.contains(&name) {
                let path = entry.path();
                // A blob sled removed meanwhile needs no sync.
                if let Ok(f) = File::open(&path) {
                    f.sync_all()
                        .with_context(|| format!("syncing {}", path.display()))?;
                    new = true;
                }
            }
            present.insert(name);
        }
        if new {
            sync_dir(&blob_dir)?;
        }
        *seen = present;
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

/// Benchmarks only: when set, a commit skips the `fdatasync` (sled's flush still runs), so
/// `cargo bench --bench ingest` can show what the real sync costs in the same run. Never set it
/// in a program that keeps data: a 200 would then not survive a power cut.
#[doc(hidden)]
pub static BENCHMARK_SKIP_FDATASYNC: AtomicBool = AtomicBool::new(false);

/// A caller waiting for a commit, with what to commit.
type Waiter = (oneshot::Sender<Result<(), CommitError>>, Arc<Durable>);

/// What the committer is asked: a commit for a waiter, or, last, to end (the store is closing).
enum Request {
    Commit(Waiter),
    End,
}

/// Group commit: callers queue a waiter; the committer takes every waiter queued so far, runs a
/// single commit and answers them all.
///
/// The committer is a task its owner runs and awaits ([`Store::committer`](super::Store::committer):
/// the daemon takes it right after opening the store); the store's close is its last request:
/// it answers the waiters queued before, and ends. After the close no commit is made and no
/// write accepted, whoever still holds the store. A store whose committer nobody took (a command
/// that reads, a test) commits each `durable` call itself on the blocking pool. Either way every
/// commit holds [`Durable`]'s commit lock, so commits run one at a time and publish in order.
pub(super) struct GroupCommit {
    queue: mpsc::UnboundedSender<Request>,
    /// The committer's end of the queue, until its owner takes it.
    unclaimed: Mutex<Option<mpsc::UnboundedReceiver<Request>>>,
    /// Set once the committer is taken: read on every `durable` call (the webhook route's path),
    /// so it is an atomic, not the mutex.
    claimed: AtomicBool,
    /// Set by the close: no commit after it.
    closed: AtomicBool,
}

/// The store's committer: run it (`run`) as a task its owner awaits.
pub struct Committer {
    rx: mpsc::UnboundedReceiver<Request>,
}

impl Committer {
    /// Commits for every waiter until the store is closed.
    pub async fn run(self) {
        commit_loop(self.rx).await;
    }
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl GroupCommit {
    pub(super) fn new() -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        GroupCommit {
            queue,
            unclaimed: Mutex::new(Some(rx)),
            claimed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Marks the store closed and asks the committer, if one runs, to end once it has answered
    /// the waiters queued before; whether the store was open.
    pub(super) fn close(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        // A committer that already ended needs no request.
        let _ = self.queue.send(Request::End);
        true
    }

    /// An error once the store is closed: a write or a commit after the close would never be
    /// made durable (nor counted), so it is refused.
    pub(super) fn ensure_open(&self) -> anyhow::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            anyhow::bail!("the store is closed");
        }
        Ok(())
    }

    /// The committer, the first time it is asked for.
    pub(super) fn committer(&self) -> Option<Committer> {
        let mut unclaimed = self.unclaimed.lock().unwrap_or_else(|p| p.into_inner());
        let rx = unclaimed.take()?;
        self.claimed.store(true, Ordering::Release);
        Some(Committer { rx })
    }

    /// Whether nobody runs the committer (each caller then commits itself).
    fn unowned(&self) -> bool {
        !self.claimed.load(Ordering::Acquire)
    }

    pub(super) async fn wait(&self, durable: &Arc<Durable>) -> anyhow::Result<()> {
        self.ensure_open()?;
        if self.unowned() {
            let durable = durable.clone();
            return tokio::task::spawn_blocking(move || durable.commit())
                .await
                .context("the commit task failed")?;
        }
        self.queue(durable)?
            .await
            .map_err(|_| anyhow::anyhow!("the store's committer has stopped"))?
            .map_err(anyhow::Error::from)
    }

    /// Queues a waiter for the next commit; its answer arrives on the receiver. Without a
    /// committer nothing is queued (and the receiver answers at once that none runs): the next
    /// `durable` or the close commits the writes.
    pub(super) fn queue(
        &self,
        durable: &Arc<Durable>,
    ) -> anyhow::Result<oneshot::Receiver<Result<(), CommitError>>> {
        self.ensure_open()?;
        let (tx, rx) = oneshot::channel();
        if self.unowned() {
            return Ok(rx);
        }
        self.queue
            .send(Request::Commit((tx, durable.clone())))
            .map_err(|_| anyhow::anyhow!("the store's committer has stopped"))?;
        Ok(rx)
    }
}

async fn commit_loop(mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut requests: Vec<Request> = Vec::new();
    let mut batch: Vec<Waiter> = Vec::new();
    // `recv_many` waits for at least one request, then takes all that are queued.
    while rx.recv_many(&mut requests, usize::MAX).await > 0 {
        let mut end = false;
        for request in requests.drain(..) {
            match request {
                Request::Commit(waiter) if !end => batch.push(waiter),
                // Queued after the close: dropped, so its caller hears the committer stopped.
                Request::Commit(_) => {}
                Request::End => end = true,
            }
        }
        if !batch.is_empty() {
            commit_batch(&mut batch).await;
        }
        if end {
            tracing::debug!("the store is closed: the committer ends");
            return;
        }
    }
}

/// One group commit for every waiter in `batch`, each answered.
async fn commit_batch(batch: &mut Vec<Waiter>) {
    let durable = batch[0].1.clone();
    // One span per group commit: the writes of every waiter in it become durable together.
    let span = tracing::debug_span!("commit", waiters = batch.len());
    let result = match tokio::task::spawn_blocking(move || span.in_scope(|| durable.commit())).await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CommitError(Arc::new(e))),
        Err(e) => Err(CommitError(Arc::new(
            anyhow::Error::new(e).context("the commit task failed"),
        ))),
    };
    for (waiter, _) in batch.drain(..) {
        // A caller that went away (its request was cancelled) no longer needs the answer.
        let _ = waiter.send(result.clone());
    }
}

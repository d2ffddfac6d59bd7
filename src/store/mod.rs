//! The embedded sled store: everything hookrace knows survives a restart here.
//!
//! Trees:
//! - `entities`: entity key → its record (JSON): the [`Entity`], and with it the raw body of its
//!   first delivery, its pending webhook fetch ([`FetchJob`]) and its creation sequence;
//! - `recent`: creation sequence (u64 BE) → entity key, so `/entities` lists newest first cheaply;
//! - `meta`: creation time, last delivery time, the counters, a stored webhook secret, the "open"
//!   mark, the race's summary as the tally had it at the last clean close;
//! - `fingerprints`: fingerprint → entity key, linking the records of one entity across channels;
//! - `aliases`: entity key → the key it was merged into;
//! - `data`: entity key → the newest data fetched or polled for it (JSON);
//! - trees its owners keep in it ([`Kept`]): `users` (`credentials`), `open_transactions`
//!   (`channels::open_transactions`);
//! - `counters`, `deliveries`, `fetch_queue`: read only to upgrade a store of an earlier version.
//!
//! One delivery is one write: a compare-and-swap of its entity's record, which carries the raw
//! body and the fetch job with it, so a crash can never keep one without the other. Its
//! newest-first index entry follows (an index, repaired from the records after an unclean stop).
//! Nothing on the write path takes sled's global transaction lock: sled's `flush()` holds a
//! shared lock while it writes, and any transaction or batch would wait for every flush.
//! Counters live in memory and are written with every commit.
//!
//! Durability: writes go to sled's log; [`Store::durable`] waits until a commit that *started
//! after* the caller's writes has finished: sled's flush followed by a real `fdatasync` of the log
//! (see `commit.rs`). Concurrent callers share one commit (group commit) run on the blocking pool,
//! so a burst of deliveries costs a few syncs, not one each.
//!
//! [`backup`] copies a live store to a stream and makes a new store from one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::accesslink::identity::{EntityKey, EventType, UserId};
use crate::accesslink::payload::Delivery;
use crate::race::{Entity, EntityTimes, FetchState, SavedSummary, Summary};
pub use changes::{Batch, Change, Committed, Follow, Follower, Keeper, Work, feed};

pub mod backup;
mod changes;
mod commit;
mod error;
mod kept;
mod linking;
mod meta;
mod notices;
mod write;

#[cfg(test)]
pub(crate) mod tests;

#[doc(hidden)]
pub use commit::BENCHMARK_SKIP_FDATASYNC;
pub use commit::Committer;
use commit::{Counters, Durable, GroupCommit};
pub use error::{CommitError, OpenError};
pub use kept::Kept;
pub use notices::{DueNotice, Notice, NoticeRoute, NoticeState, SinkNotice};

/// A counter's name, as its owner defines it: the store keeps counts by name (in memory, written
/// with each commit) and knows nothing of what they count.
pub trait CounterName {
    fn name(&self) -> std::borrow::Cow<'static, str>;
}

/// The counts the store itself keeps of its records, under the names their readers know: each
/// delivery recorded (the first of an entity, or a repeat), and each fetch recorded. After an
/// unclean stop they are recounted from the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCount {
    /// Deliveries that were an entity's first.
    FirstDeliveries,
    /// Deliveries of an entity that had one already.
    Duplicates,
    /// Entities whose webhook fetch brought their data.
    Fetched,
    /// Entities whose webhook fetch gave up.
    FetchFailed,
    /// Records holding a fetch job now (the whole fetch backlog, however much of it the
    /// fetcher's queue holds in memory): raised and lowered as jobs come and go.
    FetchesPending,
}

impl CounterName for RecordCount {
    fn name(&self) -> std::borrow::Cow<'static, str> {
        match self {
            RecordCount::FirstDeliveries => "webhook.accepted",
            RecordCount::Duplicates => "webhook.duplicates",
            RecordCount::Fetched => "webhook.fetches.ok",
            RecordCount::FetchFailed => "webhook.fetches.failed",
            RecordCount::FetchesPending => "webhook.fetches.pending",
        }
        .into()
    }
}

/// sled's page cache unless configured (`store.cache_mb`).
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

const META_CREATED_AT: &str = "created_at";
const META_LAST_DELIVERY_AT: &str = "webhook.last_delivery_at";
/// Present while a process has the store open; found at open, it means the last one stopped
/// without closing it (a crash, SIGKILL, power loss).
const META_OPEN: &str = "open";
/// Every counter, as one JSON object (written with each commit).
const META_COUNTERS: &str = "counters";
/// The entity summary as the last clean close left it ([`race::SavedSummary`]); read only when
/// the store was closed cleanly, since it lags the records after a crash.
const META_SUMMARY: &str = "summary";

/// What recording a delivery did, and what its answer must wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecorded {
    pub outcome: Recorded,
    /// The write queued a webhook fetch: the job the fetcher's queue gets once it is durable.
    pub fetch_queued: Option<(EntityKey, DateTime<Utc>)>,
    /// Everything the answer vouches for is durable already: a duplicate of an entity whose
    /// record reached the disk in an earlier commit, that queued no fetch. Its 200 need not wait
    /// for a commit (only its delivery count is in the air).
    pub already_durable: bool,
}

/// Whether a delivery was the entity's first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The first valid delivery for this entity: stored.
    Accepted,
    /// The entity already had a delivery: counted, not stored again.
    Duplicate,
}

/// A raw accepted delivery, kept in its entity's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDelivery {
    pub received_at: DateTime<Utc>,
    pub entity_key: String,
    /// The body exactly as received (it was signed over these bytes).
    pub body: String,
}

/// The raw body of an entity's first delivery, as its record keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RawDelivery {
    #[serde(with = "chrono::serde::ts_microseconds")]
    received_at: DateTime<Utc>,
    body: String,
}

/// An entity's record in the `entities` tree: what one delivery writes, in one write.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    entity: Entity,
    /// Its key in `recent` (newest-first index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    /// The first delivery's body, exactly as signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw: Option<RawDelivery>,
    /// The webhook fetch still to do, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fetch: Option<FetchJob>,
    /// The entity's event to the notify sinks (see `notices.rs`), once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notify: Option<Notice>,
}

/// A webhook fetch still to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchJob {
    pub url: String,
    pub user_id: UserId,
    pub event: EventType,
    pub attempts: u32,
    /// Not before this time (backoff after a failure).
    pub next_at: DateTime<Utc>,
}

/// What storing a polled item did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollRecorded {
    /// No channel had seen this entity: a new entity, first seen by the poll.
    New,
    /// The webhook had it already; now the poll has seen it too.
    SeenByWebhookFirst,
    /// The poll had seen it before (an item offered again, an activity update).
    Known,
}

/// The open store. Cheap to share behind an `Arc`.
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    entities: sled::Tree,
    recent: sled::Tree,
    meta: sled::Tree,
    fingerprints: sled::Tree,
    aliases: sled::Tree,
    data: sled::Tree,
    /// Which sinks want which event types (a record's write attaches its event).
    notice_routes: std::sync::RwLock<Vec<NoticeRoute>>,
    /// The records' work changed by writes not yet committed, and the broadcast of committed
    /// work (see `changes.rs`).
    journal: Arc<changes::Journal>,
    /// Serialises the operations that link records across channels (polls and fetch results),
    /// so two of them never merge the same records at once. Deliveries do not take it.
    link_lock: Mutex<()>,
    /// The newest delivery time in milliseconds (persisted in `meta` with each commit).
    last_delivery_ms: Arc<AtomicI64>,
    /// The counters (in memory; persisted with each commit).
    counters: Arc<Counters>,
    /// What a commit makes durable, shared with the group-commit task.
    durable: Arc<Durable>,
    group_commit: GroupCommit,
    /// The last process did not close the store: indexes are checked when the records are read.
    unclean: bool,
    /// The highest creation sequence whose record has been written (set after the write).
    written_seq: Arc<AtomicU64>,
    /// Every record with a creation sequence up to this one is durable.
    durable_seq: Arc<AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Makes the store directory 0700 and sled's files in it (`db`, `conf`, `snap.*`, `blobs/`)
/// 0600; anything else an operator keeps there is left alone.
fn restrict(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn set(p: &Path, mode: u32) -> anyhow::Result<()> {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("restricting the permissions of {}", p.display()))
    }
    set(dir, 0o700)?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if name == "blobs" && entry.file_type()?.is_dir() {
            set(&path, 0o700)?;
            for blob in std::fs::read_dir(&path)? {
                set(&blob?.path(), 0o600)?;
            }
        } else if name == "db" || name == "conf" || name.starts_with("snap.") {
            set(&path, 0o600)?;
        }
    }
    Ok(())
}

/// Reads a big-endian u64; a value of another length (never written by hookrace) reads as 0.
fn be_u64(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

impl Store {
    /// Opens (or creates) the store at `path`; [`OpenError::InUse`] when another process has it.
    pub fn open(path: &Path) -> Result<Store, OpenError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with sled's page cache of `cache_bytes` (`store.cache_mb`).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, OpenError> {
        Self::open_exclusive(path, cache_bytes).map_err(|e| OpenError::classify(path, e))
    }

    /// Opens the store at `path` only if it exists, for a command that only reads: a missing
    /// store is [`OpenError::Missing`] (nothing is created); any other failure is
    /// [`Store::open`]'s.
    pub fn open_existing(path: &Path) -> Result<Store, OpenError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(OpenError::Missing {
                path: path.to_path_buf(),
            }),
            _ => Self::open(path),
        }
    }

    /// [`Store::open`], trying again for up to `wait` while the store is held (blocking). sled
    /// releases its lock when its flusher thread ends, a moment after the last handle is dropped:
    /// a store closed a moment ago in this process (a restarted daemon, a test) can still be held.
    pub fn open_waiting(
        path: &Path,
        wait: std::time::Duration,
        cache_bytes: u64,
    ) -> Result<Store, OpenError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Store::open_with_cache(path, cache_bytes) {
                Err(OpenError::InUse { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    fn open_exclusive(path: &Path, cache_bytes: u64) -> anyhow::Result<Store> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating the store directory {}", path.display()))?;
        // The store holds access tokens and the webhook secret: only its owner may enter it,
        // whatever the umask (systemd's StateDirectory sets 0700 too; a manual run may not).
        restrict(path)?;
        // sled's default page cache is 1 GB; reading a large store through it (a report on a
        // million entities) would keep most of that resident. 64 MB holds the working set; the
        // daemon takes `store.cache_mb`.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(500))
            .open()
            .with_context(|| format!("opening the sled store at {}", path.display()))?;
        let tree = |name: &str| {
            db.open_tree(name)
                .with_context(|| format!("opening tree {name} in {}", path.display()))
        };
        let counters_tree = tree("counters")?;
        let meta = tree("meta")?;
        let counters = Arc::new(Counters::load(&counters_tree, &meta)?);
        let last_delivery_ms = Arc::new(AtomicI64::new(i64::MIN));
        if let Some(t) = meta_time(&meta, META_LAST_DELIVERY_AT) {
            last_delivery_ms.store(t.timestamp_millis(), Ordering::Release);
        }
        // Records created before now were written by an earlier process: durable, or recovered.
        let base_seq = db.generate_id().context("generating a sequence")?;
        let written_seq = Arc::new(AtomicU64::new(base_seq));
        let durable_seq = Arc::new(AtomicU64::new(base_seq));
        let durable = Arc::new(Durable::new(
            db.clone(),
            written_seq.clone(),
            durable_seq.clone(),
            meta.clone(),
            counters.clone(),
            last_delivery_ms.clone(),
            path,
        )?);
        let old_trees = (tree("deliveries")?, tree("fetch_queue")?);
        let mut store = Store {
            path: path.to_path_buf(),
            entities: tree("entities")?,
            recent: tree("recent")?,
            meta,
            fingerprints: tree("fingerprints")?,
            aliases: tree("aliases")?,
            data: tree("data")?,
            notice_routes: Default::default(),
            journal: durable.journal(),
            link_lock: Mutex::new(()),
            last_delivery_ms,
            counters,
            durable,
            group_commit: GroupCommit::new(),
            unclean: false,
            written_seq,
            durable_seq,
            db,
        };
        let created = store.meta.get(META_CREATED_AT)?.is_none();
        if created {
            store
                .meta
                .insert(META_CREATED_AT, Utc::now().to_rfc3339().as_bytes())?;
        }
        store.upgrade(&old_trees.0, &old_trees.1)?;
        store.unclean = store.meta.get(META_OPEN)?.is_some();
        let summary = store.opening_summary(created)?;
        // The tally that follows the store starts from it (see `Store::follow_tally`).
        store.journal.opened(summary);
        store.meta.insert(META_OPEN, &[1u8])?;
        store.durable.commit()?;
        // The files sled has just created (on a new store) get the same treatment.
        restrict(path)?;
        Ok(store)
    }

    /// The race's summary as the store opens: the one its last clean close saved; else (after a
    /// crash, on a store of an earlier version, or one closed after writes no tally counted) one
    /// pass over the records.
    fn opening_summary(&self, created: bool) -> anyhow::Result<Summary> {
        let saved = match self.unclean {
            true => {
                tracing::warn!(
                    store = %self.path.display(),
                    "the store was not closed cleanly: recounting from its records"
                );
                None
            }
            false => self.saved_summary()?,
        };
        // A store of a version that did not count its pending fetch jobs is recounted once.
        let pending_counted = self
            .counters
            .all()
            .contains_key(&*RecordCount::FetchesPending.name());
        let saved = saved.filter(|_| pending_counted);
        Ok(match saved {
            Some(summary) => summary,
            // After a crash, on a store of an earlier version, or one closed after writes no
            // tally counted: one pass over the records.
            None => {
                if !self.unclean && !created {
                    tracing::info!(
                        store = %self.path.display(),
                        "no summary was saved at the last close: recounting from the records"
                    );
                }
                self.recount()?
            }
        })
    }

    /// The summary the last clean close saved, if any.
    fn saved_summary(&self) -> anyhow::Result<Option<Summary>> {
        let Some(v) = self
            .meta
            .get(META_SUMMARY)
            .context("reading the saved summary")?
        else {
            return Ok(None);
        };
        let saved: SavedSummary =
            serde_json::from_slice(&v).context("decoding the saved summary")?;
        // One saved by an earlier version lacks figures added since: recount those records.
        Ok(saved.is_complete().then(|| saved.into()))
    }

    /// Summarises every record, and recounts the counters that describe records (after an
    /// unclean stop, the counters on disk may lag the records by the last unfinished commit):
    /// accepted deliveries are the raw bodies kept, duplicates the deliveries beyond them,
    /// fetches the entities fetched or given up.
    fn recount(&self) -> anyhow::Result<Summary> {
        #[derive(Deserialize)]
        struct Counted<'a> {
            #[serde(borrow, flatten)]
            times: EntityTimes<'a>,
            #[serde(default)]
            webhook_deliveries: u32,
            #[serde(default)]
            fetched: bool,
            #[serde(default)]
            fetch_error: Option<String>,
            #[serde(default)]
            raw: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            fetch: Option<serde::de::IgnoredAny>,
        }
        let (mut accepted, mut deliveries, mut fetched, mut failed) = (0u64, 0u64, 0u64, 0u64);
        let mut pending = 0u64;
        let mut summary = Summary::default();
        for kv in self.entities.iter() {
            let (k, v) = kv.context("reading entities")?;
            let c: Counted = serde_json::from_slice(&v)
                .with_context(|| format!("decoding entity {}", String::from_utf8_lossy(&k)))?;
            summary.add_times(&c.times);
            accepted += u64::from(c.raw.is_some());
            deliveries += u64::from(c.webhook_deliveries);
            fetched += u64::from(c.fetched && c.fetch_error.is_none() && c.webhook_deliveries > 0);
            failed += u64::from(c.fetch_error.is_some());
            pending += u64::from(c.fetch.is_some());
        }
        let set = |c: RecordCount, v: u64| self.counters.set(&c.name(), v);
        set(RecordCount::FirstDeliveries, accepted);
        set(RecordCount::Duplicates, deliveries.saturating_sub(accepted));
        set(RecordCount::Fetched, fetched);
        set(RecordCount::FetchFailed, failed);
        set(RecordCount::FetchesPending, pending);
        Ok(summary)
    }

    /// Moves what a store of an earlier version kept in the `deliveries` and `fetch_queue` trees
    /// into the records, once.
    fn upgrade(&self, deliveries: &sled::Tree, queue: &sled::Tree) -> anyhow::Result<()> {
        if deliveries.is_empty() && queue.is_empty() {
            return Ok(());
        }
        tracing::info!("moving raw deliveries and fetch jobs into the entity records");
        for kv in deliveries.iter() {
            let (k, v) = kv.context("reading an old delivery")?;
            let d: StoredDelivery =
                serde_json::from_slice(&v).context("decoding an old delivery")?;
            if self.entity_exact(&d.entity_key)?.is_some() {
                self.update_record(&d.entity_key, |r| {
                    r.raw.get_or_insert(RawDelivery {
                        received_at: d.received_at,
                        body: d.body.clone(),
                    });
                })?;
            }
            deliveries.remove(k)?;
        }
        for kv in queue.iter() {
            let (k, v) = kv.context("reading an old fetch job")?;
            let key = String::from_utf8_lossy(k.get(8..).unwrap_or_default()).into_owned();
            if let Ok(job) = serde_json::from_slice::<FetchJob>(&v) {
                if self.entity_exact(&key)?.is_some() {
                    self.update_record(&key, |r| {
                        r.fetch.get_or_insert(job.clone());
                    })?;
                }
            }
            queue.remove(k)?;
        }
        self.durable.commit()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `by` to a counter (in memory; written to disk with the next commit).
    pub fn incr(&self, counter: impl CounterName, by: u64) {
        self.counters.add(&counter.name(), by);
        self.changed();
    }

    /// A record's fetch job ended (fetched, given up, or the record merged into another).
    pub(super) fn job_ended(&self) {
        self.counters.sub(&RecordCount::FetchesPending.name(), 1);
        self.changed();
    }

    /// Journals an entity written (or removed) for the race's tally, and wakes the watchers.
    fn entity_changed(&self, old: Option<&EntityTimes<'_>>, new: Option<&EntityTimes<'_>>) {
        self.journal.retimed(old, new);
    }

    fn changed(&self) {
        self.journal.tick();
    }

    /// A counter's value (0 when never incremented).
    pub fn counter(&self, counter: impl CounterName) -> u64 {
        self.counters.get(&counter.name())
    }

    /// All counters by name.
    pub fn counters(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        Ok(self.counters.all())
    }

    /// Reads one entity, following aliases.
    pub fn entity(&self, key: &EntityKey) -> anyhow::Result<Option<Entity>> {
        let key = &self.resolve_key(key.as_str())?;
        self.entity_exact(key)
    }

    fn entity_exact(&self, key: &str) -> anyhow::Result<Option<Entity>> {
        match self
            .entities
            .get(key)
            .with_context(|| format!("reading entity {key}"))?
        {
            Some(v) => Ok(Some(decode_entity(key, &v)?)),
            None => Ok(None),
        }
    }

    /// Whether any entity of `kind` for `user` is stored (a look at the first key under their
    /// prefix, not a scan).
    pub fn holds_any(&self, kind: &EventType, user: UserId) -> anyhow::Result<bool> {
        let prefix = format!("{kind}/{user}/");
        match self.entities.scan_prefix(prefix.as_bytes()).next() {
            Some(Err(e)) => Err(e).with_context(|| format!("reading entities under {prefix}")),
            found => Ok(found.is_some()),
        }
    }

    /// Up to `limit` entities, newest first, optionally of one type.
    pub fn newest_entities(&self, limit: usize, kind: Option<&str>) -> anyhow::Result<Vec<Entity>> {
        let mut out = Vec::new();
        for kv in self.recent.iter().rev() {
            if out.len() >= limit {
                break;
            }
            let (_, key) = kv.context("reading the recent index")?;
            let key = String::from_utf8_lossy(&key).into_owned();
            // A merged record's index entry finds nothing: its entity is listed under its own.
            if let Some(e) = self.entity_exact(&key)? {
                if kind.is_none_or(|k| k == e.kind.as_str()) {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Calls `f` for every entity.
    pub fn for_each_entity(&self, mut f: impl FnMut(Entity)) -> anyhow::Result<()> {
        for kv in self.entities.iter() {
            let (k, v) = kv.context("reading entities")?;
            f(decode_entity(&String::from_utf8_lossy(&k), &v)?);
        }
        Ok(())
    }

    /// Raw accepted deliveries, oldest first (a full scan).
    pub fn deliveries(&self) -> anyhow::Result<Vec<StoredDelivery>> {
        let mut out = Vec::new();
        for kv in self.entities.iter() {
            let (k, v) = kv.context("reading entities")?;
            let key = String::from_utf8_lossy(&k).into_owned();
            if let Some(raw) = decode_record(&key, &v)?.raw {
                out.push(StoredDelivery {
                    received_at: raw.received_at,
                    entity_key: key,
                    body: raw.body,
                });
            }
        }
        out.sort_by_key(|d| d.received_at);
        Ok(out)
    }

    /// The store's committer, the first time it is asked for: a task for the caller to run and
    /// await (it ends when the store is closed). Until it is taken, each `durable` call commits
    /// by itself; once taken, calls share its group commits.
    pub fn committer(&self) -> Option<Committer> {
        self.group_commit.committer()
    }

    /// Returns once everything written before the call is on disk (shared flush, see module docs).
    pub async fn durable(&self) -> anyhow::Result<()> {
        self.group_commit.wait(&self.durable).await
    }

    /// Asks for a commit of everything written so far without waiting for it (it joins the
    /// group commit): for a writer whose write need not be durable before it goes on, but whose
    /// consumers (the tally) should see it soon. A failure shows in [`Store::problem`].
    pub fn commit_soon(&self) -> anyhow::Result<()> {
        self.group_commit.queue(&self.durable).map(drop)
    }

    /// A blocking commit of everything written so far (counters, sled's flush, the sync).
    pub fn flush(&self) -> anyhow::Result<()> {
        self.durable.commit()
    }

    /// What is wrong with the store, if anything: a failed commit (sticky until a restart: sled
    /// keeps failing after a full disk has space again) or a failed read.
    pub fn problem(&self) -> Option<String> {
        if let Some(why) = self.durable.failure() {
            return Some(format!(
                "a commit failed ({why}); a restart reopens the store, which recovers"
            ));
        }
        match self.meta.get(META_CREATED_AT) {
            Ok(_) => None,
            Err(e) => Some(format!("the store cannot be read: {e}")),
        }
    }
}

impl Store {
    /// Closes the store cleanly: the last writes committed (the tally then counts them all), the
    /// tally's summary saved, and the "open" mark removed and committed, so the next open trusts
    /// the summary and the counters and recounts nothing. A store dropped without `close` (a
    /// crash, a forgotten handle) is recounted at its next open; that is safe, only slower.
    ///
    /// The close is the committer's last request (it answers the waiters queued before and
    /// ends), and after it every write and every commit is refused, whoever still holds the
    /// store: no handle needs to be let go of first. A second close does nothing.
    pub fn close(&self) -> anyhow::Result<()> {
        let _span = tracing::info_span!("close", store = %self.path.display()).entered();
        if !self.group_commit.close() {
            return Ok(());
        }
        self.durable.commit()?;
        match self.journal.tally().map(|t| t.exact()) {
            Some(Some(summary)) => {
                let bytes = serde_json::to_vec(&SavedSummary::from(&summary))
                    .context("encoding the summary")?;
                self.meta
                    .insert(META_SUMMARY, bytes)
                    .context("saving the summary")?;
            }
            // Nothing followed and nothing was written: the summary saved before still holds.
            None if self.journal.opening_summary_holds() => {}
            // Entities written with no tally following (a command that wrote and did not
            // count), or a tally half-way between two commits' changes (which cannot happen once
            // every writer has stopped): the next open recounts.
            _ => {
                self.meta
                    .remove(META_SUMMARY)
                    .context("removing the saved summary")?;
            }
        }
        // The summary is on disk before the mark that makes the next open trust it is gone.
        self.durable.commit()?;
        self.meta
            .remove(META_OPEN)
            .context("removing the store's open mark")?;
        self.durable.commit()?;
        tracing::info!(store = %self.path.display(), "store closed cleanly");
        Ok(())
    }

    /// The last process had not closed the store (its summary was recounted at this open).
    pub fn found_unclean(&self) -> bool {
        self.unclean
    }
}

/// Locks a mutex that holds plain tallies: a panic in another holder cannot leave them
/// half-written in a way worse than a missed count, so a poisoned lock is used as it is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> anyhow::Error {
    anyhow::anyhow!("a store lock was poisoned by a panic")
}

fn decode_record(key: &str, bytes: &[u8]) -> anyhow::Result<Record> {
    let mut r: Record =
        serde_json::from_slice(bytes).with_context(|| format!("decoding entity {key}"))?;
    r.entity.key = EntityKey::stored(key);
    Ok(r)
}

/// A time the `meta` tree keeps (RFC 3339), if it holds a readable one.
fn meta_time(meta: &sled::Tree, key: &str) -> Option<DateTime<Utc>> {
    let v = meta.get(key).ok()??;
    DateTime::parse_from_rfc3339(std::str::from_utf8(&v).ok()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn decode_entity(key: &str, bytes: &[u8]) -> anyhow::Result<Entity> {
    let mut e: Entity =
        serde_json::from_slice(bytes).with_context(|| format!("decoding entity {key}"))?;
    e.key = EntityKey::stored(key);
    Ok(e)
}

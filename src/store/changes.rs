//! What became durable, for the consumers that keep state derived from the records.
//!
//! A record write that changes the record's work (its pending fetch, or its notify event while
//! a sink still waits for it) adds a [`Change`] to the journal. The group commit takes the
//! journal before its flush and, once the `fdatasync` has finished, broadcasts what it took: a
//! consumer (the fetcher's queue, the notify outbox) is handed only work that is durable, by the
//! one mechanism that wakes them all. Nobody polls a durability mark.
//!
//! A change says what the record holds after the write, not how it got there: a consumer's
//! entry is a pointer, and the record decides whether the work is still due (a stale entry costs
//! one read). A consumer that missed changes ([`Follow::Lagged`]: it fell behind the broadcast,
//! or the journal overflowed because writes went uncommitted) reads the records again; at start
//! each consumer fills its queue from one scan ([`Store::scan_work`]), subscribed before it, so
//! nothing written meanwhile is missed.
//!
//! The race's figures ([`Tally`]) are fed by the same commits, but not through the broadcast: a
//! figure cannot be read again from a pointer, and recounting a million records because a reader
//! fell behind would cost seconds and race with the writers. So every entity write journals its
//! times before and after ([`Retimed`]), and the commit hands them to the one tally directly,
//! after its sync ([`Store::follow_tally`]).

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::{FetchJob, Notice, Store, lock};
use crate::accesslink::identity::{EntityKey, UserId};
use crate::race::{EntityTimes, Retimed, Summary, Tally};

/// One record's work after a write.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Where the record lives.
    pub key: EntityKey,
    pub user_id: UserId,
    /// Its pending fetch, if any.
    pub fetch: Option<FetchJob>,
    /// Its notify event, if any sink still waits for it.
    pub notice: Option<Notice>,
}

/// The changes one commit made durable.
#[derive(Debug)]
pub struct Batch {
    pub changes: Vec<Change>,
    /// Changes were dropped before this commit (the journal overflowed): read the records.
    pub missed: bool,
}

/// A commit's batch, shared by every consumer.
pub type Committed = Arc<Batch>;

/// How many commits a consumer may fall behind before it must read the records again.
const BACKLOG: usize = 4096;

/// At most this many changes wait in the journal for a commit. Every writer commits its work, so
/// the journal stays short; should one not, the oldest are dropped and the consumers told to read
/// the records (memory stays bounded, no work is lost: the records hold it).
const JOURNAL_CAP: usize = 100_000;

/// The journal of changes written and not yet committed, and the broadcast of committed ones.
pub(super) struct Journal {
    written: Mutex<Written>,
    committed: broadcast::Sender<Committed>,
    /// Ticks on every change to entities or counters, written or committed: the dashboard's
    /// event stream waits on it.
    ticks: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct Written {
    changes: Vec<Change>,
    missed: bool,
    /// Entity writes not yet committed, for the tally.
    retimed: Vec<Retimed>,
    figures: Figures,
}

/// Who keeps the race's figures.
#[derive(Default)]
enum Figures {
    /// Nobody yet: the summary the store opened with still describes the records.
    Opened(Box<Summary>),
    /// An entity was written with no tally following: the opening summary is stale, and a close
    /// saves none (the next open recounts).
    #[default]
    Stale,
    /// The tally, fed by every commit.
    Followed(Arc<Tally>),
}

impl Journal {
    pub(super) fn new() -> Journal {
        Journal {
            written: Mutex::new(Written::default()),
            committed: broadcast::channel(BACKLOG).0,
            ticks: tokio::sync::watch::channel(0).0,
        }
    }

    /// The records are summarised by `summary` (the store's open saved or recounted it).
    pub(super) fn opened(&self, summary: Summary) {
        lock(&self.written).figures = Figures::Opened(Box::new(summary));
    }

    /// The tally fed from now on, started from the opening summary (see [`Store::follow_tally`]).
    fn follow_tally(&self) -> anyhow::Result<Arc<Tally>> {
        let mut w = lock(&self.written);
        let tally = match std::mem::take(&mut w.figures) {
            Figures::Opened(summary) => Arc::new(Tally::new(*summary)),
            Figures::Followed(tally) => tally,
            Figures::Stale => anyhow::bail!(
                "entities were written before the race's tally followed the store: its opening \
                 summary no longer describes the records (open the store again)"
            ),
        };
        w.figures = Figures::Followed(tally.clone());
        Ok(tally)
    }

    /// The tally, if one follows.
    pub(super) fn tally(&self) -> Option<Arc<Tally>> {
        match &lock(&self.written).figures {
            Figures::Followed(tally) => Some(tally.clone()),
            _ => None,
        }
    }

    /// Whether the summary the store opened with still describes the records (nothing followed
    /// and nothing written): a close may keep the one saved.
    pub(super) fn opening_summary_holds(&self) -> bool {
        matches!(lock(&self.written).figures, Figures::Opened(_))
    }

    /// Journals an entity write for the tally (after the record was written).
    pub(super) fn retimed(&self, old: Option<&EntityTimes<'_>>, new: Option<&EntityTimes<'_>>) {
        if old != new {
            let mut guard = lock(&self.written);
            let w = &mut *guard;
            if let Figures::Followed(tally) = &w.figures {
                if w.retimed.len() >= JOURNAL_CAP {
                    // Writes went uncommitted this long (every writer commits its own): count
                    // them now rather than hold more; the figures run ahead of the disk by what
                    // the next commit makes durable.
                    tally.apply(&std::mem::take(&mut w.retimed));
                }
                w.retimed.push(Retimed {
                    old: old.map(|t| t.clone().into_owned()),
                    new: new.map(|t| t.clone().into_owned()),
                });
            } else {
                w.figures = Figures::Stale;
            }
        }
        self.tick();
    }

    /// Wakes the watchers of changes.
    pub(super) fn tick(&self) {
        self.ticks.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(super) fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ticks.subscribe()
    }

    /// Adds a change (after its record was written). Without a consumer nothing is kept: one
    /// that subscribes later reads the records first.
    pub(super) fn push(&self, change: Change) {
        if self.committed.receiver_count() == 0 {
            return;
        }
        let mut w = lock(&self.written);
        if w.changes.len() >= JOURNAL_CAP {
            w.changes.clear();
            w.missed = true;
        }
        w.changes.push(change);
    }

    /// Takes what was written so far: a commit calls it before its flush.
    pub(super) fn take(&self) -> Taken {
        let mut w = lock(&self.written);
        Taken {
            batch: Batch {
                changes: std::mem::take(&mut w.changes),
                missed: std::mem::take(&mut w.missed),
            },
            retimed: std::mem::take(&mut w.retimed),
        }
    }

    /// Hands a commit's changes to every consumer (after its sync).
    pub(super) fn publish(&self, taken: Taken) {
        let Taken { batch, retimed } = taken;
        if !retimed.is_empty() {
            if let Some(tally) = self.tally() {
                tally.apply(&retimed);
            }
            self.tick();
        }
        if !batch.changes.is_empty() || batch.missed {
            // No receiver: nobody keeps a queue (a CLI command); the records hold the work.
            let _ = self.committed.send(Arc::new(batch));
        }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.committed.subscribe()
    }
}

/// What one commit takes from the journal and publishes after its sync.
pub(super) struct Taken {
    batch: Batch,
    retimed: Vec<Retimed>,
}

/// What a consumer got from [`Store::follow`].
#[derive(Debug)]
pub enum Follow {
    /// Changes a commit made durable.
    Durable(Committed),
    /// The consumer missed changes (it fell behind the broadcast, or the journal overflowed):
    /// read the records again.
    Lagged,
    /// The store has closed.
    Closed,
}

/// A consumer's subscription to what becomes durable.
pub struct Follower(broadcast::Receiver<Committed>);

impl Follower {
    /// The next commit's changes (cancel-safe).
    pub async fn next(&mut self) -> Follow {
        match self.0.recv().await {
            Ok(c) if c.missed => Follow::Lagged,
            Ok(c) => Follow::Durable(c),
            Err(broadcast::error::RecvError::Lagged(_)) => Follow::Lagged,
            Err(broadcast::error::RecvError::Closed) => Follow::Closed,
        }
    }

    /// The next commit's changes if one is waiting (tests hand them over by hand).
    #[cfg(test)]
    pub(crate) fn try_next(&mut self) -> Option<Committed> {
        self.0.try_recv().ok()
    }
}

/// A consumer of the records' work: it keeps its own queue, filled by the start-up scan and fed
/// by every commit (see [`feed`]). Both calls may repeat what the queue has (a pointer is put
/// again), and arrive in any order for one key (the record decides).
pub trait Keeper: Send + Sync {
    /// A record's work, as a scan of the records found it.
    fn scanned(&self, work: &Work<'_>);
    /// A record's work, as a commit made it durable.
    fn committed(&self, change: &Change);
    /// After a scan or a commit's changes: wake whoever waits for work.
    fn wake(&self);
}

/// Feeds the keepers until `shutdown`: subscribes, fills their queues from one scan of the
/// records (on the blocking pool, so a large store does not delay start-up), then hands them
/// every commit's changes; a keeper that fell behind the broadcast gets another scan. The scan
/// runs on `blocking`, so whoever closes the store can wait for it (it holds the store).
#[tracing::instrument(name = "feed", skip_all, fields(keepers = keepers.len()))]
pub async fn feed(
    store: Arc<Store>,
    keepers: Vec<Arc<dyn Keeper>>,
    shutdown: tokio_util::sync::CancellationToken,
    blocking: tokio_util::task::TaskTracker,
) {
    if keepers.is_empty() {
        return;
    }
    let mut follower = store.follow();
    let mut scan = true;
    loop {
        if scan {
            scan = false;
            let (s, k) = (store.clone(), keepers.clone());
            let scanned = blocking.spawn_blocking(move || {
                let mut found = 0usize;
                s.scan_work(|w| {
                    found += 1;
                    for keeper in &k {
                        keeper.scanned(&w);
                    }
                })
                .map(|()| found)
            });
            match tokio::select! {
                _ = shutdown.cancelled() => return,
                r = scanned => r,
            } {
                Ok(Ok(0)) => {}
                Ok(Ok(found)) => tracing::info!(
                    records = found,
                    "work still to do (fetches, notify events) read from the records"
                ),
                Ok(Err(e)) => tracing::error!(
                    error = format_args!("{e:#}"),
                    "reading the records' work (what a commit hands over still arrives)"
                ),
                Err(e) => tracing::error!(error = %e, "the scan of the records' work failed"),
            }
            for keeper in &keepers {
                keeper.wake();
            }
        }
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = follower.next() => next,
        };
        match next {
            Follow::Durable(batch) => {
                for change in &batch.changes {
                    tracing::trace!(entity = %change.key, "durable: handed to the keepers");
                }
                for keeper in &keepers {
                    for change in &batch.changes {
                        keeper.committed(change);
                    }
                    keeper.wake();
                }
            }
            Follow::Lagged => {
                tracing::warn!(
                    "the work queues missed some of the store's commits: reading the records again"
                );
                scan = true;
            }
            Follow::Closed => return,
        }
    }
}

/// A record's work as the start-up scan finds it.
#[derive(Debug)]
pub struct Work<'a> {
    pub key: EntityKey,
    pub user_id: UserId,
    pub fetch: Option<&'a FetchJob>,
    pub notice: Option<&'a Notice>,
}

impl Store {
    /// Subscribes to what every commit from now on makes durable.
    pub fn follow(&self) -> Follower {
        Follower(self.journal.subscribe())
    }

    /// The race's figures, started from the summary this store opened with (the one its last
    /// clean close saved, or a recount) and fed by every commit from now on with the entity
    /// writes it made durable; a clean [`Store::close`] saves what it counts. Every call returns
    /// the same tally. Fails when entities were written before the first call (the opening
    /// summary no longer describes them): take it right after opening the store.
    pub fn follow_tally(&self) -> anyhow::Result<Arc<Tally>> {
        self.journal.follow_tally()
    }

    /// A receiver that wakes on every change to entities or counters.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.journal.watch()
    }

    /// Reads every record once (blocking) and hands each one's work, fetch and notify event
    /// (sent and parked ones too: their counts), to `f`. After an unclean stop the same pass
    /// restores the newest-first index entries a crash between a record and its index entry left
    /// out.
    pub fn scan_work(&self, mut f: impl FnMut(Work<'_>)) -> anyhow::Result<()> {
        use anyhow::Context;
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
        for kv in self.entities.iter() {
            let (k, v) = kv.context("reading entities")?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let r: Pending =
                serde_json::from_slice(&v).with_context(|| format!("decoding entity {key}"))?;
            if self.unclean {
                if let Some(seq) = r.seq {
                    if self.recent.get(seq.to_be_bytes())?.is_none() {
                        self.recent.insert(seq.to_be_bytes(), key.as_bytes())?;
                    }
                }
            }
            if r.fetch.is_some() || r.notify.is_some() {
                f(Work {
                    key: EntityKey::stored(key),
                    user_id: r.user_id,
                    fetch: r.fetch.as_ref(),
                    notice: r.notify.as_ref(),
                });
            }
        }
        Ok(())
    }

    /// Journals a record's work when a write changed it (see the module docs).
    pub(super) fn work_changed(
        &self,
        key: &str,
        user_id: UserId,
        before: (Option<&FetchJob>, Option<&Notice>),
        fetch: Option<&FetchJob>,
        notice: Option<&Notice>,
    ) {
        fn waiting(n: Option<&Notice>) -> Option<&Notice> {
            n.filter(|n| n.sinks.iter().any(|s| s.state.is_pending()))
        }
        // The whole backlog's size, kept as jobs come and go.
        match (before.0.is_some(), fetch.is_some()) {
            (false, true) => self.incr(super::RecordCount::FetchesPending, 1),
            (true, false) => self.job_ended(),
            _ => {}
        }
        let notice_after = waiting(notice);
        if before.0 == fetch && waiting(before.1) == notice_after {
            return;
        }
        if fetch.is_none() && notice_after.is_none() {
            // Work ended: the consumers' pointers find that in the record.
            return;
        }
        self.journal.push(Change {
            key: EntityKey::stored(key),
            user_id,
            fetch: fetch.cloned(),
            notice: notice_after.cloned(),
        });
    }
}

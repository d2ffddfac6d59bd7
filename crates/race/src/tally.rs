//! The race's figures over every entity, kept by their readers (the status document, the metrics,
//! the dashboard, systemd's status line) rather than by the store.
//!
//! A [`Tally`] starts from the summary the store opened with (the one its last clean close saved,
//! or a recount) and is handed, after each commit, what that commit made durable: each entity's
//! times before and after its write ([`Retimed`]). It never reads a record, so `/status` costs the
//! same on a million entities as on ten, and what it shows is what a crash would keep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::summary::{EntityTimes, LiveSummary, Summary};

/// One entity write, as the figures see it: its times before (`None`: new) and after (`None`:
/// merged into another record).
#[derive(Debug, Clone, PartialEq)]
pub struct Retimed {
    pub old: Option<EntityTimes<'static>>,
    pub new: Option<EntityTimes<'static>>,
}

/// The live summary and the one snapshot every reader shares until the next change.
pub struct Tally {
    live: Mutex<LiveSummary>,
    /// Bumped by every change applied, so the shared snapshot knows when it is stale.
    generation: AtomicU64,
    snapshot: Mutex<Option<(u64, Arc<Summary>)>>,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Tally {
    /// Starts from a summary of what exists.
    pub fn new(start: Summary) -> Tally {
        Tally {
            live: Mutex::new(LiveSummary::new(start)),
            generation: AtomicU64::new(0),
            snapshot: Mutex::new(None),
        }
    }

    /// Accounts for entity writes (a commit hands over the ones it made durable).
    pub fn apply(&self, changes: &[Retimed]) {
        if changes.is_empty() {
            return;
        }
        let mut live = lock(&self.live);
        for c in changes {
            live.change(c.old.as_ref(), c.new.as_ref());
        }
        drop(live);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The summary of all entities: one snapshot shared by every reader until a change arrives.
    pub fn summary(&self) -> Arc<Summary> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut shared = lock(&self.snapshot);
        if let Some((g, s)) = shared.as_ref() {
            if *g == generation {
                return s.clone();
            }
        }
        match lock(&self.live).snapshot() {
            Some(now) => {
                let now = Arc::new(now);
                *shared = Some((generation, now.clone()));
                now
            }
            // Two commits published out of order (a change taken out before the one that added
            // it arrived): the earlier snapshot stands for the moment between them.
            None => shared.as_ref().map(|(_, s)| s.clone()).unwrap_or_default(),
        }
    }

    /// The exact summary now, or `None` while two commits' changes are half applied (which
    /// cannot happen once every writer has stopped): what a clean close saves.
    pub fn exact(&self) -> Option<Summary> {
        lock(&self.live).snapshot()
    }
}

/// Locks a mutex of plain tallies: a panic in another holder leaves at worst a missed count, so
/// a poisoned lock is used as it is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Entity;
    use accesslink::identity::{EventType, UserId};
    use chrono::{TimeZone, Utc};

    fn times(e: &Entity) -> Option<EntityTimes<'static>> {
        Some(e.times().into_owned())
    }

    #[test]
    fn readers_share_one_snapshot_until_a_change_arrives() {
        let tally = Tally::new(Summary::default());
        let first = tally.summary();
        assert!(Arc::ptr_eq(&first, &tally.summary()));
        let mut e = Entity::new(&EventType::Exercise, UserId(1), "a");
        e.webhook_at = Some(Utc.timestamp_opt(1_700_000_000, 0).unwrap());
        tally.apply(&[Retimed {
            old: None,
            new: times(&e),
        }]);
        let second = tally.summary();
        assert_eq!((first.total, second.total), (0, 1));
        assert_eq!(tally.exact().map(|s| s.webhook_only), Some(1));
    }

    #[test]
    fn changes_out_of_order_keep_the_earlier_snapshot_until_they_meet() {
        let tally = Tally::new(Summary::default());
        let mut v1 = Entity::new(&EventType::Exercise, UserId(1), "a");
        v1.webhook_at = Some(Utc.timestamp_opt(1_700_000_000, 0).unwrap());
        let mut v2 = v1.clone();
        v2.poll_at = Some(Utc.timestamp_opt(1_700_000_030, 0).unwrap());
        assert_eq!(tally.summary().total, 0);
        // The second commit's change (v1 → v2) arrives before the first's (none → v1).
        tally.apply(&[Retimed {
            old: times(&v1),
            new: times(&v2),
        }]);
        assert_eq!(tally.summary().total, 0, "the earlier snapshot stands");
        assert!(tally.exact().is_none());
        tally.apply(&[Retimed {
            old: None,
            new: times(&v1),
        }]);
        let s = tally.summary();
        assert_eq!((s.total, s.seen_by_both), (1, 1));
    }
}

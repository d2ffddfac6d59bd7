//! The persistent fetch queue: the webhook fetches still to do.
//!
//! `fetch_queue` maps `(due time in ms, big-endian) ++ entity key` to a [`FetchJob`], so its first
//! entry is always the job due next and the fetcher never scans. `fetch_index` maps an entity key
//! to its queue key, so an entity has at most one job: a delivery's batch asks it whether a fetch
//! is already queued, and a retry replaces the entry instead of adding one. Both trees change
//! together, in one sled transaction.

use anyhow::Context;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{FetchJob, Store};

/// The queue key of `job` for the entity at `key`.
pub(super) fn queue_key(key: &str, job: &FetchJob) -> Vec<u8> {
    let due = job.next_at.timestamp_millis().max(0) as u64;
    let mut k = due.to_be_bytes().to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

/// Inside a transaction: queues `job` for `key`, replacing a job queued for it before.
pub(super) fn put(
    queue: &TransactionalTree,
    index: &TransactionalTree,
    key: &str,
    job: &FetchJob,
) -> Result<(), ConflictableTransactionError<anyhow::Error>> {
    let bytes = serde_json::to_vec(job)
        .map_err(|e| ConflictableTransactionError::Abort(anyhow::Error::new(e)))?;
    let qk = queue_key(key, job);
    if let Some(old) = index.insert(key.as_bytes(), qk.clone())? {
        if old != qk.as_slice() {
            queue.remove(old)?;
        }
    }
    queue.insert(qk, bytes)?;
    Ok(())
}

impl Store {
    /// Queues (or re-schedules) the fetch of an entity's webhook data for `job.next_at`.
    pub fn enqueue_fetch(&self, key: &str, job: &FetchJob) -> anyhow::Result<()> {
        (&self.fetch_queue, &self.fetch_index)
            .transaction(|(queue, index)| put(queue, index, key, job))
            .map_err(super::tx_error)
            .with_context(|| format!("queueing the fetch of {key}"))
    }

    /// Whether a fetch is queued for the entity at `key`.
    pub fn fetch_queued(&self, key: &str) -> anyhow::Result<bool> {
        self.fetch_index
            .contains_key(key.as_bytes())
            .context("reading the fetch index")
    }

    /// The job due first: its queue key, its entity key and the job.
    pub fn next_fetch(&self) -> anyhow::Result<Option<(sled::IVec, String, FetchJob)>> {
        loop {
            let Some((k, v)) = self
                .fetch_queue
                .first()
                .context("reading the fetch queue")?
            else {
                return Ok(None);
            };
            let entity = String::from_utf8_lossy(k.get(8..).unwrap_or_default()).into_owned();
            match serde_json::from_slice(&v) {
                Ok(job) => return Ok(Some((k, entity, job))),
                Err(e) => {
                    tracing::error!(entity, error = %e, "dropping an unreadable fetch job");
                    self.dequeue_fetch(&k)?;
                }
            }
        }
    }

    /// Every queued fetch, by entity key (a full scan: for tests and diagnostics).
    pub fn queued_fetches(&self) -> anyhow::Result<Vec<(String, FetchJob)>> {
        let mut out = Vec::new();
        for kv in self.fetch_queue.iter() {
            let (k, v) = kv.context("reading the fetch queue")?;
            let key = String::from_utf8_lossy(k.get(8..).unwrap_or_default()).into_owned();
            if let Ok(job) = serde_json::from_slice(&v) {
                out.push((key, job));
            }
        }
        Ok(out)
    }

    /// Whether no fetch is queued.
    pub fn fetch_queue_is_empty(&self) -> bool {
        self.fetch_queue.is_empty()
    }

    /// Removes a queued fetch by its queue key (and its index entry, if it still points there).
    pub fn dequeue_fetch(&self, queue_key: &[u8]) -> anyhow::Result<()> {
        let entity = queue_key.get(8..).unwrap_or_default();
        (&self.fetch_queue, &self.fetch_index)
            .transaction(|(queue, index)| {
                queue.remove(queue_key)?;
                if index.get(entity)?.is_some_and(|k| k == queue_key) {
                    index.remove(entity)?;
                }
                Ok::<_, ConflictableTransactionError<anyhow::Error>>(())
            })
            .map_err(super::tx_error)
            .context("dequeueing a fetch")
    }
}

//! The persistent fetch queue: `(due time, entity key)` → [`FetchJob`], the webhook fetches still
//! to do, ordered by when they are due, so the fetcher never rescans.

use anyhow::Context;

use super::*;

impl Store {
    fn fetch_key(key: &str, job: &FetchJob) -> Vec<u8> {
        let due = job.next_at.timestamp_millis().max(0) as u64;
        let mut k = due.to_be_bytes().to_vec();
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// Queues the fetch of an entity's webhook data for `job.next_at`.
    pub fn enqueue_fetch(&self, key: &str, job: &FetchJob) -> anyhow::Result<()> {
        self.fetch_queue
            .insert(Self::fetch_key(key, job), serde_json::to_vec(job)?)
            .with_context(|| format!("queueing the fetch of {key}"))?;
        Ok(())
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
                    self.fetch_queue.remove(&k)?;
                }
            }
        }
    }

    /// Every queued fetch, by entity key (a full scan: for start-up and tests).
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

    /// Removes a queued fetch by its queue key.
    pub fn dequeue_fetch(&self, queue_key: &[u8]) -> anyhow::Result<()> {
        self.fetch_queue
            .remove(queue_key)
            .context("dequeueing a fetch")?;
        Ok(())
    }
}

//! Group commit: many concurrent writers, one flush. A caller of [`Store::durable`](super::Store::durable)
//! queues a waiter; one task takes every waiter queued so far, runs a single blocking flush on the
//! blocking pool and answers them all.

use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

use super::poisoned;

/// A caller waiting for a flush, with the database to flush (the task holds none between batches,
/// so dropping the store closes the database at once).
type Waiter = (oneshot::Sender<Result<(), String>>, sled::Db);

/// Group commit: callers queue a waiter; one task takes every waiter queued so far, runs a single
/// blocking `flush()` and answers them all. A waiter queued during a flush waits for the next one,
/// so each answer comes from a flush that began after that caller's writes.
pub(super) struct GroupCommit {
    queue: Mutex<Option<mpsc::UnboundedSender<Waiter>>>,
}

impl GroupCommit {
    pub(super) fn new() -> Self {
        GroupCommit {
            queue: Mutex::new(None),
        }
    }

    /// The queue to the flushing task, started on first use (it needs a Tokio runtime).
    fn sender(&self) -> anyhow::Result<mpsc::UnboundedSender<Waiter>> {
        let mut q = self.queue.lock().map_err(poisoned)?;
        if let Some(tx) = q.as_ref().filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // The task ends when the store (holding the only sender) is dropped.
        tokio::spawn(flush_loop(rx));
        *q = Some(tx.clone());
        Ok(tx)
    }

    pub(super) async fn wait(&self, db: &sled::Db) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send((tx, db.clone()))
            .map_err(|_| anyhow::anyhow!("the store's flush task has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the store's flush task has stopped"))?
            .map_err(|e| anyhow::anyhow!("flushing the store: {e}"))
    }
}

async fn flush_loop(mut rx: mpsc::UnboundedReceiver<Waiter>) {
    let mut batch: Vec<Waiter> = Vec::new();
    // `recv_many` waits for at least one waiter, then takes all that are queued.
    while rx.recv_many(&mut batch, usize::MAX).await > 0 {
        let db = batch[0].1.clone();
        let result = match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the flush task failed: {e}")),
        };
        for (waiter, _) in batch.drain(..) {
            // A caller that went away (its request was cancelled) no longer needs the answer.
            let _ = waiter.send(result.clone());
        }
    }
}

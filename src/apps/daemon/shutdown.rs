//! The shutdown, in order: servers drained, background work stopped, blocking store work
//! finished, the store closed, its committer awaited.

use super::*;

/// How long the background work (poll cycle, fetches, notify sends, the webhook watch) may take
/// to stop once the servers have drained; what still runs then is stopped where it is. With
/// [`GRACE`] for the servers, SIGTERM ends hookrace within about 15 s whatever it waits on (a
/// rate-limit pause, a slow AccessLink).
pub const BACKGROUND_GRACE: Duration = Duration::from_secs(5);

/// Waits for `shutdown`, then, in order: the servers stop accepting and drain their requests
/// within [`GRACE`] (each server closes what remains); the background tasks stop within
/// [`BACKGROUND_GRACE`] (aborted after it) and are awaited; the store is closed explicitly. No
/// task outlives this: the store is closed only when this task holds its last handle.
#[tracing::instrument(name = "shutdown", skip_all)]
pub(super) async fn shut_down(
    shutdown: CancellationToken,
    servers: Servers,
    background: Background,
    (store, tasks): (Arc<Store>, StoreTasks),
    holders_gone: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    use crate::process::stop_by;
    shutdown.cancelled().await;
    systemd::stopping();
    tracing::info!(
        grace_s = GRACE.as_secs(),
        "shutting down: draining in-flight requests"
    );
    servers.token.cancel();
    // Each server bounds its own drain by GRACE; the extra second covers closing what remains.
    let deadline = tokio::time::Instant::now() + GRACE + Duration::from_secs(1);
    stop_by("webhook listener", servers.public, deadline).await;
    stop_by("admin listener", servers.admin, deadline).await;
    let _ = tokio::time::timeout_at(deadline, servers.snapshots.stopped()).await;
    drop(servers.snapshots);

    background.token.cancel();
    let deadline = tokio::time::Instant::now() + BACKGROUND_GRACE;
    if let Some(p) = background.poller_task {
        stop_by("poller", p, deadline).await;
    }
    stop_by(crate::channels::fetcher::TASK, background.fetcher, deadline).await;
    // A sender stops at once (an event in flight stays pending: sent again after a restart,
    // under the same webhook-id).
    for sender in background.senders {
        stop_by("notify sender", sender, deadline).await;
    }
    if let Some(watch) = background.watch {
        stop_by("webhook watch", watch, deadline).await;
    }
    stop_by("watchdog", background.keep_alive, deadline).await;
    stop_by("rate-limit block", background.rate_block, deadline).await;
    stop_by("work feed", background.feed, deadline).await;
    drop(background.poller);
    // The caller's handle (`Running`) lets go of the store in `wait`.
    let _ = holders_gone.await;
    // Blocking work a stopped task left running (a scan, a re-queue) still holds the store:
    // it ends by itself, and the close waits for it.
    tasks.blocking.close();
    if tokio::time::timeout(GRACE, tasks.blocking.wait())
        .await
        .is_err()
    {
        tracing::warn!("blocking work on the store is still running at the end of the grace");
    }
    let closed = close_store(store).await;
    // The close was the committer's last request: it has ended, or ends now.
    stop_by(
        "store committer",
        tasks.committer,
        tokio::time::Instant::now() + GRACE,
    )
    .await;
    closed
}

/// Closes the store: the committer's last request. Whatever still holds a handle (a future
/// being dropped, a blocking call returning) can no longer write or commit, so nothing waits
/// for it to let go.
pub(super) async fn close_store(store: Arc<Store>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || store.close())
        .await
        .context("the closing task panicked")?
        .context(
            "closing the store (its final commit) failed: hookrace stopped; the next start \
             recounts from the store's records, and nothing answered 200 is lost",
        )
}

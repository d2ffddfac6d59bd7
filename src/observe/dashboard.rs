//! The live dashboard: `GET /` serves one self-contained page (no CDN, no fonts, no build step),
//! and `GET /events` pushes the race to it with server-sent events: a `status` event (the status
//! document) and an `entities` event (the newest entities) whenever the store changes, at most a
//! few times a second, and at least every few seconds so the page's clock stays honest. The
//! stream ends when the daemon shuts down; the browser's EventSource reconnects by itself.
//!
//! Open dashboards must not tax ingest: one snapshot is built per change and shared by every
//! stream (a stream that does not read is not polled and costs nothing), at most
//! [`MAX_STREAMS`] streams are open at once, and a connection whose reader stops taking bytes is
//! closed by the server's write-stall timeout.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt, stream};
use warp::sse::Event;

use tokio_util::sync::CancellationToken;

use super::View;

/// The page itself.
pub const PAGE: &str = include_str!("dashboard.html");

/// How many of the newest entities each `entities` event carries.
const ENTITIES_PER_EVENT: usize = 300;
/// Coalesce bursts of changes into one update.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Send an update at least this often, change or not.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// How many event streams may be open at once: the admin listener keeps room for `/healthz`,
/// `/status` and `/metrics` however many dashboards are open.
pub const MAX_STREAMS: usize = 16;

/// The two events describing the store at one moment, encoded once and shared by every stream.
#[derive(Debug, Default)]
pub struct Snapshot {
    status: Option<String>,
    entities: Option<String>,
}

impl Snapshot {
    /// The store now: the status document and the newest entities, encoded.
    pub fn build(view: &View) -> Snapshot {
        let status = match view.status() {
            Ok(doc) => serde_json::to_string(&doc)
                .map_err(|e| tracing::error!(error = %e, "encoding a status event"))
                .ok(),
            Err(e) => {
                tracing::error!(error = format_args!("{e:#}"), "building a status event");
                None
            }
        };
        let entities = match view.store.newest_entities(ENTITIES_PER_EVENT, None) {
            Ok(list) => {
                let views: Vec<_> = list.iter().map(|e| e.view()).collect();
                serde_json::to_string(&views).ok()
            }
            Err(e) => {
                tracing::error!(
                    error = format_args!("{e:#}"),
                    "reading entities for an event"
                );
                None
            }
        };
        Snapshot { status, entities }
    }

    /// Its events for one stream.
    pub fn events(&self) -> Vec<Event> {
        let mut events = Vec::with_capacity(2);
        if let Some(s) = &self.status {
            events.push(Event::default().event("status").data(s.clone()));
        }
        if let Some(e) = &self.entities {
            events.push(Event::default().event("entities").data(e.clone()));
        }
        events
    }
}

/// The snapshots every stream shares: one is built per change (debounced) or heartbeat while
/// at least one stream is open, however many are, and none while no dashboard is open.
pub struct Snapshots {
    view: View,
    latest: tokio::sync::watch::Sender<Arc<Snapshot>>,
    started: std::sync::Once,
    shutdown: CancellationToken,
    /// Limits the open streams ([`MAX_STREAMS`]).
    slots: Arc<tokio::sync::Semaphore>,
    /// Snapshots built so far (`hookrace_dashboard_snapshots_total`).
    built: Arc<AtomicU64>,
    /// The builder task, so shutdown can wait for it (it holds the store).
    tasks: tokio_util::task::TaskTracker,
}

impl Snapshots {
    pub fn new(view: View, shutdown: CancellationToken) -> Snapshots {
        Snapshots {
            view,
            latest: tokio::sync::watch::channel(Arc::new(Snapshot::default())).0,
            started: std::sync::Once::new(),
            shutdown,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
            built: Arc::new(AtomicU64::new(0)),
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Returns once the builder task has ended (it ends when its shutdown token is cancelled).
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Snapshots built so far.
    pub fn built(&self) -> u64 {
        self.built.load(Ordering::Relaxed)
    }

    /// Event streams open now.
    pub fn open_streams(&self) -> usize {
        MAX_STREAMS - self.slots.available_permits()
    }

    /// Starts the builder task (once, on the first stream).
    fn start(&self) {
        self.started.call_once(|| {
            let (view, latest, shutdown) = (
                self.view.clone(),
                self.latest.clone(),
                self.shutdown.clone(),
            );
            let built = self.built.clone();
            self.tasks.spawn(async move {
                let mut changes = view.store.subscribe();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        changed = tokio::time::timeout(HEARTBEAT, changes.changed()) => {
                            if let Ok(Err(_)) = changed {
                                return; // the store is gone
                            }
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(DEBOUNCE) => {}
                    }
                    changes.borrow_and_update();
                    if latest.receiver_count() == 0 {
                        continue; // no dashboard is open: build nothing
                    }
                    let view = view.clone();
                    let snapshot = tokio::task::spawn_blocking(move || Snapshot::build(&view))
                        .await
                        .unwrap_or_default();
                    built.fetch_add(1, Ordering::Relaxed);
                    latest.send_replace(Arc::new(snapshot));
                }
            });
        });
    }

    /// A new event stream: a snapshot now, then the shared one after each change or heartbeat,
    /// until shutdown; `None` when [`MAX_STREAMS`] are open already.
    pub fn stream(
        self: &Arc<Self>,
    ) -> Option<impl Stream<Item = Result<Event, Infallible>> + Send + use<>> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        self.start();
        let mut updates = self.latest.subscribe();
        updates.mark_unchanged();
        let now = Snapshot::build(&self.view);
        self.built.fetch_add(1, Ordering::Relaxed);
        let first = stream::iter(
            std::iter::once(Event::default().retry(Duration::from_secs(2)))
                .chain(now.events())
                .map(Ok),
        );
        let (shutdown, view) = (self.shutdown.clone(), self.view.clone());
        // At shutdown a stream ends with the final state and an `end` event (the page then stops
        // reconnecting and says the race is over), instead of freezing on an older snapshot.
        let rest = stream::unfold(Some((updates, slot)), move |open| {
            let (shutdown, view) = (shutdown.clone(), view.clone());
            async move {
                let (mut updates, slot) = open?;
                let ended = tokio::select! {
                    _ = shutdown.cancelled() => true,
                    changed = updates.changed() => changed.is_err(),
                };
                if ended {
                    let mut last = Snapshot::build(&view).events();
                    last.push(Event::default().event("end").data("hookrace stopped"));
                    drop(slot);
                    return Some((stream::iter(last.into_iter().map(Ok)), None));
                }
                let batch = updates.borrow_and_update().events();
                Some((
                    stream::iter(batch.into_iter().map(Ok)),
                    Some((updates, slot)),
                ))
            }
        })
        .flatten();
        Some(first.chain(rest))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_is_self_contained() {
        let page = super::PAGE;
        for external in ["http://", "https://", "@import", "<link", "src=\""] {
            assert!(!page.contains(external), "the page loads {external}");
        }
        assert!(page.contains("new EventSource(\"events\""));
    }
}

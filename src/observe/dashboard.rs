//! The live dashboard: `GET /` serves one self-contained page (no CDN, no fonts, no build step),
//! and `GET /events` pushes the race to it with server-sent events: a `status` event (the status
//! document) and an `entities` event (the newest entities) whenever the store changes, at most a
//! few times a second, and at least every few seconds so the page's clock stays honest. The
//! stream ends when the daemon shuts down; the browser's EventSource reconnects by itself.

use std::convert::Infallible;
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

/// The two events describing the store now.
pub fn snapshot(view: &View) -> Vec<Event> {
    let mut events = Vec::with_capacity(2);
    match view.status() {
        Ok(doc) => match Event::default().event("status").json_data(&doc) {
            Ok(e) => events.push(e),
            Err(e) => tracing::error!(error = %e, "encoding a status event"),
        },
        Err(e) => tracing::error!(error = format_args!("{e:#}"), "building a status event"),
    }
    match view.store.newest_entities(ENTITIES_PER_EVENT, None) {
        Ok(list) => {
            let views: Vec<_> = list.iter().map(|e| e.view()).collect();
            if let Ok(e) = Event::default().event("entities").json_data(&views) {
                events.push(e);
            }
        }
        Err(e) => tracing::error!(
            error = format_args!("{e:#}"),
            "reading entities for an event"
        ),
    }
    events
}

/// The event stream: a snapshot now, then one after each change (debounced) or heartbeat, until
/// `shutdown` is cancelled (the streams would otherwise outlive the server's drain).
pub fn events(
    view: View,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let changes = view.store.subscribe();
    let first = stream::iter(
        std::iter::once(Event::default().retry(Duration::from_secs(2)))
            .chain(snapshot(&view))
            .map(Ok),
    );
    let updates = stream::unfold((view, changes), move |(view, mut changes)| {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                changed = tokio::time::timeout(HEARTBEAT, changes.changed()) => {
                    if let Ok(Err(_)) = changed {
                        return None; // the store is gone
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(DEBOUNCE) => {}
            }
            changes.borrow_and_update();
            let batch = snapshot(&view);
            Some((stream::iter(batch.into_iter().map(Ok)), (view, changes)))
        }
    })
    .flatten();
    first.chain(updates)
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

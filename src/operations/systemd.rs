//! systemd integration (`Type=notify`): READY once the listeners serve, STATUS lines with the
//! race so far, WATCHDOG pings only while the store answers and every background task is alive,
//! and STOPPING when shutdown begins. Without `NOTIFY_SOCKET` every call does nothing.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::counter;
use crate::process::Liveness;
use crate::race::{Summary, Tally};
use crate::store::Store;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// A one-line summary for `systemctl status`.
pub fn status_line(store: &Store, s: &Summary) -> String {
    let (total, wh, poll) = (s.total, s.first_by_webhook, s.first_by_poll);
    format!(
        "{total} entities ({wh} first by webhook, {poll} first by poll); {} deliveries; {} poll cycles",
        store.counter(counter::Counter::WebhookDeliveries),
        store.counter(counter::Counter::PollCycles)
    )
}

pub fn ready(store: &Store, summary: &Summary) {
    let line = status_line(store, summary);
    send(&[NotifyState::Ready, NotifyState::Status(&line)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// Keeps the watchdog fed (while healthy) and the status line fresh, until `shutdown`.
pub async fn keep_alive(
    store: Arc<Store>,
    tally: Arc<Tally>,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
) {
    let mut usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec);
    let every = if watchdog {
        Duration::from_micros(usec / 2).max(Duration::from_millis(50))
    } else {
        Duration::from_secs(10)
    };
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let dead = liveness.dead();
        let problem = store.problem();
        let healthy = problem.is_none() && dead.is_empty();
        let line = match (problem, dead.is_empty()) {
            (None, true) => status_line(&store, &tally.summary()),
            (Some(problem), _) => format!("unhealthy: store: {problem}"),
            (None, false) => format!("unhealthy: stopped tasks: {}", dead.join(", ")),
        };
        if watchdog && healthy {
            send(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
        } else {
            // No ping: systemd restarts the service when the watchdog period passes.
            send(&[NotifyState::Status(&line)]);
        }
    }
}

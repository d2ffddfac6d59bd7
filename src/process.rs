//! What the running process knows that the store does not: when it started, the poller's
//! schedule ([`Runtime`]) and which background tasks are alive ([`Liveness`]).
//!
//! It sits at the bottom so that the channels can write these facts and the observers and
//! systemd can read them without importing one another.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the running process knows that the store does not.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub started_at: DateTime<Utc>,
    pub poll_enabled: bool,
    pub last_cycle_at: Option<DateTime<Utc>>,
    pub next_cycle_at: Option<DateTime<Utc>>,
    /// The configured notify sinks, in configuration order.
    pub notify_sinks: Vec<SinkInfo>,
    /// What the webhook watch last found (`channels::watch`).
    pub webhook_health: WebhookHealth,
    /// The poll strategy and the interval in force.
    pub poll_pace: PollPace,
    /// Each listener's connections against its cap (load, not liveness).
    pub listeners: Vec<Arc<ListenerGauge>>,
}

/// One listener's load: open connections against its cap, and when it was full. A full listener
/// is load, not death: it is shown in `/status` and `/metrics`, never in liveness, so a flood of
/// connections slows hookrace down without making systemd restart it.
#[derive(Debug)]
pub struct ListenerGauge {
    pub name: &'static str,
    pub max: usize,
    open: AtomicUsize,
    times_full: AtomicU64,
    /// Milliseconds since the epoch when the current full episode began; 0 when not full.
    full_since_ms: AtomicI64,
}

impl ListenerGauge {
    pub fn new(name: &'static str, max: usize) -> Arc<ListenerGauge> {
        Arc::new(ListenerGauge {
            name,
            max,
            open: AtomicUsize::new(0),
            times_full: AtomicU64::new(0),
            full_since_ms: AtomicI64::new(0),
        })
    }

    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Marks the listener full (true: an episode starts, counted) or not.
    pub fn set_full(&self, full: bool) {
        if full {
            let now = Utc::now().timestamp_millis().max(1);
            if self.full_since_ms.swap(now, Ordering::Relaxed) == 0 {
                self.times_full.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.full_since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Since when the listener is full, if it is.
    pub fn full_since(&self) -> Option<DateTime<Utc>> {
        match self.full_since_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }

    /// Full episodes so far.
    pub fn times_full(&self) -> u64 {
        self.times_full.load(Ordering::Relaxed)
    }
}

/// What the webhook watch knows of the webhook at AccessLink.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebhookHealth {
    /// Whether the webhook exists, is active and points at the public URL; `None` before the
    /// first check (or when the watch is off).
    pub active: Option<bool>,
    pub checked_at: Option<DateTime<Utc>>,
    /// Checks that found it inactive (or missing, or pointing elsewhere).
    pub deactivated_seen: u64,
    /// Times hookrace reactivated it.
    pub reactivations: u64,
    pub last_problem: Option<String>,
    /// What the last check found, by name: `healthy`, `inactive`, `reactivated`, `missing`,
    /// `points_elsewhere` (active, but posting to another URL than `public_url`) or `unknown`.
    #[serde(default)]
    pub state: Option<String>,
}

/// The poll strategy and its current interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollPace {
    /// `fixed` or `adaptive`.
    pub strategy: String,
    /// The interval in force (`None` for a cron schedule).
    pub interval: Option<std::time::Duration>,
    /// Why the auditor polls at this pace (adaptive only).
    pub reason: Option<String>,
}

impl From<&crate::config::NotifyConfig> for SinkInfo {
    fn from(c: &crate::config::NotifyConfig) -> SinkInfo {
        use crate::config::NotifyKind;
        SinkInfo {
            name: c.name.clone(),
            kind: c.kind.name().to_string(),
            target: match &c.kind {
                NotifyKind::Webhook { url, .. } | NotifyKind::Ntfy { url, .. } => {
                    crate::http::redacted(url)
                }
                NotifyKind::Exec { command, .. } => command.join(" "),
            },
        }
    }
}

/// A notify sink as `/status` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkInfo {
    pub name: String,
    pub kind: String,
    /// Its URL, or its command.
    pub target: String,
}

/// Background tasks report here whether they are alive; `/healthz` fails when one is not.
#[derive(Debug, Default)]
pub struct Liveness {
    tasks: Mutex<BTreeMap<String, bool>>,
}

impl Liveness {
    /// Marks a task alive (on start) or dead (when it stops unexpectedly).
    pub fn set(&self, task: &str, alive: bool) {
        if let Ok(mut t) = self.tasks.lock() {
            t.insert(task.to_string(), alive);
        }
    }

    /// Names of the tasks that are not alive.
    pub fn dead(&self) -> Vec<String> {
        match self.tasks.lock() {
            Ok(t) => t
                .iter()
                .filter(|(_, alive)| !**alive)
                .map(|(n, _)| n.clone())
                .collect(),
            Err(_) => vec!["liveness registry".into()],
        }
    }
}

/// Runs a background task, marked alive in `liveness` while it runs. A task that returns before
/// `shutdown` or that panics (a panic ends only its own task: nothing else would notice) is marked
/// dead, so `/healthz` fails and the watchdog stops being fed. One task: aborting the handle
/// drops the work itself (shutdown relies on it to bound its wait).
pub fn supervise(
    name: &'static str,
    liveness: &Arc<Liveness>,
    shutdown: &CancellationToken,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    use futures_util::FutureExt;
    liveness.set(name, true);
    let (liveness, shutdown) = (liveness.clone(), shutdown.clone());
    crate::tasks::spawn(name, async move {
        match std::panic::AssertUnwindSafe(task).catch_unwind().await {
            Ok(()) if shutdown.is_cancelled() => {}
            Ok(()) => {
                tracing::error!(task = name, "a background task stopped unexpectedly");
                liveness.set(name, false);
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!(task = name, error = %why, "a background task panicked");
                liveness.set(name, false);
            }
        }
    })
}

/// Waits for a task until `deadline`, then aborts it and waits for it to be dropped: once this
/// returns, the task holds nothing (no store, no connection). Says which task was cut short.
pub async fn stop_by(name: &str, mut task: JoinHandle<()>, deadline: tokio::time::Instant) {
    if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
        tracing::warn!(
            task = name,
            "still running at the end of the shutdown grace: stopped where it was"
        );
        task.abort();
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_dead() {
        let liveness = Arc::new(Liveness::default());
        let shutdown = CancellationToken::new();
        let handle = supervise("doomed", &liveness, &shutdown, async {
            panic!("an upstream value overflowed");
        });
        handle.await.unwrap();
        assert_eq!(liveness.dead(), ["doomed"]);
        let calm = supervise("calm", &liveness, &shutdown, async {});
        shutdown.cancel();
        calm.await.unwrap();
        assert_eq!(
            liveness.dead(),
            ["doomed"],
            "a task ending at shutdown is not dead"
        );
    }
}

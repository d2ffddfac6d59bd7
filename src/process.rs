//! What the running process knows that the store does not: when it started, the poller's
//! schedule ([`Runtime`]) and which background tasks are alive ([`Liveness`]).
//!
//! It sits at the bottom so that the channels can write these facts and the observers and
//! systemd can read them without importing one another.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// What the running process knows that the store does not.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub started_at: DateTime<Utc>,
    pub poll_enabled: bool,
    pub last_cycle_at: Option<DateTime<Utc>>,
    pub next_cycle_at: Option<DateTime<Utc>>,
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

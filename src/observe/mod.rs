//! What an operator sees: the [`admin`] listener's routes, the [`status`] document, the
//! [`metrics`] exposition, the orchestrator's [`probes`] and the live [`dashboard`] (its browser
//! [`session`]s).
//!
//! Observers only read. They import `store`, `race`, `process` and `config`'s `Secret`; each of
//! them works from a [`View`], never from another observer's state. Routes that change things
//! (user management, the webhook secret) belong to `operations` and are handed to
//! [`admin::routes`] by the daemon.

pub mod admin;
pub mod dashboard;
pub mod metrics;
pub mod probes;
pub mod session;
pub mod status;

use std::sync::{Arc, RwLock};

use crate::channels::fetch_queue::FetchQueue;
use crate::notify::Outbox;
use crate::process::Runtime;
use crate::race::Tally;
use crate::store::Store;

/// The consumers' queues an observer reads: the fetcher's jobs and the notify outbox.
#[derive(Clone, Default)]
pub struct Queues {
    pub fetches: Arc<FetchQueue>,
    pub outbox: Arc<Outbox>,
}

impl Queues {
    /// The queues as a scan of the records fills them (blocking): for a command that reads a
    /// store no daemon runs on.
    pub fn scanned(store: &Store) -> anyhow::Result<Queues> {
        use crate::store::Keeper;
        let q = Queues::default();
        store.scan_work(|w| {
            q.fetches.scanned(&w);
            q.outbox.scanned(&w);
        })?;
        Ok(q)
    }
}

/// The read-only view every observer works from: the store, the consumers' queues, the race's
/// tally and the process's own facts.
#[derive(Clone)]
pub struct View {
    pub store: Arc<Store>,
    pub queues: Queues,
    /// The race's figures, fed by the store's commits.
    pub tally: Arc<Tally>,
    pub runtime: Arc<RwLock<Runtime>>,
    /// The daemon's AccessLink client, for its rate-limit state (none offline).
    pub client: Option<Arc<crate::accesslink::client::Client>>,
}

impl View {
    /// A copy of the process's facts (a poisoned lock still holds valid data: every writer
    /// replaces whole fields).
    pub fn runtime(&self) -> Runtime {
        match self.runtime.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The status document as of now.
    pub fn status(&self) -> anyhow::Result<status::StatusDoc> {
        let summary = self.tally.summary();
        let mut doc = status::build(&self.store, &self.queues, &summary, &self.runtime())?;
        doc.accesslink = self.client.as_ref().map(|c| status::AccessLinkStatus {
            rate_limit: status::RateLimitStatus::from_client(&c.rate_state()),
        });
        if let Some((a, c)) = doc.accesslink.as_ref().zip(self.client.as_ref()) {
            let backlog = &mut doc.webhook.fetch_backlog;
            backlog.drain_seconds = backlog.drain_at(&a.rate_limit, c.reserve());
        }
        Ok(doc)
    }
}

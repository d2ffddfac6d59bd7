//! The webhook data fetcher: after a delivery has been answered 200, fetch the data its `url`
//! points to with the user's token, and record it with the entity.
//!
//! Jobs live in the entities' records (written with the delivery, in one write) and are taken in
//! due order, so they survive a restart; a job that
//! fails for a passing reason (5xx, timeout, 429) is retried with growing delays; one that cannot
//! succeed (401: the user disconnected; 403; 404; a URL outside the AccessLink base) is given up
//! and recorded on the entity. The fetcher never requests a URL outside the configured base URL.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::accesslink::client::{ApiError, Auth, Client, Outcome};
use crate::accesslink::data;
use crate::store::{FetchJob, Store, counter};

/// Attempts before a fetch is given up.
const MAX_ATTEMPTS: u32 = 8;

pub struct Fetcher {
    pub store: Arc<Store>,
    pub client: Arc<Client>,
    /// Woken when a job is queued.
    pub wake: Notify,
}

impl Fetcher {
    pub fn new(store: Arc<Store>, client: Arc<Client>) -> Arc<Fetcher> {
        Arc::new(Fetcher {
            store,
            client,
            wake: Notify::new(),
        })
    }

    /// Wakes the worker: a delivery's batch queued a job.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until cancelled: takes due jobs in due order, one at a time.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // The pending jobs are in the records: put them in due order (a scan, in the background,
        // so a large store does not delay start-up; deliveries add theirs meanwhile).
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.load_fetch_queue()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(pending = n, "webhook fetches still to do"),
            Ok(Err(e)) => tracing::error!(error = format_args!("{e:#}"), "loading pending fetches"),
            Err(e) => tracing::error!(error = %e, "the scan for pending fetches failed"),
        }
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let next = match self.store.next_fetch() {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = format_args!("{e:#}"), "reading the fetch queue");
                    None
                }
            };
            let sleep = match next {
                Some((key, job)) if job.next_at <= Utc::now() => {
                    self.fetch_one(&key, job).await;
                    continue;
                }
                Some((_, job)) => (job.next_at - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    async fn fetch_one(&self, key: &str, mut job: FetchJob) {
        // The job came from the entity's record (`next_fetch`): it is still due.
        let store = &self.store;
        let observe = |o: Outcome| {
            let _ = store.incr(counter::WEBHOOK_FETCH_REQUESTS, 1);
            let _ = store.incr(&format!("{}{}", counter::FETCH_OUTCOME_PREFIX, o.name()), 1);
        };
        let user = match store.user(job.user_id) {
            Ok(Some(u)) if u.disconnected_at.is_none() => u,
            Ok(Some(_)) => return self.give_up(key, "the user is disconnected"),
            Ok(None) => {
                return self.give_up(key, "no access token is known for this user");
            }
            Err(e) => {
                tracing::error!(error = format_args!("{e:#}"), "reading a user");
                return;
            }
        };
        let result = self
            .client
            .get_json(&job.url, Auth::Bearer(&user.access_token), &observe)
            .await;
        match result {
            Ok(Some(v)) => {
                let id = data::identify(&job.event, job.user_id, &v);
                match store.record_fetched(key, &id, &v) {
                    Ok(()) => {
                        let _ = store.incr(counter::WEBHOOK_FETCHES_OK, 1);
                        tracing::info!(
                            entity = key,
                            fingerprint = id.fingerprint.as_deref().unwrap_or("-"),
                            "fetched webhook data"
                        );
                    }
                    Err(e) => {
                        tracing::error!(
                            entity = key,
                            error = format_args!("{e:#}"),
                            "storing fetched data"
                        );
                    }
                }
            }
            Ok(None) => self.give_up(key, "AccessLink has no data at the delivery's url (204)"),
            Err(ApiError::Unauthorized { .. }) => {
                let _ = store.mark_disconnected(job.user_id, "401 while fetching webhook data");
                self.give_up(key, "401: the user's token is no longer valid");
            }
            Err(
                e @ (ApiError::ForeignUrl { .. }
                | ApiError::Forbidden { .. }
                | ApiError::Decode { .. }),
            ) => {
                self.give_up(key, &e.to_string());
            }
            Err(e @ ApiError::Status { status: 404, .. }) => self.give_up(key, &e.to_string()),
            Err(e) => {
                job.attempts += 1;
                if job.attempts >= MAX_ATTEMPTS {
                    return self.give_up(key, &format!("{e} (after {} attempts)", job.attempts));
                }
                let delay = match &e {
                    ApiError::RateLimited { reset, .. } => *reset,
                    _ => Duration::from_secs(2u64.pow(job.attempts).min(600)),
                };
                job.next_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                tracing::warn!(entity = key, error = %e, retry_in_s = delay.as_secs(), "fetch failed; will retry");
                if let Err(e) = store.reschedule_fetch(key, &job) {
                    tracing::error!(error = format_args!("{e:#}"), "requeueing a fetch");
                }
            }
        }
    }

    fn give_up(&self, key: &str, reason: &str) {
        tracing::warn!(entity = key, reason, "webhook data not fetched");
        let _ = self.store.incr(counter::WEBHOOK_FETCHES_FAILED, 1);
        let _ = self.store.fetch_failed(key, reason);
    }
}

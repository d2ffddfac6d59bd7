//! The webhook data fetcher: after a delivery has been answered 200, fetch the data its `url`
//! points to with the user's token, and record it with the entity.
//!
//! Jobs live in the store's `fetch_queue` (ordered by due time), so they survive a restart; a job that
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
                Some((queue_key, key, job)) if job.next_at <= Utc::now() => {
                    self.fetch_one(&queue_key, &key, job).await;
                    continue;
                }
                Some((_, _, job)) => (job.next_at - Utc::now())
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

    async fn fetch_one(&self, queue_key: &[u8], key: &str, mut job: FetchJob) {
        let store = &self.store;
        // A job for data already fetched (or given up) has nothing left to do: fetch once.
        match store.entity(key) {
            Ok(Some(e)) if e.fetched || e.fetch_error.is_some() => {
                let _ = store.dequeue_fetch(queue_key);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(
                    entity = key,
                    error = format_args!("{e:#}"),
                    "reading an entity"
                );
                return;
            }
        }
        let observe = |o: Outcome| {
            let _ = store.incr(counter::WEBHOOK_FETCH_REQUESTS, 1);
            let _ = store.incr(&format!("{}{}", counter::FETCH_OUTCOME_PREFIX, o.name()), 1);
        };
        let user = match store.user(job.user_id) {
            Ok(Some(u)) if u.disconnected_at.is_none() => u,
            Ok(Some(_)) => return self.give_up(queue_key, key, "the user is disconnected"),
            Ok(None) => {
                return self.give_up(queue_key, key, "no access token is known for this user");
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
                        let _ = store.dequeue_fetch(queue_key);
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
            Ok(None) => self.give_up(
                queue_key,
                key,
                "AccessLink has no data at the delivery's url (204)",
            ),
            Err(ApiError::Unauthorized { .. }) => {
                let _ = store.mark_disconnected(job.user_id, "401 while fetching webhook data");
                self.give_up(queue_key, key, "401: the user's token is no longer valid");
            }
            Err(
                e @ (ApiError::ForeignUrl { .. }
                | ApiError::Forbidden { .. }
                | ApiError::Decode { .. }),
            ) => {
                self.give_up(queue_key, key, &e.to_string());
            }
            Err(e @ ApiError::Status { status: 404, .. }) => {
                self.give_up(queue_key, key, &e.to_string())
            }
            Err(e) => {
                job.attempts += 1;
                if job.attempts >= MAX_ATTEMPTS {
                    return self.give_up(
                        queue_key,
                        key,
                        &format!("{e} (after {} attempts)", job.attempts),
                    );
                }
                let delay = match &e {
                    ApiError::RateLimited { reset, .. } => *reset,
                    _ => Duration::from_secs(2u64.pow(job.attempts).min(600)),
                };
                job.next_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                tracing::warn!(entity = key, error = %e, retry_in_s = delay.as_secs(), "fetch failed; will retry");
                // One transaction replaces the entity's entry with the later one.
                if let Err(e) = store.enqueue_fetch(key, &job) {
                    tracing::error!(error = format_args!("{e:#}"), "requeueing a fetch");
                }
            }
        }
    }

    fn give_up(&self, queue_key: &[u8], key: &str, reason: &str) {
        tracing::warn!(entity = key, reason, "webhook data not fetched");
        let _ = self.store.incr(counter::WEBHOOK_FETCHES_FAILED, 1);
        let _ = self.store.fetch_failed(key, reason);
        let _ = self.store.dequeue_fetch(queue_key);
    }
}

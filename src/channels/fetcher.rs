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

use anyhow::Context;
use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::accesslink::client::{ApiError, Auth, Client, Outcome};
use crate::accesslink::data;
use crate::accesslink::identity::{EntityKey, EventType};
use crate::channels::fetch_queue::{Due, FetchQueue};
use crate::counter;
use crate::process::Liveness;
use crate::retry::{Attempt, Decision, Limit, RetryPolicy};
use crate::store::{FetchJob, Store};

/// A fetch's retries: up to 2 s, 4 s, 8 s, … (full jitter), at most 10 minutes apart, 8 attempts
/// in all.
const RETRY: RetryPolicy = RetryPolicy {
    base: Duration::from_secs(2),
    cap: Duration::from_secs(600),
    limit: Limit::Attempts(8),
};

pub struct Fetcher {
    pub store: Arc<Store>,
    pub client: Arc<Client>,
    /// The jobs in due order (fed by the store's commits; the fetcher's own results update it).
    pub queue: Arc<FetchQueue>,
    /// Where the worker says it is stuck: while it cannot use the store, `/healthz` fails.
    liveness: Arc<Liveness>,
}

/// The fetcher's name in [`Liveness`].
pub const TASK: &str = "fetcher";

impl Fetcher {
    pub fn new(
        store: Arc<Store>,
        client: Arc<Client>,
        queue: Arc<FetchQueue>,
        liveness: Arc<Liveness>,
    ) -> Arc<Fetcher> {
        Arc::new(Fetcher {
            store,
            client,
            queue,
            liveness,
        })
    }

    /// Runs until cancelled: takes due jobs in due order, up to [`FETCHES_IN_FLIGHT`] at a time
    /// (their commits share the group commit, so the fetcher keeps up with a burst of deliveries
    /// instead of waiting for one sync per job).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // After a store error the worker pauses, doubling up to a minute, instead of taking the
        // same job again at once (which would request AccessLink in a tight loop).
        let mut trouble = Trouble::default();
        let mut in_flight: JoinSet<anyhow::Result<()>> = JoinSet::new();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // A job that arrives while the worker looks leaves a permit: the wait ends at once.
            let arrived = self.queue.arrived();
            let mut wait = Duration::from_secs(3600);
            match trouble.paused_for() {
                Some(left) => wait = left,
                None => {
                    let mut failed = false;
                    while in_flight.len() < FETCHES_IN_FLIGHT {
                        match self.queue.take_due(&self.store) {
                            Ok(Due::Job(key, job)) => {
                                let me = self.clone();
                                in_flight.spawn(async move {
                                    let taken = key.clone();
                                    let result = me.fetch_and_commit(key, job).await;
                                    me.queue.release(&taken);
                                    result
                                });
                            }
                            Ok(Due::Later(after)) => {
                                wait = after;
                                break;
                            }
                            // Nothing pending: the queue wakes the worker when a commit brings
                            // a job.
                            Ok(Due::Nothing) => break,
                            Err(e) => {
                                wait = trouble
                                    .failed(&self.liveness, &e.context("reading the fetch queue"));
                                failed = true;
                                break;
                            }
                        }
                    }
                    if !failed {
                        trouble.recovered(&self.liveness);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    let result = done.unwrap_or_else(|e| {
                        Err(anyhow::Error::new(e).context("a fetch task failed"))
                    });
                    match result {
                        Ok(()) => trouble.recovered(&self.liveness),
                        Err(e) => {
                            trouble.failed(&self.liveness, &e);
                        }
                    }
                }
                _ = arrived => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // The client's waits end at shutdown: the fetches in flight end at once (a job cut short
        // stays in its record, fetched after the restart).
        while in_flight.join_next().await.is_some() {}
    }

    /// Fetches one job, commits what that wrote, then reports it.
    async fn fetch_and_commit(&self, key: EntityKey, job: FetchJob) -> anyhow::Result<()> {
        let done = self.fetch_one(&key, job).await?;
        self.store
            .durable()
            .await
            .map_err(|e| e.context(format!("committing the fetch of {key}")))?;
        if matches!(done, Done::Fetched { .. }) {
            self.queue.remove(&key);
        }
        done.report(&self.store, &key);
        Ok(())
    }

    /// Fetches one due job. Every outcome ends the job (done or given up) or reschedules it; an
    /// error means the store could not record either, and the caller pauses. The caller commits
    /// what this wrote, then reports it.
    #[tracing::instrument(name = "fetch", skip_all, fields(entity = %key, attempt = job.attempts))]
    async fn fetch_one(&self, key: &EntityKey, job: FetchJob) -> anyhow::Result<Done> {
        // The job came from the entity's record (`FetchQueue::next_due`): it is still due.
        let store = &self.store;
        let observe = |o: Outcome| {
            store.incr(counter::Counter::WebhookFetchRequests, 1);
            store.incr(counter::Counter::FetchOutcome(o), 1);
        };
        let user = match crate::credentials::user(store, job.user_id) {
            Ok(Some(u)) if u.disconnected_at.is_none() => u,
            Ok(Some(_)) => return self.give_up(key, &job.event, "the user is disconnected"),
            Ok(None) => {
                return self.give_up(key, &job.event, "no access token is known for this user");
            }
            Err(e) => return self.retry_later(key, job, &format!("reading the user: {e:#}"), None),
        };
        let result = self
            .client
            .get_json(&job.url, Auth::Bearer(&user.access_token), &observe)
            .await;
        match result {
            Ok(Some(v)) => {
                // The id the delivery announced (`TYPE/user/id`): daily answers omit the date.
                let announced = key.entity_id();
                let id = data::identify(&job.event, job.user_id, &v, announced);
                match store.record_fetched(key, &id, &v) {
                    Ok(()) => Ok(Done::Fetched {
                        fingerprint: id.fingerprint,
                    }),
                    Err(e) => self.retry_later(
                        key,
                        job,
                        &format!("storing the fetched data: {e:#}"),
                        None,
                    ),
                }
            }
            Ok(None) => self.give_up(
                key,
                &job.event,
                "AccessLink has no data at the delivery's url (204)",
            ),
            // The job stays in its record: the next start fetches it.
            Err(ApiError::ShuttingDown { .. }) => Ok(Done::Other),
            Err(ApiError::Unauthorized { .. }) => {
                crate::credentials::mark_disconnected(
                    store,
                    job.user_id,
                    "401 while fetching webhook data",
                )
                .context("marking the user disconnected")?;
                self.give_up(key, &job.event, "401: the user's token is no longer valid")
            }
            Err(
                e @ (ApiError::ForeignUrl { .. }
                | ApiError::Forbidden { .. }
                | ApiError::Decode { .. }),
            ) => self.give_up(key, &job.event, &e.to_string()),
            Err(e @ ApiError::Status { status: 404, .. }) => {
                self.give_up(key, &job.event, &e.to_string())
            }
            // AccessLink's data URLs answer directly; a redirect is never followed (it could lead
            // past the base-URL guard with the user's token).
            Err(
                e @ ApiError::Status {
                    status: 300..=399, ..
                },
            ) => self.give_up(
                key,
                &job.event,
                &format!("{e} (redirects are not followed)"),
            ),
            Err(e) => {
                let wait = match &e {
                    ApiError::RateLimited { reset, .. } => Some(*reset),
                    _ => None,
                };
                self.retry_later(key, job, &e.to_string(), wait)
            }
        }
    }

    /// The one path for a failure that may pass: try again after `wait` (default: growing with
    /// the attempts), or give up after `MAX_ATTEMPTS`.
    fn retry_later(
        &self,
        key: &EntityKey,
        mut job: FetchJob,
        reason: &str,
        wait: Option<Duration>,
    ) -> anyhow::Result<Done> {
        let attempt = Attempt::Transient {
            reason: reason.to_string(),
            wait,
        };
        let delay = match RETRY.decide_now(attempt, job.attempts, Duration::ZERO) {
            Decision::Retry { after, attempt } => {
                job.attempts = attempt;
                after
            }
            Decision::GiveUp(why) => return self.give_up(key, &job.event, &why),
            Decision::Done => return Ok(Done::Other),
        };
        job.next_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        tracing::warn!(
            entity = %key,
            reason,
            retry_in_s = delay.as_secs(),
            "fetch failed; will retry"
        );
        let at = self.store.reschedule_fetch(key, &job)?;
        self.queue.put(&at, job.next_at);
        Ok(Done::Other)
    }

    fn give_up(&self, key: &EntityKey, kind: &EventType, reason: &str) -> anyhow::Result<Done> {
        tracing::warn!(entity = %key, reason, "webhook data not fetched");
        let at = self
            .store
            .fetch_failed(key, kind, reason)
            .with_context(|| format!("recording that the fetch of {key} failed"))?;
        self.queue.remove(key);
        if let Some(at) = at {
            self.queue.remove(&at);
        }
        self.store.incr(counter::Counter::WebhookFetchesFailed, 1);
        Ok(Done::Other)
    }
}

/// How many jobs the fetcher works on at once.
pub const FETCHES_IN_FLIGHT: usize = 8;

/// The fetcher's trouble with the store: after an error it pauses, doubling up to a minute.
#[derive(Default)]
struct Trouble {
    pause: Duration,
    until: Option<tokio::time::Instant>,
}

impl Trouble {
    /// How much of the pause is left, if the fetcher is paused.
    fn paused_for(&self) -> Option<Duration> {
        let left = self
            .until?
            .checked_duration_since(tokio::time::Instant::now())?;
        (!left.is_zero()).then_some(left)
    }

    /// An error: not alive while stuck (`/healthz` fails and systemd's watchdog may restart);
    /// returns the pause.
    fn failed(&mut self, liveness: &Liveness, e: &anyhow::Error) -> Duration {
        // The jobs in flight fail together: one pause for them all, doubled only by a failure
        // after it.
        if self.paused_for().is_none() {
            self.pause = (self.pause * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
            self.until = Some(tokio::time::Instant::now() + self.pause);
        }
        liveness.set(TASK, false);
        tracing::error!(
            error = format_args!("{e:#}"),
            retry_in_s = self.pause.as_secs(),
            "the fetcher cannot use the store"
        );
        self.pause
    }

    fn recovered(&mut self, liveness: &Liveness) {
        if !self.pause.is_zero() && self.paused_for().is_none() {
            tracing::info!("the fetcher can use the store again");
            *self = Trouble::default();
            liveness.set(TASK, true);
        }
    }
}

/// What one fetch stored, to report once it is committed.
enum Done {
    /// The data is stored with its entity.
    Fetched { fingerprint: Option<String> },
    /// Given up, rescheduled or left for the next start (said when it happened).
    Other,
}

impl Done {
    fn report(self, store: &Store, key: &EntityKey) {
        if let Done::Fetched { fingerprint } = self {
            store.incr(counter::Counter::WebhookFetchesOk, 1);
            tracing::info!(
                entity = %key,
                fingerprint = fingerprint.as_deref().unwrap_or("-"),
                "fetched webhook data (committed)"
            );
        }
    }
}

//! The callback's second hop: hookrace tells your app about every new entity, through the events
//! kept in the records (`store/notices.rs`), the outbox that queues them once they are durable
//! (`outbox.rs`) and the sinks in `[[notify]]` (`sink.rs`).
//!
//! One sender task per sink takes the sink's next due event from the outbox (which holds only
//! events a commit has made durable, so a crash cannot send an event it then forgets) and sends
//! it. 2xx (or exit 0) marks it sent; 410 parks every event of the sink until
//! `POST /notify/retry`; anything else retries with exponential backoff and full jitter until
//! `give_up_after` has passed, then parks it as failed. The senders never block the webhook route
//! or the poller: those only write the record (and wake the senders).

use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::accesslink::identity::EntityKey;
use crate::config::NotifyConfig;
use crate::retry::{self, Decision, Limit, RetryPolicy};
use crate::store::{DueNotice, NoticeRoute, Store};

pub mod event;
pub mod outbox;
pub mod sink;

pub use outbox::Outbox;

/// Attempts to send to one sink (`notify.attempts.app`, …): the notify sender's own count, kept
/// by the store like any other, and named by the configuration (a sink's `name`), so it is not
/// one of the fixed [`counter::Counter`]s.
#[derive(Debug, Clone, Copy)]
pub struct SinkAttempts<'a>(pub &'a str);

impl crate::store::CounterName for SinkAttempts<'_> {
    fn name(&self) -> std::borrow::Cow<'static, str> {
        format!("notify.attempts.{}", self.0).into()
    }
}
pub use sink::{Attempt, Sink};

/// An event's retries to a sink: up to 1 s, 2 s, 4 s, … (full jitter), at most an hour apart,
/// until the sink's `give_up_after` has passed since the first failure.
fn retry_policy(sink: &Sink) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(3600),
        limit: Limit::Elapsed(sink.give_up_after),
    }
}

/// The configured sinks, the store their events live in and the outbox that queues them.
pub struct Notifier {
    store: Arc<Store>,
    sinks: Vec<Arc<Sink>>,
    outbox: Arc<Outbox>,
    /// Where its blocking work runs, so the shutdown can wait for it (it holds the store).
    blocking: TaskTracker,
}

/// The `meta` key under which the store keeps why `sink` answered 410 Gone.
fn gone_key(sink: &str) -> String {
    format!("notify.gone.{sink}")
}

/// Why `sink` takes no more events, if it answered 410 Gone (until `POST /notify/retry`).
pub fn sink_gone(store: &Store, sink: &str) -> Option<String> {
    let reason = store.saved(&gone_key(sink))?;
    Some(String::from_utf8_lossy(&reason).into_owned())
}

/// Records that `sink` answered 410 Gone: nothing more is sent to it (this run or the next)
/// until `POST /notify/retry`. Durable before it returns.
async fn set_sink_gone(store: &Store, sink: &str, reason: &str) -> anyhow::Result<()> {
    let what = format!("that the sink {sink} is gone");
    store.save(&gone_key(sink), reason.as_bytes(), &what).await
}

impl Notifier {
    /// Builds the sinks and tells the store which events each wants, so entities stored from
    /// now on get their events.
    pub fn new(
        store: Arc<Store>,
        configs: &[NotifyConfig],
        blocking: TaskTracker,
    ) -> anyhow::Result<Arc<Notifier>> {
        let sinks = configs
            .iter()
            .map(|c| Sink::new(c).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        store.set_notice_routes(
            sinks
                .iter()
                .map(|s| NoticeRoute {
                    sink: s.name.clone(),
                    events: s.events.clone(),
                })
                .collect(),
        );
        Ok(Arc::new(Notifier {
            store,
            sinks,
            outbox: Arc::new(Outbox::default()),
            blocking,
        }))
    }

    pub fn sinks(&self) -> &[Arc<Sink>] {
        &self.sinks
    }

    /// The events waiting for the sinks (fed by the store's commits, see `store::feed`).
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// `POST /notify/retry`: forgets that a sink was gone, makes the parked events (of `sink`, or
    /// of every sink) pending again and commits; the commit hands them to the outbox. Returns how
    /// many.
    pub async fn requeue(&self, sink: Option<String>) -> anyhow::Result<u64> {
        for s in &self.sinks {
            if sink.as_ref().is_none_or(|wanted| *wanted == s.name) {
                self.store.forget_saved(&gone_key(&s.name))?;
            }
        }
        let store = self.store.clone();
        let requeued = self
            .blocking
            .spawn_blocking(move || store.requeue_failed_notices(sink.as_deref()))
            .await
            .map_err(|e| anyhow::anyhow!("the re-queue task failed: {e}"))??;
        self.store.durable().await?;
        self.outbox.unparked(&requeued);
        Ok(requeued.len() as u64)
    }
    /// Starts one sender per sink; they stop when `shutdown` is cancelled.
    pub fn spawn(&self, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
        self.sinks
            .iter()
            .map(|sink| {
                let sender = Sender {
                    store: self.store.clone(),
                    outbox: self.outbox.clone(),
                    sink: sink.clone(),
                };
                crate::tasks::spawn("notify sender", sender.run(shutdown.clone()))
            })
            .collect()
    }
}

/// `hookrace notify test`: sends a signed test event (`hookrace.test`, not stored) to every sink
/// once and says how each answered; the number of sinks that did not take it (the command line
/// makes that a failed check), an error when none is configured or one cannot be built.
pub async fn test_command(
    configs: &[NotifyConfig],
    out: &mut dyn std::io::Write,
) -> anyhow::Result<usize> {
    anyhow::ensure!(
        !configs.is_empty(),
        "no [[notify]] sink is configured (see docs/notify.md)"
    );
    let now = Utc::now();
    let mut failed = 0;
    for config in configs {
        let sink = Sink::new(config)?;
        let id = format!("msg_test_{}", now.timestamp_micros());
        let attempt = sink.send(&id, &event::test_payload(now)).await;
        let verdict = match &attempt {
            Attempt::Delivered => "ok".to_string(),
            Attempt::Gone(reason) | Attempt::Retry(reason) => {
                failed += 1;
                format!("FAILED: {reason}")
            }
        };
        writeln!(
            out,
            "{} ({} → {}): {verdict}",
            sink.name,
            sink.kind(),
            sink.target()
        )?;
    }
    Ok(failed)
}

/// One sink's sender.
struct Sender {
    store: Arc<Store>,
    outbox: Arc<Outbox>,
    sink: Arc<Sink>,
}

impl Sender {
    async fn run(self, shutdown: CancellationToken) {
        let name = self.sink.name.as_str();
        // After a store error the sender pauses, doubling up to a minute.
        let mut trouble = Duration::ZERO;
        loop {
            // Listening before looking: an event queued between the look and the wait wakes it.
            let ready = self.outbox.arrived();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if shutdown.is_cancelled() {
                return;
            }
            let result = match self.outbox.next_due(&self.store, name) {
                Ok(Some(due)) if due.next_at <= Utc::now() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = self.deliver(due) => r.map(|()| Duration::ZERO),
                    }
                }
                Ok(Some(due)) => Ok((due.next_at - Utc::now()).to_std().unwrap_or_default()),
                // Nothing pending: the outbox wakes the sender when an event is queued.
                Ok(None) => Ok(Duration::from_secs(3600)),
                Err(e) => Err(e),
            };
            let wait = match result {
                Ok(wait) => {
                    if !trouble.is_zero() {
                        tracing::info!(sink = name, "the notify sender can use the store again");
                        trouble = Duration::ZERO;
                    }
                    wait
                }
                Err(e) => {
                    trouble = (trouble * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
                    tracing::error!(
                        sink = name,
                        error = format_args!("{e:#}"),
                        retry_in_s = trouble.as_secs(),
                        "the notify sender cannot use the store"
                    );
                    trouble
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut ready => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One attempt at one event, and what it leaves in the store.
    #[tracing::instrument(name = "notify", skip_all, fields(sink = %self.sink.name, entity = %due.key))]
    async fn deliver(&self, due: DueNotice) -> anyhow::Result<()> {
        let (store, sink) = (&self.store, &self.sink);
        let name = sink.name.as_str();
        let key = &due.key;
        if let Some(reason) = sink_gone(store, name) {
            return self.park(
                key,
                &format!("not sent: {reason} earlier (POST /notify/retry sends again)"),
            );
        }
        let item = match sink.include_data {
            true => store.data(key)?,
            false => None,
        };
        let event = event::payload(&due.entity, &due.notice, item, sink.include_data);
        let id = event::event_id(key, name);
        store.incr(SinkAttempts(name), 1);
        match sink.send(&id, &event).await {
            Attempt::Delivered => {
                let now = Utc::now();
                let (at, available) = store.notice_sent(key, name, now)?;
                // The sent mark needs no sync before the next send (a crash before it only sends
                // the event again), but the race's tally counts it once a commit has it.
                store.commit_soon()?;
                self.outbox.sent(name, key, &at, available, now);
                tracing::info!(
                    sink = name,
                    entity = %key,
                    id,
                    end_to_end_ms = due
                        .notice
                        .available_at
                        .map(|a| (now - a).num_milliseconds()),
                    "your app was told"
                );
                Ok(())
            }
            Attempt::Gone(reason) => {
                tracing::warn!(
                    sink = name,
                    reason,
                    "the sink asks for no more events: sending to it stops until POST /notify/retry"
                );
                set_sink_gone(store, name, &reason).await?;
                self.park(key, &reason)
            }
            Attempt::Retry(reason) => self.retry_later(&due, &reason),
        }
    }

    /// A failed attempt: the event is tried again after the sink's backoff, or parked once the
    /// sink's `give_up_after` has passed.
    fn retry_later(&self, due: &DueNotice, reason: &str) -> anyhow::Result<()> {
        let (sink, name, key) = (&self.sink, self.sink.name.as_str(), &due.key);
        let failing_for = (Utc::now() - due.since).to_std().unwrap_or_default();
        let attempt = retry::Attempt::Transient {
            reason: reason.to_string(),
            wait: None,
        };
        let delay = match retry_policy(sink).decide_now(attempt, due.attempts, failing_for) {
            Decision::Retry { after, .. } => after,
            Decision::GiveUp(reason) => {
                tracing::error!(
                    sink = name,
                    entity = %key,
                    reason,
                    "event parked as failed"
                );
                return self.park(key, &reason);
            }
            Decision::Done => return Ok(()),
        };
        let next_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        tracing::warn!(
            sink = name,
            entity = %key,
            reason,
            retry_in_ms = crate::units::millis(delay),
            "notify attempt failed; will retry"
        );
        if let Some(again) = self.store.notice_retry(key, name, next_at, reason)? {
            self.outbox.put_due(name, &again);
        }
        Ok(())
    }

    /// Parks the event: in its record, and out of the queue.
    fn park(&self, key: &EntityKey, reason: &str) -> anyhow::Result<()> {
        let name = self.sink.name.as_str();
        let at = self.store.notice_failed(key, name, reason)?;
        self.outbox.parked(name, key, &at);
        Ok(())
    }
}

//! The background work: the feed of durable work, the fetcher, the poll loop, the notify
//! senders, the webhook watch, the keeper of the rate-limit block and systemd's watchdog, each
//! supervised.

use super::*;

/// The fetcher and the poller, supervised, and the token that stops them.
pub(super) struct Background {
    pub(super) token: CancellationToken,
    /// Hands each commit's durable work to the fetcher's queue and the outbox.
    pub(super) feed: JoinHandle<()>,
    pub(super) fetcher: JoinHandle<()>,
    pub(super) poller: Option<Arc<Poller>>,
    pub(super) poller_task: Option<JoinHandle<()>>,
    /// One sender per notify sink.
    pub(super) senders: Vec<JoinHandle<()>>,
    pub(super) watch: Option<JoinHandle<()>>,
    /// Feeds systemd's watchdog.
    pub(super) keep_alive: JoinHandle<()>,
    /// Saves the rate-limit block the client sets, for the next start.
    pub(super) rate_block: JoinHandle<()>,
}

impl Background {
    pub(super) fn spawn(config: &Config, parts: Parts<'_>, token: CancellationToken) -> Background {
        let keepers: Vec<Arc<dyn Keeper>> =
            vec![parts.queues.fetches.clone(), parts.queues.outbox.clone()];
        let feed = crate::tasks::spawn(
            "store feed",
            store::feed(
                parts.store.clone(),
                keepers,
                token.clone(),
                parts.blocking.clone(),
            ),
        );
        let fetcher = supervise(
            crate::channels::fetcher::TASK,
            parts.liveness,
            &token,
            parts.fetcher.clone().run(token.clone()),
        );
        let poller = config.poller.enabled.then(|| {
            Poller::new(
                parts.store.clone(),
                parts.client.clone(),
                config.poller.mode,
                parts.runtime.clone(),
                parts.queues.fetches.clone(),
            )
        });
        let poller_task = poller.clone().map(|poller| {
            let (strategy, schedule) = (config.poller.strategy, config.poller.schedule.clone());
            let stop = token.clone();
            supervise("poller", parts.liveness, &token, async move {
                if let Err(e) = poll_loop::run(poller, strategy, schedule, stop).await {
                    tracing::error!(error = format_args!("{e:#}"), "the poller stopped");
                }
            })
        });
        let watch = watch(config, &parts, poller.clone(), &token);
        let senders = parts.notifier.spawn(&token);
        let keep_alive = crate::tasks::spawn(
            "keep-alive",
            systemd::keep_alive(
                parts.store.clone(),
                parts.tally.clone(),
                parts.liveness.clone(),
                token.clone(),
            ),
        );
        let rate_block = crate::tasks::spawn(
            "rate block",
            crate::channels::rate_block::keep(
                parts.store.clone(),
                parts.client.clone(),
                token.clone(),
            ),
        );
        Background {
            token,
            feed,
            fetcher,
            poller,
            poller_task,
            senders,
            watch,
            keep_alive,
            rate_block,
        }
    }
}

/// The webhook watch, when it is on and has the client's credentials (it lists the client's
/// webhooks).
fn watch(
    config: &Config,
    parts: &Parts<'_>,
    poller: Option<Arc<Poller>>,
    token: &CancellationToken,
) -> Option<JoinHandle<()>> {
    let every = config
        .webhook
        .check_every
        .filter(|_| parts.has_credentials)?;
    let watch = WebhookWatch {
        client: parts.client.clone(),
        runtime: parts.runtime.clone(),
        public_url: parts.public_url.clone(),
        reactivate: config.webhook.reactivate,
        every,
        poller,
        now: parts.watch_now.clone(),
    };
    Some(crate::tasks::spawn(
        "webhook watch",
        watch.run(token.clone()),
    ))
}

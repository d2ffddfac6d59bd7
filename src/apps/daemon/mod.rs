//! `hookrace run`: wires the store, the listeners and the background tasks together, and shuts
//! them down in order.
//!
//! The servers take already bound listeners and a cancellation token, so tests bind
//! `127.0.0.1:0` and cancel instead of sending a signal. Shutdown: stop accepting, let in-flight
//! requests finish within [`GRACE`], then flush the store; a request that got its 200 was already
//! flushed, the final flush covers counters and the rest.
//!
//! Here: the wiring (`start_with_seed`) and the store the daemon owns with its committer. Beside
//! it: `simulator` (where AccessLink is; connecting the embedded simulator), `servers` (the two
//! listeners), `background` (the supervised background work) and `shutdown` (the order of the
//! stop).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::reply::Reply;

use tokio::task::JoinHandle;

use crate::accesslink::client::{Client, Policy};
use crate::accesslink::identity::UserId;
use crate::accesslink::webhooks;
use crate::channels::fetcher::Fetcher;
use crate::channels::poll_loop;
use crate::channels::poller::Poller;
use crate::channels::watch::WebhookWatch;
use crate::channels::webhook::{self, WebhookState};
use crate::config::{AccessLinkConfig, Config, Secret};
use crate::notify::Notifier;
use crate::observe::admin::{self, AdminState};
use crate::observe::{Queues, View};
use crate::operations::admin_routes;
use crate::operations::oauth::{self, OAuth};
use crate::operations::systemd;
use crate::process::{ListenerGauge, Runtime};
use crate::process::{Liveness, supervise};
use crate::race::Tally;
use crate::server;
use crate::sim;
use crate::store::{self, Keeper, Store};

mod background;
mod servers;
mod shutdown;
mod simulator;

use background::Background;
use servers::Servers;
pub use shutdown::BACKGROUND_GRACE;
use shutdown::shut_down;
use simulator::{connect_simulator, resolve_accesslink, warn_about_the_webhook_secret};

/// How long in-flight requests may take to finish once shutdown begins.
/// Open connections the admin listener allows (an operator, a scraper, a few dashboards).
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The admin listener's connections kept for its probes once the other 64 are taken.
pub const ADMIN_PROBE_SLOTS: usize = 4;

pub const GRACE: Duration = Duration::from_secs(10);

/// The bound listeners: public, admin and (when `[simulator]` is enabled) the simulator's.
pub struct Listeners {
    pub webhook: TcpListener,
    pub admin: TcpListener,
    pub simulator: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses the configuration names.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the {what} listener on {addr}"))
        };
        Ok(Listeners {
            webhook: bind(config.webhook.listen, "webhook").await?,
            admin: bind(config.admin.listen, "admin").await?,
            simulator: match config.simulator.enabled {
                true => Some(bind(config.simulator.listen, "simulator").await?),
                false => None,
            },
        })
    }
}

/// A started daemon: what callers in the same process (tests, the demo) may use.
pub struct Running {
    pub store: Arc<Store>,
    pub client: Arc<Client>,
    /// The receiver's URL, e.g. `http://127.0.0.1:8080/acl_webhook`.
    pub webhook_url: String,
    /// `http://host:port` of the admin listener.
    pub admin_url: String,
    /// The embedded simulator, when enabled.
    pub simulator: Option<sim::RunningSim>,
    pub runtime: Arc<RwLock<Runtime>>,
    /// The poller, when enabled (tests run cycles on it directly).
    pub poller: Option<Arc<Poller>>,
    pub fetcher: Arc<Fetcher>,
    /// The fetcher's queue and the notify outbox (fed by the store's commits).
    pub queues: Queues,
    /// The race's figures (fed by the store's commits, saved by its clean close).
    pub tally: Arc<Tally>,
    /// Which background tasks are alive: what `/healthz` and the systemd watchdog report.
    pub liveness: Arc<Liveness>,
    task: JoinHandle<anyhow::Result<()>>,
    /// Dropped when this handle has let go of the store (in [`Running::wait`], or with it):
    /// shutdown closes the store only then.
    released: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    /// The daemon's own view, as its admin listener reads it: the store, the queues, the tally,
    /// the runtime facts and the client's rate-limit state.
    pub fn view(&self) -> View {
        View {
            store: self.store.clone(),
            queues: self.queues.clone(),
            tally: self.tally.clone(),
            runtime: self.runtime.clone(),
            client: Some(self.client.clone()),
        }
    }

    /// Waits until the daemon has shut down (after `shutdown` was cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        let Running {
            task,
            store,
            client,
            poller,
            fetcher,
            simulator,
            released,
            ..
        } = self;
        // Only the task may keep the store open: it closes it last.
        drop((store, client, poller, fetcher, released));
        let result = task.await;
        if let Some(sim) = simulator {
            let _ = sim.handle.await;
        }
        result.context("the daemon task panicked")?
    }
}

/// Runs the daemon until `shutdown` is cancelled, then drains and flushes. Returns an error only
/// for failures that should end the process with exit code 1.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    start(config, listeners, shutdown).await?.wait().await
}

/// Starts everything and returns once the listeners serve and the background tasks run.
pub async fn start(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    start_with_seed(config, listeners, shutdown, None).await
}

/// Opens the store, waiting a moment while it is still held (see [`Store::open_waiting`]).
async fn open_store(config: &crate::config::StoreConfig) -> anyhow::Result<Store> {
    let (path, cache) = (config.path.clone(), config.cache_bytes);
    let opened = tokio::task::spawn_blocking(move || {
        Store::open_waiting(&path, Duration::from_secs(3), cache)
    })
    .await
    .context("opening the store")?;
    Ok(opened?)
}

/// [`start`], with the embedded simulator's seed chosen by the caller (the demo prints it).
/// The steps: open the store → resolve where AccessLink is → spawn the servers → spawn the
/// background work → hand shutdown to a task that undoes it all in order.
pub async fn start_with_seed(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
    seed: Option<u64>,
) -> anyhow::Result<Running> {
    let (store, store_tasks, tally) = open_owned(&config).await?;
    for w in &config.warnings {
        tracing::warn!("configuration: {w}");
    }
    let runtime = Arc::new(RwLock::new(runtime(&config)));
    // Before anything can store data: entities stored from now on get their notify events.
    let notifier = Notifier::new(store.clone(), &config.notify, store_tasks.blocking.clone())?;
    let liveness = Arc::new(Liveness::default());
    let public_base = format!("http://{}", listeners.webhook.local_addr()?);
    let webhook_url = format!("{public_base}{}", config.webhook.path);
    let admin_url = format!("http://{}", listeners.admin.local_addr()?);

    let (accesslink, simulator) =
        resolve_accesslink(&config, listeners.simulator, seed, &public_base, &shutdown)?;
    for u in &config.users {
        crate::credentials::put_user(&store, UserId(u.user_id), &u.access_token)?;
    }
    let client = client_for(&accesslink, &shutdown)?;
    // Before any request: a window an earlier run found spent is still spent.
    crate::channels::rate_block::restore(&store, &client);
    warn_about_the_webhook_secret(&accesslink, &store, simulator.is_some());

    // The consumers' queues, fed by the store's commits (`store::feed`, a background task).
    let queues = Queues {
        fetches: Default::default(),
        outbox: notifier.outbox().clone(),
    };
    // The fetches are the bulk lane: a backlog leaves the auditor its share and is spread
    // over the day.
    let fetcher = Fetcher::new(
        store.clone(),
        Arc::new(client.bulk()),
        queues.fetches.clone(),
        liveness.clone(),
    );
    // With the simulator, the webhook must point here.
    let public_url = match &simulator {
        Some(_) => Some(webhook_url.clone()),
        None => config.webhook.public_url.clone(),
    };
    let watch_now = Arc::new(tokio::sync::Notify::new());
    let parts = Parts {
        store: &store,
        client: &client,
        fetcher: &fetcher,
        queues: &queues,
        tally: &tally,
        runtime: &runtime,
        liveness: &liveness,
        notifier: &notifier,
        public_url: &public_url,
        has_credentials: accesslink.client_secret.is_some(),
        watch_now: &watch_now,
        blocking: &store_tasks.blocking,
    };
    let servers = Servers::spawn(
        &config,
        &accesslink,
        listeners.webhook,
        listeners.admin,
        parts,
        &shutdown,
    )?;
    // With the simulator: its users and a webhook pointing at this daemon (PING and all).
    if let Some(sim) = &simulator {
        connect_simulator(sim, &client, &store, &public_base, &webhook_url).await?;
    }
    let background = Background::spawn(&config, parts, shutdown.child_token());
    announce(&config, &webhook_url, &admin_url, &client);
    systemd::ready(&store, &tally.summary());
    let poller = background.poller.clone();
    let (released, holders_gone) = tokio::sync::oneshot::channel::<()>();
    let task = crate::tasks::spawn(
        "shutdown",
        shut_down(
            shutdown,
            servers,
            background,
            (store.clone(), store_tasks),
            holders_gone,
        ),
    );
    Ok(Running {
        store,
        client,
        webhook_url,
        admin_url,
        simulator,
        runtime,
        poller,
        fetcher,
        queues,
        tally,
        liveness,
        task,
        released,
    })
}

/// The tasks that hold the daemon's store: its one committer, and the blocking work that reads
/// or writes it (the feed's scan, a notify re-queue). The shutdown waits for both around the
/// close, so the close finds itself the store's last holder without polling for it.
pub(super) struct StoreTasks {
    pub(super) committer: JoinHandle<()>,
    pub(super) blocking: tokio_util::task::TaskTracker,
}

/// The store, opened for this daemon: its one committer spawned here and, before anything writes
/// an entity, the tally that starts from the summary the store opened with.
async fn open_owned(config: &Config) -> anyhow::Result<(Arc<Store>, StoreTasks, Arc<Tally>)> {
    let store = Arc::new(open_store(&config.store).await?);
    let committer = store
        .committer()
        .map(|c| crate::tasks::spawn("committer", c.run()))
        .context("the store's committer was taken already")?;
    let tally = store.follow_tally()?;
    let blocking = tokio_util::task::TaskTracker::new();
    Ok((
        store,
        StoreTasks {
            committer,
            blocking,
        },
        tally,
    ))
}

/// What only the running process knows, as it starts: the poll schedule and the sinks from the
/// configuration; the listeners and the cycles' times come later.
fn runtime(config: &Config) -> Runtime {
    Runtime {
        started_at: Utc::now(),
        poll_enabled: config.poller.enabled,
        last_cycle_at: None,
        next_cycle_at: None,
        notify_sinks: config.notify.iter().map(Into::into).collect(),
        webhook_health: Default::default(),
        poll_pace: crate::process::PollPace {
            strategy: config.poller.strategy.name().into(),
            interval: match config.poller.schedule {
                crate::config::PollSchedule::Every(d) => Some(d),
                crate::config::PollSchedule::Cron(_) => None,
            },
            reason: None,
        },
        listeners: Vec::new(),
    }
}

/// The AccessLink client; every wait of it (a rate-limit window, a retry) ends at shutdown.
fn client_for(
    accesslink: &AccessLinkConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<Client>> {
    Ok(Arc::new(
        Client::new(
            &accesslink.base_url,
            &accesslink.client_id,
            accesslink.client_secret.clone(),
            Policy::default(),
        )?
        .cancelled_by(shutdown.clone()),
    ))
}

/// The one line that says the daemon runs, and where.
fn announce(config: &Config, webhook_url: &str, admin_url: &str, client: &Client) {
    tracing::info!(
        webhook = %webhook_url,
        admin = %format_args!("{admin_url}/status"),
        store = %config.store.path.display(),
        accesslink = %client.base_url(),
        poller = ?config.poller.schedule,
        "hookrace is running"
    );
}

/// What the servers and the background work share.
#[derive(Clone, Copy)]
pub(super) struct Parts<'a> {
    pub(super) store: &'a Arc<Store>,
    pub(super) client: &'a Arc<Client>,
    pub(super) fetcher: &'a Arc<Fetcher>,
    pub(super) queues: &'a Queues,
    pub(super) tally: &'a Arc<Tally>,
    pub(super) runtime: &'a Arc<RwLock<Runtime>>,
    pub(super) liveness: &'a Arc<Liveness>,
    pub(super) notifier: &'a Arc<Notifier>,
    /// The URL Polar should post to (the configured public URL, or the simulator's target).
    pub(super) public_url: &'a Option<String>,
    /// Client credentials are known (the webhook watch can list the webhooks).
    pub(super) has_credentials: bool,
    /// Wakes the webhook watch for a check now (a webhook was just created).
    pub(super) watch_now: &'a Arc<tokio::sync::Notify>,
    /// Where blocking work on the store runs (the shutdown waits for it before the close).
    pub(super) blocking: &'a tokio_util::task::TaskTracker,
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT. SIGHUP is logged and otherwise ignored:
/// nothing is reloaded (restart the service to apply a new configuration). The handler lives as
/// long as the returned guard.
pub fn spawn_signal_handler(
    shutdown: CancellationToken,
) -> anyhow::Result<crate::tasks::AbortOnDropHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    Ok(crate::tasks::spawn_owned("signals", async move {
        let name = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = hup.recv() => tracing::warn!(
                    "SIGHUP: reloading is not supported; restart hookrace to apply a new configuration"
                ),
            }
        };
        tracing::info!(signal = name, "shutdown requested");
        shutdown.cancel();
    }))
}

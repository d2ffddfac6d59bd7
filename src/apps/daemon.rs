//! `hookrace run`: wires the store, the listeners and the background tasks together, and shuts
//! them down in order.
//!
//! The servers take already bound listeners and a cancellation token, so tests bind
//! `127.0.0.1:0` and cancel instead of sending a signal. Shutdown: stop accepting, let in-flight
//! requests finish within [`GRACE`], then flush the store; a request that got its 200 was already
//! flushed, the final flush covers counters and the rest.

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

/// How long in-flight requests may take to finish once shutdown begins.
/// Open connections the admin listener allows (an operator, a scraper, a few dashboards).
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

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
    warn_about_the_webhook_secret(&accesslink, &store, simulator.is_some());

    // The consumers' queues, fed by the store's commits (`store::feed`, a background task).
    let queues = Queues {
        fetches: Default::default(),
        outbox: notifier.outbox().clone(),
    };
    let fetcher = Fetcher::new(
        store.clone(),
        client.clone(),
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
    let task = tokio::spawn(shut_down(
        shutdown,
        servers,
        background,
        (store.clone(), store_tasks),
        holders_gone,
    ));
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
struct StoreTasks {
    committer: JoinHandle<()>,
    blocking: tokio_util::task::TaskTracker,
}

/// The store, opened for this daemon: its one committer spawned here and, before anything writes
/// an entity, the tally that starts from the summary the store opened with.
async fn open_owned(config: &Config) -> anyhow::Result<(Arc<Store>, StoreTasks, Arc<Tally>)> {
    let store = Arc::new(open_store(&config.store).await?);
    let committer = store
        .committer()
        .map(|c| tokio::spawn(c.run()))
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

/// Where AccessLink is and how this daemon signs in to it: the configuration's values, or, with
/// `[simulator]` enabled, the embedded simulator started here on `listener`, which replaces
/// AccessLink (its address, its client credentials, OAuth back to this daemon's public URL).
fn resolve_accesslink(
    config: &Config,
    listener: Option<TcpListener>,
    seed: Option<u64>,
    public_base: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<(AccessLinkConfig, Option<sim::RunningSim>)> {
    let Some(listener) = listener else {
        return Ok((config.accesslink.clone(), None));
    };
    let s = &config.simulator;
    let settings = sim::SimSettings {
        seed: seed.or(s.seed).unwrap_or_else(rand::random),
        users: s.users,
        exercise_every: Some(s.exercise_every),
        activity_every: Some(s.activity_every),
        sleep_every: Some(sim::settings::SLEEP_EVERY),
        heart_rate_every: Some(sim::settings::HEART_RATE_EVERY),
        faults: sim::Faults {
            drop_rate: s.webhook_drop_rate,
            duplicate_rate: s.webhook_duplicate_rate,
            delay_ms: (
                crate::units::millis(s.webhook_delay.0),
                crate::units::millis(s.webhook_delay.1),
            ),
            ..sim::Faults::default()
        },
        client_id: crate::config::SIMULATOR_CLIENT_ID.into(),
        client_secret: crate::config::SIMULATOR_CLIENT_SECRET.into(),
        ..sim::SimSettings::default()
    };
    let accesslink = |base: &str| AccessLinkConfig {
        base_url: base.to_string(),
        client_id: settings.client_id.clone(),
        client_secret: Some(Secret::new(settings.client_secret.clone())),
        // The webhook `connect_simulator` creates saves its secret in the store.
        webhook_secret: None,
        authorize_url: format!("{base}/oauth2/authorization"),
        token_url: format!("{base}/v2/oauth2/token"),
        redirect_uri: Some(format!("{public_base}/oauth/callback")),
    };
    let settings_for_sim = settings.clone();
    let running = sim::start(
        listener,
        settings_for_sim,
        shutdown.child_token(),
        crate::server::serve_simulator,
    )?;
    Ok((accesslink(&running.base_url), Some(running)))
}

/// Says at start-up what will happen to deliveries when no secret is known, or when the
/// configured one hides a saved one.
fn warn_about_the_webhook_secret(accesslink: &AccessLinkConfig, store: &Store, simulator: bool) {
    let saved = crate::credentials::webhook_secret(store);
    match (&accesslink.webhook_secret, &saved) {
        (None, None) if !simulator => tracing::warn!(
            "no webhook secret is configured or stored: deliveries will be refused with 503 until one is"
        ),
        (Some(configured), Some(saved)) if configured.expose() != saved.expose() => {
            tracing::warn!(
                "the store holds a webhook secret (saved by `hookrace webhook create`) that differs \
                 from the configured one; the configured one is used: remove it from the \
                 configuration to use the saved one"
            )
        }
        _ => {}
    }
}

/// What the servers and the background work share.
#[derive(Clone, Copy)]
struct Parts<'a> {
    store: &'a Arc<Store>,
    client: &'a Arc<Client>,
    fetcher: &'a Arc<Fetcher>,
    queues: &'a Queues,
    tally: &'a Arc<Tally>,
    runtime: &'a Arc<RwLock<Runtime>>,
    liveness: &'a Arc<Liveness>,
    notifier: &'a Arc<Notifier>,
    /// The URL Polar should post to (the configured public URL, or the simulator's target).
    public_url: &'a Option<String>,
    /// Client credentials are known (the webhook watch can list the webhooks).
    has_credentials: bool,
    /// Wakes the webhook watch for a check now (a webhook was just created).
    watch_now: &'a Arc<tokio::sync::Notify>,
    /// Where blocking work on the store runs (the shutdown waits for it before the close).
    blocking: &'a tokio_util::task::TaskTracker,
}

/// The two listeners' server tasks and the token that stops them accepting.
struct Servers {
    token: CancellationToken,
    public: JoinHandle<()>,
    admin: JoinHandle<()>,
    /// The dashboard's snapshot builder (it holds the store).
    snapshots: Arc<crate::observe::dashboard::Snapshots>,
}

impl Servers {
    /// The public listener (webhook and OAuth routes) and the admin listener (status, metrics,
    /// dashboard, management); both time out slow headers and idle connections and cap their
    /// connections (see `server.rs`); the admin listener's SSE streams are responses, not idle.
    fn spawn(
        config: &Config,
        accesslink: &AccessLinkConfig,
        public: TcpListener,
        admin: TcpListener,
        parts: Parts<'_>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Servers> {
        let admin_addr = admin.local_addr()?;
        let public_routes = public_routes(config, accesslink, &parts)?;
        let (admin_state, snapshots) = admin_state(config, admin_addr, &parts, shutdown);
        let management = admin_routes::routes(
            parts.store.clone(),
            parts.notifier.clone(),
            parts.client.clone(),
            accesslink.webhook_secret.is_some(),
            parts.watch_now.clone(),
        );
        let token = shutdown.child_token();
        let public_gauge = ListenerGauge::new("webhook", config.webhook.max_connections);
        let admin_gauge = ListenerGauge::new("admin", ADMIN_MAX_CONNECTIONS);
        if let Ok(mut rt) = parts.runtime.write() {
            rt.listeners = vec![public_gauge.clone(), admin_gauge.clone()];
        }
        let public = tokio::spawn(server::serve(
            public,
            public_routes,
            server::Limits {
                header_timeout: config.webhook.body_timeout,
                write_stall: server::WRITE_STALL,
                grace: GRACE,
            },
            public_gauge,
            token.clone().cancelled_owned(),
        ));
        let admin = tokio::spawn(server::serve(
            admin,
            admin::routes(admin_state, management),
            server::Limits {
                header_timeout: Duration::from_secs(10),
                write_stall: server::WRITE_STALL,
                grace: GRACE,
            },
            admin_gauge,
            token.clone().cancelled_owned(),
        ));
        Ok(Servers {
            token,
            public,
            admin,
            snapshots,
        })
    }
}

/// The public listener's routes: the webhook delivery route and the OAuth onboarding; anything
/// else is 404.
fn public_routes(
    config: &Config,
    accesslink: &AccessLinkConfig,
    parts: &Parts<'_>,
) -> anyhow::Result<
    impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
    + Clone
    + Send
    + Sync
    + 'static,
> {
    let webhook_state = Arc::new(WebhookState {
        store: parts.store.clone(),
        path: config.webhook.path.clone(),
        max_body: config.webhook.max_body,
        body_timeout: config.webhook.body_timeout,
        secret: accesslink.webhook_secret.clone(),
        fetch: true,
        refusals: Default::default(),
    });
    let oauth = Arc::new(OAuth {
        store: parts.store.clone(),
        client: parts.client.clone(),
        client_id: accesslink.client_id.clone(),
        client_secret: accesslink.client_secret.clone(),
        authorize_url: accesslink.authorize_url.clone(),
        token_url: accesslink.token_url.clone(),
        redirect_uri: accesslink.redirect_uri.clone(),
        // The token endpoint answers directly; a redirect would carry the code elsewhere
        // (the factory follows none).
        http: crate::http::client(Duration::from_secs(15))?,
        pending: Default::default(),
    });
    Ok(webhook::route(webhook_state)
        .or(oauth::routes(oauth))
        .unify()
        .recover(|_r: warp::Rejection| async move {
            Ok::<_, std::convert::Infallible>(
                warp::reply::with_status("not found\n", warp::http::StatusCode::NOT_FOUND)
                    .into_response(),
            )
        })
        .unify())
}

/// What the admin routes read: the view, the dashboard's snapshots (also returned, for the
/// shutdown), liveness, the token and the hosts allowed without one.
fn admin_state(
    config: &Config,
    admin_addr: SocketAddr,
    parts: &Parts<'_>,
    shutdown: &CancellationToken,
) -> (Arc<AdminState>, Arc<crate::observe::dashboard::Snapshots>) {
    let view = View {
        store: parts.store.clone(),
        queues: parts.queues.clone(),
        tally: parts.tally.clone(),
        runtime: parts.runtime.clone(),
        client: Some(parts.client.clone()),
    };
    let snapshots = Arc::new(crate::observe::dashboard::Snapshots::new(
        view.clone(),
        shutdown.child_token(),
    ));
    let admin_state = Arc::new(AdminState {
        snapshots: snapshots.clone(),
        view,
        liveness: parts.liveness.clone(),
        token: config.admin.token.clone(),
        // Without a token, the listener's own address is its protection (against DNS
        // rebinding and cross-origin changes); with one, the token is, and a proxy may name
        // another host.
        allowed_hosts: match config.admin.token {
            None => admin::loopback_hosts(admin_addr),
            Some(_) => None,
        },
        shutdown: shutdown.child_token(),
    });
    (admin_state, snapshots)
}

/// The fetcher and the poller, supervised, and the token that stops them.
struct Background {
    token: CancellationToken,
    /// Hands each commit's durable work to the fetcher's queue and the outbox.
    feed: JoinHandle<()>,
    fetcher: JoinHandle<()>,
    poller: Option<Arc<Poller>>,
    poller_task: Option<JoinHandle<()>>,
    /// One sender per notify sink.
    senders: Vec<JoinHandle<()>>,
    watch: Option<JoinHandle<()>>,
    /// Feeds systemd's watchdog.
    keep_alive: JoinHandle<()>,
}

impl Background {
    fn spawn(config: &Config, parts: Parts<'_>, token: CancellationToken) -> Background {
        let keepers: Vec<Arc<dyn Keeper>> =
            vec![parts.queues.fetches.clone(), parts.queues.outbox.clone()];
        let feed = tokio::spawn(store::feed(
            parts.store.clone(),
            keepers,
            token.clone(),
            parts.blocking.clone(),
        ));
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
        // The webhook watch needs the client's credentials (it lists the client's webhooks).
        let watch = match (config.webhook.check_every, parts.has_credentials) {
            (Some(every), true) => Some(tokio::spawn(
                WebhookWatch {
                    client: parts.client.clone(),
                    runtime: parts.runtime.clone(),
                    public_url: parts.public_url.clone(),
                    reactivate: config.webhook.reactivate,
                    every,
                    poller: poller.clone(),
                    now: parts.watch_now.clone(),
                }
                .run(token.clone()),
            )),
            _ => None,
        };
        let senders = parts.notifier.spawn(&token);
        let keep_alive = tokio::spawn(systemd::keep_alive(
            parts.store.clone(),
            parts.tally.clone(),
            parts.liveness.clone(),
            token.clone(),
        ));
        Background {
            token,
            feed,
            fetcher,
            poller,
            poller_task,
            senders,
            watch,
            keep_alive,
        }
    }
}

/// How long the background work (poll cycle, fetches, notify sends, the webhook watch) may take
/// to stop once the servers have drained; what still runs then is stopped where it is. With
/// [`GRACE`] for the servers, SIGTERM ends hookrace within about 15 s whatever it waits on (a
/// rate-limit pause, a slow AccessLink).
pub const BACKGROUND_GRACE: Duration = Duration::from_secs(5);

/// Waits for `shutdown`, then, in order: the servers stop accepting and drain their requests
/// within [`GRACE`] (each server closes what remains); the background tasks stop within
/// [`BACKGROUND_GRACE`] (aborted after it) and are awaited; the store is closed explicitly. No
/// task outlives this: the store is closed only when this task holds its last handle.
#[tracing::instrument(name = "shutdown", skip_all)]
async fn shut_down(
    shutdown: CancellationToken,
    servers: Servers,
    background: Background,
    (store, tasks): (Arc<Store>, StoreTasks),
    holders_gone: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    use crate::process::stop_by;
    shutdown.cancelled().await;
    systemd::stopping();
    tracing::info!(
        grace_s = GRACE.as_secs(),
        "shutting down: draining in-flight requests"
    );
    servers.token.cancel();
    // Each server bounds its own drain by GRACE; the extra second covers closing what remains.
    let deadline = tokio::time::Instant::now() + GRACE + Duration::from_secs(1);
    stop_by("webhook listener", servers.public, deadline).await;
    stop_by("admin listener", servers.admin, deadline).await;
    let _ = tokio::time::timeout_at(deadline, servers.snapshots.stopped()).await;
    drop(servers.snapshots);

    background.token.cancel();
    let deadline = tokio::time::Instant::now() + BACKGROUND_GRACE;
    if let Some(p) = background.poller_task {
        stop_by("poller", p, deadline).await;
    }
    stop_by(crate::channels::fetcher::TASK, background.fetcher, deadline).await;
    // A sender stops at once (an event in flight stays pending: sent again after a restart,
    // under the same webhook-id).
    for sender in background.senders {
        stop_by("notify sender", sender, deadline).await;
    }
    if let Some(watch) = background.watch {
        stop_by("webhook watch", watch, deadline).await;
    }
    stop_by("watchdog", background.keep_alive, deadline).await;
    stop_by("work feed", background.feed, deadline).await;
    drop(background.poller);
    // The caller's handle (`Running`) lets go of the store in `wait`.
    let _ = holders_gone.await;
    // Blocking work a stopped task left running (a scan, a re-queue) still holds the store:
    // it ends by itself, and the close waits for it.
    tasks.blocking.close();
    if tokio::time::timeout(GRACE, tasks.blocking.wait())
        .await
        .is_err()
    {
        tracing::warn!("blocking work on the store is still running at the end of the grace");
    }
    let closed = close_store(store).await;
    // The close dropped the store, and with it the committer's queue: the committer ends.
    stop_by(
        "store committer",
        tasks.committer,
        tokio::time::Instant::now() + GRACE,
    )
    .await;
    closed
}

/// Closes the store, which every other holder has let go of by now (an error says how many
/// did not).
async fn close_store(store: Arc<Store>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || Store::close_shared(store))
        .await
        .context("the closing task panicked")?
        .context(
            "closing the store (its final commit) failed: hookrace stopped; the next start \
             recounts from the store's records, and nothing answered 200 is lost",
        )
}

/// Connects the simulator's users through the OAuth flow, as a person in a browser would
/// (connect → authorize → callback, all over HTTP), and creates the webhook pointing at this
/// daemon (PING and all), keeping the returned secret in the store.
async fn connect_simulator(
    sim: &sim::RunningSim,
    client: &Client,
    store: &Store,
    public_base: &str,
    webhook_url: &str,
) -> anyhow::Result<()> {
    let browser = crate::http::client(Duration::from_secs(10))?;
    let users: serde_json::Value = browser
        .get(format!("{}/sim/users", sim.base_url))
        .send()
        .await
        .context("asking the simulator for its users")?
        .json()
        .await
        .context("reading the simulator's users")?;
    let location = |res: &reqwest::Response| -> anyhow::Result<String> {
        res.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .ok_or_else(|| {
                anyhow::anyhow!("{} answered {} without a redirect", res.url(), res.status())
            })
    };
    for u in users.as_array().cloned().unwrap_or_default() {
        let Some(id) = u["user_id"].as_u64() else {
            continue;
        };
        // The connect route is rate-limited (it is public): a big simulated crowd waits its turn.
        let mut res = browser
            .get(format!("{public_base}/oauth/connect"))
            .send()
            .await?;
        for _ in 0..30 {
            if res.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            res = browser
                .get(format!("{public_base}/oauth/connect"))
                .send()
                .await?;
        }
        // The browser keeps the cookie that binds the sign-in to it.
        let cookie = res
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or_default()
            .to_string();
        // The simulator's consent page: `user_id` says which simulated person consents.
        let authorize = format!("{}&user_id={id}", location(&res)?);
        let res = browser.get(&authorize).send().await?;
        let callback = location(&res)?;
        let res = browser
            .get(&callback)
            .header("Cookie", cookie)
            .send()
            .await?;
        anyhow::ensure!(
            res.status().is_success(),
            "connecting simulated user {id}: {}",
            res.text().await.unwrap_or_default()
        );
    }
    // Every type: the simulator supports them all (and generates all but SleepWise).
    let events: Vec<String> = crate::accesslink::identity::EventType::KNOWN
        .iter()
        .map(|k| k.to_string())
        .collect();
    let created = webhooks::create(client, webhook_url, &events)
        .await
        .context("creating the webhook at the simulator")?;
    crate::credentials::set_webhook_secret(store, &created.secret).await?;
    tracing::info!(id = %created.webhook.id, url = webhook_url, users = crate::credentials::all_users(store)?.len(), "connected to the simulator");
    Ok(())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT. SIGHUP is logged and otherwise ignored:
/// nothing is reloaded (restart the service to apply a new configuration).
pub fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
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
    });
    Ok(())
}

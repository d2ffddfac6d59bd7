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
use crate::channels::poller::{self, Poller};
use crate::channels::webhook::{self, WebhookState};
use crate::config::{Config, Secret};
use crate::observe::View;
use crate::observe::admin::{self, AdminState};
use crate::operations::admin_routes;
use crate::operations::oauth::{self, OAuth};
use crate::operations::systemd;
use crate::process::Runtime;
use crate::process::{Liveness, supervise};
use crate::server;
use crate::sim;
use crate::store::Store;

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
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Waits until the daemon has shut down (after `shutdown` was cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        let Running {
            task,
            store,
            client,
            poller,
            fetcher,
            simulator,
            ..
        } = self;
        // Only the task may keep the store open: it flushes it last.
        drop((store, client, poller, fetcher));
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
async fn open_store(path: &std::path::Path) -> anyhow::Result<Store> {
    let path = path.to_path_buf();
    let opened =
        tokio::task::spawn_blocking(move || Store::open_waiting(&path, Duration::from_secs(3)))
            .await
            .context("opening the store")?;
    Ok(opened?)
}

/// [`start`], with the embedded simulator's seed chosen by the caller (the demo prints it).
pub async fn start_with_seed(
    mut config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
    seed: Option<u64>,
) -> anyhow::Result<Running> {
    let store = Arc::new(open_store(&config.store.path).await?);
    let runtime = Arc::new(RwLock::new(Runtime {
        started_at: Utc::now(),
        poll_enabled: config.poller.enabled,
        last_cycle_at: None,
        next_cycle_at: None,
    }));
    let liveness = Arc::new(Liveness::default());

    // The embedded simulator replaces AccessLink: its address and its client credentials.
    let simulator = match listeners.simulator {
        Some(listener) => {
            let s = &config.simulator;
            let settings = sim::SimSettings {
                seed: seed.or(s.seed).unwrap_or_else(rand::random),
                users: s.users,
                exercise_every: Some(s.exercise_every),
                activity_every: Some(s.activity_every),
                faults: sim::Faults {
                    drop_rate: s.webhook_drop_rate,
                    duplicate_rate: s.webhook_duplicate_rate,
                    delay_ms: (
                        s.webhook_delay.0.as_millis() as u64,
                        s.webhook_delay.1.as_millis() as u64,
                    ),
                    ..sim::Faults::default()
                },
                client_id: crate::config::SIMULATOR_CLIENT_ID.into(),
                client_secret: crate::config::SIMULATOR_CLIENT_SECRET.into(),
                ..sim::SimSettings::default()
            };
            config.accesslink.client_id = settings.client_id.clone();
            config.accesslink.client_secret = Some(Secret::new(settings.client_secret.clone()));
            config.accesslink.webhook_secret = None;
            let running = sim::start(listener, settings, shutdown.child_token())?;
            config.accesslink.base_url = running.base_url.clone();
            config.accesslink.authorize_url = format!("{}/oauth2/authorization", running.base_url);
            config.accesslink.token_url = format!("{}/v2/oauth2/token", running.base_url);
            Some(running)
        }
        None => None,
    };

    for u in &config.users {
        store.put_user(UserId(u.user_id), &u.access_token)?;
    }
    let client = Arc::new(Client::new(
        &config.accesslink.base_url,
        &config.accesslink.client_id,
        config.accesslink.client_secret.clone(),
        Policy::default(),
    )?);

    let webhook_addr = listeners.webhook.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    let public_base = format!("http://{webhook_addr}");
    let webhook_url = format!("{public_base}{}", config.webhook.path);
    if simulator.is_some() {
        config.accesslink.redirect_uri = Some(format!("{public_base}/oauth/callback"));
    }
    let admin_url = format!("http://{admin_addr}");
    if simulator.is_none()
        && config.accesslink.webhook_secret.is_none()
        && store.webhook_secret().is_none()
    {
        tracing::warn!(
            "no webhook secret is configured or stored: deliveries will be refused with 503 until one is"
        );
    }
    if let (Some(configured), Some(saved)) =
        (&config.accesslink.webhook_secret, store.webhook_secret())
    {
        if configured.expose() != saved.expose() {
            tracing::warn!(
                "the store holds a webhook secret (saved by `hookrace webhook create`) that differs \
                 from the configured one; the configured one is used: remove it from the \
                 configuration to use the saved one"
            );
        }
    }

    let fetcher = Fetcher::new(store.clone(), client.clone(), liveness.clone());
    let webhook_state = Arc::new(WebhookState {
        store: store.clone(),
        path: config.webhook.path.clone(),
        max_body: config.webhook.max_body,
        body_timeout: config.webhook.body_timeout,
        secret: config.accesslink.webhook_secret.clone(),
        fetcher: Some(fetcher.clone()),
        refusals: Default::default(),
    });
    let oauth = Arc::new(OAuth {
        store: store.clone(),
        client: client.clone(),
        client_id: config.accesslink.client_id.clone(),
        client_secret: config.accesslink.client_secret.clone(),
        authorize_url: config.accesslink.authorize_url.clone(),
        token_url: config.accesslink.token_url.clone(),
        redirect_uri: config.accesslink.redirect_uri.clone(),
        // The token endpoint answers directly; a redirect would carry the code elsewhere (the
        // factory follows none).
        http: crate::http::client(Duration::from_secs(15))?,
        pending: Default::default(),
    });
    let public = webhook::route(webhook_state)
        .or(oauth::routes(oauth))
        .unify()
        .recover(|_r: warp::Rejection| async move {
            Ok::<_, std::convert::Infallible>(
                warp::reply::with_status("not found\n", warp::http::StatusCode::NOT_FOUND)
                    .into_response(),
            )
        });
    let admin_state = Arc::new(AdminState {
        view: View {
            store: store.clone(),
            runtime: runtime.clone(),
        },
        liveness: liveness.clone(),
        token: config.admin.token.clone(),
        // Without a token, the listener's own address is its protection (against DNS rebinding
        // and cross-origin changes); with one, the token is, and a proxy may name another host.
        allowed_hosts: match config.admin.token {
            None => admin::loopback_hosts(admin_addr),
            Some(_) => None,
        },
        shutdown: shutdown.child_token(),
    });
    let management = admin_routes::routes(
        store.clone(),
        client.clone(),
        config.accesslink.webhook_secret.is_some(),
    );

    let servers = shutdown.child_token();
    // Both listeners time out slow headers and idle connections and cap their connections
    // (see `server.rs`); the admin listener's SSE streams are responses, not idle connections.
    let public_server = tokio::spawn(server::serve(
        listeners.webhook,
        public,
        server::Limits {
            name: "webhook listener",
            header_timeout: config.webhook.body_timeout,
            max_connections: config.webhook.max_connections,
        },
        liveness.clone(),
        servers.clone().cancelled_owned(),
    ));
    let admin_server = tokio::spawn(server::serve(
        listeners.admin,
        admin::routes(admin_state, management),
        server::Limits {
            name: "admin listener",
            header_timeout: Duration::from_secs(10),
            max_connections: ADMIN_MAX_CONNECTIONS,
        },
        liveness.clone(),
        servers.clone().cancelled_owned(),
    ));

    // With the simulator: its users and a webhook pointing at this daemon (PING and all).
    if let Some(sim) = &simulator {
        connect_simulator(sim, &client, &store, &public_base, &webhook_url).await?;
    }

    let background = shutdown.child_token();
    let fetcher_task = supervise(
        crate::channels::fetcher::TASK,
        &liveness,
        &background,
        fetcher.clone().run(background.clone()),
    );
    let poller = config.poller.enabled.then(|| {
        Poller::new(
            store.clone(),
            client.clone(),
            config.poller.mode,
            runtime.clone(),
        )
    });
    let poller_task = poller.clone().map(|poller| {
        let schedule = config.poller.schedule.clone();
        let token = background.clone();
        supervise("poller", &liveness, &background, async move {
            if let Err(e) = poller::run_scheduled(poller, schedule, token, GRACE).await {
                tracing::error!(error = format_args!("{e:#}"), "the poller stopped");
            }
        })
    });
    tracing::info!(
        webhook = %webhook_url,
        admin = %format_args!("{admin_url}/status"),
        store = %config.store.path.display(),
        accesslink = %client.base_url(),
        poller = ?config.poller.schedule,
        "hookrace is running"
    );

    systemd::ready(&store);
    tokio::spawn(systemd::keep_alive(
        store.clone(),
        liveness.clone(),
        background.clone(),
    ));

    let task_store = store.clone();
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        systemd::stopping();
        tracing::info!(
            grace_s = GRACE.as_secs(),
            "shutting down: draining in-flight requests"
        );
        servers.cancel();
        let (public_abort, admin_abort) =
            (public_server.abort_handle(), admin_server.abort_handle());
        let drained = tokio::time::timeout(GRACE, async {
            let _ = public_server.await;
            let _ = admin_server.await;
        })
        .await;
        if drained.is_err() {
            // Stop waiting: the servers stop now; a request still running gets no answer (its
            // client retries) and nothing it had not committed counts as received.
            public_abort.abort();
            admin_abort.abort();
            tracing::warn!(
                "requests still running after the grace period are abandoned; committing the store"
            );
        }
        background.cancel();
        if let Some(p) = poller_task {
            let _ = p.await;
        }
        let _ = tokio::time::timeout(GRACE, fetcher_task).await;
        task_store.flush()?;
        tracing::info!("store flushed; bye");
        Ok(())
    });
    Ok(Running {
        store,
        client,
        webhook_url,
        admin_url,
        simulator,
        runtime,
        poller,
        fetcher,
        task,
    })
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
    let events: Vec<String> = ["EXERCISE", "ACTIVITY_SUMMARY", "PHYSICAL_INFORMATION"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let created = webhooks::create(client, webhook_url, &events)
        .await
        .context("creating the webhook at the simulator")?;
    store.set_webhook_secret(&created.secret).await?;
    tracing::info!(id = %created.webhook.id, url = webhook_url, users = store.users()?.len(), "connected to the simulator");
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

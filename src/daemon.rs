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

use crate::admin::{self, AdminState, Liveness};
use crate::config::Config;
use crate::status::Runtime;
use crate::store::Store;
use crate::webhook::{self, WebhookState};

/// How long in-flight requests may take to finish once shutdown begins.
pub const GRACE: Duration = Duration::from_secs(10);

/// The two bound listeners.
pub struct Listeners {
    pub webhook: TcpListener,
    pub admin: TcpListener,
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
        })
    }
}

/// Runs the daemon until `shutdown` is cancelled, then drains and flushes. Returns an error only
/// for failures that should end the process with exit code 1.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = Arc::new(Store::open(&config.store.path)?);
    let runtime = Arc::new(RwLock::new(Runtime {
        started_at: Utc::now(),
        // The poller is not part of this build yet: the status says so rather than pretend.
        poll_enabled: false,
        last_cycle_at: None,
        next_cycle_at: None,
    }));
    let liveness = Arc::new(Liveness::default());

    let webhook_addr = listeners.webhook.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    if config.accesslink.webhook_secret.is_none() && store.webhook_secret().is_none() {
        tracing::warn!(
            "no webhook secret is configured or stored: deliveries will be refused with 503 until one is"
        );
    }

    let webhook_state = Arc::new(WebhookState {
        store: store.clone(),
        path: config.webhook.path.clone(),
        max_body: config.webhook.max_body,
        secret: config.accesslink.webhook_secret.clone(),
    });
    let public = webhook::route(webhook_state).recover(|_r: warp::Rejection| async move {
        Ok::<_, std::convert::Infallible>(
            warp::reply::with_status("not found\n", warp::http::StatusCode::NOT_FOUND)
                .into_response(),
        )
    });
    let admin_state = Arc::new(AdminState {
        store: store.clone(),
        runtime: runtime.clone(),
        liveness: liveness.clone(),
        token: config.admin.token.clone(),
    });

    let public_server = tokio::spawn(
        warp::serve(public)
            .incoming(listeners.webhook)
            .graceful(shutdown.clone().cancelled_owned())
            .run(),
    );
    let admin_server = tokio::spawn(
        warp::serve(admin::routes(admin_state))
            .incoming(listeners.admin)
            .graceful(shutdown.clone().cancelled_owned())
            .run(),
    );
    tracing::info!(
        webhook = %format_args!("http://{webhook_addr}{}", config.webhook.path),
        admin = %format_args!("http://{admin_addr}/status"),
        store = %config.store.path.display(),
        "hookrace is running"
    );

    shutdown.cancelled().await;
    tracing::info!(
        grace_s = GRACE.as_secs(),
        "shutting down: draining in-flight requests"
    );
    let drained = tokio::time::timeout(GRACE, async {
        let _ = public_server.await;
        let _ = admin_server.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("requests still running after the grace period were cut off");
    }
    store.flush()?;
    tracing::info!("store flushed; bye");
    Ok(())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
pub fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
        shutdown.cancel();
    });
    Ok(())
}

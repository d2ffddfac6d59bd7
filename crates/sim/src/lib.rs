//! The AccessLink simulator: Polar's API v3 on loopback, for tests, the demo and students.
//!
//! It shares no state with the daemon: the two talk only HTTP, and it imports nothing of the
//! application but `accesslink`'s shared types (payload names, signatures). [`start`] takes a bound
//! listener, a cancellation token and the function that serves HTTP on the listener (the caller's:
//! `server::serve_simulator`, hookrace's one HTTP/1 serving loop) and runs three things: the HTTP
//! server (every request goes through the one route table in `routes.rs`), the delivery sender (signed webhook POSTs after a
//! random delay, some dropped or duplicated as configured) and the generator (new exercises and
//! activity updates per user at exponential intervals, reproducible from a seed).
//!
//! # Layout
//! - `settings`: what it starts with and the faults changeable at run time.
//! - `state`: the shared state behind one mutex and the [`Sim`] handle.
//! - `routes`: HTTP in and out, the route table, client and user authentication.
//! - `oauth`, `users`, `webhooks`, `transactions`, `data`: the AccessLink endpoint families;
//!   `daily`: sleep, Nightly Recharge and continuous heart rate (model, rendering, endpoints);
//!   `files`: an exercise's FIT, TCX, GPX, heart-rate zones and samples.
//! - `limits`: rate limits and injected server errors.
//! - `control`: the `/sim/...` control API; `truth`: the ground truth it reveals;
//!   `workbench`: the delivery and request log and `POST /sim/trigger`, for people building a
//!   receiver (`hookrace sim trigger|log`, `/sim/watch`, `hookrace check-receiver`); `resend`: a
//!   logged delivery sent again byte for byte (a replay); `class`: a
//!   class on one simulator (a client per student) and its scoreboard.
//! - `generator`: new data at random times; `model`: the data and its two JSON dialects.
// The simulator is not hookrace's core (clippy.toml's spawn rule is the core's): its tasks end
// with the shutdown token `start` is given.
#![allow(clippy::disallowed_methods)]

mod access;
mod activity;
mod class;
mod control;
mod custom;
mod daily;
mod data;
mod files;
mod generator;
mod limits;
pub mod model;
mod oauth;
mod resend;
mod routes;
pub mod settings;
mod state;
mod transactions;
mod truth;
mod users;
mod webhooks;
mod workbench;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use access::{Caller, TEACHER};
pub use class::{BOARD_STREAMS_MAX, StudentScore, credentials_table};
pub use control::patch_faults;
pub use routes::{SimRequest, SimResponse, endpoint_name};
pub use settings::{Faults, SimSettings};
pub use state::Sim;
pub use truth::{DeliveryOutcome, Truth, TruthDelivery, TruthEntity};
pub use webhooks::{DeliveryJob, UNKNOWN_USER};
pub use workbench::{LARGE_PADDING, LogEntry, Logged, OneShot, SKEW_S, path_of};

// What the endpoint families share among themselves (the simulator's own modules only).
use limits::Window;
use oauth::Code;
use routes::{IntoOk, basic_credentials, corr_id};
use state::State;
use transactions::Transaction;
use webhooks::Hook;

/// A running simulator.
pub struct RunningSim {
    pub sim: Arc<Sim>,
    /// `http://127.0.0.1:port`: the AccessLink base URL to give a client.
    pub base_url: String,
    /// Ends when the token is cancelled and the server has drained.
    pub handle: JoinHandle<()>,
}

/// The simulator's routes, as the serving function gets them.
pub type Routes = warp::filters::BoxedFilter<(warp::reply::Response,)>;

/// Serves `Routes` on the listener until the token is cancelled, then drains (the caller's
/// server: the simulator imports none).
pub type Serve = fn(
    TcpListener,
    Routes,
    CancellationToken,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Starts the simulator on `listener`, served by `serve`, until `shutdown` is cancelled.
pub fn start(
    listener: TcpListener,
    settings: SimSettings,
    shutdown: CancellationToken,
    serve: Serve,
) -> anyhow::Result<RunningSim> {
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");
    let (tx, rx) = mpsc::unbounded_channel();
    let sim = Sim::new(settings, base_url.clone(), tx)?;

    use warp::Filter;
    let routes = workbench::log_events(sim.clone(), shutdown.clone())
        .or(class::class_events(sim.clone(), shutdown.clone()))
        .unify()
        .or(routes::filter(sim.clone()))
        .unify()
        .boxed();
    let server = serve(listener, routes, shutdown.clone());
    let sender = tokio::spawn(webhooks::send_deliveries(sim.clone(), rx, shutdown.clone()));
    let generator = tokio::spawn(generator::run(sim.clone(), shutdown.clone()));
    let handle = tokio::spawn(async move {
        server.await;
        let _ = generator.await;
        sender.abort();
    });
    tracing::info!(base_url = %base_url, "AccessLink simulator listening");
    Ok(RunningSim {
        sim,
        base_url,
        handle,
    })
}

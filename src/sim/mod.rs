//! The AccessLink simulator: Polar's API v3 on loopback, for tests, the demo and students.
//!
//! It shares no state with the daemon: the two talk only HTTP. [`start`] takes a bound listener
//! and a cancellation token and runs three things: the HTTP server (every request goes through
//! [`state::Sim::handle`]), the delivery sender (signed webhook POSTs after a random delay, some
//! dropped or duplicated as configured) and the generator (new exercises and activity updates per
//! user at exponential intervals, reproducible from a seed).

pub mod model;
pub mod state;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use rand_distr::{Distribution, Exp};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Reply;

pub use state::{DeliveryJob, Faults, Sim, SimRequest, SimResponse, SimSettings, Truth};

use model::Kind;

/// A running simulator.
pub struct RunningSim {
    pub sim: Arc<Sim>,
    /// `http://127.0.0.1:port`: the AccessLink base URL to give a client.
    pub base_url: String,
    /// Ends when the token is cancelled and the server has drained.
    pub handle: JoinHandle<()>,
}

/// Starts the simulator on `listener` until `shutdown` is cancelled.
pub fn start(
    listener: TcpListener,
    settings: SimSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningSim> {
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");
    let (tx, rx) = mpsc::unbounded_channel();
    let sim = Sim::new(settings, base_url.clone(), tx)?;

    let routes = {
        let sim = sim.clone();
        warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .and_then(
                move |method: Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: HeaderMap,
                      body: bytes::Bytes| {
                    let sim = sim.clone();
                    async move {
                        let resp = sim
                            .handle(SimRequest {
                                method,
                                path: path.as_str().to_string(),
                                query,
                                headers,
                                body,
                            })
                            .await;
                        Ok::<_, Infallible>(to_http(resp))
                    }
                },
            )
    };
    let server = warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown.clone().cancelled_owned())
        .run();
    let sender = tokio::spawn(send_deliveries(sim.clone(), rx, shutdown.clone()));
    let generator = tokio::spawn(generate(sim.clone(), shutdown.clone()));
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

fn to_http(resp: SimResponse) -> warp::reply::Response {
    let mut r = match (resp.body, resp.text) {
        (Some(json), _) => warp::reply::json(&json).into_response(),
        (None, Some(text)) => text.into_response(),
        (None, None) => warp::reply::reply().into_response(),
    };
    *r.status_mut() = resp.status;
    for (k, v) in resp.headers {
        if let (Ok(k), Ok(v)) = (
            warp::http::HeaderName::from_bytes(k.as_bytes()),
            warp::http::HeaderValue::from_str(&v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    if resp.status == StatusCode::NO_CONTENT {
        *r.body_mut() = warp::reply::reply().into_response().into_body();
    }
    r
}

/// Sends each delivery after its delay, each in its own task so a slow receiver delays no other.
async fn send_deliveries(
    sim: Arc<Sim>,
    mut rx: mpsc::UnboundedReceiver<DeliveryJob>,
    shutdown: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "simulator: cannot build the delivery client");
            return;
        }
    };
    while let Some(job) = rx.recv().await {
        let (sim, http, shutdown) = (sim.clone(), http.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(job.delay) => {}
            }
            let mut payload = job.payload;
            payload["timestamp"] = serde_json::Value::String(
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
            let body = payload.to_string();
            let signature = crate::accesslink::signature::sign(&job.secret, body.as_bytes());
            let res = http
                .post(&job.url)
                .header("Content-Type", "application/json")
                .header(crate::accesslink::EVENT_HEADER, &job.event)
                .header(crate::accesslink::SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await;
            let status = res.ok().map(|r| r.status().as_u16());
            sim.delivery_done(job.truth_index, status);
        });
    }
}

/// Creates exercises and activity updates per user at exponential intervals (seeded).
async fn generate(sim: Arc<Sim>, shutdown: CancellationToken) {
    let settings = sim.settings();
    let streams: Vec<(Kind, Duration)> = [
        (Kind::Exercise, settings.exercise_every),
        (Kind::Activity, settings.activity_every),
    ]
    .into_iter()
    .filter_map(|(k, d)| d.filter(|d| !d.is_zero()).map(|d| (k, d)))
    .collect();
    if streams.is_empty() {
        return;
    }
    let mut due: std::collections::BTreeMap<(u64, Kind), tokio::time::Instant> =
        std::collections::BTreeMap::new();
    let draw = |sim: &Sim, mean: Duration| {
        let exp = Exp::new(1.0 / mean.as_secs_f64()).expect("a positive mean gives a valid rate");
        Duration::from_secs_f64(sim.with_rng(|r| exp.sample(r)))
    };
    loop {
        let now = tokio::time::Instant::now();
        for uid in sim.active_user_ids() {
            for (kind, mean) in &streams {
                due.entry((uid, *kind))
                    .or_insert_with(|| now + draw(&sim, *mean));
            }
        }
        let next = due.iter().min_by_key(|(_, t)| **t).map(|(k, t)| (*k, *t));
        let wake = next.map(|(_, t)| t);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sim.users_changed.notified() => continue,
            _ = async { match wake { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
        }
        if let Some(((uid, kind), at)) = next {
            if sim.generator_paused() {
                // Keep the schedule moving without making anything.
            } else if sim.generate(uid, kind).is_none() {
                due.remove(&(uid, kind));
                continue;
            }
            let mean = streams.iter().find(|(k, _)| *k == kind).map(|(_, m)| *m);
            if let Some(mean) = mean {
                // From the planned time, not from now: the schedule depends on the seed alone.
                due.insert((uid, kind), at + draw(&sim, mean));
            }
        }
    }
}

impl SimSettings {
    /// Settings from `hookrace sim` options; the error names the bad option.
    pub fn from_args(a: &crate::cli::SimArgs) -> Result<SimSettings, String> {
        let delay = crate::config::parse_delay_range(&a.webhook_delay)
            .map_err(|e| format!("--webhook-delay {:?}: {e}", a.webhook_delay))?;
        for (name, v) in [
            ("--drop-rate", a.drop_rate),
            ("--duplicate-rate", a.duplicate_rate),
            ("--error-rate", a.error_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} {v} must be between 0 and 1"));
            }
        }
        let rate_limit = match &a.rate_limit {
            None => None,
            Some(s) => {
                let parts: Vec<Option<u64>> = s.split(',').map(|p| p.trim().parse().ok()).collect();
                match parts.as_slice() {
                    [Some(short), Some(long)] => Some((*short, *long)),
                    _ => return Err(format!("--rate-limit {s:?} must be SHORT,LONG like 50,500")),
                }
            }
        };
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        Ok(SimSettings {
            seed: a.seed,
            users: a.users,
            exercise_every: nonzero(a.exercise_every),
            activity_every: nonzero(a.activity_every),
            client_id: a.client_id.clone(),
            client_secret: a.client_secret.clone(),
            default_redirect_uri: a.redirect_uri.clone(),
            faults: Faults {
                drop_rate: a.drop_rate,
                duplicate_rate: a.duplicate_rate,
                delay_ms: (delay.0.as_millis() as u64, delay.1.as_millis() as u64),
                error_rate: a.error_rate,
                rate_limit,
                ..Faults::default()
            },
        })
    }
}

/// Changes some of a running simulator's faults over its control API (`GET` then `PUT
/// /sim/faults`), leaving the others as they are; returns the faults now in force.
pub async fn patch_faults(
    http: &reqwest::Client,
    base_url: &str,
    patch: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{base_url}/sim/faults");
    let mut faults: serde_json::Value = http.get(&url).send().await?.json().await?;
    if let Some(fields) = patch.as_object() {
        for (k, v) in fields {
            faults[k] = v.clone();
        }
    }
    let res = http.put(&url).json(&faults).send().await?;
    let status = res.status();
    anyhow::ensure!(
        status.is_success(),
        "changing the simulator's faults at {url}: {status}: {}",
        res.text().await.unwrap_or_default()
    );
    Ok(res.json().await?)
}

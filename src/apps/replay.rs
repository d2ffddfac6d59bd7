//! `hookrace replay`: recorded deliveries sent again to a receiver, re-signed with its secret, at
//! their original spacing scaled by `--speed`. From a store the bodies are the ones received,
//! byte for byte (a later delivery of an entity is sent with its first one's body); from a trace,
//! which keeps no bodies, each is made in Polar's shape from the trace's fields. Sends run
//! concurrently (at most [`IN_FLIGHT`]), so a slow receiver does not stretch the schedule; the
//! summary counts the answers by status and gives the answer time's p50 and p95.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::accesslink::dialect::{self, Dialect};
use crate::accesslink::{EVENT_HEADER, SIGNATURE_HEADER, signature};
use crate::race::SignedHistogram;
use crate::trace::Trace;

/// Deliveries in flight at once: more wait for a slot (and are late; the summary says by how much).
pub const IN_FLIGHT: usize = 64;

/// Options of `hookrace replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Replay the deliveries this store received (a demo's `--store DIR`, a restored backup).
    #[arg(long, required_unless_present = "trace", conflicts_with = "trace")]
    pub store: Option<PathBuf>,
    /// Replay a trace (`hookrace trace export`): bodies are made in Polar's shape from it.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// The receiver's URL.
    #[arg(long)]
    pub to: String,
    /// The receiver's webhook secret: each delivery is signed with it.
    #[arg(long, env = "HOOKRACE_REPLAY_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Time runs this many times faster than it did (60: an hour in a minute).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Only deliveries of this event type (EXERCISE, SLEEP, ...).
    #[arg(long)]
    pub event: Option<String>,
    /// Only deliveries for this user (as the store or the trace names them).
    #[arg(long)]
    pub user: Option<String>,
    /// table: a summary for a person; json: the summary as one document.
    #[arg(long, value_enum, default_value_t)]
    pub format: super::DataFormat,
    /// The dialect the receiver speaks: `polar`, or `standard-webhooks` (the body in the
    /// notify envelope, `--secret` a `whsec_` one, a new `webhook-id` for each delivery).
    #[arg(long, default_value = "polar", value_parser = crate::cli::parse_dialect)]
    pub dialect: Dialect,
}

/// `body` (a stored one in either dialect's shape, or one made from a trace) in `dialect`'s shape.
fn shaped(dialect: Dialect, body: String) -> String {
    // A body that is not JSON is sent as it is: the receiver judges it.
    let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&body) else {
        return body;
    };
    let wrapped = parsed.get("data").is_some_and(serde_json::Value::is_object);
    match (dialect, wrapped) {
        (Dialect::Polar, true) => dialect::open(body.as_bytes())
            .map(|polar| String::from_utf8_lossy(&polar).into_owned())
            .unwrap_or(body),
        (Dialect::StandardWebhooks, false) => dialect::envelope(&parsed).to_string(),
        _ => body,
    }
}

/// The headers that sign `body` in `dialect` with `secret`; `id` names a Standard Webhooks
/// message.
fn signed_headers(
    dialect: Dialect,
    secret: &str,
    event: &str,
    id: &str,
    body: &str,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    Ok(match dialect {
        Dialect::Polar => vec![
            (EVENT_HEADER, event.to_string()),
            (SIGNATURE_HEADER, signature::sign(secret, body.as_bytes())),
        ],
        Dialect::StandardWebhooks => {
            let now = Utc::now().timestamp();
            let signature = dialect::sign(secret, id, now, body.as_bytes())
                .context("--secret is not a whsec_ (base64) secret")?;
            vec![
                (dialect::ID_HEADER, id.to_string()),
                (dialect::TIMESTAMP_HEADER, now.to_string()),
                (dialect::SIGNATURE_HEADER, signature),
            ]
        }
    })
}

/// One delivery to send: when (seconds after the first), its event and its body.
#[derive(Debug, Clone)]
pub struct Planned {
    pub offset_s: f64,
    pub event: String,
    pub body: String,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub sent: u64,
    /// Answers by status code; `"none"` for no answer.
    pub answers: BTreeMap<String, u64>,
    pub answer_ms: crate::race::LatencyStats,
    /// How late the latest send left against its schedule (slots all busy, a slow machine).
    pub most_late_ms: f64,
}

impl Summary {
    /// Every delivery answered 2xx.
    pub fn all_taken(&self) -> bool {
        self.answers
            .iter()
            .all(|(code, _)| code.starts_with('2') && code.len() == 3)
    }
}

/// The deliveries `args` asks for, in order.
pub fn plan(args: &ReplayArgs) -> anyhow::Result<Vec<Planned>> {
    anyhow::ensure!(
        args.speed > 0.0 && args.speed.is_finite(),
        "--speed must be above zero"
    );
    let mut timed: Vec<(DateTime<Utc>, String, String)> = match (&args.store, &args.trace) {
        (Some(dir), _) => from_store(dir, args)?,
        (None, Some(path)) => from_trace(&Trace::read_file(path)?, args),
        (None, None) => anyhow::bail!("give --store DIR or --trace FILE"),
    };
    timed.sort_by_key(|(at, ..)| *at);
    let Some(first) = timed.first().map(|(at, ..)| *at) else {
        anyhow::bail!("nothing to replay: no delivery matches");
    };
    Ok(timed
        .into_iter()
        .map(|(at, event, body)| Planned {
            offset_s: (at - first).as_seconds_f64() / args.speed,
            event,
            body,
        })
        .collect())
}

fn wanted(args: &ReplayArgs, event: &str, user: &str) -> bool {
    args.event
        .as_ref()
        .is_none_or(|e| e.eq_ignore_ascii_case(event))
        && args.user.as_ref().is_none_or(|u| u == user)
}

/// Every delivery the store received, with the body its entity's first delivery carried.
fn from_store(
    dir: &std::path::Path,
    args: &ReplayArgs,
) -> anyhow::Result<Vec<(DateTime<Utc>, String, String)>> {
    let store = super::traffic::open(dir)?;
    let mut out = Vec::new();
    let mut bodies = BTreeMap::new();
    let read = (|| -> anyhow::Result<()> {
        for d in store.deliveries()? {
            bodies.insert(d.entity_key, d.body);
        }
        store.for_each_entity(|e| {
            let Some(body) = bodies.get(e.key.as_str()) else {
                return;
            };
            if !wanted(args, e.kind.as_str(), &e.user_id.0.to_string()) {
                return;
            }
            for at in e.webhook_at.iter().chain(&e.later_deliveries_at) {
                out.push((*at, e.kind.as_str().to_string(), body.clone()));
            }
        })
    })();
    store.close().context("closing the store")?;
    read?;
    Ok(out)
}

/// Deliveries in Polar's shape from a trace's fields; a pseudonymous user becomes a number by
/// its order of appearance (Polar's `user_id` is one).
fn from_trace(trace: &Trace, args: &ReplayArgs) -> Vec<(DateTime<Utc>, String, String)> {
    let mut numbers: BTreeMap<&str, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for e in &trace.entities {
        let next = 1 + numbers.len() as u64;
        let user = *numbers.entry(&e.user).or_insert(next);
        let user_id = e.user.parse::<u64>().unwrap_or(user);
        if !wanted(args, &e.kind, &e.user) {
            continue;
        }
        let body = serde_json::json!({
            "event": e.kind,
            "user_id": user_id,
            "entity_id": e.entity,
            "timestamp": e.made_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "url": format!("https://www.polaraccesslink.com/v3/users/{user_id}/replayed/{}", e.entity),
        })
        .to_string();
        for at in &e.deliveries {
            out.push((*at, e.kind.clone(), body.clone()));
        }
    }
    out
}

/// Sends `plan` to `args.to` on its schedule; `progress` is told of each answer.
pub async fn send(
    plan: Vec<Planned>,
    args: &ReplayArgs,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> anyhow::Result<Summary> {
    let http = crate::http::client(Duration::from_secs(30))?;
    reachable(&args.to).await?;
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let start = tokio::time::Instant::now();
    let progress = Arc::new(progress);
    let mut sends = tokio::task::JoinSet::new();
    let mut most_late = Duration::ZERO;
    // A replay's messages are new ones: a fresh id for each, under a prefix of this run.
    let run = format!("{:08x}", rand::random::<u32>());
    // A bad secret fails at once, not once per delivery.
    anyhow::ensure!(
        args.dialect == Dialect::Polar || dialect::is_secret(&args.secret),
        "--secret is not a whsec_ (base64) secret"
    );
    for (i, p) in plan.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(p.offset_s);
        tokio::time::sleep_until(due).await;
        // The semaphore is never closed: `acquire_owned` cannot fail.
        let slot = slots.clone().acquire_owned().await.expect("open semaphore");
        most_late = most_late.max(tokio::time::Instant::now().saturating_duration_since(due));
        let (http, to, progress) = (http.clone(), args.to.clone(), progress.clone());
        let body = shaped(args.dialect, p.body);
        let headers = signed_headers(
            args.dialect,
            &args.secret,
            &p.event,
            &format!("msg_replay_{run}_{i}"),
            &body,
        )?;
        sends.spawn(async move {
            let sent = std::time::Instant::now();
            let mut request = http.post(&to).header("Content-Type", "application/json");
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let answer = request.body(body).send().await;
            let ms = sent.elapsed().as_secs_f64() * 1000.0;
            drop(slot);
            progress(1);
            (answer.ok().map(|r| r.status().as_u16()), ms)
        });
    }
    let mut summary = Summary::default();
    let mut times = SignedHistogram::new();
    while let Some(done) = sends.join_next().await {
        let (status, ms) = done.context("a send task failed")?;
        summary.sent += 1;
        let code = status.map_or("none".to_string(), |s| s.to_string());
        *summary.answers.entry(code).or_default() += 1;
        times.record_ms(ms);
    }
    summary.answer_ms = times.stats();
    summary.most_late_ms = most_late.as_secs_f64() * 1000.0;
    Ok(summary)
}

/// Fails early, with the URL, when nothing listens there.
async fn reachable(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--to {url:?} is not a URL"))?;
    let host = parsed.host_str().context("--to has no host")?;
    let port = parsed.port_or_known_default().context("--to has no port")?;
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no receiver answers at {url} (no connection in 10 s)"))?
    .map_err(|e| anyhow::anyhow!("no receiver answers at {url} ({e})"))?;
    Ok(())
}

/// The summary for a person.
pub fn render(s: &Summary) -> String {
    let answers: Vec<String> = s
        .answers
        .iter()
        .map(|(code, n)| match code.as_str() {
            "none" => format!("no answer × {n}"),
            code => format!("{code} × {n}"),
        })
        .collect();
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0} ms"));
    format!(
        "replayed {} deliveries: {}; answered in p50 {}, p95 {}; the latest left {:.0} ms behind its schedule\n",
        s.sent,
        answers.join(", "),
        ms(s.answer_ms.p50),
        ms(s.answer_ms.p95),
        s.most_late_ms
    )
}

//! The receiver workbench: for people building their own webhook receiver against the
//! simulator. `hookrace sim trigger` makes data now (with a one-shot fault if asked) and lets
//! the simulator deliver it; `hookrace sim log` prints every delivery, the receiver's answer and
//! what the receiver fetched with which token; `hookrace check-receiver` ([`grade`]) runs Polar's
//! contract against a receiver as rules with verdicts. All of it talks to the simulator's control
//! API over HTTP, so it works against a simulator in another process or on another machine.

pub mod grade;

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::apps::DataFormat;
use crate::sim::LogEntry;

/// Where `hookrace sim` listens by default.
pub const DEFAULT_SIM: &str = "http://127.0.0.1:7070";

/// `hookrace sim trigger`.
#[derive(Debug, Clone, clap::Args)]
pub struct TriggerArgs {
    /// EXERCISE, SLEEP, ACTIVITY_SUMMARY, CONTINUOUS_HEART_RATE, SleepWise, PHYSICAL_INFORMATION,
    /// or ping.
    #[arg(required_unless_present = "replay_old")]
    pub event: Option<String>,
    /// The user the data is for (default: the first registered user).
    #[arg(long)]
    pub user: Option<u64>,
    /// For this student's first user (a class: `hookrace sim --class N`).
    #[arg(long, conflicts_with = "user")]
    pub student: Option<usize>,
    /// For every student with an active webhook (a class), each student's first user.
    #[arg(long, conflicts_with_all = ["user", "student"])]
    pub everyone: bool,
    /// How many items to make.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Do not send the delivery at all (a lost webhook).
    #[arg(long)]
    pub drop: bool,
    /// Send the delivery twice.
    #[arg(long)]
    pub duplicate: bool,
    /// Send the delivery after this long (e.g. 12s) instead of the usual 20–400 ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
    /// Sign the delivery with a wrong secret (a forgery: your receiver must not act on it).
    #[arg(long)]
    pub bad_signature: bool,
    /// Send the delivery without its signature header.
    #[arg(long)]
    pub missing_signature: bool,
    /// Standard Webhooks: sign it with a webhook-timestamp 10 minutes old (a receiver must
    /// refuse it).
    #[arg(long)]
    pub stale_timestamp: bool,
    /// Standard Webhooks: sign it with a webhook-timestamp 10 minutes ahead.
    #[arg(long)]
    pub future_timestamp: bool,
    /// Standard Webhooks: two signatures, a retired key's and the valid one (key rotation).
    #[arg(long)]
    pub rotated_signatures: bool,
    /// Pad the payload with 40 KiB.
    #[arg(long)]
    pub large_payload: bool,
    /// Instead of new data: send the oldest genuine delivery kept again, byte for byte (a
    /// replay attack). A Polar receiver cannot tell it from a new one; a Standard Webhooks
    /// receiver refuses it once its timestamp is more than 5 minutes old.
    #[arg(long, conflicts_with_all = ["user", "student", "everyone", "drop", "duplicate", "data"])]
    pub replay_old: bool,
    /// Set the item's fields from this JSON object instead of drawing them (an exercise's
    /// `sport`, `duration_ms`, `distance_m`, `calories`, `hr_avg`, `hr_max`; a night's `start`,
    /// `end`, `light`, `deep`, `rem`, `score`; ...: docs/simulator.md lists them).
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// Credentials for a class's simulator: `teacher:TOKEN` (the teacher's token `hookrace sim
    /// --class` printed) or your client's `student-03:SECRET`; none for a simulator without a class.
    #[arg(long, env = "HOOKRACE_SIM_AUTH", hide_env_values = true)]
    pub auth: Option<String>,
    /// The running simulator.
    #[arg(long, default_value = DEFAULT_SIM)]
    pub sim: String,
    /// table: a line per item made or delivery; json: the simulator's answer, one document.
    #[arg(long, value_enum, default_value_t)]
    pub format: DataFormat,
}

/// `hookrace sim resend`.
#[derive(Debug, Clone, clap::Args)]
pub struct ResendArgs {
    /// The delivery's number in `hookrace sim log --format json` (`seq`).
    pub seq: u64,
    /// Credentials for a class's simulator: `teacher:TOKEN` (the teacher's token `hookrace sim
    /// --class` printed) or your client's `student-03:SECRET`; none for a simulator without a class.
    #[arg(long, env = "HOOKRACE_SIM_AUTH", hide_env_values = true)]
    pub auth: Option<String>,
    /// The running simulator.
    #[arg(long, default_value = DEFAULT_SIM)]
    pub sim: String,
    /// table: a line; json: the simulator's answer.
    #[arg(long, value_enum, default_value_t)]
    pub format: DataFormat,
}

/// Sends a logged delivery again, byte for byte, and prints the receiver's answer.
pub async fn resend(args: &ResendArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let base = sim_base(&args.sim);
    let body = json!({"seq": args.seq});
    post_resend(&base, &body, args.auth.as_deref(), args.format, out, |v| {
        format!(
            "delivery #{} sent again to {} as #{}: {}",
            args.seq,
            v["receiver"].as_str().unwrap_or("?"),
            v["seq"],
            match v["status"].as_u64() {
                Some(code) => format!("answered {code}"),
                None => "no answer".to_string(),
            }
        )
    })
    .await
}

/// `POST /sim/resend` with `body`, and the answer printed: as JSON, or as `line` says.
async fn post_resend(
    base: &str,
    body: &Value,
    auth: Option<&str>,
    format: DataFormat,
    out: &mut (dyn Write + Send),
    line: impl FnOnce(&Value) -> String,
) -> anyhow::Result<()> {
    let v = control_post(base, "resend", body, auth).await?;
    match format {
        DataFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
        DataFormat::Table => writeln!(out, "{}", line(&v))?,
    }
    Ok(())
}

/// `hookrace sim log`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Keep printing new entries as they happen (Ctrl-C to stop).
    #[arg(short, long)]
    pub follow: bool,
    /// table: a sentence per entry; json: one array of entries (with --follow: one object per
    /// line, as they happen).
    #[arg(long, value_enum, default_value_t)]
    pub format: DataFormat,
    /// The same as `--format json` (kept for scripts written before `--format`).
    #[arg(long, hide = true)]
    pub json: bool,
    /// Only this student's entries (a class; the teacher sees every student's).
    #[arg(long)]
    pub student: Option<usize>,
    /// Only deliveries of this event type (EXERCISE, SLEEP, ...).
    #[arg(long)]
    pub event: Option<String>,
    /// Only entries answered so: 2xx, 4xx, 5xx, or none (no answer, or not sent).
    #[arg(long, value_parser = ["2xx", "3xx", "4xx", "5xx", "none"])]
    pub answer: Option<String>,
    /// Credentials for a class's simulator: `teacher:TOKEN` (the teacher's token `hookrace sim
    /// --class` printed) or your client's `student-03:SECRET`; none for a simulator without a class.
    #[arg(long, env = "HOOKRACE_SIM_AUTH", hide_env_values = true)]
    pub auth: Option<String>,
    /// The running simulator.
    #[arg(long, default_value = DEFAULT_SIM)]
    pub sim: String,
}

/// Whether `e` passes `sim log`'s filters (`--student`, `--event`, `--answer`).
fn wanted(args: &LogArgs, e: &LogEntry) -> bool {
    use crate::sim::Logged;
    let (event, status) = match &e.what {
        Logged::Delivery { event, status, .. } => (Some(event.as_str()), *status),
        Logged::Ping { status, .. } => (None, *status),
        Logged::Request { status, .. } => (None, Some(*status)),
    };
    let answer = status.map_or("none".to_string(), |s| format!("{}xx", s / 100));
    args.student.is_none_or(|n| e.client == n)
        && args
            .event
            .as_ref()
            .is_none_or(|want| event.is_some_and(|ev| ev.eq_ignore_ascii_case(want)))
        && args.answer.as_ref().is_none_or(|want| *want == answer)
}

/// The most a command reads of one answer of the simulator (a trigger's answer, one line of
/// the log's event stream), and of the whole log: a server that sends more is not the
/// simulator, and reading it whole filled gigabytes (`sim trigger`: 8.6 GB in 25 s).
pub const ANSWER_MAX: usize = 1024 * 1024;
/// The whole log (at most 10,000 entries of a few hundred bytes each).
pub const LOG_MAX: usize = 64 * 1024 * 1024;

/// The simulator's base URL from `--sim` (`127.0.0.1:7070` or a URL).
pub fn sim_base(sim: &str) -> String {
    let sim = sim.trim_end_matches('/');
    if sim.starts_with("http://") || sim.starts_with("https://") {
        sim.to_string()
    } else {
        format!("http://{sim}")
    }
}

fn unreachable(base: &str, e: reqwest::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "no simulator answers at {base} ({e}): start one with `hookrace sim`, or name it with --sim"
    )
}

/// `request` with `--auth USER:SECRET` as HTTP Basic credentials, when given.
pub fn with_auth(
    request: reqwest::RequestBuilder,
    auth: Option<&str>,
) -> anyhow::Result<reqwest::RequestBuilder> {
    match auth {
        None => Ok(request),
        Some(a) => match a.split_once(':') {
            Some((user, secret)) if !user.is_empty() => Ok(request.basic_auth(user, Some(secret))),
            _ => bail!("--auth must be USER:SECRET (teacher:TOKEN, or student-03:SECRET)"),
        },
    }
}

/// Posts `body` to the simulator's control route `/sim/{route}`; its JSON answer, or an error
/// with the simulator's own words when it refused.
async fn control_post(
    base: &str,
    route: &str,
    body: &Value,
    auth: Option<&str>,
) -> anyhow::Result<Value> {
    let http = crate::http::client(Duration::from_secs(30))?;
    let res = with_auth(http.post(format!("{base}/sim/{route}")).json(body), auth)?
        .send()
        .await
        .map_err(|e| unreachable(base, e))?;
    let status = res.status();
    let answer = crate::http::read_capped(res, ANSWER_MAX, &format!("sim {route}")).await?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&answer);
        bail!(
            "the simulator at {base} refused ({status}): {}",
            text.trim()
        );
    }
    serde_json::from_slice(&answer).context("reading the simulator's answer")
}

/// Makes the data (or the PING) and prints what was made and where it is delivered.
pub async fn trigger(args: &TriggerArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let base = sim_base(&args.sim);
    if args.replay_old {
        return replay_old(&base, args, out).await;
    }
    let event = args.event.as_deref().unwrap_or_default();
    let mut request = trigger_request(args);
    if let Some(path) = &args.data {
        request["data"] = custom_data(path)?;
    }
    let v = control_post(&base, "trigger", &request, args.auth.as_deref()).await?;
    if args.format == DataFormat::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return triggered(&v, event);
    }
    // One line for every student skipped, whatever the class's size (the reasons are in the
    // JSON answer).
    let skipped: Vec<&str> = v["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["client_id"].as_str().unwrap_or("?"))
        .collect();
    if !skipped.is_empty() {
        writeln!(
            out,
            "skipped {} without an active webhook for {}: {}",
            skipped.len(),
            event,
            skipped.join(", ")
        )?;
    }
    if v["event"] == "PING" {
        report_pings(&v, out)?;
        return triggered(&v, event);
    }
    triggered(&v, event)?;
    let fault = v["fault"]
        .as_str()
        .map(|f| format!(" with fault {f}"))
        .unwrap_or_default();
    for m in v["made"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "made {} {} for user {}: data at {}",
            m["type"].as_str().unwrap_or("?"),
            m["entity_id"].as_str().unwrap_or("?"),
            m["user_id"],
            m["url"].as_str().unwrap_or("?"),
        )?;
    }
    for d in v["delivered_to"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "delivering to {}{fault}",
            d["webhook"].as_str().unwrap_or("?")
        )?;
    }
    writeln!(
        out,
        "watch it with `hookrace sim log --follow` or {base}/sim/watch"
    )?;
    Ok(())
}

/// `sim trigger --replay-old`: the oldest genuine delivery sent again, and how it was answered.
async fn replay_old(
    base: &str,
    args: &TriggerArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let body = json!({"oldest": true});
    post_resend(base, &body, args.auth.as_deref(), args.format, out, |v| {
        format!(
            "replayed delivery #{} ({} s old) to {} as #{}, byte for byte: {}",
            v["resent"],
            v["age_s"],
            v["receiver"].as_str().unwrap_or("?"),
            v["seq"],
            match v["status"].as_u64() {
                Some(code @ 200..300) => format!("answered {code}: the receiver took the replay"),
                Some(code) => format!("answered {code}: refused"),
                None => "no answer".to_string(),
            }
        )
    })
    .await
}

/// The JSON object in `path` (`--data`), read up to 64 KiB (the simulator's body limit).
fn custom_data(path: &std::path::Path) -> anyhow::Result<Value> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).with_context(|| format!("opening --data {}", path.display()))?;
    let mut text = Vec::new();
    file.take(64 * 1024 + 1)
        .read_to_end(&mut text)
        .with_context(|| format!("reading --data {}", path.display()))?;
    anyhow::ensure!(
        text.len() <= 64 * 1024,
        "--data {}: more than 64 KiB",
        path.display()
    );
    match serde_json::from_slice::<Value>(&text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => bail!(
            "--data {}: not a JSON object ({{\"sport\": \"RUNNING\", ...}})",
            path.display()
        ),
        Err(e) => bail!("--data {}: not JSON ({e})", path.display()),
    }
}

/// The body of `POST /sim/trigger` for `args`.
fn trigger_request(args: &TriggerArgs) -> Value {
    let mut fault = json!({
        "drop": args.drop,
        "duplicate": args.duplicate,
        "bad_signature": args.bad_signature,
        "missing_signature": args.missing_signature,
        "stale_timestamp": args.stale_timestamp,
        "future_timestamp": args.future_timestamp,
        "rotated_signatures": args.rotated_signatures,
        "large_payload": args.large_payload,
    });
    if let Some(d) = args.delay {
        fault["delay_ms"] = json!(crate::units::millis(d));
    }
    let mut body = json!({"event": args.event.as_deref().unwrap_or_default(), "count": args.count, "fault": fault,
                          "everyone": args.everyone});
    if let Some(u) = args.user {
        body["user_id"] = json!(u);
    }
    if let Some(n) = args.student {
        body["student"] = json!(n);
    }
    body
}

/// Each PING the simulator sent and how it was answered.
fn report_pings(v: &Value, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    for p in v["pinged"].as_array().into_iter().flatten() {
        let to = p["webhook"].as_str().unwrap_or("?");
        if p["answered"] == true {
            writeln!(out, "PING sent to {to}: answered 200")?;
        } else {
            let problem = p["problem"].as_str().unwrap_or("not answered 200");
            writeln!(out, "PING sent to {to}: {problem}")?;
        }
    }
    Ok(())
}

/// Whether the trigger did its job, from the simulator's answer: an error when nothing was
/// made, or a PING found no webhook or was not answered 200.
fn triggered(v: &Value, event: &str) -> anyhow::Result<()> {
    if v["event"] == "PING" {
        let pinged = v["pinged"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let failed = pinged.iter().filter(|p| p["answered"] != true).count();
        if failed > 0 {
            bail!("{failed} PING(s) not answered 200");
        }
        if pinged.is_empty() {
            bail!("no webhook to PING");
        }
    } else if v["made"].as_array().is_none_or(|m| m.is_empty()) {
        bail!("nothing was made: no student has an active webhook for {event}");
    }
    Ok(())
}

/// Prints the log, and with `--follow` every new entry until the simulator stops.
pub async fn log(args: &LogArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let base = sim_base(&args.sim);
    let json = args.json || args.format == DataFormat::Json;
    let print = |out: &mut (dyn Write + Send), e: &LogEntry| -> std::io::Result<()> {
        if !wanted(args, e) {
            return Ok(());
        }
        if json {
            writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default())?;
        } else {
            writeln!(out, "{}", e.line())?;
        }
        out.flush()
    };
    if !args.follow {
        let http = crate::http::client(Duration::from_secs(30))?;
        let res = with_auth(http.get(format!("{base}/sim/log")), args.auth.as_deref())?
            .send()
            .await
            .map_err(|e| unreachable(&base, e))?
            .error_for_status()
            .with_context(|| format!("reading {base}/sim/log"))?;
        let body = crate::http::read_capped(res, LOG_MAX, "sim log").await?;
        let mut entries: Vec<LogEntry> =
            serde_json::from_slice(&body).with_context(|| format!("reading {base}/sim/log"))?;
        entries.retain(|e| wanted(args, e));
        if json {
            writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
        } else {
            for e in &entries {
                print(out, e)?;
            }
        }
        return Ok(());
    }
    // A stream lives as long as the simulator: no timeout on the whole request.
    let http = crate::http::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("building an HTTP client")?;
    let res = with_auth(
        http.get(format!("{base}/sim/log/events")),
        args.auth.as_deref(),
    )?
    .send()
    .await
    .map_err(|e| unreachable(&base, e))?
    .error_for_status()
    .with_context(|| format!("following {base}/sim/log/events"))?;
    let mut body = res.bytes_stream();
    let mut pending = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("following {base}/sim/log/events"))?;
        pending.push_str(&String::from_utf8_lossy(&chunk));
        if pending.len() > ANSWER_MAX && !pending.contains('\n') {
            bail!(
                "following {base}/sim/log/events: a line longer than {ANSWER_MAX} bytes, more \
                 than hookrace reads (is that a hookrace simulator?)"
            );
        }
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if let Some(data) = line.trim_end().strip_prefix("data:") {
                if let Ok(e) = serde_json::from_str::<LogEntry>(data.trim_start()) {
                    print(out, &e)?;
                }
            }
        }
    }
    if json {
        // In json, stdout carries the entries alone.
        eprintln!("(the simulator at {base} stopped)");
    } else {
        writeln!(out, "(the simulator at {base} stopped)")?;
    }
    Ok(())
}

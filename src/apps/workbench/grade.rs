//! `hookrace check-receiver URL`: grades a webhook receiver against Polar's contract. It starts a
//! simulator (or uses `--sim`), fixes the webhook secret and two users' tokens in advance (and
//! prints them, or writes them to `--env-file` for the receiver to read), registers URL as the
//! client's webhook (Polar's PING must pass first), then runs each rule as a scenario through
//! `POST /sim/trigger` and judges it from the simulator's log: what the receiver answered, how
//! fast, and what it fetched with whose token. Output: a table with a one-line score, JSON, or a
//! JUnit file for CI; the exit code is 0 only when every required rule passes.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::sim_base;
use crate::sim::{LogEntry, Logged, path_of};

/// The simulator's delivery timeout: a delivery not answered within it is lost. Polar does not
/// publish its own; this is the budget a receiver must stay far inside.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer slower than this is a warning: a receiver should answer at once and work after.
const SLOW_ANSWER_MS: u64 = 1000;
/// How many fetches of data that is gone count as retrying for ever.
const MAX_FETCHES_OF_GONE: usize = 3;

/// `hookrace check-receiver`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The receiver's URL, as Polar would call it (e.g. http://127.0.0.1:8000/acl_webhook).
    pub url: String,
    /// Use this running simulator (address or URL) instead of starting one; its webhook, if any,
    /// is replaced.
    #[arg(long)]
    pub sim: Option<String>,
    /// The webhook secret the receiver verifies signatures with (default: a new random one).
    #[arg(long)]
    pub secret: Option<String>,
    /// The access tokens of the two test users, `TOKEN_A,TOKEN_B` (default: new random ones).
    #[arg(long, value_delimiter = ',', num_args = 2)]
    pub tokens: Vec<String>,
    /// Write the secret, the users and their tokens to this file (KEY=value lines) before the
    /// webhook is registered, for the receiver to read.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// How long to wait for the receiver's fetches after each delivery.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub fetch_wait: Duration,
    /// How the result is printed.
    #[arg(long, value_enum, default_value_t = GradeFormat::Table)]
    pub format: GradeFormat,
    /// Also write the result as a JUnit XML file (one test case per rule), for CI.
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GradeFormat {
    Table,
    Json,
}

/// A rule's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// Kept, with a recommendation not followed.
    Warn,
    Fail,
}

/// One rule of the contract, judged.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// A short stable name (`ping`, `signed-delivery`, …).
    pub rule: &'static str,
    /// What the rule asks.
    pub title: &'static str,
    /// Whether a failure fails the grade (every rule is required; a warning never fails).
    pub required: bool,
    pub outcome: Outcome,
    /// What was observed.
    pub observed: String,
    /// How to fix it (empty when it passed).
    pub fix: String,
}

/// The whole grade.
#[derive(Debug, Clone, Serialize)]
pub struct Grade {
    pub receiver: String,
    pub simulator: String,
    pub verdicts: Vec<Verdict>,
    /// The receiver's answer times to signed deliveries, in milliseconds.
    pub answer_p50_ms: Option<u64>,
    pub answer_p95_ms: Option<u64>,
}

impl Grade {
    pub fn passed(&self) -> bool {
        self.verdicts
            .iter()
            .all(|v| !(v.required && v.outcome == Outcome::Fail))
    }

    /// `7 of 9 rules pass, 1 warning, 1 failure`.
    pub fn score(&self) -> String {
        let n = |o| self.verdicts.iter().filter(|v| v.outcome == o).count();
        format!(
            "{} of {} rules pass, {} with a warning, {} failed: {}",
            n(Outcome::Pass) + n(Outcome::Warn),
            self.verdicts.len(),
            n(Outcome::Warn),
            n(Outcome::Fail),
            if self.passed() {
                "the receiver keeps Polar's contract"
            } else {
                "the receiver does not keep Polar's contract yet"
            }
        )
    }
}

/// The secrets the receiver needs before its first delivery.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub secret: String,
    /// `(user id, token)` of the two test users.
    pub users: Vec<(u64, String)>,
    pub base: String,
}

impl Fixture {
    /// The `--env-file` contents: `POLAR_WEBHOOK_SECRET`, `POLAR_BASE_URL` and
    /// `POLAR_ACCESS_TOKENS=user=token,user=token`.
    pub fn env(&self) -> String {
        let tokens: Vec<String> = self.users.iter().map(|(u, t)| format!("{u}={t}")).collect();
        format!(
            "POLAR_WEBHOOK_SECRET={}\nPOLAR_BASE_URL={}\nPOLAR_ACCESS_TOKENS={}\n",
            self.secret,
            self.base,
            tokens.join(",")
        )
    }
}

fn random_hex(bytes: usize) -> String {
    let b: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(b)
}

/// Runs the grade and prints it (and writes the JUnit file); [`Grade::passed`] says whether
/// every required rule passed.
pub async fn run(args: &CheckArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<Grade> {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let base = match &args.sim {
        Some(s) => sim_base(s),
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding the grader's simulator on loopback")?;
            let settings = crate::sim::SimSettings {
                users: 0,
                faults: crate::sim::Faults {
                    delay_ms: (5, 30),
                    ..Default::default()
                },
                ..Default::default()
            };
            crate::sim::start(listener, settings, shutdown.clone())?.base_url
        }
    };
    let sim = SimClient::connect(&base).await?;
    let fixture = sim.prepare(args).await?;
    if let Some(path) = &args.env_file {
        std::fs::write(path, fixture.env())
            .with_context(|| format!("writing the receiver's secrets to {}", path.display()))?;
    }
    if args.format == GradeFormat::Table {
        writeln!(out, "hookrace check-receiver: {} against {base}", args.url)?;
        writeln!(out, "  webhook secret   {}", fixture.secret)?;
        for (u, t) in &fixture.users {
            writeln!(out, "  user {u}       access token {t}")?;
        }
        if let Some(p) = &args.env_file {
            writeln!(out, "  (also in {})", p.display())?;
        }
        writeln!(out)?;
    }
    let grade = grade(&sim, &fixture, &args.url, args.fetch_wait).await?;
    match args.format {
        GradeFormat::Table => write!(out, "{}", render_table(&grade))?,
        GradeFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&grade)?)?,
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, render_junit(&grade))
            .with_context(|| format!("writing the JUnit report to {}", path.display()))?;
    }
    Ok(grade)
}

/// The simulator's control API and client-credential routes, as the grader uses them.
struct SimClient {
    http: reqwest::Client,
    base: String,
    client: (String, String),
}

impl SimClient {
    /// The simulator at `base`, with the client credentials it accepts (its defaults: a
    /// simulator started with other ones is driven through `--sim` only with those).
    async fn connect(base: &str) -> anyhow::Result<SimClient> {
        let mut sim = SimClient {
            http: crate::http::client(DELIVERY_TIMEOUT + Duration::from_secs(20))?,
            base: base.to_string(),
            client: ("hookrace-sim".into(), "hookrace-sim-secret".into()),
        };
        let truth = sim
            .send(
                sim.http.get(format!("{}/sim/truth", sim.base)),
                "reading the simulator",
            )
            .await?;
        if let Some(id) = truth["client_id"].as_str() {
            sim.client.0 = id.to_string();
        }
        Ok(sim)
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let res = req.send().await.map_err(|e| {
            anyhow::anyhow!(
                "{what}: no simulator answers at {} ({e}): start one with `hookrace sim`, or \
                 leave out --sim",
                self.base
            )
        })?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{what}: the simulator answered {status}: {}", text.trim());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn control(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(
            self.http
                .post(format!("{}/sim/{path}", self.base))
                .json(&body),
            &format!("POST /sim/{path}"),
        )
        .await
    }

    /// Fixes the secret and the two users' tokens, and removes a webhook left from before.
    async fn prepare(&self, args: &CheckArgs) -> anyhow::Result<Fixture> {
        let truth = self
            .send(
                self.http.get(format!("{}/sim/truth", self.base)),
                "reading the simulator",
            )
            .await?;
        if let Some(id) = truth["webhook"]["id"].as_str() {
            self.send(
                self.http
                    .delete(format!("{}/v3/webhooks/{id}", self.base))
                    .basic_auth(&self.client.0, Some(&self.client.1)),
                "removing the simulator's previous webhook",
            )
            .await?;
        }
        let secret = args.secret.clone().unwrap_or_else(|| random_hex(16));
        self.control("webhook-secret", json!({ "secret": secret }))
            .await?;
        let mut users = Vec::new();
        for i in 0..2 {
            let token = args
                .tokens
                .get(i)
                .cloned()
                .unwrap_or_else(|| random_hex(16));
            let v = self
                .control("users", json!({ "access_token": token }))
                .await?;
            users.push((v["user_id"].as_u64().unwrap_or_default(), token));
        }
        Ok(Fixture {
            secret,
            users,
            base: self.base.clone(),
        })
    }

    async fn register(&self, url: &str) -> anyhow::Result<Result<(), String>> {
        let res = self
            .http
            .post(format!("{}/v3/webhooks", self.base))
            .basic_auth(&self.client.0, Some(&self.client.1))
            // Every event type Polar delivers.
            .json(&json!({
                "events": crate::accesslink::identity::EventType::KNOWN.map(|e| e.as_str().to_string()),
                "url": url,
            }))
            .send()
            .await
            .with_context(|| format!("registering the webhook at {}", self.base))?;
        if res.status().as_u16() == 201 {
            return Ok(Ok(()));
        }
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        Ok(Err(format!("{status}: {}", body.trim())))
    }

    async fn log_after(&self, seq: u64) -> anyhow::Result<Vec<LogEntry>> {
        let v = self
            .send(
                self.http.get(format!("{}/sim/log?after={seq}", self.base)),
                "reading the simulator's log",
            )
            .await?;
        serde_json::from_value(v).context("reading the simulator's log")
    }

    async fn last_seq(&self) -> anyhow::Result<u64> {
        Ok(self.log_after(0).await?.last().map_or(0, |e| e.seq))
    }
}

/// What one scenario saw: the deliveries of its data and every request for that data.
struct Seen {
    deliveries: Vec<(Option<u16>, Option<u64>)>,
    /// `(path, token's user, status)` of each request for the scenario's data.
    fetches: Vec<(String, Option<u64>, u16)>,
    /// The data's paths and whom each was for.
    made: Vec<(String, u64)>,
    /// Requests with a token after the scenario began (whatever they asked for).
    requests: usize,
}

impl Seen {
    fn answered_ok(&self) -> usize {
        self.deliveries
            .iter()
            .filter(|d| d.0.is_some_and(|s| (200..300).contains(&s)))
            .count()
    }
    fn statuses(&self) -> String {
        statuses(&self.deliveries)
    }
    fn fetched(&self, path: &str) -> usize {
        self.fetches.iter().filter(|f| f.0 == path).count()
    }
}

/// The distinct answers among `deliveries` (`200, 503`, `no answer`).
fn statuses(deliveries: &[(Option<u16>, Option<u64>)]) -> String {
    let mut v: Vec<String> = deliveries
        .iter()
        .map(|d| d.0.map_or("no answer".to_string(), |s| s.to_string()))
        .collect();
    v.sort();
    v.dedup();
    v.join(", ")
}

impl SimClient {
    /// Triggers `event` (`count` items for `user`, with `fault`), waits until each delivery is
    /// answered (or given up) and then `wait` for fetches, and returns what the log shows.
    async fn scenario(
        &self,
        event: &str,
        user: u64,
        count: u32,
        fault: Value,
        wait: Duration,
    ) -> anyhow::Result<Seen> {
        let start = self.last_seq().await?;
        let made = self
            .control(
                "trigger",
                json!({"event": event, "user_id": user, "count": count, "fault": fault}),
            )
            .await?;
        let made: Vec<(String, u64)> = made["made"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    path_of(m["url"].as_str().unwrap_or_default()),
                    m["user_id"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        let expected = made.len() * if fault["duplicate"] == true { 2 } else { 1 };
        let expected = if fault["drop"] == true { 0 } else { expected };
        let deadline = Instant::now() + DELIVERY_TIMEOUT + Duration::from_secs(5);
        loop {
            let entries = self.log_after(start).await?;
            let answered = entries
                .iter()
                .filter(|e| matches!(&e.what, Logged::Delivery { sent: true, .. }))
                .count();
            if answered >= expected || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(wait).await;
        let entries = self.log_after(start).await?;
        let paths: Vec<&String> = made.iter().map(|m| &m.0).collect();
        let mut seen = Seen {
            deliveries: Vec::new(),
            fetches: Vec::new(),
            made: made.clone(),
            requests: 0,
        };
        for e in entries {
            match e.what {
                Logged::Delivery {
                    url,
                    sent: true,
                    status,
                    ms,
                    ..
                } if paths.contains(&&path_of(&url)) => seen.deliveries.push((status, ms)),
                Logged::Request {
                    path,
                    token_user,
                    status,
                    ..
                } => {
                    seen.requests += 1;
                    if paths.contains(&&path) {
                        seen.fetches.push((path, token_user, status));
                    }
                }
                _ => {}
            }
        }
        Ok(seen)
    }
}

fn verdict(
    rule: &'static str,
    title: &'static str,
    outcome: Outcome,
    observed: String,
    fix: &str,
) -> Verdict {
    Verdict {
        rule,
        title,
        required: true,
        outcome,
        observed,
        fix: if outcome == Outcome::Pass {
            String::new()
        } else {
            fix.to_string()
        },
    }
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = crate::units::floor_usize(((sorted.len() as f64 - 1.0) * p).round());
    sorted.get(i).copied()
}

/// Runs every rule against the receiver at `url`.
async fn grade(
    sim: &SimClient,
    fixture: &Fixture,
    url: &str,
    wait: Duration,
) -> anyhow::Result<Grade> {
    let mut verdicts = Vec::new();
    let (alice, bob) = (fixture.users[0].0, fixture.users[1].0);
    // 1. PING.
    let before = sim.last_seq().await?;
    let registered = sim.register(url).await?;
    tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
    let after_ping = sim.log_after(before).await?;
    let fetched_after_ping = after_ping
        .iter()
        .filter(|e| matches!(e.what, Logged::Request { .. }))
        .count();
    let ping_title = "PING answered 200 without a signature check, and not taken as data";
    match registered {
        Err(why) => {
            verdicts.push(verdict(
                "ping",
                ping_title,
                Outcome::Fail,
                format!("the webhook could not be registered: {why}"),
                "Answer a POST whose Polar-Webhook-Event header is PING with 200 before anything \
                 else: Polar registers the webhook only if its PING is answered 200.",
            ));
            return Ok(Grade {
                receiver: url.to_string(),
                simulator: sim.base.clone(),
                verdicts,
                answer_p50_ms: None,
                answer_p95_ms: None,
            });
        }
        Ok(()) => verdicts.push(verdict(
            "ping",
            ping_title,
            if fetched_after_ping == 0 {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            format!("PING answered 200; {fetched_after_ping} request(s) to AccessLink followed it"),
            "A PING carries no data: answer 200 and do nothing else.",
        )),
    }

    // 2 and 3. Signed deliveries for two users: answered 200 quickly, fetched with the right token.
    let a = sim.scenario("EXERCISE", alice, 3, json!({}), wait).await?;
    let b = sim.scenario("EXERCISE", bob, 2, json!({}), wait).await?;
    let mut times: Vec<u64> = a
        .deliveries
        .iter()
        .chain(&b.deliveries)
        .filter_map(|d| d.1)
        .collect();
    times.sort_unstable();
    let (p50, p95) = (percentile(&times, 0.5), percentile(&times, 0.95));
    let total = a.deliveries.len() + b.deliveries.len();
    let ok = a.answered_ok() + b.answered_ok();
    let timing = format!(
        "answer p50 {} ms, p95 {} ms",
        p50.map_or("–".into(), |v| v.to_string()),
        p95.map_or("–".into(), |v| v.to_string())
    );
    verdicts.push(verdict(
        "signed-delivery",
        "a signed delivery answered 200 quickly",
        if ok < total || total == 0 {
            Outcome::Fail
        } else if p95.unwrap_or(0) > SLOW_ANSWER_MS {
            Outcome::Warn
        } else {
            Outcome::Pass
        },
        format!(
            "{ok} of {total} answered 2xx ({}); {timing}",
            statuses(&[a.deliveries.clone(), b.deliveries.clone()].concat())
        ),
        "Verify the signature, keep the notification (durably), answer 200 at once and fetch \
         afterwards: Polar gives up on a slow answer and does not retry.",
    ));
    let mut right = 0;
    let mut wrong = Vec::new();
    let mut missing = 0;
    for seen in [&a, &b] {
        for (path, user) in &seen.made {
            let mine: Vec<_> = seen.fetches.iter().filter(|f| &f.0 == path).collect();
            if mine.is_empty() {
                missing += 1;
            } else if mine.iter().any(|f| f.1 == Some(*user) && f.2 == 200) {
                right += 1;
            } else {
                wrong.push(format!(
                    "{path} with {}",
                    mine[0]
                        .1
                        .map_or("an unknown token".to_string(), |u| format!(
                            "user {u}'s token"
                        ))
                ));
            }
        }
    }
    let made = a.made.len() + b.made.len();
    verdicts.push(verdict(
        "fetch",
        "the data fetched from `url` with the right user's token",
        if right == made {
            Outcome::Pass
        } else {
            Outcome::Fail
        },
        format!(
            "{right} of {made} fetched with their user's token within {}; {missing} never \
             fetched{}",
            humantime::format_duration(wait),
            if wrong.is_empty() {
                String::new()
            } else {
                format!("; wrong: {}", wrong.join(", "))
            }
        ),
        "GET the delivery's `url` with the access token of the delivery's `user_id` (keep a \
         token per user); the notification carries no data itself.",
    ));

    // 4. A forged delivery.
    let forged = sim
        .scenario("EXERCISE", alice, 1, json!({"bad_signature": true}), wait)
        .await?;
    let status = forged.deliveries.first().and_then(|d| d.0);
    let acted = forged.fetches.len();
    verdicts.push(verdict(
        "forged-delivery",
        "a delivery with a wrong signature not acted on (4xx recommended)",
        match (acted, status) {
            (0, Some(s)) if (400..500).contains(&s) => Outcome::Pass,
            (0, _) => Outcome::Warn,
            _ => Outcome::Fail,
        },
        format!(
            "answered {}; {acted} fetch(es) of its data",
            status.map_or("nothing".into(), |s| s.to_string())
        ),
        "Compute HMAC-SHA256 of the raw body with the webhook's secret and compare it (in \
         constant time) with Polar-Webhook-Signature; on a mismatch answer 401 and do nothing.",
    ));

    // 5. A duplicate delivery.
    let dup = sim
        .scenario("EXERCISE", alice, 1, json!({"duplicate": true}), wait)
        .await?;
    let path = dup.made.first().map(|m| m.0.clone()).unwrap_or_default();
    let fetched = dup.fetched(&path);
    verdicts.push(verdict(
        "duplicate",
        "a duplicate delivery answered 200 and fetched at most once",
        if dup.answered_ok() < 2 {
            Outcome::Fail
        } else if fetched == 1 {
            Outcome::Pass
        } else if fetched == 0 {
            Outcome::Fail
        } else {
            Outcome::Warn
        },
        format!(
            "{} of 2 copies answered 2xx ({}); the data fetched {fetched} time(s)",
            dup.answered_ok(),
            dup.statuses()
        ),
        "Answer a repeated delivery 200 (it is not an error) and skip what you already have: \
         key each notification by (event, user_id, entity_id or date).",
    ));

    // 6. An unknown event type and an unknown user.
    for (rule, title, fault) in [
        (
            "unknown-event",
            "an unknown event type answered without a crash (2xx or 4xx)",
            json!({"unknown_event": true}),
        ),
        (
            "unknown-user",
            "a delivery for an unknown user answered without a crash (2xx or 4xx)",
            json!({"unknown_user": true}),
        ),
    ] {
        let seen = sim.scenario("EXERCISE", alice, 1, fault, wait).await?;
        let status = seen.deliveries.first().and_then(|d| d.0);
        verdicts.push(verdict(
            rule,
            title,
            match status {
                Some(s) if (200..500).contains(&s) => Outcome::Pass,
                _ => Outcome::Fail,
            },
            format!(
                "answered {}",
                status.map_or("nothing (no answer or timed out)".into(), |s| s.to_string())
            ),
            "Polar adds event types and may name a user you no longer have: answer 200 (or a \
             4xx) and ignore what you do not know; never a 5xx, never a hang.",
        ));
    }

    // 7. A burst.
    let burst = sim.scenario("EXERCISE", bob, 50, json!({}), wait).await?;
    let mut burst_times: Vec<u64> = burst.deliveries.iter().filter_map(|d| d.1).collect();
    burst_times.sort_unstable();
    verdicts.push(verdict(
        "burst",
        "a burst of 50 deliveries all answered within the timeout",
        if burst.answered_ok() == 50 {
            Outcome::Pass
        } else {
            Outcome::Fail
        },
        format!(
            "{} of 50 answered 2xx; slowest {} ms",
            burst.answered_ok(),
            burst_times.last().map_or("–".into(), |v| v.to_string())
        ),
        "Answer each delivery independently and at once (queue the fetches): deliveries arrive \
         together when many users sync at the same time.",
    ));

    // 8. Data gone before the fetch.
    let gone = sim
        .scenario("EXERCISE", alice, 1, json!({"gone": true}), wait * 3)
        .await?;
    let path = gone.made.first().map(|m| m.0.clone()).unwrap_or_default();
    let tries = gone.fetched(&path);
    verdicts.push(verdict(
        "gone",
        "data gone by the fetch (404/204) does not make the receiver retry for ever",
        if tries <= MAX_FETCHES_OF_GONE {
            Outcome::Pass
        } else {
            Outcome::Fail
        },
        format!(
            "fetched {tries} time(s) in {} (answered 404)",
            humantime::format_duration(wait * 3)
        ),
        "A 404 or 204 on the data means it is gone (deleted, or a newer version replaced it): \
         give up on it; retry only a 429 or a 5xx, a few times, with growing pauses.",
    ));

    // 9. A zone-less timestamp.
    let zoneless = sim
        .scenario(
            "EXERCISE",
            alice,
            1,
            json!({"zoneless_timestamp": true}),
            wait,
        )
        .await?;
    let status = zoneless.deliveries.first().and_then(|d| d.0);
    let path = zoneless
        .made
        .first()
        .map(|m| m.0.clone())
        .unwrap_or_default();
    verdicts.push(verdict(
        "zoneless-timestamp",
        "a `timestamp` without a time zone accepted",
        if status == Some(200) && zoneless.fetched(&path) >= 1 {
            Outcome::Pass
        } else {
            Outcome::Fail
        },
        format!(
            "answered {}; data fetched {} time(s)",
            status.map_or("nothing".into(), |s| s.to_string()),
            zoneless.fetched(&path)
        ),
        "Polar's examples carry both `…Z` and zone-less timestamps: parse tolerantly (or not at \
         all: the timestamp is informative).",
    ));

    Ok(Grade {
        receiver: url.to_string(),
        simulator: sim.base.clone(),
        verdicts,
        answer_p50_ms: p50,
        answer_p95_ms: p95,
    })
}

/// The grade as a table for people, with the score last.
pub fn render_table(g: &Grade) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for v in &g.verdicts {
        let mark = match v.outcome {
            Outcome::Pass => "PASS",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
        };
        let _ = writeln!(out, "{mark}  {:<19} {}", v.rule, v.title);
        let _ = writeln!(out, "      {:<19} {}", "", v.observed);
        if !v.fix.is_empty() {
            let _ = writeln!(out, "      {:<19} fix: {}", "", v.fix);
        }
    }
    let _ = writeln!(out, "\n{}", g.score());
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The grade as JUnit XML: one test case per rule, a failure for each failed rule (a warning is
/// written to the case's system-out).
pub fn render_junit(g: &Grade) -> String {
    use std::fmt::Write as _;
    let failures = g
        .verdicts
        .iter()
        .filter(|v| v.outcome == Outcome::Fail)
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"hookrace check-receiver\" tests=\"{}\" failures=\"{failures}\">",
        g.verdicts.len()
    );
    for v in &g.verdicts {
        let _ = write!(
            out,
            "  <testcase classname=\"polar-contract\" name=\"{}: {}\">",
            v.rule,
            xml_escape(v.title)
        );
        match v.outcome {
            Outcome::Fail => {
                let _ = write!(
                    out,
                    "<failure message=\"{}\">{}</failure>",
                    xml_escape(&v.observed),
                    xml_escape(&v.fix)
                );
            }
            Outcome::Warn => {
                let _ = write!(
                    out,
                    "<system-out>warning: {} (fix: {})</system-out>",
                    xml_escape(&v.observed),
                    xml_escape(&v.fix)
                );
            }
            Outcome::Pass => {}
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("</testsuite>\n");
    out
}

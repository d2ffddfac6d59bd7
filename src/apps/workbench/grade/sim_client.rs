//! The grader's side of the simulator: its control API and client-credential routes, and one
//! scenario (trigger, wait for the answers and the fetches, read what the log shows).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{CheckArgs, DELIVERY_TIMEOUT, Fixture, random_hex};
use crate::accesslink::dialect::Dialect;
use crate::sim::{LogEntry, Logged, path_of};

/// The simulator's control API and client-credential routes, as the grader uses them.
pub(super) struct SimClient {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) client: (String, String),
    /// `--auth` for a class's simulator (its control routes need the teacher's token).
    auth: Option<String>,
    /// The newest log entry read so far: the next read asks only for what came after it.
    newest: std::sync::atomic::AtomicU64,
    /// How the simulator signs its deliveries.
    pub(super) dialect: Dialect,
}

impl SimClient {
    /// The simulator at `base`, with the client credentials it accepts (its defaults: a
    /// simulator started with other ones is driven through `--sim` only with those).
    pub(super) async fn connect(base: &str, auth: Option<&str>) -> anyhow::Result<SimClient> {
        let mut sim = SimClient {
            http: crate::http::client(DELIVERY_TIMEOUT + Duration::from_secs(20))?,
            base: base.to_string(),
            client: ("hookrace-sim".into(), "hookrace-sim-secret".into()),
            auth: auth.map(str::to_string),
            newest: Default::default(),
            dialect: Dialect::Polar,
        };
        let truth = sim
            .send(
                sim.control_request(reqwest::Method::GET, "truth")?,
                "reading the simulator",
            )
            .await?;
        if let Some(id) = truth["client_id"].as_str() {
            sim.client.0 = id.to_string();
        }
        // A simulator older than the dialects has no `dialect`: it speaks Polar's.
        if let Some(d) = truth["dialect"].as_str() {
            sim.dialect = d.parse().map_err(anyhow::Error::msg)?;
        }
        Ok(sim)
    }

    pub(super) async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<Value> {
        let res = req.send().await.map_err(|e| {
            anyhow::anyhow!(
                "{what}: no simulator answers at {} ({e}): start one with `hookrace sim`, or \
                 leave out --sim",
                self.base
            )
        })?;
        let status = res.status();
        let body = crate::http::read_capped(res, super::super::LOG_MAX, what).await?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            bail!("{what}: the simulator answered {status}: {}", text.trim());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub(super) async fn control(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(
            self.control_request(reqwest::Method::POST, path)?
                .json(&body),
            &format!("POST /sim/{path}"),
        )
        .await
    }

    /// A request to the control route `/sim/{path}`, with `--auth` when given.
    fn control_request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let request = self
            .http
            .request(method, format!("{}/sim/{path}", self.base));
        crate::apps::workbench::with_auth(request, self.auth.as_deref())
    }

    /// Fixes the secret and the two users' tokens, and removes a webhook left from before.
    pub(super) async fn prepare(&self, args: &CheckArgs) -> anyhow::Result<Fixture> {
        let truth = self
            .send(
                self.control_request(reqwest::Method::GET, "truth")?,
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
        let secret = args.secret.clone().unwrap_or_else(|| match self.dialect {
            Dialect::Polar => random_hex(16),
            Dialect::StandardWebhooks => crate::accesslink::dialect::new_secret(rand::random()),
        });
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

    pub(super) async fn register(&self, url: &str) -> anyhow::Result<Result<(), String>> {
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
        let body =
            crate::http::read_capped(res, super::super::ANSWER_MAX, "registering the webhook")
                .await?;
        let body = String::from_utf8_lossy(&body);
        Ok(Err(format!("{status}: {}", body.trim())))
    }

    pub(super) async fn log_after(&self, seq: u64) -> anyhow::Result<Vec<LogEntry>> {
        let v = self
            .send(
                self.control_request(reqwest::Method::GET, &format!("log?after={seq}"))?,
                "reading the simulator's log",
            )
            .await?;
        let entries: Vec<LogEntry> =
            serde_json::from_value(v).context("reading the simulator's log")?;
        if let Some(last) = entries.last() {
            self.newest
                .fetch_max(last.seq, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(entries)
    }

    /// The newest entry's number: reads only the entries after the newest one read before
    /// (the log keeps up to 10,000; reading them all before each scenario was most of its I/O).
    pub(super) async fn last_seq(&self) -> anyhow::Result<u64> {
        let newest = self.newest.load(std::sync::atomic::Ordering::Relaxed);
        Ok(self
            .log_after(newest)
            .await?
            .last()
            .map_or(newest, |e| e.seq))
    }
}

/// What one scenario saw: the deliveries of its data and every request for that data.
pub(super) struct Seen {
    pub(super) deliveries: Vec<(Option<u16>, Option<u64>)>,
    /// `(path, token's user, status)` of each request for the scenario's data.
    pub(super) fetches: Vec<(String, Option<u64>, u16)>,
    /// The data's paths and whom each was for.
    pub(super) made: Vec<(String, u64)>,
    /// Requests with a token after the scenario began (whatever they asked for).
    pub(super) requests: usize,
}

impl Seen {
    pub(super) fn answered_ok(&self) -> usize {
        self.deliveries
            .iter()
            .filter(|d| d.0.is_some_and(|s| (200..300).contains(&s)))
            .count()
    }
    pub(super) fn statuses(&self) -> String {
        statuses(&self.deliveries)
    }
    pub(super) fn fetched(&self, path: &str) -> usize {
        self.fetches.iter().filter(|f| f.0 == path).count()
    }
}

/// The distinct answers among `deliveries` (`200, 503`, `no answer`).
pub(super) fn statuses(deliveries: &[(Option<u16>, Option<u64>)]) -> String {
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
    pub(super) async fn scenario(
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

//! The client's one webhook (create with PING, update, activate, deactivate, delete), the signed
//! deliveries announced for new data, and the outcome of each (a webhook that keeps failing is
//! deactivated).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use warp::http::StatusCode;

use super::model::Item;
use super::workbench::{Logged, OneShot};
use super::*;
use accesslink::dialect::Dialect;

/// The `user_id` a delivery names when the grader probes with a user the client does not know.
pub const UNKNOWN_USER: u64 = 99_999_999;
use accesslink::identity::EventType;

#[derive(Debug, Clone)]
pub(super) struct Hook {
    pub(super) id: String,
    pub(super) events: Vec<String>,
    pub(super) url: String,
    pub(super) secret: String,
    pub(super) active: bool,
    pub(super) failing_since: Option<DateTime<Utc>>,
    /// Failed deliveries since the last one that succeeded.
    pub(super) failures_in_row: u32,
}

impl Hook {
    pub(super) fn json(&self) -> Value {
        json!({ "id": self.id, "events": self.events, "url": self.url, "active": self.active })
    }
}

/// A delivery waiting to be sent.
pub struct DeliveryJob {
    pub truth_index: usize,
    /// The receiver's URL.
    pub url: String,
    /// The payload; its `timestamp` is set when it is sent, then it is signed.
    pub payload: Value,
    pub secret: String,
    pub event: String,
    /// Its Standard Webhooks `webhook-id`: the same for both copies of a duplicate.
    pub message_id: String,
    pub delay: Duration,
    /// The one-shot fault it carries (`sim trigger`, the receiver grader).
    pub fault: OneShot,
    /// The client whose webhook it goes to.
    pub client: usize,
}

impl Sim {
    /// Polar's PING, which must be answered 200 for a webhook to be registered. Standard Webhooks
    /// has none: in that dialect nothing is sent and the URL is taken as it is.
    pub(super) async fn ping(&self, url: &str, secret: &str, client: usize) -> Result<(), String> {
        if self.dialect() == Dialect::StandardWebhooks {
            return Ok(());
        }
        if self.in_outage() {
            // The receiver is down: the PING reaches nobody either.
            return Err("no answer (a simulated receiver outage is in progress)".into());
        }
        let body = json!({
            "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "event": "PING",
        })
        .to_string();
        let sig = accesslink::signature::sign(secret, body.as_bytes());
        let started = std::time::Instant::now();
        let res = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .header(accesslink::EVENT_HEADER, "PING")
            .header(accesslink::SIGNATURE_HEADER, sig)
            .body(body)
            .send()
            .await;
        self.lock().log.record(
            client,
            Logged::Ping {
                receiver: url.to_string(),
                status: res.as_ref().ok().map(|r| r.status().as_u16()),
                ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
            },
        );
        match res {
            Ok(r) if r.status() == StatusCode::OK => Ok(()),
            Ok(r) => Err(format!("Response code was [{}]", r.status().as_u16())),
            Err(e) => Err(format!("No response ({e})")),
        }
    }

    pub(super) fn ping_failed(url: &str, why: &str) -> SimResponse {
        // The one real error body seen in public uses this nested shape.
        SimResponse::json(
            StatusCode::BAD_REQUEST,
            json!({"error": {
                "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "status": 400,
                "error_type": "WebhookPingFailedException",
                "message": format!("Ping failed to URL {url}. {why}"),
                "corr_id": corr_id(),
            }}),
        )
    }

    pub(super) async fn create_webhook(&self, req: &SimRequest, c: usize) -> SimResponse {
        let (events, url) = match parse_webhook_body(&req.body, true) {
            Ok((Some(e), Some(u))) => (e, u),
            Ok(_) => return unreachable_fields(),
            Err(r) => return r,
        };
        let secret = {
            let mut s = self.lock();
            if s.clients[c].hook.is_some() {
                return SimResponse::error(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "a webhook already exists for this client",
                );
            }
            // A secret fixed in advance (`POST /sim/webhook-secret`) lets a receiver have it
            // before its first delivery.
            match s.clients[c].next_webhook_secret.take() {
                Some(fixed) => fixed,
                None => s.webhook_secret(),
            }
        };
        if let Err(why) = self.ping(&url, &secret, c).await {
            return Self::ping_failed(&url, &why);
        }
        let mut s = self.lock();
        if s.clients[c].hook.is_some() {
            return SimResponse::error(
                StatusCode::CONFLICT,
                "Conflict",
                "a webhook already exists for this client",
            );
        }
        let id = s.random_token(6);
        let hook = Hook {
            id: id.clone(),
            events: events.clone(),
            url: url.clone(),
            secret: secret.clone(),
            active: true,
            failing_since: None,
            failures_in_row: 0,
        };
        s.clients[c].hook = Some(hook);
        SimResponse::json(
            StatusCode::CREATED,
            json!({"data": {"id": id, "events": events, "url": url, "signature_secret_key": secret}}),
        )
    }

    pub(super) async fn patch_webhook(&self, req: &SimRequest, id: &str, c: usize) -> SimResponse {
        let (events, url) = match parse_webhook_body(&req.body, false) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let (needs_ping, secret) = {
            let s = self.lock();
            match &s.clients[c].hook {
                Some(h) if h.id == id => (
                    url.as_ref().filter(|u| **u != h.url).cloned(),
                    h.secret.clone(),
                ),
                _ => {
                    return SimResponse::error(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "no webhook with this id",
                    );
                }
            }
        };
        if let Some(u) = &needs_ping {
            if let Err(why) = self.ping(u, &secret, c).await {
                return Self::ping_failed(u, &why);
            }
        }
        let mut s = self.lock();
        match s.clients[c].hook.as_mut() {
            Some(h) if h.id == id => {
                if let Some(e) = events {
                    h.events = e;
                }
                if let Some(u) = url {
                    h.url = u;
                }
                // An array, as Polar answers (and as GET lists).
                SimResponse::json(StatusCode::OK, json!({"data": [h.json()]}))
            }
            _ => SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no webhook with this id"),
        }
    }

    pub(super) async fn set_webhook_active(&self, active: bool, c: usize) -> SimResponse {
        let target = {
            let s = self.lock();
            match &s.clients[c].hook {
                None => return SimResponse::empty(StatusCode::NO_CONTENT),
                Some(h) => (h.url.clone(), h.secret.clone()),
            }
        };
        if active {
            if let Err(why) = self.ping(&target.0, &target.1, c).await {
                return Self::ping_failed(&target.0, &why);
            }
        }
        let mut s = self.lock();
        match s.clients[c].hook.as_mut() {
            None => SimResponse::empty(StatusCode::NO_CONTENT),
            Some(h) => {
                h.active = active;
                if active {
                    h.failing_since = None;
                    h.failures_in_row = 0;
                }
                SimResponse::empty(StatusCode::OK)
            }
        }
    }

    /// Records the outcome of a delivery attempt (called by the sender task).
    pub fn delivery_done(&self, index: usize, client: usize, status: Option<u16>) {
        let mut s = self.lock();
        let now = Utc::now();
        let ok = status == Some(200);
        // `index` counts the deliveries a class dropped since; an attempt that outlived its
        // record is still logged for the student.
        let kept = index.checked_sub(s.truth_dropped.1);
        if let Some(d) = kept.and_then(|i| s.truth.deliveries.get_mut(i)) {
            d.outcome = if ok {
                DeliveryOutcome::Sent
            } else {
                DeliveryOutcome::Failed
            };
            d.status = status;
            d.sent_at = Some(now);
        }
        let after = Duration::from_secs(s.settings.faults.deactivate_after_s);
        let after_failures = s.settings.faults.deactivate_after_failures;
        if let Some(h) = s.clients.get_mut(client).and_then(|c| c.hook.as_mut()) {
            if ok {
                h.failing_since = None;
                h.failures_in_row = 0;
            } else {
                let since = *h.failing_since.get_or_insert(now);
                h.failures_in_row = h.failures_in_row.saturating_add(1);
                let too_long = (now - since).to_std().unwrap_or_default() >= after;
                let too_many = after_failures.is_some_and(|n| h.failures_in_row >= n);
                if h.active && (too_long || too_many) {
                    h.active = false;
                    tracing::warn!(
                        url = %h.url,
                        failures = h.failures_in_row,
                        "simulator: webhook deactivated after failing deliveries"
                    );
                }
            }
        }
    }

    /// Whether a receiver outage (`outage_for`) is in progress.
    pub fn in_outage(&self) -> bool {
        self.lock()
            .settings
            .faults
            .outage_until
            .is_some_and(|until| Utc::now() < until)
    }
}

impl State {
    pub(super) fn list_webhooks(&self, c: usize) -> SimResponse {
        let data: Vec<Value> = self.clients[c].hook.iter().map(Hook::json).collect();
        json!({ "data": data }).into_ok()
    }

    pub(super) fn delete_webhook(&mut self, id: &str, c: usize) -> SimResponse {
        match &self.clients[c].hook {
            Some(h) if h.id == id => {
                self.clients[c].hook = None;
                SimResponse::empty(StatusCode::NO_CONTENT)
            }
            _ => SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no webhook with this id"),
        }
    }

    /// Notes in the ground truth a delivery decided for `item`; returns its index there.
    fn record_delivery(
        &mut self,
        item: &Item,
        event: &str,
        url: &str,
        outcome: DeliveryOutcome,
        duplicate: bool,
    ) -> usize {
        if self.settings.class > 0 && self.truth.deliveries.len() >= 2 * super::state::CLASS_KEPT {
            let drop = super::state::CLASS_KEPT / 5;
            self.truth.deliveries.drain(..drop);
            self.truth_dropped.1 += drop;
        }
        self.truth.deliveries.push(TruthDelivery {
            event: event.to_string(),
            user_id: item.user_id,
            entity_id: item.source_id(),
            url: url.to_string(),
            outcome,
            status: None,
            duplicate,
            decided_at: Utc::now(),
            sent_at: None,
        });
        self.truth_dropped.1 + self.truth.deliveries.len() - 1
    }

    /// Logs a delivery dropped on purpose (`why`: the fault or the drop rate), for the student
    /// whose receiver it was for.
    fn log_dropped(
        &mut self,
        client: usize,
        item: &Item,
        event: &str,
        url: &str,
        receiver: &str,
        why: String,
    ) {
        self.log.record(
            client,
            Logged::Delivery {
                event: event.to_string(),
                user_id: item.user_id,
                url: url.to_string(),
                receiver: receiver.to_string(),
                fault: Some(why),
                sent: false,
                status: None,
                ms: None,
                request: None,
                answer: None,
            },
        );
    }

    /// Decides the deliveries for a new item: none, dropped, one, or two.
    pub(super) fn announce(
        &mut self,
        item: &Item,
        base: &str,
        fault: &OneShot,
    ) -> Vec<DeliveryJob> {
        let mut event = item.kind.event_type().to_string();
        let mut payload = item.webhook_payload(&self.links_base(base), Utc::now());
        let url = payload["url"].as_str().unwrap_or_default().to_string();
        let hook_event = event.clone();
        let record = |s: &mut State, outcome: DeliveryOutcome, duplicate: bool| {
            s.record_delivery(item, &hook_event, &url, outcome, duplicate)
        };
        let client = self.client_of(item.user_id);
        let hook = match &self.clients[client].hook {
            Some(h) if h.events.contains(&hook_event) => h.clone(),
            _ => {
                record(self, DeliveryOutcome::NoWebhook, false);
                return Vec::new();
            }
        };
        if !hook.active {
            record(self, DeliveryOutcome::Inactive, false);
            return Vec::new();
        }
        let f = self.settings.faults.clone();
        let randomly_dropped =
            f.drop_rate > 0.0 && self.rng.random_bool(f.drop_rate.min(1.0)) && !fault.drop;
        if fault.drop || randomly_dropped {
            record(self, DeliveryOutcome::Dropped, false);
            let why = fault.label().unwrap_or_else(|| "drop_rate".into());
            self.log_dropped(client, item, &event, &url, &hook.url, why);
            return Vec::new();
        }
        // The grader's probes change what the receiver is told (the truth keeps the real item).
        if fault.unknown_event {
            event = "UNKNOWN_EVENT".to_string();
            payload["event"] = Value::String(event.clone());
        }
        if fault.unknown_user {
            payload["user_id"] = json!(UNKNOWN_USER);
        }
        let copies = if fault.duplicate
            || (f.duplicate_rate > 0.0 && self.rng.random_bool(f.duplicate_rate.min(1.0)))
        {
            2
        } else {
            1
        };
        let message_id = format!("msg_{}", self.random_token(24));
        (0..copies)
            .map(|n| {
                let (lo, hi) = f.delay_ms;
                let drawn = Duration::from_millis(if hi > lo {
                    self.rng.random_range(lo..=hi)
                } else {
                    lo
                });
                let delay = super::workbench::delay_of(fault, drawn);
                DeliveryJob {
                    truth_index: record(self, DeliveryOutcome::Pending, n > 0),
                    url: hook.url.clone(),
                    payload: payload.clone(),
                    secret: hook.secret.clone(),
                    event: event.clone(),
                    message_id: message_id.clone(),
                    delay,
                    fault: fault.clone(),
                    client,
                }
            })
            .collect()
    }
}

pub(super) fn unreachable_fields() -> SimResponse {
    SimResponse::error(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "events and url are required",
    )
}

/// `(events, url)` from a create (both required) or patch (either) body.
pub(super) fn parse_webhook_body(
    body: &[u8],
    create: bool,
) -> Result<(Option<Vec<String>>, Option<String>), SimResponse> {
    let bad = |m: &str| SimResponse::error(StatusCode::BAD_REQUEST, "BadRequest", m);
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("body must be JSON"))?;
    let events = match v.get("events") {
        None if !create => None,
        Some(Value::Array(a)) if !a.is_empty() => {
            let mut out = Vec::new();
            for e in a {
                match e.as_str() {
                    Some(e) if EventType::parse(e).is_known() => out.push(e.to_string()),
                    _ => return Err(bad(&format!("unknown event {e}"))),
                }
            }
            Some(out)
        }
        _ => return Err(bad("`events` must be a non-empty array of event names")),
    };
    let url = match v.get("url") {
        None if !create => None,
        Some(Value::String(u)) if u.starts_with("http://") || u.starts_with("https://") => {
            Some(u.clone())
        }
        _ => return Err(bad("`url` must be an http(s) URL")),
    };
    if events.is_none() && url.is_none() {
        return Err(bad("give `events` and/or `url`"));
    }
    Ok((events, url))
}

pub(super) fn uuid_like(rng: &mut impl rand::Rng) -> String {
    let b: [u8; 16] = rng.random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl Sim {
    /// Posts `sent` as it is (its body and signature unchanged); the answer's status (none: no
    /// answer) and the milliseconds it took.
    pub(super) async fn send_as(
        &self,
        http: &reqwest::Client,
        sent: &super::workbench::Sent,
    ) -> (Option<u16>, u64, Option<super::workbench::Inspected>) {
        let started = std::time::Instant::now();
        let res = http
            .post(&sent.receiver)
            .header("Content-Type", "application/json")
            .headers(header_map(&sent.headers))
            .body(sent.body.clone())
            .send()
            .await;
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match res {
            Ok(r) => {
                let status = r.status().as_u16();
                (Some(status), ms, Some(answer_of(r).await))
            }
            Err(_) => (None, ms, None),
        }
    }
}

/// A receiver's answer as the log keeps it: its headers and the first KiB of its body (read no
/// further: an endless answer costs nothing).
async fn answer_of(mut r: reqwest::Response) -> super::workbench::Inspected {
    use super::workbench::{INSPECTED_BODY_MAX, Inspected, inspected_body};
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    while body.len() < INSPECTED_BODY_MAX {
        match tokio::time::timeout(Duration::from_secs(1), r.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    Inspected {
        headers,
        body: inspected_body(&String::from_utf8_lossy(&body)),
    }
}

/// Sends each delivery after its delay, each in its own task so a slow receiver delays no other.
pub(super) async fn send_deliveries(
    sim: Arc<Sim>,
    mut rx: mpsc::UnboundedReceiver<DeliveryJob>,
    shutdown: CancellationToken,
) {
    // The simulator's one client (PINGs and deliveries alike).
    let http = sim.http.clone();
    while let Some(job) = rx.recv().await {
        let (sim, http, shutdown) = (sim.clone(), http.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(job.delay) => {}
            }
            if sim.in_outage() {
                // The receiver is unreachable: the delivery is lost, as Polar would lose it.
                sim.delivery_done(job.truth_index, job.client, None);
                return;
            }
            let now = chrono::Utc::now();
            let (body, headers) = signed(sim.dialect(), &job, now);
            let payload = &job.payload;
            sim.lock().log.announce(
                payload["url"].as_str().unwrap_or_default(),
                payload["user_id"].as_u64().unwrap_or_default(),
            );
            let sent = super::workbench::Sent {
                client: job.client,
                receiver: job.url.clone(),
                event: job.event.clone(),
                body,
                headers,
                at: now,
                genuine: job.fault.label().is_none(),
                user_id: payload["user_id"].as_u64().unwrap_or_default(),
                url: payload["url"].as_str().unwrap_or_default().to_string(),
            };
            let (status, ms, answer) = sim.send_as(&http, &sent).await;
            let logged = Logged::Delivery {
                event: job.event.clone(),
                user_id: sent.user_id,
                url: sent.url.clone(),
                receiver: job.url.clone(),
                fault: job.fault.label(),
                sent: true,
                status,
                ms: Some(ms),
                request: Some(sent.inspected()),
                answer,
            };
            sim.lock().log.record_sent(job.client, logged, sent);
            sim.delivery_done(job.truth_index, job.client, status);
        });
    }
}

/// The headers of a sent delivery, as reqwest takes them (a value that is not a valid header
/// is left out: the simulator makes only valid ones).
fn header_map(headers: &[(String, String)]) -> reqwest::header::HeaderMap {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// A key no receiver holds: a forger's, or one retired by a rotation.
const FOREIGN_KEY: [u8; 24] = [0x5a; 24];

/// The body and the signing headers of `job` sent `now` in `dialect`, with its fault applied:
/// the payload's `timestamp` is set, then it is signed (Polar's) or wrapped in the envelope and
/// signed with its message id and a timestamp (Standard Webhooks).
fn signed(
    dialect: Dialect,
    job: &DeliveryJob,
    now: chrono::DateTime<Utc>,
) -> (String, Vec<(String, String)>) {
    let fault = &job.fault;
    let mut payload = job.payload.clone();
    payload["timestamp"] = Value::String(if fault.zoneless_timestamp {
        now.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    } else {
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    });
    if fault.large_payload {
        payload["padding"] = Value::String("x".repeat(super::workbench::LARGE_PADDING));
    }
    match dialect {
        Dialect::Polar => {
            let body = payload.to_string();
            // Not the webhook's secret: a forgery, or a receiver with a stale secret.
            let secret = if fault.bad_signature {
                format!("not-{}", job.secret)
            } else {
                job.secret.clone()
            };
            let mut headers = vec![(accesslink::EVENT_HEADER.to_string(), job.event.clone())];
            if !fault.missing_signature {
                let signature = accesslink::signature::sign(&secret, body.as_bytes());
                headers.push((accesslink::SIGNATURE_HEADER.to_string(), signature));
            }
            (body, headers)
        }
        Dialect::StandardWebhooks => standard_signed(job, &payload, now),
    }
}

fn standard_signed(
    job: &DeliveryJob,
    payload: &Value,
    now: chrono::DateTime<Utc>,
) -> (String, Vec<(String, String)>) {
    use super::workbench::SKEW_S;
    use accesslink::dialect::{self, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
    let fault = &job.fault;
    let body = dialect::envelope(payload).to_string();
    let ts = now.timestamp()
        + if fault.stale_timestamp {
            -SKEW_S
        } else if fault.future_timestamp {
            SKEW_S
        } else {
            0
        };
    let foreign = dialect::new_secret(FOREIGN_KEY);
    let key = if fault.bad_signature {
        &foreign
    } else {
        &job.secret
    };
    let sign = |secret: &str| {
        dialect::sign(secret, &job.message_id, ts, body.as_bytes()).unwrap_or_default()
    };
    let mut signature = sign(key);
    if fault.rotated_signatures {
        signature = format!("{} {signature}", sign(&foreign));
    }
    let mut headers = vec![
        (ID_HEADER.to_string(), job.message_id.clone()),
        (TIMESTAMP_HEADER.to_string(), ts.to_string()),
    ];
    if !fault.missing_signature {
        headers.push((SIGNATURE_HEADER.to_string(), signature));
    }
    (body, headers)
}

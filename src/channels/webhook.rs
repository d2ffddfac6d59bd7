//! The public listener's delivery route: Polar posts here, and the answer promises the data is safe.
//!
//! Checks run in a fixed order, cheapest and least trusting first: body size (413),
//! PING (200, counted, never stored; Polar's dialect only), signature (401: Polar's, or in the
//! Standard Webhooks dialect the three headers and the timestamp's tolerance, see
//! `accesslink::dialect`), JSON shape (400), then the delivery is
//! recorded and flushed to disk before the **200** goes out. Anything that stops a delivery from
//! being stored answers non-200, so Polar (or an operator) can see it; nothing is dropped silently.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use chrono::Utc;
use futures_util::{Stream, StreamExt};
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode, header};
use warp::reply::{Reply, Response};

use crate::accesslink::dialect::{self, Dialect};
use crate::accesslink::payload::{self, Parsed};
use crate::accesslink::{EVENT_HEADER, SIGNATURE_HEADER, signature};
use crate::config::Secret;
use crate::counter;
use crate::store::{Recorded, Store};

/// What the delivery route needs.
pub struct WebhookState {
    pub store: Arc<Store>,
    /// The route, e.g. `/acl_webhook`.
    pub path: String,
    pub max_body: usize,
    /// How long a client may take to send the body.
    pub body_timeout: Duration,
    /// The signature key from the config; when `None`, the key saved in the store is used.
    pub secret: Option<Secret>,
    /// How deliveries are signed (and, for Standard Webhooks, wrapped).
    pub dialect: Dialect,
    /// Each accepted delivery's record gets a fetch job (the fetcher reads its data after the
    /// 200; its queue gets the job from the commit).
    pub fetch: bool,
    /// Keeps a flood of refused requests from flooding the log.
    pub refusals: RefusalLog,
}

/// Refused requests are logged at most [`REFUSALS_LOGGED_PER_S`] a second; the others are
/// counted (the counters stay exact) and summed up in one line when a later one is logged.
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// (the second, lines logged in it, refusals not logged since the last line)
    state: std::sync::Mutex<(i64, u32, u64)>,
}

/// Refusal lines per second before the rest are only counted.
pub const REFUSALS_LOGGED_PER_S: u32 = 10;

impl RefusalLog {
    /// Whether to log a refusal at `now_s`, and how many went unlogged before it.
    fn admit(&self, now_s: i64) -> Option<u64> {
        // A poisoned lock holds plain numbers, valid as they are.
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.0 != now_s {
            s.0 = now_s;
            s.1 = 0;
        }
        if s.1 < REFUSALS_LOGGED_PER_S {
            s.1 += 1;
            Some(std::mem::take(&mut s.2))
        } else {
            s.2 += 1;
            None
        }
    }
}

impl WebhookState {
    /// The configured key, else the one `hookrace webhook create` saved. A blank key is no key:
    /// checking a signature against it would accept anyone's.
    fn secret(&self) -> Option<Secret> {
        self.secret
            .clone()
            .or_else(|| crate::credentials::webhook_secret(&self.store))
            .filter(|s| !s.expose().trim().is_empty())
    }
}

/// The delivery route: `POST {path}`, 405 for other methods on it; rejects (404) other paths.
pub fn route(
    state: Arc<WebhookState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let path = state.path.clone();
    warp::path::full()
        .and_then(move |full: warp::path::FullPath| {
            let matches = full.as_str() == path;
            async move {
                if matches {
                    Ok(())
                } else {
                    Err(warp::reject::not_found())
                }
            }
        })
        .untuple_one()
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(warp::any().map(move || state.clone()))
        .and_then(
            |method: Method, headers: HeaderMap, body, state: Arc<WebhookState>| async move {
                if method != Method::POST {
                    let reply = warp::reply::with_header(
                        warp::reply::with_status("use POST\n", StatusCode::METHOD_NOT_ALLOWED),
                        header::ALLOW,
                        "POST",
                    );
                    return Ok::<_, Infallible>(reply.into_response());
                }
                Ok(handle(&state, &headers, body).await)
            },
        )
}

/// The outcome of one request, for the answer, the counters and the log line.
enum Outcome {
    Accepted,
    Duplicate,
    Ping,
    TooLarge,
    BodyError(String),
    SlowBody,
    NotJson(String),
    NoSecret,
    BadSignature(signature::SignatureError),
    /// Standard Webhooks: a header missing, a timestamp out of tolerance, no signature matching.
    Refused(dialect::Refusal),
    Malformed(String),
    StoreFailed(anyhow::Error),
}

#[tracing::instrument(name = "delivery", skip_all, fields(entity = tracing::field::Empty))]
async fn handle<S, B>(state: &WebhookState, headers: &HeaderMap, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let started = Instant::now();
    let received_at = Utc::now();
    state.store.incr(counter::Counter::WebhookDeliveries, 1);
    let (outcome, parsed) =
        match read_limited(headers, body, state.max_body, state.body_timeout).await {
            Err(o) => (o, None),
            Ok(body) => {
                let parsed = match state.dialect {
                    Dialect::Polar => payload::parse(&body),
                    Dialect::StandardWebhooks => {
                        dialect::open(&body).and_then(|polar| payload::parse(&polar))
                    }
                };
                let outcome = process(state, headers, &body, &parsed, received_at).await;
                (outcome, parsed.ok())
            }
        };
    let (status, text, counter_name) = outcome.answer(state);
    if let Some(name) = counter_name {
        state.store.incr(name, 1);
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    log(
        state,
        headers,
        &outcome,
        parsed.as_ref(),
        (status, &text),
        latency_ms,
        received_at,
    );
    warp::reply::with_status(text, status).into_response()
}

impl Outcome {
    /// The answer's status and text, and the counter of refusals it adds to.
    fn answer(&self, state: &WebhookState) -> (StatusCode, String, Option<counter::Counter>) {
        match self {
            Outcome::Accepted => (StatusCode::OK, "ok\n".to_string(), None),
            Outcome::Duplicate => (StatusCode::OK, "ok (duplicate)\n".to_string(), None),
            Outcome::Ping => (
                StatusCode::OK,
                "pong\n".to_string(),
                Some(counter::Counter::WebhookPings),
            ),
            Outcome::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {} bytes\n", state.max_body),
                Some(counter::Counter::WebhookRejectedTooLarge),
            ),
            Outcome::BodyError(e) => (
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {e}\n"),
                Some(counter::Counter::WebhookRejectedMalformed),
            ),
            Outcome::SlowBody => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}\n",
                    humantime::format_duration(state.body_timeout)
                ),
                Some(counter::Counter::WebhookRejectedMalformed),
            ),
            Outcome::NotJson(ct) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type {ct:?} is not application/json\n"),
                Some(counter::Counter::WebhookRejectedMalformed),
            ),
            Outcome::NoSecret => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no webhook secret is configured: deliveries cannot be verified\n".to_string(),
                None,
            ),
            Outcome::BadSignature(e) => (
                StatusCode::UNAUTHORIZED,
                format!("{}\n", e.reason()),
                Some(counter::Counter::WebhookRejectedSignature),
            ),
            Outcome::Refused(dialect::Refusal::BadSecret) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{}: deliveries cannot be verified\n",
                    dialect::Refusal::BadSecret
                ),
                None,
            ),
            Outcome::Refused(refusal) => (
                StatusCode::UNAUTHORIZED,
                format!("{refusal}\n"),
                Some(counter::Counter::WebhookRejectedSignature),
            ),
            Outcome::Malformed(reason) => (
                StatusCode::BAD_REQUEST,
                format!("malformed delivery: {reason}\n"),
                Some(counter::Counter::WebhookRejectedMalformed),
            ),
            Outcome::StoreFailed(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the delivery could not be stored; please retry\n".to_string(),
                None,
            ),
        }
    }

    /// The outcome's name in the log.
    fn name(&self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Ping => "ping",
            Outcome::TooLarge => "too_large",
            Outcome::BodyError(_) => "body_error",
            Outcome::SlowBody => "slow_body",
            Outcome::NotJson(_) => "not_json",
            Outcome::NoSecret => "no_secret",
            Outcome::BadSignature(_) => "bad_signature",
            Outcome::Refused(dialect::Refusal::Stale(_)) => "stale_timestamp",
            Outcome::Refused(dialect::Refusal::Future(_)) => "future_timestamp",
            Outcome::Refused(_) => "bad_signature",
            Outcome::Malformed(_) => "malformed",
            Outcome::StoreFailed(_) => "store_failed",
        }
    }

    /// Whether the body's signature was verified (nothing from a body is logged before).
    fn verified(&self) -> bool {
        matches!(
            self,
            Outcome::Accepted | Outcome::Duplicate | Outcome::StoreFailed(_)
        )
    }
}

/// One log line per request: what was delivered (once verified) and what came of it; refusals
/// are rate-limited (see [`RefusalLog`]).
fn log(
    state: &WebhookState,
    headers: &HeaderMap,
    outcome: &Outcome,
    parsed: Option<&Parsed>,
    (status, text): (StatusCode, &str),
    latency_ms: f64,
    received_at: chrono::DateTime<Utc>,
) {
    let (event, user, entity) = match parsed {
        Some(Parsed::Delivery(d)) if outcome.verified() => {
            if let Some(h) = header_str(headers, EVENT_HEADER).filter(|h| *h != d.event.as_str()) {
                tracing::warn!(header = h, body = %d.event, "delivery event header and body disagree; using the body");
            }
            (d.event.as_str(), d.user_id.0, d.entity().entity_id)
        }
        Some(Parsed::Ping(_)) => ("PING", 0, String::new()),
        _ => ("-", 0, String::new()),
    };
    let latency_ms = format_args!("{latency_ms:.2}");
    match outcome {
        Outcome::Accepted | Outcome::Duplicate | Outcome::Ping => tracing::info!(
            event,
            user,
            entity = %entity,
            outcome = outcome.name(),
            status = status.as_u16(),
            latency_ms,
            "delivery"
        ),
        Outcome::StoreFailed(e) => tracing::error!(
            event,
            user,
            entity = %entity,
            outcome = outcome.name(),
            status = status.as_u16(),
            latency_ms,
            error = format_args!("{e:#}"),
            "delivery"
        ),
        _ => {
            if let Some(unlogged) = state.refusals.admit(received_at.timestamp()) {
                tracing::warn!(
                    outcome = outcome.name(),
                    status = status.as_u16(),
                    reason = text.trim_end(),
                    latency_ms,
                    unlogged_refusals_before = unlogged,
                    "delivery refused"
                );
            }
        }
    }
}

/// The checks after the body is read: PING, signature, shape, then the durable record; the
/// `delivery` span gets the entity key once the body names it.
async fn process(
    state: &WebhookState,
    headers: &HeaderMap,
    body: &[u8],
    parsed: &Result<Parsed, String>,
    received_at: chrono::DateTime<Utc>,
) -> Outcome {
    // Polar's PING is answered unsigned; Standard Webhooks has none: everything is verified.
    if state.dialect == Dialect::Polar && matches!(parsed, Ok(Parsed::Ping(_))) {
        return Outcome::Ping;
    }
    let Some(secret) = state.secret() else {
        return Outcome::NoSecret;
    };
    if let Some(refused) = verify(state.dialect, secret.expose(), headers, body) {
        return refused;
    }
    if let Some(ct) = header_str(headers, header::CONTENT_TYPE.as_str()) {
        let media = ct.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Outcome::NotJson(ct.to_string());
        }
    }
    let delivery = match parsed {
        Ok(Parsed::Delivery(d)) => d,
        Ok(Parsed::Ping(_)) if state.dialect == Dialect::Polar => return Outcome::Ping,
        Ok(Parsed::Ping(_)) => return Outcome::Malformed("PING is not an event".into()),
        Err(reason) => return Outcome::Malformed(reason.clone()),
    };
    tracing::Span::current().record("entity", tracing::field::display(delivery.entity().key()));
    // One write: the entity's record with its raw body and its fetch job (a duplicate of an entity
    // whose data was never fetched queues the fetch again); then one shared commit before the 200,
    // unless the record was durable already (a duplicate that changed only its count).
    let fetch = state.fetch;
    let recorded = match state
        .store
        .record_delivery(delivery, body, received_at, fetch)
    {
        Ok(r) => r,
        Err(e) => return Outcome::StoreFailed(e),
    };
    if !recorded.already_durable {
        if let Err(e) = state.store.durable().await {
            return Outcome::StoreFailed(e);
        }
    }
    match recorded.outcome {
        Recorded::Accepted => Outcome::Accepted,
        Recorded::Duplicate => Outcome::Duplicate,
    }
}

/// The refusal of a body whose signature does not hold in `dialect`, if any.
fn verify(dialect: Dialect, secret: &str, headers: &HeaderMap, body: &[u8]) -> Option<Outcome> {
    match dialect {
        Dialect::Polar => signature::verify(secret, body, header_str(headers, SIGNATURE_HEADER))
            .err()
            .map(Outcome::BadSignature),
        Dialect::StandardWebhooks => {
            let received = dialect::Headers {
                id: header_str(headers, dialect::ID_HEADER),
                timestamp: header_str(headers, dialect::TIMESTAMP_HEADER),
                signature: header_str(headers, dialect::SIGNATURE_HEADER),
            };
            dialect::verify(secret, received, body, Utc::now().timestamp())
                .err()
                .map(Outcome::Refused)
        }
    }
}

/// Reads the body, refusing more than `max` bytes (early, from `Content-Length`, when it is given)
/// and bodies that take longer than `timeout`.
async fn read_limited<S, B>(
    headers: &HeaderMap,
    body: S,
    max: usize,
    timeout: Duration,
) -> Result<Vec<u8>, Outcome>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let declared =
        header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(Outcome::TooLarge);
    }
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut buf = BytesMut::with_capacity(crate::units::usize_saturating(
            declared.unwrap_or(1024).min(max as u64),
        ));
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| Outcome::BodyError(e.to_string()))?;
            if buf.len() + chunk.remaining() > max {
                return Err(Outcome::TooLarge);
            }
            while chunk.has_remaining() {
                let part = chunk.chunk();
                let n = part.len();
                buf.extend_from_slice(part);
                chunk.advance(n);
            }
        }
        Ok(buf.to_vec())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(Outcome::SlowBody),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

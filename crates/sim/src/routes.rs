//! The simulator's HTTP layer: requests and responses as plain values, the one route table
//! ([`Sim::handle`]), the client and user authentication guards, and the ground-truth name of each
//! endpoint. Every endpoint's logic lives in the file of its family.

use std::sync::Arc;

use base64::Engine;
use chrono::Utc;
use serde_json::{Value, json};
use warp::http::{HeaderMap, Method, StatusCode};

use super::model::Kind;
use super::*;
use warp::reply::Reply;

/// A request as the simulator sees it.
pub struct SimRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// A response before it becomes HTTP.
#[derive(Debug)]
pub struct SimResponse {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub text: Option<String>,
    /// A file (FIT, GPX, TCX) with its `Content-Type` in `headers`.
    pub bytes: Option<Vec<u8>>,
}

impl SimResponse {
    pub(super) fn json(status: StatusCode, body: Value) -> Self {
        SimResponse {
            status,
            headers: Vec::new(),
            body: Some(body),
            text: None,
            bytes: None,
        }
    }
    pub(super) fn empty(status: StatusCode) -> Self {
        SimResponse {
            status,
            headers: Vec::new(),
            body: None,
            text: None,
            bytes: None,
        }
    }
    pub(super) fn text(status: StatusCode, text: impl Into<String>) -> Self {
        SimResponse {
            status,
            headers: Vec::new(),
            body: None,
            text: Some(text.into()),
            bytes: None,
        }
    }
    pub(super) fn redirect(location: String) -> Self {
        SimResponse {
            status: StatusCode::FOUND,
            headers: vec![("Location".into(), location)],
            body: None,
            text: None,
            bytes: None,
        }
    }
    /// A file answer: `bytes` as `content_type`.
    pub(super) fn file(content_type: &str, bytes: Vec<u8>) -> Self {
        SimResponse {
            status: StatusCode::OK,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: None,
            text: None,
            bytes: Some(bytes),
        }
    }
    /// AccessLink's documented error body.
    pub(super) fn error(status: StatusCode, error_type: &str, message: &str) -> Self {
        Self::json(
            status,
            json!({
                "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "status": status.as_u16(),
                "errorType": error_type,
                "message": message,
                "corrId": corr_id(),
            }),
        )
    }
}

pub(super) fn corr_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub(super) trait IntoOk {
    fn into_ok(self) -> SimResponse;
}
impl IntoOk for Value {
    fn into_ok(self) -> SimResponse {
        SimResponse::json(StatusCode::OK, self)
    }
}

/// A page of the simulator's own (the class's scoreboard, the watch page) with the headers the
/// daemon's pages carry: a Content-Security-Policy that allows only the page's own inline script
/// and style (by hash) and its event streams, no sniffing, no framing, no referrer.
pub(super) fn page(html: &'static str) -> SimResponse {
    use base64::Engine;
    use sha2::Digest;
    let inline = |open: &str, close: &str| {
        let start = html.find(open).map_or(0, |i| i + open.len());
        let end = html[start..].find(close).map_or(start, |i| start + i);
        let digest = sha2::Sha256::digest(&html.as_bytes()[start..end]);
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    let policy = format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        inline("<script>", "</script>"),
        inline("<style>", "</style>")
    );
    let mut r = SimResponse::text(StatusCode::OK, html);
    for (name, value) in [
        ("Content-Type", "text/html; charset=utf-8".to_string()),
        ("Content-Security-Policy", policy),
        ("X-Content-Type-Options", "nosniff".into()),
        ("X-Frame-Options", "DENY".into()),
        ("Referrer-Policy", "no-referrer".into()),
    ] {
        r.headers.push((name.into(), value));
    }
    r
}

pub(super) fn unauthorized(message: &str) -> SimResponse {
    let mut r = SimResponse::error(StatusCode::UNAUTHORIZED, "Unauthorized", message);
    r.headers.push((
        "WWW-Authenticate".into(),
        "Basic realm=\"AccessLink\"".into(),
    ));
    r
}

pub(super) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// The ground-truth name of a `/v3` endpoint (the poll ones match the daemon's counters).
pub fn endpoint_name(method: &Method, path: &str) -> &'static str {
    let segs: Vec<&str> = path.trim_start_matches("/v3/").split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["notifications"]) => "notifications",
        ("POST", ["users", _, t]) if t.ends_with("-transactions") => "create_transaction",
        ("GET", ["users", _, t, _]) if t.ends_with("-transactions") => "list_transaction",
        ("PUT", ["users", _, t, _]) if t.ends_with("-transactions") => "commit",
        ("GET", ["users", _, t, _, _, _]) if t.ends_with("-transactions") => "get_item",
        ("GET", ["exercises"]) => "list_exercises",
        ("GET", ["exercises", _]) => "get_exercise",
        ("GET", ["users", "activities", _]) => "get_activity",
        ("GET", ["users", "physical-info"]) => "get_physical_info",
        (_, ["webhooks", ..]) => "webhooks",
        (_, ["users", ..]) => "users",
        _ => "other",
    }
}

impl Sim {
    /// Answers one request.
    pub async fn handle(&self, req: SimRequest) -> SimResponse {
        let path = req.path.trim_end_matches('/').to_string();
        if let Some(rest) = path.strip_prefix("/sim/") {
            return self.control(&req, rest).await;
        }
        match (req.method.clone(), path.as_str()) {
            (Method::GET, "/oauth2/authorization") => return self.authorize(&req),
            (Method::POST, "/v2/oauth2/token") => return self.token(&req),
            _ => {}
        }
        if !path.starts_with("/v3/") {
            return SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such resource");
        }
        let endpoint = endpoint_name(&req.method, &path);
        let (limited, headers) = {
            let mut s = self.lock();
            *s.truth.requests.entry(endpoint.to_string()).or_default() += 1;
            s.rate_limit()
        };
        if limited {
            *self
                .lock()
                .truth
                .requests
                .entry("rate_limited".to_string())
                .or_default() += 1;
        }
        let unsized_body = [Method::POST, Method::PUT, Method::PATCH].contains(&req.method)
            && !req.headers.contains_key("content-length")
            && !req.headers.contains_key("transfer-encoding");
        let mut resp = if unsized_body && self.lock().settings.faults.require_content_length {
            SimResponse::error(
                StatusCode::LENGTH_REQUIRED,
                "LengthRequired",
                "a POST, PUT or PATCH must carry Content-Length (0 without a body)",
            )
        } else if limited {
            SimResponse::error(
                StatusCode::TOO_MANY_REQUESTS,
                "RateLimitExceeded",
                "rate limit exceeded: see the RateLimit-* headers",
            )
        } else if self.lock().inject_error(endpoint) {
            *self
                .lock()
                .truth
                .requests
                .entry("server_error".to_string())
                .or_default() += 1;
            SimResponse::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "simulated server error",
            )
        } else {
            self.v3(&req, &path).await
        };
        self.log_request(&req, resp.status);
        resp.headers.extend(headers);
        resp
    }

    pub(super) async fn v3(&self, req: &SimRequest, path: &str) -> SimResponse {
        let segs: Vec<&str> = path.trim_start_matches("/v3/").split('/').collect();
        let answer = match segs.first().copied() {
            Some("notifications" | "webhooks") => self.client_routes(req, &segs).await,
            Some("users") => self
                .user_data_routes(req, &segs)
                .or_else(|| self.user_routes(req, &segs)),
            Some("exercises") => self.exercise_routes(req, &segs),
            _ => None,
        };
        answer.unwrap_or_else(|| {
            SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such resource")
        })
    }

    /// The client's own routes (HTTP Basic): notifications and the webhook.
    async fn client_routes(&self, req: &SimRequest, segs: &[&str]) -> Option<SimResponse> {
        let m = &req.method;
        Some(match segs {
            ["notifications"] if *m == Method::GET => {
                self.basic(req, |s, c| s.notifications(&self.base, c))
            }
            ["webhooks"] if *m == Method::GET => self.basic(req, |s, c| s.list_webhooks(c)),
            ["webhooks"] if *m == Method::POST => match self.check_basic(req) {
                Err(r) => r,
                Ok(c) => self.create_webhook(req, c).await,
            },
            ["webhooks", "activate"] if *m == Method::POST => match self.check_basic(req) {
                Err(r) => r,
                Ok(c) => self.set_webhook_active(true, c).await,
            },
            ["webhooks", "deactivate"] if *m == Method::POST => match self.check_basic(req) {
                Err(r) => r,
                Ok(c) => self.set_webhook_active(false, c).await,
            },
            ["webhooks", id] if *m == Method::PATCH => match self.check_basic(req) {
                Err(r) => r,
                Ok(c) => self.patch_webhook(req, id, c).await,
            },
            ["webhooks", id] if *m == Method::DELETE => {
                self.basic(req, |s, c| s.delete_webhook(id, c))
            }
            _ => return None,
        })
    }

    /// A user's daily data (bearer): activities, physical information, sleep, Nightly Recharge,
    /// continuous heart rate, cardio load, SleepWise; and a word where a user id goes, which
    /// names nothing served. Matched before `/v3/users/{user-id}`, which takes only numbers.
    fn user_data_routes(&self, req: &SimRequest, segs: &[&str]) -> Option<SimResponse> {
        let m = &req.method;
        Some(match segs {
            ["users", "activities"] if *m == Method::GET => self.bearer(req, true, |s, uid| {
                s.activities(uid, &req.query, &self.base)
            }),
            ["users", "activities", "samples"] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| {
                    s.activity_samples(uid, None, &req.query)
                })
            }
            ["users", "activities", "samples", date] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| {
                    s.activity_samples(uid, Some(date), &req.query)
                })
            }
            ["users", "activities", date] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| {
                    s.activity(uid, date, &req.query, &self.base)
                })
            }
            ["users", "physical-info"] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| s.physical(uid, &self.base))
            }
            ["users", "sleep" | "nightly-recharge", ..] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| s.sleep(uid, &segs[1..], &self.base))
            }
            ["users", "continuous-heart-rate"] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| {
                    s.heart_rate(uid, None, &req.query, &self.base)
                })
            }
            ["users", "continuous-heart-rate", day] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| {
                    s.heart_rate(uid, Some(day), &req.query, &self.base)
                })
            }
            ["users", "cardio-load", rest @ ..] if *m == Method::GET => {
                self.bearer(req, true, |_, _| {
                    super::daily::cardio_load(rest, &req.query)
                })
            }
            ["users", "sleepwise", rest @ ..] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| s.sleepwise(uid, rest, &req.query))
            }
            ["users", word, ..] if *m == Method::GET && word.parse::<u64>().is_err() => {
                self.bearer(req, true, |s, _| s.unserved())
            }
            _ => return None,
        })
    }

    /// Registering, reading and deleting a user, and the user's transactions (bearer).
    fn user_routes(&self, req: &SimRequest, segs: &[&str]) -> Option<SimResponse> {
        let m = &req.method;
        Some(match segs {
            ["users"] if *m == Method::POST => {
                self.bearer(req, false, |s, uid| s.register(uid, &req.body))
            }
            // Another user is "not found" to this token: 204, as documented (403 would say the
            // consents are missing).
            ["users", id] if *m == Method::GET => {
                self.bearer(req, false, |s, uid| match s.own(uid, id) {
                    Some(_) => SimResponse::empty(StatusCode::NO_CONTENT),
                    None => s.users[&uid].json().into_ok(),
                })
            }
            ["users", id] if *m == Method::DELETE => self.bearer(req, false, |s, uid| {
                s.own(uid, id).unwrap_or_else(|| s.deregister(uid))
            }),
            ["users", id, tx] if *m == Method::POST && tx.ends_with("-transactions") => self
                .bearer(req, true, |s, uid| {
                    s.own(uid, id).unwrap_or_else(|| {
                        match Kind::from_segment(tx.trim_end_matches("-transactions")) {
                            Some(kind) => s.create_transaction(uid, kind, &self.base),
                            None => SimResponse::error(
                                StatusCode::NOT_FOUND,
                                "NotFound",
                                "no such transaction kind",
                            ),
                        }
                    })
                }),
            ["users", id, tx, tid]
                if tx.ends_with("-transactions") && (*m == Method::GET || *m == Method::PUT) =>
            {
                let commit = *m == Method::PUT;
                self.bearer(req, true, |s, uid| {
                    s.own(uid, id)
                        .unwrap_or_else(|| s.transaction(uid, tx, tid, commit, &self.base))
                })
            }
            ["users", id, tx, tid, _, item, rest @ ..]
                if *tx == "exercise-transactions" && *m == Method::GET && !rest.is_empty() =>
            {
                self.bearer(req, true, |s, uid| {
                    s.own(uid, id)
                        .unwrap_or_else(|| s.item_file(uid, tid, item, rest, &self.base))
                })
            }
            [
                "users",
                id,
                "activity-transactions",
                tid,
                "activities",
                item,
                what,
            ] if *m == Method::GET => self.bearer(req, true, |s, uid| {
                s.own(uid, id)
                    .unwrap_or_else(|| s.activity_item_samples(uid, tid, item, what))
            }),
            ["users", id, tx, tid, _, item]
                if tx.ends_with("-transactions") && *m == Method::GET =>
            {
                self.bearer(req, true, |s, uid| {
                    s.own(uid, id)
                        .unwrap_or_else(|| s.item(uid, tid, item, &self.base))
                })
            }
            _ => return None,
        })
    }

    /// The non-transactional exercise list and its items (bearer).
    fn exercise_routes(&self, req: &SimRequest, segs: &[&str]) -> Option<SimResponse> {
        let m = &req.method;
        Some(match segs {
            ["exercises"] if *m == Method::GET => self.bearer(req, true, |s, uid| {
                s.list_exercises(uid, &req.query, &self.base)
            }),
            ["exercises", hid] if *m == Method::GET => self.bearer(req, true, |s, uid| {
                s.exercise(uid, hid, &req.query, &self.base)
            }),
            ["exercises", hid, what @ ("fit" | "tcx" | "gpx")] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| s.exercise_file(uid, hid, what))
            }
            _ => return None,
        })
    }

    /// The client (its index in [`State::clients`]) the request's HTTP Basic credentials name.
    pub(super) fn check_basic(&self, req: &SimRequest) -> Result<usize, SimResponse> {
        let s = self.lock();
        let given = basic_credentials(&req.headers);
        match given.and_then(|(id, secret)| s.client_with(&id, Some(&secret))) {
            Some(c) => Ok(c),
            None => Err(unauthorized(
                "client credentials (HTTP Basic) are missing or wrong",
            )),
        }
    }

    pub(super) fn basic(
        &self,
        req: &SimRequest,
        f: impl FnOnce(&mut State, usize) -> SimResponse,
    ) -> SimResponse {
        match self.check_basic(req) {
            Err(r) => r,
            Ok(c) => f(&mut self.lock(), c),
        }
    }

    /// Runs `f` with the user the bearer token names; `data` endpoints also need consents.
    pub(super) fn bearer(
        &self,
        req: &SimRequest,
        data: bool,
        f: impl FnOnce(&mut State, u64) -> SimResponse,
    ) -> SimResponse {
        let mut s = self.lock();
        let token = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(uid) = token.and_then(|t| s.tokens.get(t).copied()) else {
            return unauthorized("a valid user access token (Bearer) is required");
        };
        let user = &s.users[&uid];
        if user.revoked {
            return unauthorized("the access token has been revoked");
        }
        if data && !user.consents {
            return SimResponse::error(
                StatusCode::FORBIDDEN,
                "ConsentMissing",
                "the user has not accepted the mandatory consents",
            );
        }
        if data && !user.registered {
            return SimResponse::error(
                StatusCode::FORBIDDEN,
                "UserNotRegistered",
                "register the user (POST /v3/users) before reading data",
            );
        }
        f(&mut s, uid)
    }
}

/// The largest request body the simulator reads (every route's bodies are small JSON): a
/// larger one is answered 413 without being read whole (a 300 MB POST was read into memory, and
/// still created a user).
pub const MAX_BODY: usize = 64 * 1024;

/// The request body, read up to [`MAX_BODY`]; 413 beyond it (by its `Content-Length`, or as
/// it arrives).
async fn capped_body(
    headers: &HeaderMap,
    body: impl futures_util::Stream<Item = Result<impl bytes::Buf, warp::Error>>,
) -> Result<bytes::Bytes, SimResponse> {
    use futures_util::StreamExt;
    let too_large = || {
        SimResponse::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            &format!("the simulator reads request bodies of up to {MAX_BODY} bytes"),
        )
    };
    let declared = headers
        .get(warp::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let mut out = bytes::BytesMut::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            SimResponse::error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("reading the body: {e}"),
            )
        })?;
        if out.len() + chunk.remaining() > MAX_BODY {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// The warp filter that turns every HTTP request into a [`SimRequest`] for [`Sim::handle`].
pub(super) fn filter(
    sim: Arc<Sim>,
) -> impl warp::Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    use warp::Filter;
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and_then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  body| {
                let sim = sim.clone();
                async move {
                    let body = match capped_body(&headers, body).await {
                        Ok(body) => body,
                        Err(refused) => return Ok(to_http(refused)),
                    };
                    let resp = sim
                        .handle(SimRequest {
                            method,
                            path: path.as_str().to_string(),
                            query,
                            headers,
                            body,
                        })
                        .await;
                    Ok::<_, std::convert::Infallible>(to_http(resp))
                }
            },
        )
}

pub(super) fn to_http(resp: SimResponse) -> warp::reply::Response {
    let mut r = match (resp.body, resp.text, resp.bytes) {
        (Some(json), _, _) => warp::reply::json(&json).into_response(),
        (None, Some(text), _) => text.into_response(),
        (None, None, Some(bytes)) => warp::reply::Response::new(bytes.into()),
        (None, None, None) => warp::reply::reply().into_response(),
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

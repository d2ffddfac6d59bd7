//! The simulator's state and the logic of every AccessLink endpoint it serves, as plain functions
//! of a request: [`Sim::handle`] takes method, path, query, headers and body and returns status,
//! headers and body. The HTTP layer (`server.rs`) only converts; the tests of the behaviour go
//! through HTTP all the same.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use warp::http::{HeaderMap, Method, StatusCode};

use super::model::{Activity, Exercise, Item, ItemData, Kind, Physical, User, hashed_id};
use crate::accesslink::payload::KNOWN_EVENTS;

/// What the simulator is started with.
#[derive(Debug, Clone)]
pub struct SimSettings {
    pub seed: u64,
    /// Users created (registered, with tokens) at start.
    pub users: u32,
    /// Mean time between new exercises per user; `None` = no generator.
    pub exercise_every: Option<Duration>,
    /// Mean time between activity updates per user; `None` = none.
    pub activity_every: Option<Duration>,
    pub client_id: String,
    pub client_secret: String,
    /// Where authorize redirects when the request names no `redirect_uri`.
    pub default_redirect_uri: Option<String>,
    pub faults: Faults,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            seed: 1,
            users: 0,
            exercise_every: None,
            activity_every: None,
            client_id: "hookrace-sim".into(),
            client_secret: "hookrace-sim-secret".into(),
            default_redirect_uri: None,
            faults: Faults::default(),
        }
    }
}

/// Faults and limits, changeable at run time through `PUT /sim/faults`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of deliveries never sent.
    pub drop_rate: f64,
    /// Share of deliveries sent twice.
    pub duplicate_rate: f64,
    /// Delivery delay range in milliseconds.
    pub delay_ms: (u64, u64),
    /// Share of `/v3` requests answered 500.
    pub error_rate: f64,
    /// The next N requests to an endpoint (by ground-truth name) answer 500.
    pub fail_next: BTreeMap<String, u32>,
    /// Replaces the documented per-window limits `(short, long)`.
    pub rate_limit: Option<(u64, u64)>,
    /// Length of the short rate-limit window in seconds (Polar: 900).
    pub short_window_s: u64,
    /// Length of the long window in seconds (Polar: 86400).
    pub long_window_s: u64,
    /// Failed deliveries for this long deactivate the webhook (Polar: 7 days).
    pub deactivate_after_s: u64,
    /// An uncommitted transaction expires after this long (the simulator's choice: 600).
    pub transaction_ttl_s: u64,
    /// An authorization code is valid this long (Polar: 600).
    pub code_ttl_s: u64,
    /// While true the generator makes nothing (injections still work).
    pub generator_paused: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            delay_ms: (20, 400),
            error_rate: 0.0,
            fail_next: BTreeMap::new(),
            rate_limit: None,
            short_window_s: 900,
            long_window_s: 86_400,
            deactivate_after_s: 7 * 86_400,
            transaction_ttl_s: 600,
            code_ttl_s: 600,
            generator_paused: false,
        }
    }
}

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
}

impl SimResponse {
    fn json(status: StatusCode, body: Value) -> Self {
        SimResponse {
            status,
            headers: Vec::new(),
            body: Some(body),
            text: None,
        }
    }
    fn empty(status: StatusCode) -> Self {
        SimResponse {
            status,
            headers: Vec::new(),
            body: None,
            text: None,
        }
    }
    fn text(status: StatusCode, text: impl Into<String>) -> Self {
        SimResponse {
            status,
            headers: Vec::new(),
            body: None,
            text: Some(text.into()),
        }
    }
    fn redirect(location: String) -> Self {
        SimResponse {
            status: StatusCode::FOUND,
            headers: vec![("Location".into(), location)],
            body: None,
            text: None,
        }
    }
    /// AccessLink's documented error body.
    fn error(status: StatusCode, error_type: &str, message: &str) -> Self {
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

fn corr_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The ground truth the control API reveals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Truth {
    pub entities: Vec<TruthEntity>,
    pub deliveries: Vec<TruthDelivery>,
    /// Requests served per endpoint name (`notifications`, `create_transaction`, …).
    pub requests: BTreeMap<String, u64>,
}

/// One entity the generator (or an injection) created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TruthEntity {
    /// `EXERCISE`, `ACTIVITY_SUMMARY`, `PHYSICAL_INFORMATION`.
    #[serde(rename = "type")]
    pub kind: String,
    pub user_id: u64,
    /// Hashed exercise id, activity date, or creation time.
    pub entity_id: String,
    /// The transaction item ids that carry it (several for updated activity).
    pub item_ids: Vec<u64>,
    pub available_at: DateTime<Utc>,
}

/// One delivery decided by the simulator, and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TruthDelivery {
    pub event: String,
    pub user_id: u64,
    pub entity_id: String,
    pub url: String,
    /// `pending`, `sent` (200), `failed` (other status or no answer), `dropped`, `inactive`.
    pub outcome: String,
    pub status: Option<u16>,
    /// A second copy sent because of the duplicate fault.
    pub duplicate: bool,
    pub decided_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct Hook {
    id: String,
    events: Vec<String>,
    url: String,
    secret: String,
    active: bool,
    failing_since: Option<DateTime<Utc>>,
}

impl Hook {
    fn json(&self) -> Value {
        json!({ "id": self.id, "events": self.events, "url": self.url, "active": self.active })
    }
}

#[derive(Debug, Clone)]
struct Code {
    user_id: u64,
    redirect_uri: Option<String>,
    issued: Instant,
    used: bool,
    /// The token issued with it, revoked if the code is used again.
    token: Option<String>,
}

#[derive(Debug, Clone)]
struct Transaction {
    id: u64,
    user_id: u64,
    kind: Kind,
    items: Vec<u64>,
    created: Instant,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    used: u64,
}

impl Window {
    fn tick(&mut self, now: Instant, len: Duration) {
        if self.started.is_none_or(|s| now.duration_since(s) >= len) {
            self.started = Some(now);
            self.used = 0;
        }
        self.used += 1;
    }
    fn reset_in(&self, now: Instant, len: Duration) -> u64 {
        let left = self
            .started
            .map(|s| len.saturating_sub(now.duration_since(s)))
            .unwrap_or(len);
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
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
    pub delay: Duration,
}

struct State {
    settings: SimSettings,
    rng: ChaCha8Rng,
    next_user_id: u64,
    next_item_id: u64,
    next_tx_id: u64,
    users: BTreeMap<u64, User>,
    tokens: HashMap<String, u64>,
    codes: HashMap<String, Code>,
    items: BTreeMap<u64, Item>,
    /// Index of each entity in `truth.entities`, by (type, user, entity id).
    entity_index: HashMap<(Kind, u64, String), usize>,
    transactions: HashMap<u64, Transaction>,
    hook: Option<Hook>,
    short: Window,
    long: Window,
    truth: Truth,
}

/// The simulator: shared state plus what is needed to send deliveries and PINGs.
pub struct Sim {
    state: Mutex<State>,
    /// `http://host:port` of this simulator; every URL it hands out starts with it.
    pub base: String,
    http: reqwest::Client,
    deliveries: mpsc::UnboundedSender<DeliveryJob>,
    /// Woken when users are added, so the generator schedules them.
    pub users_changed: Notify,
}

impl Sim {
    /// A simulator reachable at `base`; `deliveries` receives the jobs the sender task runs.
    pub fn new(
        settings: SimSettings,
        base: String,
        deliveries: mpsc::UnboundedSender<DeliveryJob>,
    ) -> anyhow::Result<Arc<Sim>> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let rng = ChaCha8Rng::seed_from_u64(settings.seed);
        let n = settings.users;
        let sim = Arc::new(Sim {
            state: Mutex::new(State {
                settings,
                rng,
                next_user_id: 10_001,
                next_item_id: 1_000_001,
                next_tx_id: 500,
                users: BTreeMap::new(),
                tokens: HashMap::new(),
                codes: HashMap::new(),
                items: BTreeMap::new(),
                entity_index: HashMap::new(),
                transactions: HashMap::new(),
                hook: None,
                short: Window::default(),
                long: Window::default(),
                truth: Truth::default(),
            }),
            base,
            http,
            deliveries,
            users_changed: Notify::new(),
        });
        for _ in 0..n {
            sim.add_user(true);
        }
        Ok(sim)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a simulator bug; keep serving with the state as is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a user with a token; registered when `registered`.
    pub fn add_user(&self, registered: bool) -> (u64, String) {
        let out = {
            let mut s = self.lock();
            s.new_user(registered)
        };
        self.users_changed.notify_one();
        out
    }

    /// The current access token of a user.
    pub fn token_of(&self, user_id: u64) -> Option<String> {
        self.lock().users.get(&user_id).map(|u| u.token.clone())
    }

    /// Registered, not revoked users.
    pub fn active_user_ids(&self) -> Vec<u64> {
        let s = self.lock();
        s.users
            .values()
            .filter(|u| u.registered && !u.revoked)
            .map(|u| u.id)
            .collect()
    }

    /// The generator's randomness (seeded): a value from `f`.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
        f(&mut self.lock().rng)
    }

    pub fn settings(&self) -> SimSettings {
        self.lock().settings.clone()
    }

    pub fn truth(&self) -> Truth {
        self.lock().truth.clone()
    }

    /// Whether the generator is paused (fault `generator_paused`).
    pub fn generator_paused(&self) -> bool {
        self.lock().settings.faults.generator_paused
    }

    /// Creates a new item of `kind` for `user` now, announces it, returns its truth entry.
    pub fn generate(&self, user_id: u64, kind: Kind) -> Option<TruthEntity> {
        let (entity, job) = {
            let mut s = self.lock();
            if !s
                .users
                .get(&user_id)
                .is_some_and(|u| u.registered && !u.revoked)
            {
                return None;
            }
            let item = s.new_item(user_id, kind, &self.base);
            let index = s.record_entity(&item);
            let job = s.announce(&item, &self.base);
            (s.truth.entities[index].clone(), job)
        };
        for j in job {
            let _ = self.deliveries.send(j);
        }
        Some(entity)
    }

    /// Records the outcome of a delivery attempt (called by the sender task).
    pub fn delivery_done(&self, index: usize, status: Option<u16>) {
        let mut s = self.lock();
        let now = Utc::now();
        let ok = status == Some(200);
        if let Some(d) = s.truth.deliveries.get_mut(index) {
            d.outcome = if ok { "sent" } else { "failed" }.into();
            d.status = status;
            d.sent_at = Some(now);
        }
        let after = Duration::from_secs(s.settings.faults.deactivate_after_s);
        if let Some(h) = s.hook.as_mut() {
            if ok {
                h.failing_since = None;
            } else {
                let since = *h.failing_since.get_or_insert(now);
                if (now - since).to_std().unwrap_or_default() >= after {
                    h.active = false;
                    tracing::warn!(url = %h.url, "simulator: webhook deactivated after failing deliveries");
                }
            }
        }
    }

    /// Answers one request.
    pub async fn handle(&self, req: SimRequest) -> SimResponse {
        let path = req.path.trim_end_matches('/').to_string();
        if let Some(rest) = path.strip_prefix("/sim/") {
            return self.control(&req, rest);
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
        let mut resp = if limited {
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
        resp.headers.extend(headers);
        resp
    }

    async fn v3(&self, req: &SimRequest, path: &str) -> SimResponse {
        let segs: Vec<&str> = path.trim_start_matches("/v3/").split('/').collect();
        let m = &req.method;
        match segs.as_slice() {
            ["notifications"] if *m == Method::GET => {
                self.basic(req, |s| s.notifications(&self.base))
            }
            ["webhooks"] if *m == Method::GET => self.basic(req, |s| s.list_webhooks()),
            ["webhooks"] if *m == Method::POST => match self.check_basic(req) {
                Err(r) => r,
                Ok(()) => self.create_webhook(req).await,
            },
            ["webhooks", "activate"] if *m == Method::POST => match self.check_basic(req) {
                Err(r) => r,
                Ok(()) => self.set_webhook_active(true).await,
            },
            ["webhooks", "deactivate"] if *m == Method::POST => match self.check_basic(req) {
                Err(r) => r,
                Ok(()) => self.set_webhook_active(false).await,
            },
            ["webhooks", id] if *m == Method::PATCH => match self.check_basic(req) {
                Err(r) => r,
                Ok(()) => self.patch_webhook(req, id).await,
            },
            ["webhooks", id] if *m == Method::DELETE => self.basic(req, |s| s.delete_webhook(id)),
            ["users"] if *m == Method::POST => {
                self.bearer(req, false, |s, uid| s.register(uid, &req.body, &self.base))
            }
            ["users", id] if *m == Method::GET => self.bearer(req, false, |s, uid| {
                s.own(uid, id)
                    .unwrap_or_else(|| s.users[&uid].json(&self.base).into_ok())
            }),
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
            ["users", id, tx, tid, _, item]
                if tx.ends_with("-transactions") && *m == Method::GET =>
            {
                self.bearer(req, true, |s, uid| {
                    s.own(uid, id)
                        .unwrap_or_else(|| s.item(uid, tid, item, &self.base))
                })
            }
            ["exercises"] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| s.list_exercises(uid, &self.base))
            }
            ["exercises", hid] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| s.exercise(uid, hid, &self.base))
            }
            ["users", "activities", date] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| s.activity(uid, date, &self.base))
            }
            ["users", "physical-info"] if *m == Method::GET => {
                self.bearer(req, true, |s, uid| s.physical(uid, &self.base))
            }
            _ => SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such resource"),
        }
    }

    fn check_basic(&self, req: &SimRequest) -> Result<(), SimResponse> {
        let s = self.lock();
        let given = basic_credentials(&req.headers);
        match given {
            Some((id, secret))
                if id == s.settings.client_id && secret == s.settings.client_secret =>
            {
                Ok(())
            }
            _ => Err(unauthorized(
                "client credentials (HTTP Basic) are missing or wrong",
            )),
        }
    }

    fn basic(&self, req: &SimRequest, f: impl FnOnce(&mut State) -> SimResponse) -> SimResponse {
        match self.check_basic(req) {
            Err(r) => r,
            Ok(()) => f(&mut self.lock()),
        }
    }

    /// Runs `f` with the user the bearer token names; `data` endpoints also need consents.
    fn bearer(
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

    // ---- OAuth ----

    fn authorize(&self, req: &SimRequest) -> SimResponse {
        let q: HashMap<String, String> = serde_urlencoded::from_str(&req.query).unwrap_or_default();
        let mut s = self.lock();
        if q.get("response_type").map(String::as_str) != Some("code") {
            return SimResponse::text(StatusCode::BAD_REQUEST, "response_type must be code\n");
        }
        if q.get("client_id") != Some(&s.settings.client_id) {
            return SimResponse::text(StatusCode::BAD_REQUEST, "unknown client_id\n");
        }
        let Some(target) = q
            .get("redirect_uri")
            .cloned()
            .or_else(|| s.settings.default_redirect_uri.clone())
        else {
            return SimResponse::text(
                StatusCode::BAD_REQUEST,
                "no redirect_uri given and none registered for the client\n",
            );
        };
        let state = q.get("state").cloned();
        let sep = if target.contains('?') { '&' } else { '?' };
        let state_part = state
            .map(|st| format!("&state={}", urlencode(&st)))
            .unwrap_or_default();
        // The simulator's consent page answers at once: `deny=1` says no, otherwise yes.
        if q.get("deny").is_some_and(|v| v == "1" || v == "true") {
            return SimResponse::redirect(format!("{target}{sep}error=access_denied{state_part}"));
        }
        // `user_id` connects an existing simulator user; otherwise a new Polar user consents.
        let uid = match q.get("user_id").and_then(|v| v.parse::<u64>().ok()) {
            Some(uid) if s.users.contains_key(&uid) => uid,
            Some(_) => return SimResponse::text(StatusCode::BAD_REQUEST, "unknown user_id\n"),
            None => s.new_user(false).0,
        };
        let code = s.random_token(16);
        s.codes.insert(
            code.clone(),
            Code {
                user_id: uid,
                redirect_uri: q.get("redirect_uri").cloned(),
                issued: Instant::now(),
                used: false,
                token: None,
            },
        );
        SimResponse::redirect(format!("{target}{sep}code={code}{state_part}"))
    }

    fn token(&self, req: &SimRequest) -> SimResponse {
        let mut s = self.lock();
        match basic_credentials(&req.headers) {
            Some((id, secret))
                if id == s.settings.client_id && secret == s.settings.client_secret => {}
            _ => {
                return SimResponse::json(
                    StatusCode::UNAUTHORIZED,
                    json!({"error": "invalid_client"}),
                );
            }
        }
        let form: HashMap<String, String> =
            serde_urlencoded::from_bytes(&req.body).unwrap_or_default();
        let invalid_grant =
            || SimResponse::json(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
        if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
            return SimResponse::json(
                StatusCode::BAD_REQUEST,
                json!({"error": "unsupported_grant_type"}),
            );
        }
        let Some(code_str) = form.get("code") else {
            return invalid_grant();
        };
        let Some(code) = s.codes.get(code_str).cloned() else {
            return invalid_grant();
        };
        if code.used {
            // Reuse: refused, and the token issued with the code is revoked.
            if let Some(t) = &code.token {
                s.tokens.remove(t);
            }
            return invalid_grant();
        }
        let code_ttl = Duration::from_secs(s.settings.faults.code_ttl_s);
        if code.issued.elapsed() > code_ttl
            || form.get("redirect_uri") != code.redirect_uri.as_ref()
        {
            return invalid_grant();
        }
        let token = s.random_token(24);
        s.tokens.insert(token.clone(), code.user_id);
        if let Some(u) = s.users.get_mut(&code.user_id) {
            u.token = token.clone();
            u.revoked = false;
        }
        if let Some(c) = s.codes.get_mut(code_str) {
            c.used = true;
            c.token = Some(token.clone());
        }
        SimResponse::json(
            StatusCode::OK,
            json!({"access_token": token, "token_type": "bearer", "expires_in": 31_535_999, "x_user_id": code.user_id}),
        )
    }

    // ---- webhooks (with PINGs, which must not hold the lock) ----

    async fn ping(&self, url: &str, secret: &str) -> Result<(), String> {
        let body = json!({
            "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "event": "PING",
        })
        .to_string();
        let sig = crate::accesslink::signature::sign(secret, body.as_bytes());
        let res = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .header(crate::accesslink::EVENT_HEADER, "PING")
            .header(crate::accesslink::SIGNATURE_HEADER, sig)
            .body(body)
            .send()
            .await;
        match res {
            Ok(r) if r.status() == StatusCode::OK => Ok(()),
            Ok(r) => Err(format!("Response code was [{}]", r.status().as_u16())),
            Err(e) => Err(format!("No response ({e})")),
        }
    }

    fn ping_failed(url: &str, why: &str) -> SimResponse {
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

    async fn create_webhook(&self, req: &SimRequest) -> SimResponse {
        let (events, url) = match parse_webhook_body(&req.body, true) {
            Ok((Some(e), Some(u))) => (e, u),
            Ok(_) => return unreachable_fields(),
            Err(r) => return r,
        };
        let secret = {
            let mut s = self.lock();
            if s.hook.is_some() {
                return SimResponse::error(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "a webhook already exists for this client",
                );
            }
            uuid_like(&mut s.rng)
        };
        if let Err(why) = self.ping(&url, &secret).await {
            return Self::ping_failed(&url, &why);
        }
        let mut s = self.lock();
        if s.hook.is_some() {
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
        };
        s.hook = Some(hook);
        SimResponse::json(
            StatusCode::CREATED,
            json!({"data": {"id": id, "events": events, "url": url, "signature_secret_key": secret}}),
        )
    }

    async fn patch_webhook(&self, req: &SimRequest, id: &str) -> SimResponse {
        let (events, url) = match parse_webhook_body(&req.body, false) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let (needs_ping, secret) = {
            let s = self.lock();
            match &s.hook {
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
            if let Err(why) = self.ping(u, &secret).await {
                return Self::ping_failed(u, &why);
            }
        }
        let mut s = self.lock();
        match s.hook.as_mut() {
            Some(h) if h.id == id => {
                if let Some(e) = events {
                    h.events = e;
                }
                if let Some(u) = url {
                    h.url = u;
                }
                SimResponse::json(StatusCode::OK, json!({"data": h.json()}))
            }
            _ => SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no webhook with this id"),
        }
    }

    async fn set_webhook_active(&self, active: bool) -> SimResponse {
        let target = {
            let s = self.lock();
            match &s.hook {
                None => return SimResponse::empty(StatusCode::NO_CONTENT),
                Some(h) => (h.url.clone(), h.secret.clone()),
            }
        };
        if active {
            if let Err(why) = self.ping(&target.0, &target.1).await {
                return Self::ping_failed(&target.0, &why);
            }
        }
        let mut s = self.lock();
        match s.hook.as_mut() {
            None => SimResponse::empty(StatusCode::NO_CONTENT),
            Some(h) => {
                h.active = active;
                if active {
                    h.failing_since = None;
                }
                SimResponse::empty(StatusCode::OK)
            }
        }
    }

    // ---- control API ----

    fn control(&self, req: &SimRequest, rest: &str) -> SimResponse {
        let m = &req.method;
        let segs: Vec<&str> = rest.split('/').collect();
        match segs.as_slice() {
            ["users"] if *m == Method::POST => {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(json!({}));
                let registered = body
                    .get("registered")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                let (id, token) = self.add_user(registered);
                SimResponse::json(
                    StatusCode::CREATED,
                    json!({"user_id": id, "access_token": token, "registered": registered}),
                )
            }
            ["users"] if *m == Method::GET => {
                let s = self.lock();
                let list: Vec<Value> = s
                    .users
                    .values()
                    .map(|u| json!({"user_id": u.id, "access_token": u.token, "registered": u.registered, "consents": u.consents, "revoked": u.revoked}))
                    .collect();
                SimResponse::json(StatusCode::OK, Value::Array(list))
            }
            ["users", id, "consents"] if *m == Method::PUT => {
                let granted = serde_json::from_slice::<Value>(&req.body)
                    .ok()
                    .and_then(|v| v.get("granted").and_then(Value::as_bool));
                let mut s = self.lock();
                match (
                    id.parse::<u64>().ok().and_then(|i| s.users.get_mut(&i)),
                    granted,
                ) {
                    (Some(u), Some(g)) => {
                        u.consents = g;
                        SimResponse::empty(StatusCode::NO_CONTENT)
                    }
                    (None, _) => SimResponse::text(StatusCode::NOT_FOUND, "no such user\n"),
                    (_, None) => SimResponse::text(
                        StatusCode::BAD_REQUEST,
                        "body must be {\"granted\": true|false}\n",
                    ),
                }
            }
            ["users", id, "revoke"] if *m == Method::POST => {
                let mut s = self.lock();
                match id.parse::<u64>().ok().and_then(|i| s.users.get_mut(&i)) {
                    Some(u) => {
                        u.revoked = true;
                        SimResponse::empty(StatusCode::NO_CONTENT)
                    }
                    None => SimResponse::text(StatusCode::NOT_FOUND, "no such user\n"),
                }
            }
            ["inject"] if *m == Method::POST => {
                let body: Value = match serde_json::from_slice(&req.body) {
                    Ok(v) => v,
                    Err(e) => {
                        return SimResponse::text(
                            StatusCode::BAD_REQUEST,
                            format!("body is not JSON: {e}\n"),
                        );
                    }
                };
                let kind = match body
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("EXERCISE")
                {
                    "EXERCISE" => Kind::Exercise,
                    "ACTIVITY_SUMMARY" => Kind::Activity,
                    "PHYSICAL_INFORMATION" => Kind::PhysicalInformation,
                    other => {
                        return SimResponse::text(
                            StatusCode::BAD_REQUEST,
                            format!("cannot inject {other}\n"),
                        );
                    }
                };
                let Some(uid) = body.get("user_id").and_then(Value::as_u64) else {
                    return SimResponse::text(StatusCode::BAD_REQUEST, "user_id is required\n");
                };
                match self.generate(uid, kind) {
                    Some(e) => SimResponse::json(
                        StatusCode::CREATED,
                        serde_json::to_value(e).unwrap_or(Value::Null),
                    ),
                    None => SimResponse::text(StatusCode::NOT_FOUND, "no such registered user\n"),
                }
            }
            ["faults"] if *m == Method::GET => {
                let s = self.lock();
                SimResponse::json(
                    StatusCode::OK,
                    serde_json::to_value(&s.settings.faults).unwrap_or(Value::Null),
                )
            }
            ["faults"] if *m == Method::PUT => match serde_json::from_slice::<Faults>(&req.body) {
                Ok(f) => {
                    let mut s = self.lock();
                    s.settings.faults = f;
                    SimResponse::json(
                        StatusCode::OK,
                        serde_json::to_value(&s.settings.faults).unwrap_or(Value::Null),
                    )
                }
                Err(e) => {
                    SimResponse::text(StatusCode::BAD_REQUEST, format!("faults not valid: {e}\n"))
                }
            },
            ["truth"] if *m == Method::GET => {
                let s = self.lock();
                let hook = s.hook.as_ref().map(Hook::json);
                let mut v = serde_json::to_value(&s.truth).unwrap_or(Value::Null);
                v["webhook"] = hook.unwrap_or(Value::Null);
                v["client_id"] = json!(s.settings.client_id);
                SimResponse::json(StatusCode::OK, v)
            }
            _ => SimResponse::text(
                StatusCode::NOT_FOUND,
                "no such control route: see docs/simulator.md\n",
            ),
        }
    }
}

trait IntoOk {
    fn into_ok(self) -> SimResponse;
}
impl IntoOk for Value {
    fn into_ok(self) -> SimResponse {
        SimResponse::json(StatusCode::OK, self)
    }
}

fn unreachable_fields() -> SimResponse {
    SimResponse::error(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "events and url are required",
    )
}

fn unauthorized(message: &str) -> SimResponse {
    let mut r = SimResponse::error(StatusCode::UNAUTHORIZED, "Unauthorized", message);
    r.headers.push((
        "WWW-Authenticate".into(),
        "Basic realm=\"AccessLink\"".into(),
    ));
    r
}

/// `(events, url)` from a create (both required) or patch (either) body.
fn parse_webhook_body(
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
                    Some(e) if KNOWN_EVENTS.contains(&e) => out.push(e.to_string()),
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

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

fn uuid_like(rng: &mut ChaCha8Rng) -> String {
    let b: [u8; 16] = rng.r#gen();
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

impl State {
    fn random_token(&mut self, len: usize) -> String {
        const A: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..len)
            .map(|_| A[self.rng.gen_range(0..A.len())] as char)
            .collect()
    }

    fn new_user(&mut self, registered: bool) -> (u64, String) {
        let id = self.next_user_id;
        self.next_user_id += 1;
        let token = self.random_token(24);
        self.tokens.insert(token.clone(), id);
        self.users.insert(
            id,
            User {
                id,
                token: token.clone(),
                registered,
                member_id: format!("sim-member-{id}"),
                registration_date: Utc::now(),
                consents: true,
                revoked: false,
            },
        );
        (id, token)
    }

    fn registered_users(&self) -> u64 {
        self.users.values().filter(|u| u.registered).count() as u64
    }

    /// Counts a request in both windows; returns whether it is refused, and the headers.
    fn rate_limit(&mut self) -> (bool, Vec<(String, String)>) {
        let now = Instant::now();
        let f = &self.settings.faults;
        let (short_len, long_len) = (
            Duration::from_secs(f.short_window_s.max(1)),
            Duration::from_secs(f.long_window_s.max(1)),
        );
        let users = self.registered_users();
        let (short_limit, long_limit) = f
            .rate_limit
            .unwrap_or((500 + users * 20, 5000 + users * 100));
        self.short.tick(now, short_len);
        self.long.tick(now, long_len);
        let limited = self.short.used > short_limit || self.long.used > long_limit;
        let headers = vec![
            (
                "RateLimit-Usage".into(),
                format!("{}, {}", self.short.used, self.long.used),
            ),
            (
                "RateLimit-Limit".into(),
                format!("{short_limit}, {long_limit}"),
            ),
            (
                "RateLimit-Reset".into(),
                format!(
                    "{}, {}",
                    self.short.reset_in(now, short_len),
                    self.long.reset_in(now, long_len)
                ),
            ),
        ];
        (limited, headers)
    }

    fn inject_error(&mut self, endpoint: &str) -> bool {
        if let Some(n) = self.settings.faults.fail_next.get_mut(endpoint) {
            if *n > 0 {
                *n -= 1;
                return true;
            }
        }
        let rate = self.settings.faults.error_rate;
        rate > 0.0 && self.rng.gen_bool(rate.min(1.0))
    }

    /// `Some(403)` when `uid` (the token's user) is not the user in the path.
    fn own(&self, uid: u64, path_id: &str) -> Option<SimResponse> {
        (path_id.parse::<u64>().ok() != Some(uid)).then(|| {
            SimResponse::error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "the token does not belong to this user",
            )
        })
    }

    fn register(&mut self, uid: u64, body: &[u8], base: &str) -> SimResponse {
        let member = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("member-id").and_then(Value::as_str).map(String::from));
        let Some(member) = member.filter(|m| !m.is_empty()) else {
            return SimResponse::error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "body must be {\"member-id\": \"…\"}",
            );
        };
        if self.users[&uid].registered {
            return SimResponse::error(StatusCode::CONFLICT, "Conflict", "user already registered");
        }
        if !self.users[&uid].consents {
            return SimResponse::error(
                StatusCode::FORBIDDEN,
                "ConsentMissing",
                "the user has not accepted the mandatory consents",
            );
        }
        if self
            .users
            .values()
            .any(|u| u.id != uid && u.registered && u.member_id == member)
        {
            return SimResponse::error(
                StatusCode::CONFLICT,
                "Conflict",
                "member-id already in use",
            );
        }
        let u = self
            .users
            .get_mut(&uid)
            .expect("bearer() checked the user exists");
        u.registered = true;
        u.member_id = member;
        u.registration_date = Utc::now();
        u.json(base).into_ok()
    }

    fn deregister(&mut self, uid: u64) -> SimResponse {
        if let Some(u) = self.users.get_mut(&uid) {
            u.registered = false;
            u.revoked = true;
        }
        SimResponse::empty(StatusCode::NO_CONTENT)
    }

    fn list_webhooks(&self) -> SimResponse {
        let data: Vec<Value> = self.hook.iter().map(Hook::json).collect();
        json!({ "data": data }).into_ok()
    }

    fn delete_webhook(&mut self, id: &str) -> SimResponse {
        match &self.hook {
            Some(h) if h.id == id => {
                self.hook = None;
                SimResponse::empty(StatusCode::NO_CONTENT)
            }
            _ => SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no webhook with this id"),
        }
    }

    /// Items of `uid`/`kind` not yet committed.
    fn pending(&self, uid: u64, kind: Kind) -> impl Iterator<Item = &Item> {
        self.items
            .values()
            .filter(move |i| i.user_id == uid && i.kind == kind && !i.committed)
    }

    fn notifications(&self, base: &str) -> SimResponse {
        let mut list = Vec::new();
        // A user who disconnected is not announced: their data stays listed, their token fails.
        for u in self.users.values().filter(|u| u.registered) {
            for kind in Kind::ALL {
                if self.pending(u.id, kind).next().is_some() {
                    list.push(json!({
                        "user-id": u.id,
                        "data-type": kind.data_type(),
                        "url": format!("{base}/v3/users/{}/{}-transactions", u.id, kind.segment()),
                    }));
                }
            }
        }
        if list.is_empty() {
            SimResponse::empty(StatusCode::NO_CONTENT)
        } else {
            json!({ "available-user-data": list }).into_ok()
        }
    }

    fn tx_uri(base: &str, t: &Transaction) -> String {
        format!(
            "{base}/v3/users/{}/{}-transactions/{}",
            t.user_id,
            t.kind.segment(),
            t.id
        )
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.settings.faults.transaction_ttl_s.max(1))
    }

    fn create_transaction(&mut self, uid: u64, kind: Kind, base: &str) -> SimResponse {
        let ttl = self.ttl();
        self.transactions.retain(|_, t| t.created.elapsed() < ttl);
        // An open transaction is offered again rather than hiding its items.
        if let Some(t) = self
            .transactions
            .values()
            .find(|t| t.user_id == uid && t.kind == kind)
        {
            return SimResponse::json(
                StatusCode::CREATED,
                json!({"transaction-id": t.id, "resource-uri": Self::tx_uri(base, t)}),
            );
        }
        let items: Vec<u64> = self.pending(uid, kind).take(50).map(|i| i.id).collect();
        if items.is_empty() {
            return SimResponse::empty(StatusCode::NO_CONTENT);
        }
        let id = self.next_tx_id;
        self.next_tx_id += 1;
        let t = Transaction {
            id,
            user_id: uid,
            kind,
            items,
            created: Instant::now(),
        };
        let uri = Self::tx_uri(base, &t);
        self.transactions.insert(id, t);
        SimResponse::json(
            StatusCode::CREATED,
            json!({"transaction-id": id, "resource-uri": uri}),
        )
    }

    fn live_transaction(&self, uid: u64, seg: &str, tid: &str) -> Option<Transaction> {
        let kind = Kind::from_segment(seg.trim_end_matches("-transactions"))?;
        let t = self.transactions.get(&tid.parse::<u64>().ok()?)?;
        (t.user_id == uid && t.kind == kind && t.created.elapsed() < self.ttl()).then(|| t.clone())
    }

    fn transaction(
        &mut self,
        uid: u64,
        seg: &str,
        tid: &str,
        commit: bool,
        base: &str,
    ) -> SimResponse {
        let Some(t) = self.live_transaction(uid, seg, tid) else {
            return SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such transaction");
        };
        if commit {
            for id in &t.items {
                if let Some(i) = self.items.get_mut(id) {
                    i.committed = true;
                }
            }
            self.transactions.remove(&t.id);
            return SimResponse::empty(StatusCode::OK);
        }
        let urls: Vec<String> = t
            .items
            .iter()
            .map(|id| format!("{}/{}/{id}", Self::tx_uri(base, &t), t.kind.item_segment()))
            .collect();
        json!({ t.kind.list_key(): urls }).into_ok()
    }

    fn item(&self, uid: u64, tid: &str, item: &str, base: &str) -> SimResponse {
        let found = tid
            .parse::<u64>()
            .ok()
            .zip(item.parse::<u64>().ok())
            .and_then(|(tid, iid)| {
                let t = self.transactions.get(&tid)?;
                (t.user_id == uid && t.items.contains(&iid) && t.created.elapsed() < self.ttl())
                    .then(|| self.items.get(&iid))
                    .flatten()
                    .map(|i| i.transactional_json(base, tid))
            });
        match found {
            Some(v) => v.into_ok(),
            None => SimResponse::error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such item in this transaction",
            ),
        }
    }

    fn exercises_of(&self, uid: u64) -> impl Iterator<Item = &Item> {
        let since = Utc::now() - chrono::Duration::days(30);
        self.items.values().filter(move |i| {
            i.user_id == uid && i.kind == Kind::Exercise && i.available_at >= since
        })
    }

    fn list_exercises(&self, uid: u64, base: &str) -> SimResponse {
        Value::Array(self.exercises_of(uid).map(|i| i.snake_json(base)).collect()).into_ok()
    }

    fn exercise(&self, uid: u64, hid: &str, base: &str) -> SimResponse {
        let found = self
            .exercises_of(uid)
            .find(|i| matches!(&i.data, ItemData::Exercise(e) if e.hashed_id == hid));
        match found {
            Some(i) => i.snake_json(base).into_ok(),
            None => SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such exercise"),
        }
    }

    fn activity(&self, uid: u64, date: &str, base: &str) -> SimResponse {
        // The newest version of that day's summary.
        let found = self.items.values().rev().find(|i| {
            i.user_id == uid && matches!(&i.data, ItemData::Activity(a) if a.date == date)
        });
        match found {
            Some(i) => i.snake_json(base).into_ok(),
            None => SimResponse::empty(StatusCode::NO_CONTENT),
        }
    }

    fn physical(&self, uid: u64, base: &str) -> SimResponse {
        let found = self
            .items
            .values()
            .rev()
            .find(|i| i.user_id == uid && i.kind == Kind::PhysicalInformation);
        match found {
            Some(i) => i.snake_json(base).into_ok(),
            None => SimResponse::empty(StatusCode::NO_CONTENT),
        }
    }

    /// Makes a new item with plausible random content.
    fn new_item(&mut self, uid: u64, kind: Kind, _base: &str) -> Item {
        let id = self.next_item_id;
        self.next_item_id += self.rng.gen_range(1..40);
        let now = Utc::now();
        // Each user lives in one time zone, chosen from their id.
        let offset = [-300, 0, 60, 120, 180, 330][(uid % 6) as usize];
        let local_now = now.naive_utc() + chrono::Duration::minutes(offset as i64);
        let data = match kind {
            Kind::Exercise => {
                let duration_s = self.rng.gen_range(15 * 60..2 * 3600);
                let sports = [
                    "RUNNING",
                    "CYCLING",
                    "WALKING",
                    "SWIMMING",
                    "STRENGTH_TRAINING",
                ];
                let sport = sports[self.rng.gen_range(0..sports.len())].to_string();
                let start = local_now
                    - chrono::Duration::seconds(duration_s as i64 + self.rng.gen_range(60..900));
                let start = start.with_nanosecond_zero();
                ItemData::Exercise(Exercise {
                    hashed_id: hashed_id(self.settings.seed, id),
                    device: "Polar Vantage V3".into(),
                    device_id: format!("{:08X}", (uid * 2_654_435_761) as u32),
                    start_time: start,
                    utc_offset_minutes: offset,
                    duration_s,
                    distance_m: if sport == "STRENGTH_TRAINING" {
                        0
                    } else {
                        duration_s * 3
                    },
                    sport,
                    calories: duration_s / 6,
                    hr_avg: self.rng.gen_range(110..160),
                    hr_max: self.rng.gen_range(160..195),
                })
            }
            Kind::Activity => {
                let date = local_now.date().format("%Y-%m-%d").to_string();
                let created = self
                    .entity_index
                    .get(&(Kind::Activity, uid, date.clone()))
                    .map(|&i| self.truth.entities[i].available_at)
                    .unwrap_or(now);
                let steps = self.rng.gen_range(500..4000);
                ItemData::Activity(Activity {
                    date,
                    created,
                    calories: 1800 + steps / 20,
                    active_calories: steps / 20,
                    duration_s: 86_400,
                    active_steps: steps,
                })
            }
            Kind::PhysicalInformation => ItemData::Physical(Physical {
                weight: 60.0 + self.rng.gen_range(0.0..30.0f64).round(),
                resting_heart_rate: self.rng.gen_range(45..70),
            }),
        };
        let item = Item {
            id,
            user_id: uid,
            kind,
            available_at: now,
            committed: false,
            data,
        };
        self.items.insert(id, item.clone());
        item
    }

    /// Adds the item to the ground truth (a new entity, or a new version of a day's activity).
    fn record_entity(&mut self, item: &Item) -> usize {
        let key = (item.kind, item.user_id, item.source_id());
        if let Some(&i) = self.entity_index.get(&key) {
            self.truth.entities[i].item_ids.push(item.id);
            return i;
        }
        self.truth.entities.push(TruthEntity {
            kind: item.kind.data_type().to_string(),
            user_id: item.user_id,
            entity_id: item.source_id(),
            item_ids: vec![item.id],
            available_at: item.available_at,
        });
        let i = self.truth.entities.len() - 1;
        self.entity_index.insert(key, i);
        i
    }

    /// Decides the deliveries for a new item: none, dropped, one, or two.
    fn announce(&mut self, item: &Item, base: &str) -> Vec<DeliveryJob> {
        let event = item.kind.data_type().to_string();
        let hook = match &self.hook {
            Some(h) if h.events.contains(&event) => h.clone(),
            _ => return Vec::new(),
        };
        let payload = item.webhook_payload(base, Utc::now());
        let url = payload["url"].as_str().unwrap_or_default().to_string();
        let record = |s: &mut State, outcome: &str, duplicate: bool| {
            s.truth.deliveries.push(TruthDelivery {
                event: event.clone(),
                user_id: item.user_id,
                entity_id: item.source_id(),
                url: url.clone(),
                outcome: outcome.into(),
                status: None,
                duplicate,
                decided_at: Utc::now(),
                sent_at: None,
            });
            s.truth.deliveries.len() - 1
        };
        if !hook.active {
            record(self, "inactive", false);
            return Vec::new();
        }
        let f = self.settings.faults.clone();
        if f.drop_rate > 0.0 && self.rng.gen_bool(f.drop_rate.min(1.0)) {
            record(self, "dropped", false);
            return Vec::new();
        }
        let copies = if f.duplicate_rate > 0.0 && self.rng.gen_bool(f.duplicate_rate.min(1.0)) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|n| {
                let (lo, hi) = f.delay_ms;
                let delay = Duration::from_millis(if hi > lo {
                    self.rng.gen_range(lo..=hi)
                } else {
                    lo
                });
                DeliveryJob {
                    truth_index: record(self, "pending", n > 0),
                    url: hook.url.clone(),
                    payload: payload.clone(),
                    secret: hook.secret.clone(),
                    event: event.clone(),
                    delay,
                }
            })
            .collect()
    }
}

trait ZeroNanos {
    fn with_nanosecond_zero(self) -> Self;
}
impl ZeroNanos for chrono::NaiveDateTime {
    fn with_nanosecond_zero(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}

//! OAuth onboarding on the public listener: `GET /oauth/connect` sends the browser to Polar's
//! authorization page with a fresh single-use `state`; `GET /oauth/callback` checks the state,
//! exchanges the code for a token (with the same `redirect_uri`), registers the user with
//! AccessLink (409 means already registered) and only then stores the token. Every failure shows
//! a short page saying what happened and what to do, and stores nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::RngExt;
use reqwest::Method;
use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::accesslink::client::{ApiError, Auth, Client, error_message};
use crate::accesslink::identity::UserId;
use crate::config::Secret;
use crate::store::Store;

/// How long a `state` waits for the browser to come back.
const STATE_TTL: Duration = Duration::from_secs(600);
/// The cookie that binds a sign-in to the browser that started it.
pub const STATE_COOKIE: &str = "hookrace_oauth";

/// Sign-ins in progress at most: beyond it `/oauth/connect` answers 503 until some expire.
pub const MAX_PENDING_STATES: usize = 1000;
/// `/oauth/connect` requests per second at most (an unauthenticated route): beyond it, 429.
pub const CONNECTS_PER_S: u32 = 20;

/// The states of sign-ins in progress: in memory, bounded and expiring, so unauthenticated
/// requests cannot fill the disk (they were stored and flushed, one per request, and never
/// pruned). A sign-in that a restart interrupts starts again from `/oauth/connect`.
#[derive(Debug, Default)]
pub struct PendingStates {
    inner: std::sync::Mutex<PendingInner>,
}

#[derive(Debug, Default)]
struct PendingInner {
    issued: HashMap<String, chrono::DateTime<Utc>>,
    /// (the second, connects in it)
    window: (i64, u32),
}

/// Why a sign-in could not start.
#[derive(Debug, PartialEq, Eq)]
pub enum Busy {
    /// Too many requests this second.
    RateLimited,
    /// Too many sign-ins in progress.
    Full,
    /// The configured authorization URL does not parse (the configuration checks it first).
    BadAuthorizeUrl(String),
}

impl PendingStates {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingInner> {
        // Plain maps, valid as they are after a panic elsewhere.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a new state, unless the route is hit too fast or too many are pending.
    fn issue(&self, state: &str, now: chrono::DateTime<Utc>) -> Result<(), Busy> {
        let mut p = self.lock();
        let second = now.timestamp();
        if p.window.0 != second {
            p.window = (second, 0);
        }
        if p.window.1 >= CONNECTS_PER_S {
            return Err(Busy::RateLimited);
        }
        p.window.1 += 1;
        if p.issued.len() >= MAX_PENDING_STATES {
            let ttl = chrono::Duration::from_std(STATE_TTL).unwrap_or_default();
            p.issued.retain(|_, at| now - *at <= ttl);
        }
        if p.issued.len() >= MAX_PENDING_STATES {
            return Err(Busy::Full);
        }
        p.issued.insert(state.to_string(), now);
        Ok(())
    }

    /// Takes a state (single use): when it was issued, if it was.
    fn take(&self, state: &str) -> Option<chrono::DateTime<Utc>> {
        self.lock().issued.remove(state)
    }

    fn contains(&self, state: &str) -> bool {
        self.lock().issued.contains_key(state)
    }

    /// Sign-ins in progress.
    pub fn len(&self) -> usize {
        self.lock().issued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the OAuth routes need.
pub struct OAuth {
    pub store: Arc<Store>,
    pub client: Arc<Client>,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub authorize_url: String,
    pub token_url: String,
    pub redirect_uri: Option<String>,
    pub http: reqwest::Client,
    pub pending: PendingStates,
}

/// A user connected through the flow.
#[derive(Debug, Clone, PartialEq)]
pub struct Connected {
    pub user_id: u64,
    /// False when AccessLink answered 409: the user was registered before.
    pub newly_registered: bool,
}

/// Why connecting failed: the page to show.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: String,
}

fn fail(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Failure {
    Failure {
        status,
        title,
        detail: detail.into(),
    }
}

impl OAuth {
    /// The authorization URL for a new, remembered state, and the state (for the browser's
    /// cookie).
    pub fn connect_url(&self) -> Result<(String, String), Busy> {
        let state: String = rand::rng()
            .sample_iter(&rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        self.pending.issue(&state, Utc::now())?;
        let mut url = reqwest::Url::parse(&self.authorize_url)
            .map_err(|e| Busy::BadAuthorizeUrl(format!("{}: {e}", self.authorize_url)))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("scope", "accesslink.read_all")
            .append_pair("state", &state);
        if let Some(r) = &self.redirect_uri {
            url.query_pairs_mut().append_pair("redirect_uri", r);
        }
        Ok((url.to_string(), state))
    }

    /// Handles the browser's return from Polar.
    /// `cookie` is the browser's `Cookie` header: the sign-in must come back to the browser that
    /// started it (a link with someone else's state, sent to a victim, would connect the
    /// attacker's Polar account in the victim's name otherwise).
    pub async fn callback(
        &self,
        q: &HashMap<String, String>,
        cookie: Option<&str>,
    ) -> Result<Connected, Failure> {
        let state = q.get("state").map(String::as_str).unwrap_or("");
        let bound = cookie
            .into_iter()
            .flat_map(|c| c.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == STATE_COOKIE && !v.is_empty() && v == state);
        if !bound && self.pending.contains(state) {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "This link belongs to another browser",
                "The connection was started in another browser (or with cookies off). Start again \
                 from /oauth/connect in this one.",
            ));
        }
        let Some(issued) = self.pending.take(state) else {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "This link is not valid",
                "The connection request is unknown or was already used. Start again from /oauth/connect.",
            ));
        };
        if (Utc::now() - issued).to_std().unwrap_or_default() > STATE_TTL {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "This link has expired",
                "Connection requests are valid for 10 minutes. Start again from /oauth/connect.",
            ));
        }
        if let Some(err) = q.get("error") {
            let detail = if err == "access_denied" {
                "You declined to share your Polar data with this service. Nothing was stored."
                    .to_string()
            } else {
                format!("Polar answered `{err}`. Nothing was stored.")
            };
            return Err(fail(StatusCode::BAD_REQUEST, "Not connected", detail));
        }
        let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "Not connected",
                "Polar sent no authorization code.",
            ));
        };
        let (token, user_id) = self.exchange(code).await?;
        let newly_registered = self.register(&token, user_id).await?;
        crate::credentials::put_user(&self.store, UserId(user_id), &token).map_err(|e| {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Could not store the connection",
                format!("{e:#}"),
            )
        })?;
        self.store.durable().await.map_err(|e| {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Could not store the connection",
                format!("{e:#}"),
            )
        })?;
        tracing::info!(user = user_id, newly_registered, "Polar user connected");
        Ok(Connected {
            user_id,
            newly_registered,
        })
    }

    /// Exchanges a code for `(access_token, x_user_id)`.
    async fn exchange(&self, code: &str) -> Result<(Secret, u64), Failure> {
        let secret = self.client_secret.as_ref().ok_or_else(|| {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Not configured",
                "accesslink.client_secret is not set.",
            )
        })?;
        let mut form = vec![("grant_type", "authorization_code"), ("code", code)];
        if let Some(r) = &self.redirect_uri {
            form.push(("redirect_uri", r));
        }
        let res = self
            .http
            .post(&self.token_url)
            .basic_auth(&self.client_id, Some(secret.expose()))
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                fail(
                    StatusCode::BAD_GATEWAY,
                    "Polar could not be reached",
                    format!("POST {}: {e}", self.token_url),
                )
            })?;
        let status = res.status();
        let body = res.bytes().await.unwrap_or_default();
        if !status.is_success() {
            let detail = token_refusal(status, &body);
            return Err(fail(StatusCode::BAD_GATEWAY, "Not connected", detail));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            fail(
                StatusCode::BAD_GATEWAY,
                "Not connected",
                format!("Polar's token answer is not JSON: {e}"),
            )
        })?;
        match (
            v.get("access_token").and_then(Value::as_str),
            v.get("x_user_id").and_then(Value::as_u64),
        ) {
            (Some(t), Some(u)) => Ok((Secret::new(t), u)),
            _ => Err(fail(
                StatusCode::BAD_GATEWAY,
                "Not connected",
                "Polar's token answer lacks access_token or x_user_id.",
            )),
        }
    }

    /// Registers the user with AccessLink; `Ok(false)` when already registered (409).
    async fn register(&self, token: &Secret, user_id: u64) -> Result<bool, Failure> {
        let body = json!({ "member-id": format!("hookrace-{user_id}") });
        // A person waits in the browser: a spent rate limit fails at once, with its reset.
        let result = self
            .client
            .interactive()
            .send(
                Method::POST,
                &self.client.url("/v3/users"),
                Auth::Bearer(token),
                Some(&body),
                &|_| {},
            )
            .await;
        match result {
            // 204: "user not found" (Polar's newest spec), not a registration.
            Ok(answer) if answer.status == reqwest::StatusCode::NO_CONTENT => Err(fail(
                StatusCode::BAD_GATEWAY,
                "Not connected",
                "Polar answered 204 to the registration: it did not find this user, so nothing was registered or stored. Try connecting again; if it persists, the Polar account may not be fully set up.",
            )),
            Ok(_) => Ok(true),
            Err(ApiError::Status { status: 409, .. }) => Ok(false),
            Err(ApiError::Forbidden { .. }) => Err(fail(
                StatusCode::FORBIDDEN,
                "Consents missing",
                "Polar needs you to accept its mandatory consents first: open Polar Flow, accept them, then connect again. Nothing was stored.",
            )),
            Err(e @ ApiError::LimitSpent { .. }) => Err(fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                format!(
                    "Registering the user with AccessLink was not tried: {e}. Nothing was stored."
                ),
            )),
            Err(e) => Err(fail(
                StatusCode::BAD_GATEWAY,
                "Not connected",
                format!("Registering the user with AccessLink failed: {e}. Nothing was stored."),
            )),
        }
    }
}

/// What to tell a person whose code exchange Polar refused. The token endpoint answers 400 with
/// an OAuth error: `invalid_grant` (the code) or `invalid_client` (this service's credentials).
fn token_refusal(status: StatusCode, body: &[u8]) -> String {
    let message = error_message(body);
    if message.contains("invalid_grant") {
        "The authorization code was refused (it is valid for 10 minutes and only once, and the redirect address must match). Start again from /oauth/connect.".to_string()
    } else if message.contains("invalid_client") || status == StatusCode::UNAUTHORIZED {
        "Polar refused this service's client credentials: check accesslink.client_id and client_secret.".to_string()
    } else {
        format!("Polar answered {status}: {message}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A plain result page.
pub fn page(status: StatusCode, title: &str, detail: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>hookrace: {t}</title><style>body{{font:18px/1.5 system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em}}</style></head>\
         <body><h1>{t}</h1><p>{d}</p></body></html>\n",
        t = escape(title),
        d = escape(detail)
    );
    warp::reply::with_status(warp::reply::html(html), status).into_response()
}

/// `GET /oauth/connect` and `GET /oauth/callback`.
pub fn routes(
    oauth: Arc<OAuth>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || oauth.clone());
    let connect = warp::path!("oauth" / "connect")
        .and(warp::get())
        .and(with.clone())
        .map(|o: Arc<OAuth>| match o.connect_url() {
            Ok((url, state)) => {
                let secure = o
                    .redirect_uri
                    .as_deref()
                    .is_some_and(|r| r.starts_with("https://"));
                let cookie = format!(
                    "{STATE_COOKIE}={state}; Path=/oauth/callback; Max-Age={}; HttpOnly; SameSite=Lax{}",
                    STATE_TTL.as_secs(),
                    if secure { "; Secure" } else { "" }
                );
                let reply = warp::reply::with_header(
                    warp::reply::with_status("", StatusCode::FOUND),
                    "Location",
                    url,
                );
                warp::reply::with_header(reply, "Set-Cookie", cookie).into_response()
            }
            Err(Busy::RateLimited) => page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "Too many sign-ins are starting at once. Try again in a moment.",
            ),
            Err(Busy::Full) => page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many sign-ins in progress",
                "Too many sign-ins are waiting for Polar. Try again in a few minutes.",
            ),
            Err(Busy::BadAuthorizeUrl(e)) => {
                page(StatusCode::INTERNAL_SERVER_ERROR, "Could not start", &e)
            }
        });
    let callback = warp::path!("oauth" / "callback")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("cookie"))
        .and(with)
        .then(|q: HashMap<String, String>, cookie: Option<String>, o: Arc<OAuth>| async move {
            match o.callback(&q, cookie.as_deref()).await {
                Ok(c) => page(
                    StatusCode::OK,
                    "Connected",
                    &format!(
                        "Polar user {} is connected{}. hookrace now receives and keeps this user's training data. You can close this page.",
                        c.user_id,
                        if c.newly_registered { "" } else { " (already registered)" }
                    ),
                ),
                Err(f) => {
                    tracing::warn!(title = f.title, detail = %f.detail, "OAuth connection failed");
                    page(f.status, f.title, &f.detail)
                }
            }
        });
    connect.or(callback).unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_client_is_told_to_check_its_credentials_on_polars_400() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/polar/token_error.json"
        );
        let body = std::fs::read(path).unwrap();
        let detail = token_refusal(StatusCode::BAD_REQUEST, &body);
        assert!(detail.contains("client credentials"), "{detail}");
        let detail = token_refusal(StatusCode::BAD_REQUEST, br#"{"error":"invalid_grant"}"#);
        assert!(detail.contains("code was refused"), "{detail}");
        let detail = token_refusal(StatusCode::BAD_GATEWAY, b"upstream down");
        assert!(
            detail.contains("502") && detail.contains("upstream down"),
            "{detail}"
        );
    }
}

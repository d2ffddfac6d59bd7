//! The AccessLink client hookrace uses for polling, fetching and webhook management.
//!
//! Every request has a timeout; 5xx answers and transport failures are retried with exponential
//! backoff and jitter; `RateLimit-*` headers are read on every response, and the client waits for
//! the window to reset once the short window is nearly used up or after a 429. Only URLs under
//! the configured base URL are ever requested, whatever a payload or a transaction says. Each HTTP
//! attempt is reported to an observer, so callers count requests by endpoint and outcome.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use rand::Rng;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::Secret;

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// Client credentials (notifications, webhooks).
    Basic,
    /// A user's access token (everything else).
    Bearer(&'a Secret),
}

/// What one HTTP attempt came to, for the request counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx with a body.
    Data,
    /// 204 or another answer meaning "nothing here".
    Empty,
    /// 429.
    RateLimited,
    /// Anything else: 4xx, 5xx, timeout, connection failure.
    Error,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Data => "data",
            Outcome::Empty => "empty",
            Outcome::RateLimited => "rate_limited",
            Outcome::Error => "error",
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("refusing to request {url}: it is not under the AccessLink base URL {base}")]
    ForeignUrl { url: String, base: String },
    #[error("{method} {url}: 401 Unauthorized (the token or client credentials are not valid)")]
    Unauthorized { method: Method, url: String },
    #[error("{method} {url}: 403 Forbidden: {message}")]
    Forbidden {
        method: Method,
        url: String,
        message: String,
    },
    #[error("{method} {url}: 429 rate limited; the window resets in {reset:?}")]
    RateLimited {
        method: Method,
        url: String,
        reset: Duration,
    },
    #[error("{method} {url}: HTTP {status}: {message}")]
    Status {
        method: Method,
        url: String,
        status: u16,
        message: String,
    },
    #[error("{method} {url}: {source}")]
    Transport {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url}: the answer is not the JSON expected: {message}")]
    Decode {
        method: Method,
        url: String,
        message: String,
    },
    #[error("client credentials are not configured (accesslink.client_secret)")]
    NoClientSecret,
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Unauthorized { .. } => Some(401),
            ApiError::Forbidden { .. } => Some(403),
            ApiError::RateLimited { .. } => Some(429),
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: bytes::Bytes,
}

impl Answer {
    /// The body as JSON; `what` names the request for the error.
    pub fn json(&self, method: &Method, url: &str) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| ApiError::Decode {
            method: method.clone(),
            url: url.to_string(),
            message: e.to_string(),
        })
    }
}

/// Retry and pacing policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Timeout of each attempt.
    pub timeout: Duration,
    /// Retries after the first attempt, for 5xx and transport failures.
    pub retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Keep this many requests of the short window in reserve: when fewer remain, wait for reset.
    pub reserve: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            timeout: Duration::from_secs(15),
            retries: 3,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            reserve: 5,
        }
    }
}

/// The rate-limit state last reported by AccessLink.
#[derive(Debug, Clone, Default)]
pub struct RateState {
    pub usage: Option<(u64, u64)>,
    pub limit: Option<(u64, u64)>,
    /// No request before this instant (after a 429, or when the reserve is reached).
    pub blocked_until: Option<Instant>,
}

/// The client.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    client_id: String,
    client_secret: Option<Secret>,
    policy: Policy,
    rate: Mutex<RateState>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl Client {
    pub fn new(
        base_url: &str,
        client_id: &str,
        client_secret: Option<Secret>,
        policy: Policy,
    ) -> anyhow::Result<Client> {
        let base = Url::parse(base_url)
            .map_err(|e| anyhow::anyhow!("AccessLink base URL {base_url:?}: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(Duration::from_secs(5))
            // A redirect would leave the base-URL guard behind (it checks the first URL only):
            // AccessLink's documented answers never redirect, so none is followed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookrace/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            base,
            client_id: client_id.to_string(),
            client_secret,
            policy,
            rate: Mutex::new(RateState::default()),
        })
    }

    /// `{base}{path}` for a path starting with `/v3/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The rate-limit state last seen.
    pub fn rate_state(&self) -> RateState {
        self.rate.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Whether `url` is on the configured AccessLink host (scheme, host and port equal).
    pub fn is_under_base(&self, url: &str) -> bool {
        match Url::parse(url) {
            Ok(u) => {
                u.scheme() == self.base.scheme()
                    && u.host_str() == self.base.host_str()
                    && u.port_or_known_default() == self.base.port_or_known_default()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.path().starts_with("/v3/")
            }
            Err(_) => false,
        }
    }

    /// Sends one request (with retries), reporting each attempt to `observe`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
        observe: &(dyn Fn(Outcome) + Sync),
    ) -> Result<Answer, ApiError> {
        if !self.is_under_base(url) {
            return Err(ApiError::ForeignUrl {
                url: url.to_string(),
                base: self.base_url().to_string(),
            });
        }
        let mut attempt = 0;
        loop {
            self.wait_for_window().await;
            let mut req = self
                .http
                .request(method.clone(), url)
                .header("Accept", "application/json");
            req = match auth {
                Auth::Basic => {
                    let secret = self
                        .client_secret
                        .as_ref()
                        .ok_or(ApiError::NoClientSecret)?;
                    let raw = format!("{}:{}", self.client_id, secret.expose());
                    req.header(
                        "Authorization",
                        format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(raw)
                        ),
                    )
                }
                Auth::Bearer(token) => {
                    req.header("Authorization", format!("Bearer {}", token.expose()))
                }
            };
            if let Some(b) = body {
                req = req.json(b);
            }
            let result = req.send().await;
            let retryable = match result {
                Err(e) => {
                    observe(Outcome::Error);
                    let err = ApiError::Transport {
                        method: method.clone(),
                        url: url.to_string(),
                        source: e,
                    };
                    Err(err)
                }
                Ok(res) => {
                    self.note_rate_headers(res.headers());
                    let status = res.status();
                    let body = res.bytes().await.unwrap_or_default();
                    match status.as_u16() {
                        200..=299 => {
                            observe(if status == StatusCode::NO_CONTENT || body.is_empty() {
                                Outcome::Empty
                            } else {
                                Outcome::Data
                            });
                            return Ok(Answer { status, body });
                        }
                        429 => {
                            observe(Outcome::RateLimited);
                            let reset = self.block_after_429();
                            return Err(ApiError::RateLimited {
                                method,
                                url: url.to_string(),
                                reset,
                            });
                        }
                        401 => {
                            observe(Outcome::Error);
                            return Err(ApiError::Unauthorized {
                                method,
                                url: url.to_string(),
                            });
                        }
                        403 => {
                            observe(Outcome::Error);
                            return Err(ApiError::Forbidden {
                                method,
                                url: url.to_string(),
                                message: error_message(&body),
                            });
                        }
                        code => {
                            observe(Outcome::Error);
                            let err = ApiError::Status {
                                method: method.clone(),
                                url: url.to_string(),
                                status: code,
                                message: error_message(&body),
                            };
                            // Client errors will not change on retry; server errors may.
                            if code < 500 {
                                return Err(err);
                            }
                            Err(err)
                        }
                    }
                }
            };
            let err = match retryable {
                Err(e) => e,
                Ok(a) => return Ok(a),
            };
            if attempt >= self.policy.retries {
                return Err(err);
            }
            attempt += 1;
            let delay = backoff(&self.policy, attempt);
            tracing::debug!(error = %err, attempt, delay_ms = delay.as_millis() as u64, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// GET returning JSON, or `None` for 204.
    pub async fn get_json(
        &self,
        url: &str,
        auth: Auth<'_>,
        observe: &(dyn Fn(Outcome) + Sync),
    ) -> Result<Option<Value>, ApiError> {
        let a = self.send(Method::GET, url, auth, None, observe).await?;
        if a.status == StatusCode::NO_CONTENT || a.body.is_empty() {
            return Ok(None);
        }
        a.json(&Method::GET, url).map(Some)
    }

    /// Waits while a 429 or the reserve blocks requests.
    async fn wait_for_window(&self) {
        let until = self.rate.lock().ok().and_then(|r| r.blocked_until);
        if let Some(t) = until {
            if t > Instant::now() {
                tracing::info!(
                    wait_s = (t - Instant::now()).as_secs(),
                    "waiting for the AccessLink rate-limit window to reset"
                );
                tokio::time::sleep_until(t).await;
            }
        }
    }

    fn note_rate_headers(&self, headers: &reqwest::header::HeaderMap) {
        let pair = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_pair)
        };
        let (usage, limit, reset) = (
            pair("ratelimit-usage"),
            pair("ratelimit-limit"),
            pair("ratelimit-reset"),
        );
        let Ok(mut r) = self.rate.lock() else { return };
        if usage.is_some() {
            r.usage = usage;
        }
        if limit.is_some() {
            r.limit = limit;
        }
        // Slow down before the limit: with the short window nearly used up, wait for its reset.
        if let (Some((u_short, u_long)), Some((l_short, l_long)), Some((r_short, r_long))) =
            (usage, limit, reset)
        {
            let reserve = self.policy.reserve;
            let wait = if u_long + reserve >= l_long {
                Some(r_long)
            } else if u_short + reserve >= l_short {
                Some(r_short)
            } else {
                None
            };
            if let Some(s) = wait {
                // A reset is never longer than the daily window; a larger value is an upstream
                // error (and `Instant + huge` would panic).
                let wait = Duration::from_secs(s.min(MAX_RESET_S));
                let now = Instant::now();
                let until = now.checked_add(wait).unwrap_or(now);
                r.blocked_until = Some(r.blocked_until.map_or(until, |b| b.max(until)));
            }
        }
    }

    /// After a 429: block until the reported reset (60 s when none was reported).
    fn block_after_429(&self) -> Duration {
        let Ok(mut r) = self.rate.lock() else {
            return Duration::from_secs(60);
        };
        let now = Instant::now();
        let until = r
            .blocked_until
            .filter(|t| *t > now)
            .unwrap_or(now + Duration::from_secs(60));
        r.blocked_until = Some(until);
        until - now
    }
}

/// The longest rate-limit reset hookrace believes: AccessLink's long window is 24 hours.
const MAX_RESET_S: u64 = 24 * 3600 + 60;

/// `"12, 40"` → (12, 40); spaces optional.
pub fn parse_pair(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split(',').map(|p| p.trim().parse::<u64>());
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) => Some((a, b)),
        _ => None,
    }
}

/// The message of an AccessLink error body, in either documented shape.
pub fn error_message(body: &[u8]) -> String {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            return text.trim().chars().take(200).collect();
        }
    };
    let obj = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
    let message = obj.get("message").and_then(Value::as_str);
    let kind = obj
        .get("errorType")
        .or_else(|| obj.get("error_type"))
        .and_then(Value::as_str);
    match (kind, message, v.get("error").and_then(Value::as_str)) {
        (Some(k), Some(m), _) => format!("{k}: {m}"),
        (None, Some(m), _) => m.to_string(),
        (Some(k), None, _) => k.to_string(),
        (None, None, Some(e)) => e.to_string(),
        _ => v.to_string().chars().take(200).collect(),
    }
}

/// Exponential backoff with full jitter: uniform in [base·2^(n−1) / 2, base·2^(n−1)], capped.
fn backoff(p: &Policy, attempt: u32) -> Duration {
    let exp = p
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(p.backoff_max);
    let half = exp / 2;
    half + Duration::from_secs_f64(rand::thread_rng().gen_range(0.0..=1.0) * half.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_headers_parse_tolerantly() {
        assert_eq!(parse_pair("12, 40"), Some((12, 40)));
        assert_eq!(parse_pair("12,40"), Some((12, 40)));
        assert_eq!(parse_pair(" 1 ,  2 "), Some((1, 2)));
        assert_eq!(parse_pair("12"), None);
        assert_eq!(parse_pair("a, b"), None);
    }

    #[test]
    fn both_error_shapes() {
        let documented = br#"{"timestamp":"t","status":404,"errorType":"NotFound","message":"no such","corrId":"c"}"#;
        assert_eq!(error_message(documented), "NotFound: no such");
        let seen = br#"{"error":{"timestamp":"t","status":400,"error_type":"WebhookPingFailedException","message":"Ping failed","corr_id":"c"}}"#;
        assert_eq!(
            error_message(seen),
            "WebhookPingFailedException: Ping failed"
        );
        assert_eq!(
            error_message(br#"{"error":"invalid_grant"}"#),
            "invalid_grant"
        );
        assert_eq!(error_message(b"plain text"), "plain text");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = Policy::default();
        for attempt in 1..10 {
            let d = backoff(&p, attempt);
            let full = p.backoff_base * (1 << (attempt - 1));
            assert!(d <= full.min(p.backoff_max), "{attempt}: {d:?}");
            assert!(d >= full.min(p.backoff_max) / 2, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn only_urls_under_the_base_are_allowed() {
        let c = Client::new(
            "https://www.polaraccesslink.com",
            "id",
            None,
            Policy::default(),
        )
        .unwrap();
        assert!(c.is_under_base("https://www.polaraccesslink.com/v3/exercises/aQlC83"));
        assert!(c.is_under_base("https://www.polaraccesslink.com:443/v3/exercises/a"));
        for bad in [
            "http://www.polaraccesslink.com/v3/exercises/a",
            "https://www.polaraccesslink.com.evil.example/v3/exercises/a",
            "https://evil.example/v3/exercises/a",
            "https://user@www.polaraccesslink.com/v3/x",
            "https://www.polaraccesslink.com:8443/v3/x",
            "https://www.polaraccesslink.com/admin",
            "not a url",
        ] {
            assert!(!c.is_under_base(bad), "{bad}");
        }
    }
}

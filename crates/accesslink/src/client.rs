//! The AccessLink client hookrace uses for polling, fetching and webhook management.
//!
//! Every request has a timeout; 5xx answers and transport failures are retried with exponential
//! backoff and full jitter; `RateLimit-*` headers are read on every response, and the client waits
//! for the window to reset once a window is nearly used up or after a 429. Background work (the
//! poller, the fetcher) waits as long as that takes; an [interactive](Client::interactive) caller
//! (a person in a browser or at a terminal) fails at once with the time to the reset. Only URLs under
//! the configured base URL are ever requested, whatever a payload or a transaction says. Each HTTP
//! attempt is reported to an observer, so callers count requests by endpoint and outcome.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio::time::Instant;

use crate::Secret;

pub use super::error::{ApiError, Outcome, Window, error_message, human_duration};
pub use super::rate::{
    BulkHold, DAY_S, KEPT_FROM_BULK, RateState, SavedBlock, bulk_part, bulk_wait, parse_pair,
    reserve_for,
};
use super::rate::{MAX_RESET_S, newest};

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// Client credentials (notifications, webhooks).
    Basic,
    /// A user's access token (everything else).
    Bearer(&'a Secret),
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: bytes::Bytes,
}

impl Answer {
    /// The body as JSON (a [`Value`], or any shape the caller names); `method` and `url` name
    /// the request for the error.
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &Method,
        url: &str,
    ) -> Result<T, ApiError> {
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
    /// Keep up to this many requests of a window in reserve: when fewer remain, wait for its
    /// reset. Never more than a twentieth of the window's limit (see [`reserve_for`]).
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

/// A request counted in flight until it is answered (or abandoned).
struct InFlight<'a>(&'a Client);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut r = self.0.rate();
        r.in_flight = r.in_flight.saturating_sub(1);
    }
}

/// Which requests a client's are: bulk (a backlog that may use every request it is allowed)
/// or the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Shared,
    Bulk,
}

/// How long an interactive caller may be kept waiting for a rate-limit window.
const INTERACTIVE_PATIENCE: Duration = Duration::from_secs(10);

/// The client. Cheap to clone: clones share the connection pool and the rate-limit state.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    client_id: String,
    client_secret: Option<Secret>,
    policy: Policy,
    rate: Arc<Mutex<RateState>>,
    /// The longest wait for a rate-limit window before failing; `None`: wait (background work).
    patience: Option<Duration>,
    /// Cancelled at shutdown: every wait (a rate-limit window, a retry's backoff) ends at once.
    shutdown: tokio_util::sync::CancellationToken,
    /// The block in force, published whenever it moves later (see [`Client::blocks`]).
    blocks: Arc<tokio::sync::watch::Sender<Option<SavedBlock>>>,
    /// Whose requests these are (see [`Client::bulk`]).
    lane: Lane,
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
        // A redirect would leave the base-URL guard behind (it checks the first URL only):
        // AccessLink's documented answers never redirect, so none is followed (the factory's
        // policy).
        let http = crate::http::client(policy.timeout)?;
        Ok(Client {
            http,
            base,
            client_id: client_id.to_string(),
            client_secret,
            policy,
            rate: Arc::new(Mutex::new(RateState::default())),
            patience: None,
            shutdown: tokio_util::sync::CancellationToken::new(),
            blocks: Arc::new(tokio::sync::watch::Sender::new(None)),
            lane: Lane::Shared,
        })
    }

    /// The same client for a backlog (the webhook fetches): its requests stop short of the
    /// share of each window kept for the others ([`KEPT_FROM_BULK`]) and are spread over the
    /// day, so a backlog of any size can neither take the auditor's share nor spend the
    /// day's budget in its first hours.
    pub fn bulk(&self) -> Client {
        Client {
            lane: Lane::Bulk,
            ..self.clone()
        }
    }

    /// The block in force, each time it is set or moved later: what the daemon keeps in its
    /// store, so a restart honours it ([`Client::restore_block`]).
    pub fn blocks(&self) -> tokio::sync::watch::Receiver<Option<SavedBlock>> {
        self.blocks.subscribe()
    }

    /// Honours a block an earlier process saw (nothing when it has ended): requests wait for
    /// it as for one this process saw.
    pub fn restore_block(&self, saved: &SavedBlock) {
        let left = (saved.until - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        if left.is_zero() {
            return;
        }
        let left = left.min(Duration::from_secs(MAX_RESET_S));
        let mut r = self.rate();
        let now = Instant::now();
        r.block(now.checked_add(left).unwrap_or(now), saved.window);
        drop(r);
        tracing::warn!(
            until = %saved.until,
            window = ?saved.window,
            "a rate-limit window an earlier run found spent: requests to AccessLink wait for it"
        );
    }

    /// Publishes the block in force (in wall-clock time) after it was set or moved.
    fn publish_block(&self, r: &RateState) {
        let Some(until) = r.blocked_until.filter(|t| *t > Instant::now()) else {
            return;
        };
        let left = chrono::Duration::from_std(until - Instant::now()).unwrap_or_default();
        let saved = SavedBlock {
            until: chrono::Utc::now() + left,
            window: r.blocked_by.unwrap_or(Window::TooManyRequests),
        };
        self.blocks.send_if_modified(|b| {
            // Moved later by more than a second (the instants' conversion jitters).
            let later = b.is_none_or(|old| saved.until > old.until + chrono::Duration::seconds(1));
            if later {
                *b = Some(saved);
            }
            later
        });
    }

    /// The same client, whose waits end when `shutdown` is cancelled (requests then fail with
    /// [`ApiError::ShuttingDown`] instead of holding the stop up to a day).
    pub fn cancelled_by(mut self, shutdown: tokio_util::sync::CancellationToken) -> Client {
        self.shutdown = shutdown;
        self
    }

    /// The same client for a person waiting on the answer: when a rate-limit window blocks
    /// requests for longer than a few seconds, requests fail at once ([`ApiError::LimitSpent`])
    /// instead of waiting up to a day.
    pub fn interactive(&self) -> Client {
        Client {
            patience: Some(INTERACTIVE_PATIENCE),
            ..self.clone()
        }
    }

    /// `{base}{path}` for a path starting with `/v3/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    /// `{base}/v3/{segments…}`, each segment percent-encoded (an id from outside cannot add a
    /// path level: `../users/475` stays one segment).
    pub fn url_of(&self, segments: &[&str]) -> String {
        let mut u = self.base.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty().push("v3").extend(segments);
        }
        u.to_string()
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The requests kept back in each window (the client waits for the window before them).
    pub fn reserve(&self) -> u64 {
        self.policy.reserve
    }

    /// The rate-limit state last seen.
    pub fn rate_state(&self) -> RateState {
        self.rate.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Whether `url` is on the configured AccessLink host (see [`Client::on_base`]).
    pub fn is_under_base(&self, url: &str) -> bool {
        self.on_base(url).is_some()
    }

    /// `url` as hookrace requests it, if it is on the configured AccessLink host: the same
    /// scheme and port, no credentials, a `/v3/` path, and the same host up to a leading `www.`
    /// (Polar's links name both `www.polaraccesslink.com` and, in the spec's own example,
    /// `polaraccesslink.com`). The host is then the configured one: hookrace only ever connects
    /// to the host it was configured with; path and query are kept verbatim.
    pub fn on_base(&self, url: &str) -> Option<Url> {
        let mut u = Url::parse(url).ok()?;
        let bare = |h: Option<&str>| h.map(|h| h.strip_prefix("www.").unwrap_or(h).to_string());
        let same = u.scheme() == self.base.scheme()
            && bare(u.host_str()) == bare(self.base.host_str())
            && u.port_or_known_default() == self.base.port_or_known_default()
            && u.username().is_empty()
            && u.password().is_none()
            && u.path().starts_with("/v3/");
        if !same {
            return None;
        }
        if u.host_str() != self.base.host_str() {
            u.set_host(self.base.host_str()).ok()?;
        }
        Some(u)
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
        let Some(target) = self.on_base(url) else {
            return Err(ApiError::ForeignUrl {
                url: url.to_string(),
                base: self.base_url().to_string(),
            });
        };
        let mut attempt = 0;
        loop {
            if self.shutdown.is_cancelled() {
                return Err(ApiError::ShuttingDown {
                    method,
                    url: url.to_string(),
                });
            }
            let _in_flight = self.admitted(&method, url).await?;
            let mut req = self
                .http
                .request(method.clone(), target.clone())
                .header("Accept", "application/json");
            req = match auth {
                Auth::Basic => {
                    let secret = self
                        .client_secret
                        .as_ref()
                        .ok_or(ApiError::NoClientSecret)?;
                    req.basic_auth(&self.client_id, Some(secret.expose()))
                }
                Auth::Bearer(token) => req.bearer_auth(token.expose()),
            };
            req = match body {
                Some(b) => req.json(b),
                // A bodiless POST, PUT or PATCH still says its length (RFC 9110 §8.6): strict
                // servers and front ends answer 411 Length Required without it.
                None if [Method::POST, Method::PUT, Method::PATCH].contains(&method) => req
                    .header(reqwest::header::CONTENT_LENGTH, "0")
                    .body(Vec::<u8>::new()),
                None => req,
            };
            // The request itself ends at shutdown too (an upstream that holds it open would
            // otherwise hold the stop up to the timeout).
            let sent = tokio::select! {
                sent = req.send() => sent,
                _ = self.shutdown.cancelled() => {
                    return Err(ApiError::ShuttingDown { method, url: url.to_string() });
                }
            };
            let err = match sent {
                Err(e) => {
                    observe(Outcome::Error);
                    ApiError::Transport {
                        method: method.clone(),
                        url: url.to_string(),
                        source: e,
                    }
                }
                Ok(res) => match self.answer(&method, url, res, observe).await {
                    Ok(answer) => return Ok(answer),
                    // Client errors will not change on retry; server errors may.
                    Err(e) if e.status().is_some_and(|s| s < 500) => return Err(e),
                    Err(e) => e,
                },
            };
            if attempt >= self.policy.retries {
                return Err(err);
            }
            attempt += 1;
            let delay = crate::retry::RetryPolicy {
                base: self.policy.backoff_base,
                cap: self.policy.backoff_max,
                limit: crate::retry::Limit::Attempts(self.policy.retries.saturating_add(1)),
            }
            .backoff(attempt);
            tracing::debug!(error = %err, attempt, delay_ms = crate::units::millis(delay), "retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.cancelled() => {
                    return Err(ApiError::ShuttingDown { method, url: url.to_string() });
                }
            }
        }
    }

    /// Reads one answer: notes its rate-limit headers, reports its outcome, and turns anything
    /// but a 2xx into the error it means.
    async fn answer(
        &self,
        method: &Method,
        url: &str,
        res: reqwest::Response,
        observe: &(dyn Fn(Outcome) + Sync),
    ) -> Result<Answer, ApiError> {
        self.note_rate_headers(res.headers());
        let status = res.status();
        let body = res.bytes().await.unwrap_or_default();
        let (method, url) = (method.clone(), url.to_string());
        let (outcome, result) = match status.as_u16() {
            200..=299 if status == StatusCode::NO_CONTENT || body.is_empty() => {
                (Outcome::Empty, Ok(Answer { status, body }))
            }
            200..=299 => (Outcome::Data, Ok(Answer { status, body })),
            429 => {
                let reset = self.block_after_429();
                let err = ApiError::RateLimited { method, url, reset };
                (Outcome::RateLimited, Err(err))
            }
            401 => (Outcome::Error, Err(ApiError::Unauthorized { method, url })),
            403 => {
                let message = error_message(&body);
                let err = ApiError::Forbidden {
                    method,
                    url,
                    message,
                };
                (Outcome::Error, Err(err))
            }
            status => {
                let message = error_message(&body);
                let err = ApiError::Status {
                    method,
                    url,
                    status,
                    message,
                };
                (Outcome::Error, Err(err))
            }
        };
        observe(outcome);
        result
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

    /// Waits until a request may go (no block in force, and room in both windows counting
    /// the requests in flight), then counts it in flight.
    async fn admitted(&self, method: &Method, url: &str) -> Result<InFlight<'_>, ApiError> {
        loop {
            self.wait_for_window(method, url).await?;
            let mut r = self.rate();
            match r.admits(self.policy.reserve) {
                None => {
                    r.in_flight += 1;
                    return Ok(InFlight(self));
                }
                Some((until, window)) if until > Instant::now() => {
                    r.block(until, window);
                    self.publish_block(&r);
                }
                // The window resets now: its next answer reports it anew.
                Some(_) => {
                    r.in_flight += 1;
                    return Ok(InFlight(self));
                }
            }
        }
    }

    /// Waits while a 429 or the reserve blocks requests; an interactive client fails instead
    /// when the wait is longer than its patience.
    async fn wait_for_window(&self, method: &Method, url: &str) -> Result<(), ApiError> {
        let (until, by) = {
            let r = self.rate();
            let bulk = r.bulk_blocked_until.filter(|_| self.lane == Lane::Bulk);
            match (r.blocked_until, bulk) {
                (Some(a), Some(b)) if b > a => (Some(b), r.blocked_by.or(Some(Window::Daily))),
                (None, Some(b)) => (Some(b), Some(Window::Daily)),
                (a, _) => (a, r.blocked_by),
            }
        };
        let Some(t) = until.filter(|t| *t > Instant::now()) else {
            return Ok(());
        };
        let wait = t - Instant::now();
        if self.patience.is_some_and(|p| wait > p) {
            return Err(ApiError::LimitSpent {
                method: method.clone(),
                url: url.to_string(),
                window: by.unwrap_or(Window::TooManyRequests),
                reset: wait,
            });
        }
        let started = {
            let mut r = self.rate();
            let started = r.pacing_since.is_none();
            if started {
                r.paced += 1;
                r.pacing_since = Some(Instant::now());
            }
            started
        };
        if started && wait > LONG_WAIT {
            tracing::warn!(
                wait = human_duration(wait),
                window = ?by,
                "pacing: requests to AccessLink wait a long time for a rate-limit window to reset"
            );
        } else if started {
            tracing::info!(
                wait_s = wait.as_secs(),
                window = ?by,
                "pacing: requests to AccessLink wait for the rate-limit window to reset"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep_until(t) => {}
            _ = self.shutdown.cancelled() => {
                return Err(ApiError::ShuttingDown {
                    method: method.clone(),
                    url: url.to_string(),
                });
            }
        }
        let ended = {
            let mut r = self.rate();
            let clear = r.blocked_until.is_none_or(|b| b <= Instant::now());
            match r.pacing_since.take_if(|_| clear) {
                Some(since) => {
                    r.paced_for += since.elapsed();
                    true
                }
                None => false,
            }
        };
        if ended {
            tracing::info!("pacing ended: requests to AccessLink go out again");
        }
        Ok(())
    }

    /// The rate-limit state (plain numbers: a panic elsewhere cannot leave it unusable).
    fn rate(&self) -> std::sync::MutexGuard<'_, RateState> {
        self.rate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let mut r = self.rate();
        let now = Instant::now();
        let at = |s: u64| now + Duration::from_secs(s.min(MAX_RESET_S));
        match (usage, reset, r.usage, r.resets_at) {
            // Answers of requests sent together arrive in any order: one of an older window
            // must not lower the usage a newer answer reported (the next requests would then
            // overshoot the new window).
            (Some((us, ul)), Some((rs, rl)), Some((ous, oul)), Some((ors, orl))) => {
                let (s_at, s_used) = newest((at(rs), us), (ors, ous));
                let (l_at, l_used) = newest((at(rl), ul), (orl, oul));
                r.resets_at = Some((s_at, l_at));
                r.usage = Some((s_used, l_used));
            }
            _ => {
                if let Some((short, long)) = reset {
                    r.resets_at = Some((at(short), at(long)));
                }
                if usage.is_some() {
                    r.usage = usage;
                }
            }
        }
        if limit.is_some() {
            r.limit = limit;
        }
        // The merged report, for what follows.
        let reset = r.resets_at.map(|(s, l)| {
            let left = |t: Instant| {
                let d = t.saturating_duration_since(now);
                d.as_secs() + u64::from(d.subsec_nanos() > 0)
            };
            (left(s), left(l))
        });
        let usage = r.usage;
        // Slow down before the limit: with the short window nearly used up, wait for its reset.
        if let (Some((u_short, u_long)), Some((l_short, l_long)), Some((r_short, r_long))) =
            (usage, limit, reset)
        {
            let near =
                |used: u64, limit: u64| used + reserve_for(self.policy.reserve, limit) >= limit;
            let wait = if near(u_long, l_long) {
                Some((r_long, Window::Daily))
            } else if near(u_short, l_short) {
                Some((r_short, Window::Short))
            } else {
                None
            };
            if let Some((s, window)) = wait {
                // A reset is never longer than the daily window; a larger value is an upstream
                // error (and `Instant + huge` would panic).
                let wait = Duration::from_secs(s.min(MAX_RESET_S));
                let now = Instant::now();
                r.block(now.checked_add(wait).unwrap_or(now), window);
                self.publish_block(&r);
            }
            let now = Instant::now();
            let bulk = bulk_wait(
                (u_short, u_long),
                (l_short, l_long),
                (r_short.min(MAX_RESET_S), r_long.min(MAX_RESET_S)),
                self.policy.reserve,
            );
            r.bulk_blocked_until = bulk.map(|(w, _)| now.checked_add(w).unwrap_or(now));
            r.bulk_held_by = bulk.map(|(_, why)| why);
        }
    }

    /// After a 429: block until the reported reset (60 s when none was reported).
    fn block_after_429(&self) -> Duration {
        let mut r = self.rate();
        r.answered_429 += 1;
        let now = Instant::now();
        match r.blocked_until.filter(|t| *t > now) {
            // The answer's headers already said when the window resets.
            Some(until) => until - now,
            None => {
                let wait = Duration::from_secs(60);
                r.block(now + wait, Window::TooManyRequests);
                self.publish_block(&r);
                wait
            }
        }
    }
}

/// A wait for a window this long is logged as a warning (and shown in `/status`).
const LONG_WAIT: Duration = Duration::from_secs(15 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    /// A client of Polar's real AccessLink (nothing is sent).
    fn polar() -> Client {
        Client::new(
            "https://www.polaraccesslink.com",
            "id",
            None,
            Policy::default(),
        )
        .expect("a valid base URL")
    }

    #[test]
    fn the_reserve_is_proportional_to_the_limit() {
        assert_eq!(reserve_for(5, 500), 5);
        assert_eq!(reserve_for(5, 5_100), 5);
        assert_eq!(reserve_for(5, 40), 2);
        // A window of 2 keeps nothing back: only a spent window makes requests wait.
        assert_eq!(reserve_for(5, 2), 0);
    }

    #[test]
    fn rate_headers_parse_tolerantly() {
        assert_eq!(parse_pair("12, 40"), Some((12, 40)));
        assert_eq!(parse_pair("12,40"), Some((12, 40)));
        assert_eq!(parse_pair(" 1 ,  2 "), Some((1, 2)));
        assert_eq!(parse_pair("12"), None);
        assert_eq!(parse_pair("a, b"), None);
    }

    #[test]
    fn built_paths_encode_each_segment() {
        let c = polar();
        assert_eq!(
            c.url_of(&["exercises", "aQlC83"]),
            "https://www.polaraccesslink.com/v3/exercises/aQlC83"
        );
        assert_eq!(
            c.url_of(&["exercises", "../users/475"]),
            "https://www.polaraccesslink.com/v3/exercises/..%2Fusers%2F475"
        );
    }

    #[test]
    fn only_urls_under_the_base_are_allowed() {
        let c = polar();
        assert!(c.is_under_base("https://www.polaraccesslink.com/v3/exercises/aQlC83"));
        assert!(c.is_under_base("https://www.polaraccesslink.com:443/v3/exercises/a"));
        // The spec's own example links have no `www.`: the same host, requested as configured.
        let bare = "https://polaraccesslink.com/v3/users/21/physical-information-transactions/32";
        assert_eq!(
            c.on_base(bare).map(String::from).as_deref(),
            Some(
                "https://www.polaraccesslink.com/v3/users/21/physical-information-transactions/32"
            )
        );
        for bad in [
            "http://www.polaraccesslink.com/v3/exercises/a",
            "https://www.polaraccesslink.com.evil.example/v3/exercises/a",
            "https://evil.example/v3/exercises/a",
            "https://user@www.polaraccesslink.com/v3/x",
            "https://www.polaraccesslink.com:8443/v3/x",
            "https://www.polaraccesslink.com/admin",
            "https://wwwpolaraccesslink.com/v3/x",
            "https://www.www.polaraccesslink.com/v3/x",
            "https://evil.polaraccesslink.com/v3/x",
            "not a url",
        ] {
            assert!(!c.is_under_base(bad), "{bad}");
        }
    }
}

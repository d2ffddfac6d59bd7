//! A small AccessLink webhook receiver that keeps Polar's contract, for students and integrators
//! (`docs/simulator.md`): run it with `cargo run --example receiver`, then register it
//! (`curl`, or `hookrace check-receiver http://127.0.0.1:8000/acl_webhook --env-file
//! receiver.env`, which also grades it).
//!
//! - It listens on 127.0.0.1:8000 (or the address given as the first argument) at `/acl_webhook`.
//! - Its secrets are read at each delivery, so they can be written while it runs: the webhook
//!   secret and the users' tokens from the environment (`POLAR_WEBHOOK_SECRET`,
//!   `POLAR_ACCESS_TOKENS=user=token,user=token`), else from `receiver.env` (the same lines, as
//!   `check-receiver --env-file` writes them), else the secret alone from `webhook_secret.txt`.
//! - A `PING` (sent when the webhook is created, activated or moved) is answered 200 unchecked:
//!   it is signed with the new secret, which a receiver may not have yet.
//! - Every other delivery must carry `Polar-Webhook-Signature`, the hex HMAC-SHA256 of the raw
//!   body keyed with the secret: a bad one is answered 401 and nothing more happens.
//! - A good one is answered 200 at once; the data is fetched afterwards, from the delivery's `url`
//!   with the token of its `user_id`. An event type or a user it does not know is answered 200
//!   and ignored; a delivery it already has (same event, user and url within a minute) is
//!   answered 200 and not fetched again; a 404 or 204 on the fetch means the data is gone (no
//!   retry), a 429 or 5xx is retried three times with growing pauses.
//! - A real receiver would store the notification durably before its 200 and the data after the
//!   fetch; this one prints them (hookrace itself is the full recipe).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookrace::accesslink::identity::EventType;
use hookrace::accesslink::signature;
use serde_json::Value;
use warp::Filter;
use warp::http::{HeaderMap, StatusCode};

const ENV_FILE: &str = "receiver.env";
const SECRET_FILE: &str = "webhook_secret.txt";
/// A repeat of a delivery within this long is a duplicate.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(60);

/// `KEY` from the environment, else from `receiver.env`.
fn setting(key: &str) -> Option<String> {
    if let Ok(v) = std::env::var(key) {
        return Some(v);
    }
    let file = std::fs::read_to_string(ENV_FILE).ok()?;
    file.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
}

fn secret() -> Option<String> {
    setting("POLAR_WEBHOOK_SECRET")
        .or_else(|| std::fs::read_to_string(SECRET_FILE).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn token_of(user: u64) -> Option<String> {
    setting("POLAR_ACCESS_TOKENS")?
        .split(',')
        .filter_map(|p| p.split_once('='))
        .find(|(u, _)| u.trim().parse() == Ok(user))
        .map(|(_, t)| t.trim().to_string())
}

/// A delivery's identity for the duplicate check: (event, user, url).
type DeliveryKey = (String, u64, String);

#[derive(Clone)]
struct Receiver {
    http: reqwest::Client,
    /// When each (event, user, url) was last taken: the duplicate check.
    seen: Arc<Mutex<HashMap<DeliveryKey, Instant>>>,
}

impl Receiver {
    fn receive(&self, headers: &HeaderMap, body: &Bytes) -> StatusCode {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if header("Polar-Webhook-Event") == Some("PING") {
            println!("PING: answered 200");
            return StatusCode::OK;
        }
        let Some(secret) = secret() else {
            println!("no secret yet ({ENV_FILE} or {SECRET_FILE}): answered 503");
            return StatusCode::SERVICE_UNAVAILABLE;
        };
        if let Err(e) = signature::verify(&secret, body, header("Polar-Webhook-Signature")) {
            println!("refused (401): {}", e.reason());
            return StatusCode::UNAUTHORIZED;
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            println!("not JSON: answered 400");
            return StatusCode::BAD_REQUEST;
        };
        let event = v["event"].as_str().unwrap_or_default().to_string();
        let (Some(user), Some(url)) = (v["user_id"].as_u64(), v["url"].as_str()) else {
            println!("no user_id or url: answered 400");
            return StatusCode::BAD_REQUEST;
        };
        if !EventType::parse(&event).is_known() {
            println!("event {event:?} unknown here: answered 200, ignored");
            return StatusCode::OK;
        }
        let Some(token) = token_of(user) else {
            println!("{event} for user {user}, who is not ours: answered 200, ignored");
            return StatusCode::OK;
        };
        {
            // A poisoned lock only means a panic elsewhere; the map is still usable.
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let key = (event.clone(), user, url.to_string());
            if seen
                .get(&key)
                .is_some_and(|at| at.elapsed() < DUPLICATE_WINDOW)
            {
                println!("{event} for user {user} again: answered 200, already taken");
                return StatusCode::OK;
            }
            seen.insert(key, Instant::now());
        }
        println!("{event} for user {user}: answered 200, fetching {url}");
        // A receiver of its own, not hookrace's core: the fetch runs on after the answer.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(self.clone().fetch(url.to_string(), token));
        StatusCode::OK
    }

    /// Fetches the data: a 404 or 204 is data gone (no retry), a 429 or 5xx is retried three
    /// times, after 1, 2 and 4 s.
    async fn fetch(self, url: String, token: String) {
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
            }
            match self.http.get(&url).bearer_auth(&token).send().await {
                Ok(r) if r.status() == StatusCode::OK => {
                    let body = r.text().await.unwrap_or_default();
                    println!("  fetched {url}: {} bytes", body.len());
                    return;
                }
                Ok(r)
                    if r.status() == StatusCode::TOO_MANY_REQUESTS
                        || r.status().is_server_error() =>
                {
                    println!("  {url}: {} (will retry)", r.status());
                }
                Ok(r) => {
                    println!("  {url}: {}: gone or refused, not retried", r.status());
                    return;
                }
                Err(e) => println!("  {url}: {e} (will retry)"),
            }
        }
        println!("  {url}: given up after 4 attempts");
    }
}

#[tokio::main]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".to_string());
    let addr: std::net::SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("receiver: {listen:?} is not an address like 127.0.0.1:8000: {e}");
            std::process::exit(64);
        }
    };
    let receiver = Receiver {
        http: hookrace::http::plain_client(),
        seen: Arc::default(),
    };
    let route = warp::path!("acl_webhook")
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .map(move |headers: HeaderMap, body: Bytes| receiver.receive(&headers, &body));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("receiver: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("receiver listening on http://{addr}/acl_webhook");
    hookrace::server::serve_local(listener, "receiver", 1024, route, std::future::pending()).await;
}

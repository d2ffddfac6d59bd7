//! The demo's stand-in for your app (`hookrace demo --notify`): a small receiver on loopback that
//! checks every event's Standard Webhooks signature, as an application should, and counts what it
//! verified and what it refused. It answers 200 only to a valid signature (401 otherwise), so a
//! signing fault would show in the report as refused requests and events still pending.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::Filter;

/// What the stand-in app has seen so far.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Distinct `webhook-id`s with a valid signature (a retry of one counts once).
    pub verified: u64,
    /// Requests refused for a bad or missing signature.
    pub refused: u64,
}

pub struct YourApp {
    /// Where hookrace posts events.
    pub url: String,
    /// The signing secret it shares with hookrace (`whsec_…`).
    pub secret: String,
    state: Arc<Mutex<(HashSet<String>, u64)>>,
    /// Its server: it stops with `shutdown`, or when the app is dropped.
    _server: crate::tasks::AbortOnDropHandle<()>,
}

impl YourApp {
    /// Starts on a free loopback port with a fresh random secret; stops with `shutdown`.
    pub async fn start(shutdown: CancellationToken) -> anyhow::Result<YourApp> {
        use base64::Engine;
        let key: [u8; 24] = rand::random();
        let secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        let verifier = Arc::new(
            standardwebhooks::Webhook::new(&secret).context("making the demo app's secret")?,
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the demo app's receiver")?;
        let url = format!("http://{}/events", listener.local_addr()?);
        let state: Arc<Mutex<(HashSet<String>, u64)>> = Arc::default();
        let seen = state.clone();
        let route = warp::post()
            .and(warp::path("events"))
            .and(warp::path::end())
            .and(warp::header::headers_cloned())
            .and(warp::body::content_length_limit(1024 * 1024))
            .and(warp::body::bytes())
            .map(move |headers: warp::http::HeaderMap, body: bytes::Bytes| {
                let ok = verifier.verify(&body, &headers).is_ok();
                let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                let status = if ok {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    s.0.insert(id.to_string());
                    warp::http::StatusCode::OK
                } else {
                    s.1 += 1;
                    warp::http::StatusCode::UNAUTHORIZED
                };
                warp::reply::with_status("", status)
            });
        let server = crate::tasks::spawn_owned(
            "your app",
            crate::server::serve_local(
                listener,
                "your app",
                1024,
                route,
                shutdown.cancelled_owned(),
            ),
        );
        Ok(YourApp {
            url,
            secret,
            state,
            _server: server,
        })
    }

    pub fn seen(&self) -> Seen {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Seen {
            verified: s.0.len() as u64,
            refused: s.1,
        }
    }
}

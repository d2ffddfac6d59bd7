//! "Your app" for the notify tests: a receiver that checks every event's Standard Webhooks
//! signature with the specification's own crate (not with hookrace's code), records it, and
//! answers the statuses a test scripts (200 once the script is used up). `/ntfy` takes text.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use warp::Filter;

/// A `whsec_` secret for tests (24 bytes, base64).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request your app got.
#[derive(Debug, Clone)]
pub struct Got {
    /// `webhook-id` (empty for ntfy).
    pub id: String,
    /// The signature checked out with [`SECRET`].
    pub verified: bool,
    pub body: String,
    /// The status answered.
    pub answered: u16,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("an event is JSON")
    }
}

#[derive(Default)]
struct State {
    got: Vec<Got>,
    script: VecDeque<u16>,
}

pub struct YourApp {
    /// Where events are posted (`…/events`).
    pub url: String,
    /// Where ntfy pushes are posted (`…/ntfy/topic`).
    pub ntfy_url: String,
    state: Arc<Mutex<State>>,
}

impl YourApp {
    pub async fn start() -> YourApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let verifier = Arc::new(standardwebhooks::Webhook::new(SECRET).unwrap());
        let (s1, s2) = (state.clone(), state.clone());
        let events = warp::post()
            .and(warp::path("events"))
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(move |headers: warp::http::HeaderMap, body: bytes::Bytes| {
                let verified = verifier.verify(&body, &headers).is_ok();
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                answer(&s1, id, verified, &body)
            });
        let ntfy = warp::post()
            .and(warp::path!("ntfy" / String))
            .and(warp::body::bytes())
            .map(move |_topic: String, body: bytes::Bytes| {
                answer(&s2, String::new(), false, &body)
            });
        tokio::spawn(hookrace::server::serve_local(
            listener,
            "test",
            1024,
            events.or(ntfy),
            std::future::pending(),
        ));
        YourApp {
            url: format!("{base}/events"),
            ntfy_url: format!("{base}/ntfy/topic"),
            state,
        }
    }

    /// The statuses the next requests get, in order (then 200 again).
    pub fn script(&self, codes: &[u16]) {
        self.state.lock().unwrap().script.extend(codes);
    }

    /// Forgets the rest of the script: 200 from now on.
    pub fn reset_script(&self) {
        self.state.lock().unwrap().script.clear();
    }

    /// Every request so far.
    pub fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().got.clone()
    }

    /// The requests answered 2xx.
    pub fn delivered(&self) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| (200..300).contains(&g.answered))
            .collect()
    }
}

fn answer(
    state: &Mutex<State>,
    id: String,
    verified: bool,
    body: &[u8],
) -> warp::reply::WithStatus<&'static str> {
    let mut s = state.lock().unwrap();
    let code = s.script.pop_front().unwrap_or(200);
    s.got.push(Got {
        id,
        verified,
        body: String::from_utf8_lossy(body).into_owned(),
        answered: code,
    });
    warp::reply::with_status("", warp::http::StatusCode::from_u16(code).unwrap())
}

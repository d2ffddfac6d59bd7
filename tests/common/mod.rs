//! Test harness: the real daemon on `127.0.0.1:0` with a fresh tempdir store, driven over HTTP.
#![allow(dead_code)]

use std::path::Path;

use hookrace::accesslink::signature;
use hookrace::config::{self, Config};
use hookrace::daemon::{self, Listeners, Running};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Polar's documented example secret.
pub const SECRET: &str = "abe1f3ae-fd33-11e8-8eb2-f2801f1b9fd1";
/// Polar's documented example delivery.
pub const EXAMPLE: &str = r#"{"event":"EXERCISE","user_id":475,"entity_id":"aQlC83","timestamp":"2018-05-15T14:22:24Z","url":"https://www.polaraccesslink.com/v3/exercises/aQlC83"}"#;

/// A running daemon.
pub struct App {
    pub webhook_url: String,
    pub public_base: String,
    pub admin_base: String,
    pub shutdown: CancellationToken,
    pub running: Running,
    pub http: reqwest::Client,
}

/// A valid test configuration (simulator off, Polar's example secret) with its store in `dir`.
pub fn test_config(dir: &Path) -> Config {
    let text = format!(
        r#"
        [webhook]
        listen = "127.0.0.1:0"
        [admin]
        listen = "127.0.0.1:0"
        [accesslink]
        client_id = "test-client"
        client_secret = "test-client-secret"
        webhook_secret = "{SECRET}"
        [poller]
        enabled = false
        [store]
        path = "{}"
        "#,
        dir.display()
    );
    config::parse(&text, "test", &|_| None).expect("test config is valid")
}

pub async fn spawn_app(dir: &Path) -> App {
    spawn_with(test_config(dir)).await
}

pub async fn spawn_with(cfg: Config) -> App {
    hookrace::telemetry::init_for_tests();
    let webhook = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_base = format!("http://{}", webhook.local_addr().unwrap());
    let admin_base = format!("http://{}", admin.local_addr().unwrap());
    let webhook_url = format!("{public_base}{}", cfg.webhook.path);
    let simulator = match cfg.simulator.enabled {
        true => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        false => None,
    };
    let shutdown = CancellationToken::new();
    let running = daemon::start(
        cfg,
        Listeners {
            webhook,
            admin,
            simulator,
        },
        shutdown.clone(),
    )
    .await
    .expect("the daemon starts");
    App {
        webhook_url,
        public_base,
        admin_base,
        shutdown,
        running,
        http: reqwest::Client::new(),
    }
}

impl App {
    /// Posts `body` signed with Polar's example secret.
    pub async fn deliver(&self, body: &str) -> reqwest::Response {
        let sig = signature::sign(SECRET, body.as_bytes());
        self.post(body, Some(&sig)).await
    }

    /// Posts `body` with the given signature header (or none).
    pub async fn post(&self, body: &str, sig: Option<&str>) -> reqwest::Response {
        let event = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["event"].as_str().map(String::from))
            .unwrap_or_else(|| "EXERCISE".into());
        let mut req = self
            .http
            .post(&self.webhook_url)
            .header("Content-Type", "application/json")
            .header("Polar-Webhook-Event", event)
            .body(body.to_string());
        if let Some(sig) = sig {
            req = req.header("Polar-Webhook-Signature", sig);
        }
        req.send().await.expect("delivery request")
    }

    pub async fn status(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/status", self.admin_base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn entities(&self, query: &str) -> serde_json::Value {
        self.http
            .get(format!("{}/entities{query}", self.admin_base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Cancels, as SIGTERM does, and waits for a clean exit.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await.expect("daemon exits cleanly");
    }
}

/// An EXERCISE delivery body for `user` and hashed id `id`.
pub fn exercise(user: u64, id: &str) -> String {
    format!(
        r#"{{"event":"EXERCISE","user_id":{user},"entity_id":"{id}","timestamp":"2026-11-28T10:00:00Z","url":"https://www.polaraccesslink.com/v3/exercises/{id}"}}"#
    )
}
pub mod receiver;

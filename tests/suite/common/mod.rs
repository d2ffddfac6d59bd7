//! Test harness: the real daemon on `127.0.0.1:0` with a fresh tempdir store, driven over HTTP.
#![allow(dead_code)]

use std::path::Path;

use hookrace::accesslink::signature;
use hookrace::apps::daemon::{self, Listeners, Running};
use hookrace::config::{self, Config};
use serde_json::json;
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

/// A configuration file's text, built from a value shaped like it (`json!({"store": {"path":
/// dir}})`): the toml crate writes and escapes every value, so a path with quotes, backslashes or
/// non-ASCII characters stays that path. Tests build configurations; they never template TOML.
pub fn toml_text(config: serde_json::Value) -> String {
    toml::to_string(&config).expect("a configuration shaped as TOML tables")
}

/// The configuration `config` describes (see [`toml_text`]), which must be valid.
pub fn config_from(config: serde_json::Value) -> Config {
    let text = toml_text(config);
    config::parse(&text, "test", &|_| None)
        .unwrap_or_else(|e| panic!("test config is valid: {e}\n{text}"))
}

/// Opens the store a daemon in this process has just stopped on.
pub fn reopen_store(path: &Path) -> hookrace::store::Store {
    hookrace::store::Store::open_waiting(
        path,
        std::time::Duration::from_secs(5),
        hookrace::store::DEFAULT_CACHE_BYTES,
    )
    .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// A loopback port free a moment ago, for a process that binds it itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The JSON `url` answers a plain GET with.
pub async fn get_json(url: &str) -> serde_json::Value {
    hookrace::http::plain_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// The two listeners on free loopback ports.
pub fn loopback_listeners() -> serde_json::Value {
    json!({"listen": "127.0.0.1:0"})
}

/// A valid test configuration (simulator off, Polar's example secret) with its store in `dir`.
pub fn test_config(dir: &Path) -> Config {
    config_from(json!({
        "webhook": loopback_listeners(),
        "admin": loopback_listeners(),
        "accesslink": {
            "client_id": "test-client",
            "client_secret": "test-client-secret",
            "webhook_secret": SECRET,
        },
        "poller": {"enabled": false},
        "store": {"path": dir},
    }))
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
        http: hookrace::http::plain_client(),
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
        self.admin_get("/status").await
    }

    /// A text document from the admin listener (`/metrics`).
    pub async fn admin_text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.admin_base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A JSON document from the admin listener.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        let text = self.admin_text(path).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
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
pub mod binary;
pub mod receiver;
pub mod your_app;

/// A configuration running the embedded simulator: quiet generator (tests inject data), no
/// delivery delay, no faults, and a poller that only runs when a test calls a cycle.
pub fn sim_config(dir: &Path, users: u32, mode: &str) -> Config {
    config_from(sim_config_json(dir, users, mode))
}

/// [`sim_config`] as a value, for a test to add to before [`config_from`].
pub fn sim_config_json(dir: &Path, users: u32, mode: &str) -> serde_json::Value {
    json!({
        "webhook": loopback_listeners(),
        "admin": loopback_listeners(),
        // The schedule never fires by itself: tests run the poller's cycles.
        "poller": {"enabled": true, "cron": "0 0 0 1 1 *", "mode": mode},
        "store": {"path": dir},
        "simulator": {
            "enabled": true,
            "listen": "127.0.0.1:0",
            "users": users,
            // Every run the same: no test depends on chance.
            "seed": 1,
            "exercise_every": "1000h",
            "activity_every": "1000h",
            "webhook_delay": "0ms",
            "webhook_drop_rate": 0.0,
            "webhook_duplicate_rate": 0.0,
        },
    })
}

/// Opens the dashboard with `?token=` as a browser would and returns the session cookie it
/// is given (`hookrace_session=…`), for requests that present it.
pub async fn dashboard_session(admin_base: &str, token: &str) -> String {
    let res = hookrace::http::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{admin_base}/?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "the dashboard's first redirect");
    res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// Polls `check` until it returns `Some`, failing the test after 15 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

impl App {
    /// The embedded simulator's base URL.
    pub fn sim(&self) -> String {
        self.running
            .simulator
            .as_ref()
            .expect("the simulator is enabled")
            .base_url
            .clone()
    }

    /// Calls the simulator's control API.
    pub async fn sim_control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let res = self
            .http
            .request(method, format!("{}{path}", self.sim()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap_or(serde_json::Value::Null)
    }

    /// A request to the embedded simulator's AccessLink API with the simulated client's
    /// credentials (as Polar's side of a test: deactivate, delete a webhook…).
    pub fn sim_as_client(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.sim()))
            .basic_auth(
                hookrace::config::SIMULATOR_CLIENT_ID,
                Some(hookrace::config::SIMULATOR_CLIENT_SECRET),
            )
    }

    /// Changes some simulator faults.
    pub async fn faults(&self, patch: serde_json::Value) {
        hookrace::sim::patch_faults(&self.http, &self.sim(), patch)
            .await
            .expect("the simulator takes the faults");
    }

    pub async fn inject(&self, user: u64, kind: &str) -> serde_json::Value {
        self.sim_control(
            reqwest::Method::POST,
            "/sim/inject",
            serde_json::json!({"user_id": user, "type": kind}),
        )
        .await
    }

    pub async fn truth(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/sim/truth", self.sim()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The first user of the simulator.
    pub async fn first_user(&self) -> u64 {
        let users = self
            .sim_control(reqwest::Method::GET, "/sim/users", serde_json::json!({}))
            .await;
        users[0]["user_id"].as_u64().unwrap()
    }

    /// Runs one poll cycle now.
    pub async fn cycle(&self) -> hookrace::channels::poller::CycleReport {
        self.running
            .poller
            .as_ref()
            .expect("the poller is enabled")
            .cycle()
            .await
    }

    /// Waits until the status satisfies `check`.
    pub async fn status_until(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually(what, || async {
            let s = self.status().await;
            check(&s).then_some(s)
        })
        .await
    }
}

/// A simulator of its own (it outlives any daemon a test starts), with one registered user.
pub struct ExternalSim {
    pub base_url: String,
    pub user: u64,
    pub access_token: String,
    /// Stops the simulator when dropped.
    pub _stop: tokio_util::sync::DropGuard,
}

pub async fn external_sim() -> ExternalSim {
    use hookrace::sim::{self, SimSettings};
    hookrace::telemetry::init_for_tests();
    let token = CancellationToken::new();
    let polar = sim::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        SimSettings {
            users: 1,
            ..SimSettings::default()
        },
        token.clone(),
        hookrace::server::serve_simulator,
    )
    .unwrap();
    let users: serde_json::Value = reqwest::get(format!("{}/sim/users", polar.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ExternalSim {
        base_url: polar.base_url,
        user: users[0]["user_id"].as_u64().unwrap(),
        access_token: users[0]["access_token"].as_str().unwrap().to_string(),
        _stop: token.drop_guard(),
    }
}

/// The browser for a browser test, or `None` (the test then skips, saying so) when this machine
/// has none; CI sets `HOOKRACE_REQUIRE_BROWSER`, which turns a missing browser into a failure.
pub fn browser_or_skip() -> Option<String> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("HOOKRACE_REQUIRE_BROWSER").is_none(),
            "HOOKRACE_REQUIRE_BROWSER is set but no chromium is installed"
        );
        eprintln!("SKIPPED: no chromium on this machine (CI installs it: see .ci/run)");
    }
    found
}

/// The DOM headless chromium renders for `url` (on the blocking pool).
pub async fn dump_dom(browser: &str, url: &str) -> String {
    let (browser, url) = (browser.to_string(), url.to_string());
    let out = tokio::task::spawn_blocking(move || headless(&browser, &["--dump-dom"], &url))
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs headless chromium on `url` with `extra` arguments (`--dump-dom`, `--screenshot=…`) and a
/// fresh profile, returning its output.
pub fn headless(browser: &str, extra: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1100",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap()
}

/// A browser on this machine, if any (CI installs chromium; see `.ci/run`).
fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
                    .map(|p| p.display().to_string())
            })
        })
}

/// A screenshot of `url` written to the test target's temporary directory as `name`, kept as a
/// test artifact; its path.
pub async fn screenshot(browser: &str, url: &str, name: &str) -> std::path::PathBuf {
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let arg = format!("--screenshot={}", shot.display());
    let (browser, url) = (browser.to_string(), url.to_string());
    let out = tokio::task::spawn_blocking(move || headless(&browser, &[&arg], &url))
        .await
        .unwrap();
    assert!(
        shot.is_file(),
        "screenshot written: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("screenshot: {}", shot.display());
    shot
}

/// Fails unless `doc` is a `/status` document as `docs/status.schema.json` describes it (every
/// object there lists all its fields, so a field added or gone fails too).
pub fn assert_matches_status_schema(doc: &serde_json::Value) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/status.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    let url = format!("file://{path}");
    compiler.add_resource(&url, schema).unwrap();
    let index = compiler.compile(&url, &mut schemas).unwrap();
    if let Err(e) = schemas.validate(doc, index) {
        panic!("/status does not match docs/status.schema.json:\n{e:#}\n{doc:#}");
    }
}

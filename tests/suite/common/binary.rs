//! The real `hookrace` binary as a child process, for tests that kill it, trace it or read its log.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

/// Writes a daemon configuration for the binary (simulator and poller off, Polar's example
/// secret, the store in `dir/store`) and returns its path.
pub fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("hookrace.toml");
    let text = super::toml_text(serde_json::json!({
        "webhook": super::loopback_listeners(),
        "admin": super::loopback_listeners(),
        "accesslink": {"client_id": "t", "client_secret": "t", "webhook_secret": super::SECRET},
        "poller": {"enabled": false},
        "store": {"path": dir.join("store")},
    }));
    std::fs::write(&path, text).unwrap();
    path
}

/// A started binary: the child, its webhook URL (from its start-up log line) and, once it has
/// exited, every line it logged.
pub struct Started {
    pub child: Child,
    pub webhook_url: String,
    pub log: JoinHandle<Vec<String>>,
}

/// Starts `command` (the binary itself, or a tracer in front of it) with `run -c config` appended
/// and info logging, and waits for the webhook URL it logs.
pub fn start(mut command: Command, config: &Path) -> Started {
    let mut child = command
        .args(["run", "-c"])
        .arg(config)
        .env("RUST_LOG", "hookrace=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting hookrace");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep draining the log so the child never blocks on a full pipe.
    let log = std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("webhook="))
            {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(url.to_string());
                }
            }
            lines.push(line);
        }
        lines
    });
    let webhook_url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the daemon logs its webhook URL");
    Started {
        child,
        webhook_url,
        log,
    }
}

/// The command that runs the binary built for these tests.
pub fn hookrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hookrace"))
}

/// Posts `body` to `url` signed with `key`, as Polar would; `None` when the daemon is gone.
pub async fn post_signed(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    body: String,
) -> Option<reqwest::Response> {
    http.post(url)
        .header("Content-Type", "application/json")
        .header(
            "Polar-Webhook-Signature",
            hookrace::accesslink::signature::sign(key, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .ok()
}

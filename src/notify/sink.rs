//! The three ways an event leaves hookrace: a Standard Webhooks POST, a command with the event on
//! stdin, and an ntfy push. Each attempt ends [`Attempt::Delivered`], [`Attempt::Gone`] (the sink
//! asked for no more) or [`Attempt::Retry`].

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::accesslink::identity::EventType;
use crate::config::{NotifyConfig, NotifyKind, Secret};
use crate::notify::event;

/// A configured sink, ready to send.
pub struct Sink {
    pub name: String,
    /// The event types it wants (`None`: all).
    pub events: Option<Vec<EventType>>,
    pub include_data: bool,
    pub give_up_after: Duration,
    timeout: Duration,
    target: Target,
}

enum Target {
    Webhook {
        url: String,
        signers: Vec<standardwebhooks::Webhook>,
        http: reqwest::Client,
    },
    Exec {
        command: Vec<String>,
    },
    Ntfy {
        url: String,
        token: Option<Secret>,
        http: reqwest::Client,
    },
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// 410 Gone: the receiver asks for nothing more.
    Gone(String),
    /// Anything else: try again later.
    Retry(String),
}

impl Sink {
    pub fn new(config: &NotifyConfig) -> anyhow::Result<Sink> {
        let http = || crate::http::client(config.timeout);
        let target = match &config.kind {
            NotifyKind::Webhook { url, secrets } => Target::Webhook {
                url: url.clone(),
                signers: secrets
                    .iter()
                    .map(|s| {
                        standardwebhooks::Webhook::new(s.expose()).with_context(|| {
                            format!("reading the signing secret of the sink {}", config.name)
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
                http: http()?,
            },
            NotifyKind::Exec { command } => Target::Exec {
                command: command.clone(),
            },
            NotifyKind::Ntfy { url, token } => Target::Ntfy {
                url: url.clone(),
                token: token.clone(),
                http: http()?,
            },
        };
        Ok(Sink {
            name: config.name.clone(),
            events: config
                .events
                .as_ref()
                .map(|e| e.iter().map(|n| EventType::parse(n)).collect()),
            include_data: config.include_data,
            give_up_after: config.give_up_after,
            timeout: config.timeout,
            target,
        })
    }

    pub fn kind(&self) -> &'static str {
        match self.target {
            Target::Webhook { .. } => "webhook",
            Target::Exec { .. } => "exec",
            Target::Ntfy { .. } => "ntfy",
        }
    }

    /// Where it sends (a URL, or the command), for logs and `/status`.
    pub fn target(&self) -> String {
        match &self.target {
            Target::Webhook { url, .. } | Target::Ntfy { url, .. } => url.clone(),
            Target::Exec { command } => command.join(" "),
        }
    }

    /// One attempt to hand `event` (with id `id`) to the sink.
    pub async fn send(&self, id: &str, event: &Value) -> Attempt {
        match &self.target {
            Target::Webhook { url, signers, http } => {
                let body = event.to_string();
                let timestamp = chrono::Utc::now().timestamp();
                let mut signatures = Vec::new();
                for s in signers {
                    match s.sign(id, timestamp, body.as_bytes()) {
                        Ok(sig) => signatures.push(sig),
                        Err(e) => return Attempt::Retry(format!("signing the event: {e}")),
                    }
                }
                let request = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header(standardwebhooks::HEADER_WEBHOOK_ID, id)
                    .header(
                        standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                        timestamp.to_string(),
                    )
                    .header(
                        standardwebhooks::HEADER_WEBHOOK_SIGNATURE,
                        signatures.join(" "),
                    )
                    .body(body);
                answered(url, request.send().await)
            }
            Target::Ntfy { url, token, http } => {
                let mut request = http
                    .post(url)
                    .header("Title", "hookrace")
                    .header("Tags", "runner")
                    .body(event::headline(event));
                if let Some(t) = token {
                    request = request.bearer_auth(t.expose());
                }
                answered(url, request.send().await)
            }
            Target::Exec { command } => self.run(command, id, event).await,
        }
    }

    /// Runs the command with the event on stdin; exit 0 is delivered, anything else a retry.
    async fn run(&self, command: &[String], id: &str, event: &Value) -> Attempt {
        let mut child = match tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .env("HOOKRACE_EVENT_ID", id)
            .env("HOOKRACE_EVENT_TYPE", event["type"].as_str().unwrap_or(""))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return Attempt::Retry(format!("starting {:?}: {e}", command[0])),
        };
        let body = event.to_string();
        let finished = tokio::time::timeout(self.timeout, async {
            if let Some(mut stdin) = child.stdin.take() {
                // A command that does not read its input is its own business: its exit decides.
                let _ = stdin.write_all(body.as_bytes()).await;
                let _ = stdin.write_all(b"\n").await;
            }
            child.wait_with_output().await
        })
        .await;
        match finished {
            Err(_) => Attempt::Retry(format!(
                "{:?} did not finish within {}",
                command[0],
                humantime::format_duration(self.timeout)
            )),
            Ok(Err(e)) => Attempt::Retry(format!("waiting for {:?}: {e}", command[0])),
            Ok(Ok(out)) if out.status.success() => Attempt::Delivered,
            Ok(Ok(out)) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let last = stderr.lines().last().unwrap_or("").trim();
                Attempt::Retry(format!(
                    "{:?} exited with {}{}",
                    command[0],
                    out.status,
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", last.chars().take(200).collect::<String>())
                    }
                ))
            }
        }
    }
}

/// What an HTTP answer means for the event.
fn answered(url: &str, result: reqwest::Result<reqwest::Response>) -> Attempt {
    match result {
        Ok(r) if r.status().is_success() => Attempt::Delivered,
        Ok(r) if r.status() == reqwest::StatusCode::GONE => {
            Attempt::Gone(format!("{url} answered 410 Gone"))
        }
        Ok(r) => Attempt::Retry(format!("{url} answered {}", r.status())),
        Err(e) if e.is_timeout() => Attempt::Retry(format!("{url} did not answer in time")),
        Err(e) => Attempt::Retry(format!("posting to {url}: {e}")),
    }
}

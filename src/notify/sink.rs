//! The three ways an event leaves hookrace: a Standard Webhooks POST, a command with the event on
//! stdin, and an ntfy push. Each attempt ends [`Attempt::Delivered`], [`Attempt::Gone`] (the sink
//! asked for no more) or [`Attempt::Retry`].

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
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
        env: std::collections::BTreeMap<String, String>,
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
            NotifyKind::Exec { command, env } => Target::Exec {
                command: command.clone(),
                env: env.clone(),
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
            Target::Webhook { url, .. } | Target::Ntfy { url, .. } => crate::http::redacted(url),
            Target::Exec { command, .. } => command.join(" "),
        }
    }

    /// One attempt to hand `event` (with id `id`) to the sink.
    pub async fn send(&self, id: &str, event: &event::Outgoing) -> Attempt {
        match &self.target {
            Target::Webhook { url, signers, http } => {
                let body = event.body.clone();
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
                    .body(event.headline.clone());
                if let Some(t) = token {
                    request = request.bearer_auth(t.expose());
                }
                answered(url, request.send().await)
            }
            Target::Exec { command, env } => self.run(command, env, id, event).await,
        }
    }

    /// Runs the command with the event on stdin; exit 0 is delivered, anything else a retry.
    ///
    /// The command runs in its own process group with a cleared environment (`PATH`, `HOME`,
    /// `LANG`, `TZ`, the event's variables and the sink's `env`: none of hookrace's secrets). Only
    /// the last [`STDERR_KEPT`] bytes of its stderr are kept. On a timeout, and when the attempt is
    /// dropped (at shutdown), the whole group is killed, children and grandchildren too.
    async fn run(
        &self,
        command: &[String],
        env: &std::collections::BTreeMap<String, String>,
        id: &str,
        event: &event::Outgoing,
    ) -> Attempt {
        let mut cmd = tokio::process::Command::new(&command[0]);
        cmd.args(&command[1..]).env_clear();
        for name in INHERITED {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.envs(env)
            .env("HOOKRACE_EVENT_ID", id)
            .env("HOOKRACE_EVENT_TYPE", &event.type_name)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Attempt::Retry(format!("starting {:?}: {e}", command[0])),
        };
        // Killed with everything it started unless it ends by itself first.
        let mut group = ProcessGroup(child.id());
        let stderr = child
            .stderr
            .take()
            .map(|e| crate::tasks::spawn("exec stderr", tail(e)));
        let body = &event.body;
        let finished = tokio::time::timeout(self.timeout, async {
            if let Some(mut stdin) = child.stdin.take() {
                // A command that does not read its input is its own business: its exit decides.
                let _ = stdin.write_all(body.as_bytes()).await;
                let _ = stdin.write_all(b"\n").await;
            }
            child.wait().await
        })
        .await;
        let status = match finished {
            Err(_) => {
                drop(group); // kills the group, so the stderr reader ends too
                return Attempt::Retry(format!(
                    "{:?} did not finish within {} (its process group was killed)",
                    command[0],
                    humantime::format_duration(self.timeout)
                ));
            }
            Ok(Err(e)) => return Attempt::Retry(format!("waiting for {:?}: {e}", command[0])),
            Ok(Ok(status)) => status,
        };
        // It ended by itself: what it started in the background is its own business.
        group.disarm();
        if status.success() {
            if let Some(reader) = stderr {
                reader.abort();
            }
            return Attempt::Delivered;
        }
        Attempt::Retry(failure(&command[0], status, stderr).await)
    }
}

/// Why a command that exited unsuccessfully failed: its status and the last line of its stderr
/// (read for a second at most: something it left running may still hold the pipe open).
async fn failure(
    program: &str,
    status: std::process::ExitStatus,
    stderr: Option<tokio::task::JoinHandle<Vec<u8>>>,
) -> String {
    // Its stderr's end, unless something it left running still holds the pipe open.
    let stderr = match stderr {
        Some(mut reader) => match tokio::time::timeout(Duration::from_secs(1), &mut reader).await {
            Ok(Ok(kept)) => kept,
            _ => {
                reader.abort();
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let stderr = String::from_utf8_lossy(&stderr);
    let last = stderr.lines().last().unwrap_or("").trim();
    format!(
        "{:?} exited with {status}{}",
        program,
        if last.is_empty() {
            String::new()
        } else {
            format!(": {}", last.chars().take(200).collect::<String>())
        }
    )
}

/// The variables an exec command inherits from hookrace's environment; nothing else (the
/// webhook secret, the client secret, the admin token, `$CREDENTIALS_DIRECTORY`) reaches it.
pub const INHERITED: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

/// How much of an exec command's stderr is kept (its end, for the error message).
pub const STDERR_KEPT: usize = 4096;

/// Reads `stream` to its end, keeping only its last [`STDERR_KEPT`] bytes.
async fn tail(mut stream: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend(&buf[..n]);
                let excess = kept.len().saturating_sub(STDERR_KEPT);
                kept.drain(..excess);
            }
        }
    }
    kept.into()
}

/// An exec command's process group (its pid, as `process_group(0)` made it the leader): killed
/// when dropped (a timeout, or the attempt dropped at shutdown), unless disarmed.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    /// The command ended by itself: leave its group alone.
    fn disarm(&mut self) {
        self.0 = None;
    }

    fn kill(&mut self) {
        let Some(pid) = self.0.take() else { return };
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            // ESRCH (the group is gone) is the usual, harmless answer.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What an HTTP answer means for the event.
fn answered(url: &str, result: reqwest::Result<reqwest::Response>) -> Attempt {
    // What is said here is logged and stored: never the URL's credentials.
    let url = crate::http::redacted(url);
    match result {
        Ok(r) if r.status().is_success() => Attempt::Delivered,
        Ok(r) if r.status() == reqwest::StatusCode::GONE => {
            Attempt::Gone(format!("{url} answered 410 Gone"))
        }
        Ok(r) => Attempt::Retry(format!("{url} answered {}", r.status())),
        Err(e) if e.is_timeout() => Attempt::Retry(format!("{url} did not answer in time")),
        Err(e) => Attempt::Retry(format!("posting to {url}: {}", causes(&e.without_url()))),
    }
}

/// An error and its causes, `: `-separated.
fn causes(e: &dyn std::error::Error) -> String {
    let mut said = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        said.push_str(": ");
        said.push_str(&c.to_string());
        cause = c.source();
    }
    said
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn exec(script: &str, env: BTreeMap<String, String>, timeout: Duration) -> Sink {
        Sink {
            name: "app".into(),
            events: None,
            include_data: false,
            give_up_after: Duration::from_secs(60),
            timeout,
            target: Target::Exec {
                command: vec!["/bin/sh".into(), "-c".into(), script.into()],
                env,
            },
        }
    }

    fn event() -> event::Outgoing {
        event::Outgoing {
            type_name: "exercise.created".into(),
            body: json!({"type": "exercise.created", "data": {"user_id": 7}}).to_string(),
            headline: "New exercise".into(),
        }
    }

    /// The command sees none of hookrace's environment (its secrets, `$CREDENTIALS_DIRECTORY`,
    /// and here the test harness's own variables) but `PATH`, `HOME`, `LANG`, `TZ`, the event's
    /// variables and the sink's `env`. Before the fix it inherited everything.
    #[tokio::test]
    async fn the_command_gets_a_cleared_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let env = BTreeMap::from([("APP_MODE".to_string(), "test".to_string())]);
        let script = format!("env > '{}'", out.display());
        let sink = exec(&script, env, Duration::from_secs(10));
        assert_eq!(sink.send("msg_1", &event()).await, Attempt::Delivered);
        let seen = std::fs::read_to_string(&out).unwrap();
        let names: Vec<&str> = seen.lines().filter_map(|l| l.split('=').next()).collect();
        // What the shell itself sets is not inherited.
        let shell = ["PWD", "SHLVL", "_", "OLDPWD"];
        for name in &names {
            assert!(
                INHERITED.contains(name)
                    || shell.contains(name)
                    || ["APP_MODE", "HOOKRACE_EVENT_ID", "HOOKRACE_EVENT_TYPE"].contains(name),
                "{name} reached the command: {seen}"
            );
        }
        assert!(seen.contains("HOOKRACE_EVENT_ID=msg_1"), "{seen}");
        assert!(seen.contains("APP_MODE=test"), "{seen}");
        // The harness runs with variables of its own (cargo sets several): none came through.
        assert!(std::env::vars().any(|(k, _)| k.starts_with("CARGO")));
        assert!(!seen.contains("CARGO"), "{seen}");
    }

    /// A timeout kills the command's whole process group: before the fix only the direct child
    /// was killed and what it had started ran on (6 orphans in 25 s against `TasksMax=64`).
    #[tokio::test]
    async fn a_timeout_kills_everything_the_command_started() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = format!(
            "sleep 300 & echo $! > '{0}'; sh -c 'sleep 300' & echo $! >> '{0}'; sleep 300",
            pids.display()
        );
        let sink = exec(&script, BTreeMap::new(), Duration::from_millis(500));
        match sink.send("msg_2", &event()).await {
            Attempt::Retry(why) => assert!(why.contains("process group was killed"), "{why}"),
            other => panic!("{other:?}"),
        }
        let started: Vec<String> = std::fs::read_to_string(&pids)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(started.len(), 2);
        for pid in started {
            // Killed (a zombie at most, until its parent, killed too, is reaped by init).
            let gone = (0..100).any(|_| {
                let state = std::fs::read_to_string(format!("/proc/{pid}/stat"));
                let alive = state.is_ok_and(|s| !s.contains(") Z "));
                if alive {
                    std::thread::sleep(Duration::from_millis(20));
                }
                !alive
            });
            assert!(gone, "process {pid} outlived the timeout");
        }
    }

    /// A command that floods stderr costs at most a few KiB: its end is kept for the message.
    /// Before the fix all of it was collected (400 MB of stderr took the daemon to 406 MB).
    #[tokio::test]
    async fn only_the_end_of_stderr_is_kept() {
        let kept = tail(&mut std::io::Cursor::new(
            [vec![b'x'; 10 * 1024 * 1024], b"\nthe last line".to_vec()].concat(),
        ))
        .await;
        assert_eq!(kept.len(), STDERR_KEPT);
        assert!(kept.ends_with(b"the last line"));
        let script =
            "head -c 20000000 /dev/zero | tr '\\0' 'x' >&2; echo '\nout of coffee' >&2; exit 4";
        let sink = exec(script, BTreeMap::new(), Duration::from_secs(30));
        match sink.send("msg_3", &event()).await {
            Attempt::Retry(why) => assert!(why.ends_with("out of coffee"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

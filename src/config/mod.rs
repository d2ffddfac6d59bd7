//! The configuration file: parsing, validation and the typed result the rest of hookrace uses.
//!
//! Parsing happens in two steps so that a user sees *every* problem at once, not one per attempt:
//! the TOML is read into [`RawConfig`] (strings where a value needs checking, unknown keys collected
//! with `serde_ignored` rather than failing on the first), then [`RawConfig::validate`] checks every
//! value and either returns a [`Config`] or the full list of problems. `check-config` and `run`
//! both go through [`load`]; nothing binds or opens anything before validation has passed.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod raw;

use raw::RawConfig;
pub use raw::parse_delay_range;

/// The embedded default configuration (the repository's `config.toml`): runs against the simulator.
pub const DEFAULT_CONFIG: &str = include_str!("../../config.toml");

/// Environment variable that supplies `[accesslink].client_secret`.
pub const ENV_CLIENT_SECRET: &str = "HOOKRACE_CLIENT_SECRET";
/// The client credentials the embedded simulator is started with (`[simulator]` enabled): the
/// daemon gives them to the simulator and the management commands use them to reach it.
pub const SIMULATOR_CLIENT_ID: &str = "hookrace-sim";
pub const SIMULATOR_CLIENT_SECRET: &str = "hookrace-sim-secret";
/// Environment variable that supplies `[accesslink].webhook_secret`.
pub const ENV_WEBHOOK_SECRET: &str = "HOOKRACE_WEBHOOK_SECRET";
/// Environment variable that supplies `[admin].token`.
pub const ENV_ADMIN_TOKEN: &str = "HOOKRACE_ADMIN_TOKEN";
// Each of the three may also come from a file: `{VAR}_FILE=/path`, or the systemd credential
// `client_secret`, `webhook_secret` or `admin_token` (`LoadCredential=`).

pub use accesslink::Secret;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub webhook: WebhookConfig,
    pub admin: AdminConfig,
    pub accesslink: AccessLinkConfig,
    pub users: Vec<UserConfig>,
    pub poller: PollerConfig,
    pub store: StoreConfig,
    pub simulator: SimulatorConfig,
    /// Where hookrace tells your app about each new entity (`[[notify]]`), in file order.
    pub notify: Vec<NotifyConfig>,
    /// What is valid but unwise (a secret others may read, a sink over plain HTTP): said by
    /// `check-config` and logged at start.
    pub warnings: Vec<String>,
}

/// The public listener Polar posts deliveries to.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub listen: SocketAddr,
    /// The delivery path, starting with `/`.
    pub path: String,
    /// Largest accepted delivery body in bytes; larger gets 413.
    pub max_body: usize,
    /// How long a client may take to send a body; slower gets 408. Also how long a connection
    /// may take to send a request's headers, and stay idle between requests, before it is closed.
    pub body_timeout: Duration,
    /// Open connections at most; beyond it new ones wait (load, shown in `/status`; liveness is
    /// left alone).
    pub max_connections: usize,
    /// The public URL Polar posts to (as registered): the webhook watch checks the webhook
    /// points there. `None`: only that it exists and is active.
    pub public_url: Option<String>,
    /// How often the webhook watch asks AccessLink whether the webhook exists and is active
    /// (`None`: never).
    pub check_every: Option<Duration>,
    /// Reactivate the webhook when the watch finds it inactive.
    pub reactivate: bool,
    /// How deliveries are signed: Polar's own (default), or Standard Webhooks for a provider
    /// that speaks it (`webhook.dialect = "standard-webhooks"`, with a `whsec_` secret).
    pub dialect: crate::accesslink::dialect::Dialect,
}

/// The private listener: status, metrics, entities.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// When set, every admin route requires `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

/// The AccessLink client this daemon acts as.
#[derive(Debug, Clone)]
pub struct AccessLinkConfig {
    /// Scheme, host and port, no trailing slash; only URLs under it are ever fetched.
    pub base_url: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// The webhook's `signature_secret_key`.
    pub webhook_secret: Option<Secret>,
    /// Polar's OAuth2 authorization page.
    pub authorize_url: String,
    /// Polar's OAuth2 token endpoint.
    pub token_url: String,
    /// The public URL of `/oauth/callback` as registered with the client, sent to Polar on
    /// authorize and token exchange; `None` uses the client's registered default.
    pub redirect_uri: Option<String>,
}

/// A user whose token is known up front.
#[derive(Debug, Clone)]
pub struct UserConfig {
    pub user_id: u64,
    pub access_token: Secret,
}

/// How the second channel polls.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    pub enabled: bool,
    pub schedule: PollSchedule,
    pub mode: PollMode,
    pub strategy: PollStrategy,
}

/// How the poll interval is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStrategy {
    /// Every tick of the schedule (`every` or `cron`).
    Fixed,
    /// The auditor: between `every` (fastest) and `max_every` (slowest), fast on evidence that
    /// webhooks miss data, slow while they are complete (see `channels::auditor`).
    Adaptive { max_every: Duration },
}

impl PollStrategy {
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    /// Which strategy, without its settings.
    pub fn kind(&self) -> StrategyKind {
        match self {
            PollStrategy::Fixed => StrategyKind::Fixed,
            PollStrategy::Adaptive { .. } => StrategyKind::Adaptive,
        }
    }
}

/// Which poll strategy, by name (`fixed`, `adaptive`): the one enum for `[poller] strategy`, the
/// demo's and the what-if's `--strategy`; [`PollStrategy`] adds the adaptive auditor's bound.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    Fixed,
    Adaptive,
}

impl StrategyKind {
    /// Its name in the configuration, on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Fixed => "fixed",
            StrategyKind::Adaptive => "adaptive",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PollSchedule {
    Every(Duration),
    /// A cron expression, seconds first, evaluated in UTC.
    Cron(String),
}

/// What the poller reads: the one enum for the configuration (`[poller] mode`), the demo's
/// `--mode` and the report's settings.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Pull notifications + transactions.
    #[default]
    Transactions,
    /// The non-transactional `GET /v3/exercises` per known user.
    List,
}

impl PollMode {
    /// Its name in the configuration, on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            PollMode::Transactions => "transactions",
            PollMode::List => "list",
        }
    }
}

impl std::fmt::Display for PollMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// sled's page cache (`store.cache_mb`, default 64 MiB): with the fetch backlog's bounded
    /// window, what keeps hookrace's resident memory flat however many entities arrive.
    pub cache_bytes: u64,
}

/// The embedded simulator `run` may start.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub users: u32,
    pub exercise_every: Duration,
    /// Mean time between daily activity updates per user.
    pub activity_every: Duration,
    pub webhook_delay: (Duration, Duration),
    pub webhook_drop_rate: f64,
    pub webhook_duplicate_rate: f64,
    /// Seeds the simulator's generator and its faults (drops, duplicates, delays, 5xx): the same
    /// seed gives the same data and the same fault decisions. `None`: a random seed each run.
    pub seed: Option<u64>,
    /// A recording to make again instead of random data (`demo --replay`; not a file setting).
    pub replay: Vec<crate::sim::settings::Replayed>,
}

/// One `[[notify]]` sink: where hookrace sends an event for every new entity.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Unique among the sinks: names the sink in `/status`, `/metrics`, logs and the store
    /// (`name`, or the kind, numbered when a kind appears more than once).
    pub name: String,
    pub kind: NotifyKind,
    /// The event types to send (wire names, `EXERCISE`, …); `None`: every type.
    pub events: Option<Vec<String>>,
    /// Send the stored data item with the event, not only the entity's identity.
    pub include_data: bool,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// How long an event is retried before it is parked as failed.
    pub give_up_after: Duration,
}

#[derive(Debug, Clone)]
pub enum NotifyKind {
    /// An HTTP POST signed as the Standard Webhooks specification says.
    Webhook {
        url: String,
        /// Signing secrets (`whsec_…`, base64): each signs, so a receiver may rotate.
        secrets: Vec<Secret>,
    },
    /// A command run with the event's JSON on stdin; a non-zero exit is retried. It gets a
    /// cleared environment: `PATH`, `HOME`, `LANG`, `TZ`, the event's variables and `env`.
    Exec {
        command: Vec<String>,
        env: std::collections::BTreeMap<String, String>,
    },
    /// A one-line text POSTed to an ntfy topic URL.
    Ntfy { url: String, token: Option<Secret> },
}

impl NotifyKind {
    pub fn name(&self) -> &'static str {
        match self {
            NotifyKind::Webhook { .. } => "webhook",
            NotifyKind::Exec { .. } => "exec",
            NotifyKind::Ntfy { .. } => "ntfy",
        }
    }
}

/// Every problem found in a configuration, reported together.
#[derive(Debug)]
pub struct ConfigErrors {
    /// Where the configuration came from (a path, or "the embedded default").
    pub source: String,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} problem(s) in the configuration {}:",
            self.problems.len(),
            self.source
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The configuration file the system-wide install uses (`docs/deploy.md`).
pub const SYSTEM_CONFIG: &str = "/etc/hookrace/config.toml";
/// Environment variable naming the configuration file when `-c` is not given.
pub const ENV_CONFIG: &str = "HOOKRACE_CONFIG";

/// Where a command's configuration comes from, and why: one rule for every command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `-c FILE`.
    Given(PathBuf),
    /// `$HOOKRACE_CONFIG`.
    Env(PathBuf),
    /// `/etc/hookrace/config.toml`, which exists.
    System(PathBuf),
    /// The embedded default (the repository's `config.toml`: the simulator on loopback).
    Embedded,
}

impl ConfigSource {
    /// `-c`, then `$HOOKRACE_CONFIG`, then [`SYSTEM_CONFIG`] when it exists, then the embedded
    /// default; `env` and `exists` are passed in so tests can drive the rule.
    pub fn locate(
        given: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        exists: &dyn Fn(&Path) -> bool,
    ) -> ConfigSource {
        if let Some(p) = given {
            return ConfigSource::Given(p.to_path_buf());
        }
        if let Some(p) = env(ENV_CONFIG).filter(|p| !p.is_empty()) {
            return ConfigSource::Env(PathBuf::from(p));
        }
        let system = Path::new(SYSTEM_CONFIG);
        if exists(system) {
            return ConfigSource::System(system.to_path_buf());
        }
        ConfigSource::Embedded
    }

    /// The file, unless it is the embedded default.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::Given(p) | ConfigSource::Env(p) | ConfigSource::System(p) => Some(p),
            ConfigSource::Embedded => None,
        }
    }

    /// A line saying which configuration is used and why, for a command that was not given `-c`
    /// (`None` when it was: the user knows).
    pub fn notice(&self) -> Option<String> {
        match self {
            ConfigSource::Given(_) => None,
            ConfigSource::Env(p) => Some(format!(
                "using the configuration {} (from ${ENV_CONFIG})",
                p.display()
            )),
            ConfigSource::System(p) => Some(format!(
                "using the configuration {} (no -c given)",
                p.display()
            )),
            ConfigSource::Embedded => Some(format!(
                "using the embedded default configuration (the simulator on loopback): no -c given, \
                 no ${ENV_CONFIG}, no {SYSTEM_CONFIG}"
            )),
        }
    }
}

/// Loads and validates the configuration at `path`, or the embedded default when `path` is `None`.
/// Secrets missing from the file are taken from the environment, a systemd credential, or (outside
/// systemd) a file of the credential's name beside the configuration file: the same files the
/// unit hands to the service, so `sudo hookrace … -c /etc/hookrace/config.toml` finds them too.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
    let (text, source) = match path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => (t, p.display().to_string()),
            Err(e) => {
                return Err(ConfigErrors {
                    source: p.display().to_string(),
                    problems: vec![format!("cannot read {}: {e}", p.display())],
                });
            }
        },
        None => (
            DEFAULT_CONFIG.to_string(),
            "the embedded default".to_string(),
        ),
    };
    let beside = path.map(|p| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    });
    let mut cfg = parse(&text, &source, &|name| {
        std::env::var(name).ok().or_else(|| {
            // Outside systemd, the configuration's own directory plays the credentials directory.
            (name == "CREDENTIALS_DIRECTORY")
                .then(|| beside.as_ref().map(|d| d.display().to_string()))
                .flatten()
        })
    })?;
    cfg.warnings
        .extend(exposed_secret_files(&|name| std::env::var(name).ok()));
    if let Some(p) = path {
        cfg.warnings
            .extend(exposed_secrets(p, &text, beside.as_deref()));
    }
    Ok(cfg)
}

/// Secrets that others on the machine may read: the configuration file, when it holds a secret
/// itself, and the secret files beside it (the credentials the unit hands over), when their mode
/// lets the group or the world read them.
/// The mode of a file others may read (group or world), if it is one.
fn loose(p: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
        .filter(|mode| mode & 0o044 != 0)
}

/// The secret files the environment names (`HOOKRACE_CLIENT_SECRET_FILE`, …) that others can
/// read, as warnings (check-config warned about the configuration file, not about these).
fn exposed_secret_files(env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    [
        "HOOKRACE_CLIENT_SECRET_FILE",
        "HOOKRACE_WEBHOOK_SECRET_FILE",
        "HOOKRACE_ADMIN_TOKEN_FILE",
    ]
    .into_iter()
    .filter_map(|var| {
        let path = PathBuf::from(env(var)?);
        let mode = loose(&path)?;
        Some(format!(
            "the secret file {} ({var}) is readable by others (mode {mode:o}): chmod 600 it",
            path.display()
        ))
    })
    .collect()
}

fn exposed_secrets(config: &Path, text: &str, beside: Option<&Path>) -> Vec<String> {
    let mut warnings = Vec::new();
    let holds_secret = toml::from_str::<toml::Table>(text)
        .map(|t| holds_secret(&toml::Value::Table(t)))
        .unwrap_or(false);
    if holds_secret {
        if let Some(mode) = loose(config) {
            warnings.push(format!(
                "{} holds a secret and is readable by others (mode {mode:o}): chmod 600 it, or \
                 move the secret into a file of its own (see docs/deploy.md)",
                config.display()
            ));
        }
    }
    let credentials = std::fs::read_dir(beside.unwrap_or(Path::new(".")))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_credential_name)
        });
    for file in credentials {
        if let Some(mode) = loose(&file) {
            warnings.push(format!(
                "the secret file {} is readable by others (mode {mode:o}): chmod 600 it",
                file.display()
            ));
        }
    }
    warnings
}

/// Whether a configuration value holds a secret inline (a key named like one, with a value).
fn holds_secret(v: &toml::Value) -> bool {
    match v {
        toml::Value::Table(t) => t.iter().any(|(k, v)| {
            let secret_key = matches!(
                k.as_str(),
                "client_secret" | "webhook_secret" | "token" | "secret" | "access_token"
            );
            (secret_key && !matches!(v, toml::Value::String(s) if s.is_empty())) || holds_secret(v)
        }),
        toml::Value::Array(a) => a.iter().any(holds_secret),
        _ => false,
    }
}

/// The names of the credential files hookrace reads beside its configuration.
fn is_credential_name(name: &str) -> bool {
    matches!(name, "client_secret" | "webhook_secret" | "admin_token")
        || (name.starts_with("notify_") && (name.ends_with("_secret") || name.ends_with("_token")))
        || (name.starts_with("user_") && name.ends_with("_token"))
}

/// Parses and validates configuration text; `env` looks up environment variables (tests pass their own).
pub fn parse(
    text: &str,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let fail = |problems| ConfigErrors {
        source: source.to_string(),
        problems,
    };
    let mut unknown = Vec::new();
    let not_valid = |e: toml::de::Error| fail(vec![format!("not valid: {}", e.to_string().trim())]);
    let de = toml::Deserializer::parse(text).map_err(not_valid)?;
    let raw: RawConfig =
        serde_ignored::deserialize(de, |path| unknown.push(path.to_string())).map_err(not_valid)?;
    let mut problems: Vec<String> = unknown
        .into_iter()
        .map(|k| format!("unknown key `{k}`"))
        .collect();
    match raw.validate(env, &mut problems) {
        Some(mut cfg) if problems.is_empty() => {
            cfg.warnings = plain_http_sinks(&cfg);
            cfg.warnings.extend(placeholders(&cfg));
            Ok(cfg)
        }
        _ => Err(fail(problems)),
    }
}

/// Values still as the template wrote them (`your-client-id`, an `example.org` URL): valid, but
/// Polar will not know them.
fn placeholders(cfg: &Config) -> Vec<String> {
    let example = |url: &str| {
        reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(String::from))
            .is_some_and(|h| {
                ["example.org", "example.com", "example.net"]
                    .iter()
                    .any(|e| h == *e || h.ends_with(&format!(".{e}")))
            })
    };
    let mut found = Vec::new();
    if !cfg.simulator.enabled && cfg.accesslink.client_id.starts_with("your-") {
        found.push(format!(
            "`accesslink.client_id` = {:?} is the template's placeholder: put your client's id \
             from admin.polaraccesslink.com",
            cfg.accesslink.client_id
        ));
    }
    for (field, url) in [
        ("webhook.public_url", cfg.webhook.public_url.as_deref()),
        (
            "accesslink.redirect_uri",
            cfg.accesslink.redirect_uri.as_deref(),
        ),
    ] {
        if let Some(url) = url.filter(|u| example(u)) {
            found.push(format!(
                "`{field}` = {url:?} is the template's placeholder: put your own public address"
            ));
        }
    }
    found
}

/// Sinks that send events (and their signatures or tokens) over plain HTTP beyond this machine.
fn plain_http_sinks(cfg: &Config) -> Vec<String> {
    cfg.notify
        .iter()
        .filter_map(|n| match &n.kind {
            NotifyKind::Webhook { url, .. } | NotifyKind::Ntfy { url, .. } => {
                let u = reqwest::Url::parse(url).ok()?;
                let host = u.host_str().unwrap_or("").trim_matches(['[', ']']);
                let local = host == "localhost"
                    || host.ends_with(".localhost")
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                (u.scheme() == "http" && !local).then(|| {
                    format!(
                        "the notify sink {:?} sends to {} over plain HTTP: anyone on the way reads \
                         the events (use https)",
                        n.name,
                        redacted(url)
                    )
                })
            }
            NotifyKind::Exec { .. } => None,
        })
        .collect()
}

/// `url` as hookrace shows or stores it: credentials in its userinfo and every query value
/// replaced by `***` (a sink URL like `https://user:pass@host/hook?key=…` would otherwise reach
/// `/status`, the dashboard, the log and every stored error), the fragment dropped.
pub fn redacted(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return "(a URL that does not parse)".to_string();
    };
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("***");
        let _ = u.set_password(None);
    }
    if u.query().is_some() {
        let keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        u.query_pairs_mut()
            .clear()
            .extend_pairs(keys.iter().map(|k| (k.as_str(), "***")));
    }
    u.set_fragment(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn embedded_default_is_valid() {
        let cfg = parse(DEFAULT_CONFIG, "default", &no_env).expect("the default config validates");
        assert!(cfg.simulator.enabled);
    }

    #[test]
    fn a_standard_webhooks_receiver_needs_a_whsec_secret() {
        let with = |dialect: &str, secret: &str| {
            format!(
                "[webhook]\ndialect = \"{dialect}\"\n[accesslink]\nclient_id = \"c\"\n\
                 client_secret = \"s\"\nwebhook_secret = \"{secret}\"\n[simulator]\nenabled = false\n"
            )
        };
        let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let cfg = parse(&with("standard-webhooks", whsec), "t", &no_env).unwrap();
        assert_eq!(
            cfg.webhook.dialect,
            crate::accesslink::dialect::Dialect::StandardWebhooks
        );
        let polar = parse(&with("polar", "abe1f3ae-fd33-11e8"), "t", &no_env).unwrap();
        assert_eq!(
            polar.webhook.dialect,
            crate::accesslink::dialect::Dialect::Polar
        );
        let err = parse(
            &with("standard-webhooks", "abe1f3ae-fd33-11e8!"),
            "t",
            &no_env,
        )
        .unwrap_err()
        .problems
        .join("\n");
        assert!(err.contains("whsec_"), "{err}");
        let err = parse(&with("klingon", whsec), "t", &no_env)
            .unwrap_err()
            .problems
            .join("\n");
        assert!(err.contains("webhook.dialect"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [webhook]
            listen = "nowhere"
            path = "acl"
            colour = "blue"
            [poller]
            every = "soon"
            mode = "sometimes"
            [simulator]
            webhook_drop_rate = 1.5
            [accesslink]
            client_id = ""
        "#;
        let err = parse(text, "t", &no_env).unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "unknown key `webhook.colour`",
            "webhook.listen",
            "webhook.path",
            "poller.every",
            "poller.mode",
            "webhook_drop_rate",
            "client_id",
            "client_secret",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn secrets_come_from_files_and_systemd_credentials() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client"), "from-a-file\n").unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("admin_token"), "0123456789abcdef-credential").unwrap();
        std::fs::write(creds.join("webhook_secret"), "hook-from-credential").unwrap();
        let text = "[accesslink]\nclient_id = \"c\"\n[simulator]\nenabled = false\n";
        let (client, creds_dir) = (
            dir.path().join("client").display().to_string(),
            creds.display().to_string(),
        );
        let env = move |k: &str| match k {
            "HOOKRACE_CLIENT_SECRET_FILE" => Some(client.clone()),
            "CREDENTIALS_DIRECTORY" => Some(creds_dir.clone()),
            _ => None,
        };
        let cfg = parse(text, "t", &env).unwrap();
        let expose = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_string());
        assert_eq!(
            expose(&cfg.accesslink.client_secret).as_deref(),
            Some("from-a-file")
        );
        assert_eq!(
            expose(&cfg.accesslink.webhook_secret).as_deref(),
            Some("hook-from-credential")
        );
        assert_eq!(
            expose(&cfg.admin.token).as_deref(),
            Some("0123456789abcdef-credential")
        );
        // A file that cannot be read is a problem, named.
        let missing =
            |k: &str| (k == "HOOKRACE_CLIENT_SECRET_FILE").then(|| "/nonexistent/x".into());
        let err = parse(text, "t", &missing).unwrap_err().to_string();
        assert!(err.contains("HOOKRACE_CLIENT_SECRET_FILE"), "{err}");
    }

    #[test]
    fn secrets_come_from_the_environment_and_never_print() {
        let text = "[accesslink]\nclient_id = \"abc\"\n";
        let env = |k: &str| {
            (k == ENV_CLIENT_SECRET || k == ENV_WEBHOOK_SECRET).then(|| "s3cr3t-value".to_string())
        };
        let cfg = parse(text, "t", &env).unwrap();
        assert_eq!(
            cfg.accesslink.client_secret.as_ref().unwrap().expose(),
            "s3cr3t-value"
        );
        assert_eq!(
            cfg.accesslink.webhook_secret.as_ref().unwrap().expose(),
            "s3cr3t-value"
        );
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
    }

    #[test]
    fn delay_ranges() {
        assert_eq!(
            parse_delay_range("20ms..400ms").unwrap(),
            (Duration::from_millis(20), Duration::from_millis(400))
        );
        assert_eq!(
            parse_delay_range("1s").unwrap(),
            (Duration::from_secs(1), Duration::from_secs(1))
        );
        assert!(parse_delay_range("2s..1s").is_err());
    }
}

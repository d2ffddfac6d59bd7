//! The configuration as written: [`RawConfig`] (strings where a value needs checking, defaults
//! filled in) and its validation into a [`Config`], which reports every problem at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::*;

mod notify;
use notify::{RawNotify, validate_notify};

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawConfig {
    webhook: RawWebhook,
    admin: RawAdmin,
    accesslink: RawAccessLink,
    users: Vec<RawUser>,
    poller: RawPoller,
    store: RawStore,
    simulator: RawSimulator,
    notify: Vec<RawNotify>,
}

#[derive(Deserialize)]
#[serde(default)]
struct RawWebhook {
    listen: String,
    path: String,
    max_body: i64,
    body_timeout: String,
    max_connections: i64,
    public_url: Option<String>,
    /// A duration, or "off".
    check_every: String,
    reactivate: bool,
    dialect: String,
}
impl Default for RawWebhook {
    fn default() -> Self {
        RawWebhook {
            listen: "0.0.0.0:8080".into(),
            path: "/acl_webhook".into(),
            max_body: 65536,
            body_timeout: "10s".into(),
            max_connections: 512,
            public_url: None,
            check_every: "10m".into(),
            reactivate: false,
            dialect: "polar".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct RawAdmin {
    listen: String,
    token: Option<Secret>,
}
impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:9090".into(),
            token: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct RawAccessLink {
    base_url: String,
    client_id: String,
    client_secret: Option<Secret>,
    webhook_secret: Option<Secret>,
    authorize_url: String,
    token_url: String,
    redirect_uri: Option<String>,
}
impl Default for RawAccessLink {
    fn default() -> Self {
        RawAccessLink {
            base_url: "https://www.polaraccesslink.com".into(),
            client_id: String::new(),
            client_secret: None,
            webhook_secret: None,
            authorize_url: "https://flow.polar.com/oauth2/authorization".into(),
            token_url: "https://polarremote.com/v2/oauth2/token".into(),
            redirect_uri: None,
        }
    }
}

#[derive(Deserialize)]
struct RawUser {
    user_id: i64,
    /// Or from `HOOKRACE_USER_<ID>_TOKEN` (its `_FILE`, or the credential `user_<id>_token`).
    access_token: Option<Secret>,
}

#[derive(Deserialize)]
#[serde(default)]
struct RawPoller {
    enabled: bool,
    every: Option<String>,
    cron: Option<String>,
    mode: String,
    strategy: String,
    max_every: String,
}
impl Default for RawPoller {
    fn default() -> Self {
        RawPoller {
            enabled: true,
            every: None,
            cron: None,
            mode: "transactions".into(),
            strategy: "fixed".into(),
            max_every: "15m".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct RawStore {
    path: String,
    cache_mb: i64,
}
impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            path: "./hookrace-data".into(),
            cache_mb: 64,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct RawSimulator {
    enabled: bool,
    listen: String,
    users: i64,
    exercise_every: String,
    activity_every: String,
    webhook_delay: String,
    webhook_drop_rate: f64,
    webhook_duplicate_rate: f64,
    seed: Option<u64>,
}
impl Default for RawSimulator {
    fn default() -> Self {
        RawSimulator {
            enabled: false,
            listen: "127.0.0.1:7070".into(),
            users: 3,
            exercise_every: "20s".into(),
            activity_every: "60s".into(),
            webhook_delay: "20ms..400ms".into(),
            webhook_drop_rate: 0.02,
            webhook_duplicate_rate: 0.03,
            seed: None,
        }
    }
}

fn addr(field: &str, value: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    match value.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(format!(
                "`{field}` = {value:?} is not an address like \"127.0.0.1:9090\""
            ));
            None
        }
    }
}

/// Parses a humantime duration (`500ms`, `30s`, `1h 30m`), reporting a problem on failure.
fn duration(field: &str, value: &str, problems: &mut Vec<String>) -> Option<Duration> {
    match humantime::parse_duration(value) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            problems.push(format!("`{field}` must be longer than zero"));
            None
        }
        Err(e) => {
            problems.push(format!(
                "`{field}` = {value:?} is not a duration like \"30s\" or \"5m\": {e}"
            ));
            None
        }
    }
}

/// Parses a delay range `"20ms..400ms"` (or a single duration for a fixed delay).
pub fn parse_delay_range(value: &str) -> Result<(Duration, Duration), String> {
    let (lo, hi) = match value.split_once("..") {
        Some((lo, hi)) => (lo.trim(), hi.trim()),
        None => (value.trim(), value.trim()),
    };
    let lo = humantime::parse_duration(lo).map_err(|e| format!("{lo:?}: {e}"))?;
    let hi = humantime::parse_duration(hi).map_err(|e| format!("{hi:?}: {e}"))?;
    if lo > hi {
        return Err("the lower bound is above the upper bound".into());
    }
    Ok((lo, hi))
}

fn rate(field: &str, value: f64, problems: &mut Vec<String>) {
    if !(0.0..=1.0).contains(&value) {
        problems.push(format!("`{field}` = {value} must be between 0 and 1"));
    }
}

impl RawConfig {
    /// Checks every value, pushing one line per problem; returns the typed config when the
    /// values could all be converted (the caller still refuses it if any problem was pushed).
    /// Every section is checked before any is given up on, so all problems are reported at once.
    pub(super) fn validate(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) -> Option<Config> {
        // The admin check compares the two addresses even when the webhook section has other
        // problems (an unparsable address is reported by the webhook's own check).
        let webhook_listen = self.webhook.listen.parse().ok();
        let webhook = self.webhook.validate(problems);
        let admin = self.admin.validate(env, webhook_listen, problems);
        let accesslink = self
            .accesslink
            .validate(env, self.simulator.enabled, problems);
        let users = validate_users(self.users, env, problems);
        let poller = self.poller.validate(problems);
        let store = self.store.validate(problems);
        let simulator = self.simulator.validate(problems);
        let notify = validate_notify(self.notify, env, problems);
        if let (Some(w), Some(a)) = (&webhook, &accesslink) {
            check_dialect_secret(w, a, problems);
        }
        Some(Config {
            webhook: webhook?,
            admin: admin?,
            accesslink: accesslink?,
            users,
            poller: poller?,
            store: store?,
            simulator: simulator?,
            notify,
            warnings: Vec::new(),
        })
    }
}

/// A Standard Webhooks receiver needs a `whsec_` (base64) secret: any other could never verify.
fn check_dialect_secret(
    webhook: &WebhookConfig,
    accesslink: &AccessLinkConfig,
    problems: &mut Vec<String>,
) {
    use crate::accesslink::dialect::{self, Dialect};
    let Some(secret) = &accesslink.webhook_secret else {
        return;
    };
    if webhook.dialect == Dialect::StandardWebhooks && !dialect::is_secret(secret.expose()) {
        problems.push(
            "`accesslink.webhook_secret` must be a whsec_ secret (base64 after the prefix) for \
             `webhook.dialect` = \"standard-webhooks\""
                .into(),
        );
    }
}

impl RawWebhook {
    fn validate(self, problems: &mut Vec<String>) -> Option<WebhookConfig> {
        let listen = addr("webhook.listen", &self.listen, problems);
        if !self.path.starts_with('/') || self.path.len() < 2 {
            problems.push(format!(
                "`webhook.path` = {:?} must start with '/' and name a path, like \"/acl_webhook\"",
                self.path
            ));
        } else if self.path.starts_with("/oauth/") {
            problems.push(
                "`webhook.path` must not be under /oauth/ (the OAuth routes live there)".into(),
            );
        }
        if self.max_body < 256 || self.max_body > 16 * 1024 * 1024 {
            problems.push(format!(
                "`webhook.max_body` = {} must be between 256 and 16777216 bytes",
                self.max_body
            ));
        }
        let body_timeout = duration("webhook.body_timeout", &self.body_timeout, problems);
        if !(1..=100_000).contains(&self.max_connections) {
            problems.push(format!(
                "`webhook.max_connections` = {} must be between 1 and 100000",
                self.max_connections
            ));
        }
        if let Some(u) = &self.public_url {
            if !matches!(reqwest::Url::parse(u), Ok(p) if matches!(p.scheme(), "http" | "https")) {
                problems.push(format!(
                    "`webhook.public_url` = {u:?} is not an http(s) URL"
                ));
            }
        }
        let check_every = match self.check_every.as_str() {
            "off" => Some(None),
            every => duration("webhook.check_every", every, problems).map(Some),
        };
        let dialect = self
            .dialect
            .parse()
            .map_err(|e| problems.push(format!("`webhook.dialect`: {e}")));
        Some(WebhookConfig {
            dialect: dialect.ok()?,
            listen: listen?,
            path: self.path,
            max_body: usize::try_from(self.max_body).ok()?,
            body_timeout: body_timeout?,
            max_connections: usize::try_from(self.max_connections).ok()?,
            public_url: self.public_url,
            check_every: check_every?,
            reactivate: self.reactivate,
        })
    }
}

impl RawAdmin {
    fn validate(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        webhook_listen: Option<SocketAddr>,
        problems: &mut Vec<String>,
    ) -> Option<AdminConfig> {
        let listen = addr("admin.listen", &self.listen, problems);
        if let (Some(w), Some(a)) = (webhook_listen, listen) {
            if w == a && w.port() != 0 {
                problems.push(format!(
                    "`webhook.listen` and `admin.listen` are both {w}: the admin listener must be separate"
                ));
            }
        }
        let token = self
            .token
            .or_else(|| secret_from_env(env, ENV_ADMIN_TOKEN, "admin_token", problems));
        if let Some(t) = &token {
            if t.expose().trim().len() < 16 {
                problems.push(
                    "`admin.token` must be at least 16 characters (make one with `openssl rand \
                     -hex 32`)"
                        .into(),
                );
            } else if t.expose().chars().any(char::is_whitespace) {
                problems.push(
                    "`admin.token` must not contain spaces (make one with `openssl rand -hex 32`)"
                        .into(),
                );
            }
        }
        // Beyond loopback, anyone who reaches the port could list users, de-register them at
        // Polar and replace the webhook secret.
        if let Some(a) = listen {
            if !a.ip().is_loopback() && token.is_none() {
                problems.push(format!(
                    "`admin.listen` = {a} is reachable beyond this machine: set `admin.token` too \
                     (or listen on 127.0.0.1)"
                ));
            }
        }
        Some(AdminConfig {
            listen: listen?,
            token,
        })
    }
}

impl RawAccessLink {
    fn validate(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        simulator_enabled: bool,
        problems: &mut Vec<String>,
    ) -> Option<AccessLinkConfig> {
        let base_url = self.base_url.trim_end_matches('/').to_string();
        match reqwest::Url::parse(&base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if u.path() != "/" && !u.path().is_empty() {
                    problems.push(format!(
                        "`accesslink.base_url` = {base_url:?} must be scheme and host only, like \"https://www.polaraccesslink.com\""
                    ));
                }
            }
            _ => problems.push(format!(
                "`accesslink.base_url` = {:?} is not an http(s) URL",
                self.base_url
            )),
        }
        for (field, value) in [
            ("accesslink.authorize_url", Some(&self.authorize_url)),
            ("accesslink.token_url", Some(&self.token_url)),
            ("accesslink.redirect_uri", self.redirect_uri.as_ref()),
        ] {
            if let Some(v) = value {
                if !matches!(reqwest::Url::parse(v), Ok(u) if matches!(u.scheme(), "http" | "https"))
                {
                    problems.push(format!("`{field}` = {v:?} is not an http(s) URL"));
                }
            }
        }
        let client_secret = self
            .client_secret
            .or_else(|| secret_from_env(env, ENV_CLIENT_SECRET, "client_secret", problems));
        let webhook_secret = self
            .webhook_secret
            .or_else(|| secret_from_env(env, ENV_WEBHOOK_SECRET, "webhook_secret", problems));
        // An empty key would make every delivery "signed" by anyone who signs with it too.
        for (name, env_name, value) in [
            ("webhook_secret", ENV_WEBHOOK_SECRET, &webhook_secret),
            ("client_secret", ENV_CLIENT_SECRET, &client_secret),
        ] {
            if value.as_ref().is_some_and(|s| s.expose().trim().is_empty()) {
                problems.push(format!(
                    "`accesslink.{name}` (or {env_name}) is empty: leave it out instead{}",
                    if name == "webhook_secret" {
                        " (hookrace then uses the secret `hookrace webhook create` saved)"
                    } else {
                        ""
                    }
                ));
            }
        }
        if !simulator_enabled {
            if self.client_id.trim().is_empty() {
                problems.push(
                    "`accesslink.client_id` is required when the simulator is disabled".into(),
                );
            }
            if client_secret.is_none() {
                problems.push(format!(
                    "`accesslink.client_secret` is required when the simulator is disabled (or set {ENV_CLIENT_SECRET})"
                ));
            }
        }
        Some(AccessLinkConfig {
            base_url,
            client_id: self.client_id,
            client_secret,
            webhook_secret,
            authorize_url: self.authorize_url,
            token_url: self.token_url,
            redirect_uri: self.redirect_uri,
        })
    }
}

/// The users whose tokens are known up front: each valid one, once.
fn validate_users(
    raw: Vec<RawUser>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Vec<UserConfig> {
    let mut users: Vec<UserConfig> = Vec::new();
    for (i, u) in raw.into_iter().enumerate() {
        let access_token = u.access_token.or_else(|| {
            (u.user_id > 0)
                .then(|| {
                    secret_from_env(
                        env,
                        &format!("HOOKRACE_USER_{}_TOKEN", u.user_id),
                        &format!("user_{}_token", u.user_id),
                        problems,
                    )
                })
                .flatten()
        });
        let Some(access_token) = access_token else {
            problems.push(format!(
                "`users[{i}].access_token` is missing: give it here, in HOOKRACE_USER_{0}_TOKEN \
                 (or its _FILE), or as the credential `user_{0}_token`",
                u.user_id
            ));
            continue;
        };
        let u = UserConfig {
            user_id: u.user_id.max(0) as u64,
            access_token,
        };
        if u.user_id == 0 {
            problems.push(format!("`users[{i}].user_id` must be a positive integer"));
        } else if u.access_token.expose().trim().is_empty() {
            problems.push(format!("`users[{i}].access_token` is empty"));
        } else if users.iter().any(|x| x.user_id == u.user_id) {
            problems.push(format!(
                "`users[{i}].user_id` = {} appears twice",
                u.user_id
            ));
        } else {
            users.push(u);
        }
    }
    users
}

impl RawPoller {
    fn validate(self, problems: &mut Vec<String>) -> Option<PollerConfig> {
        let schedule = match (&self.every, &self.cron) {
            (Some(_), Some(_)) => {
                problems.push("`poller.every` and `poller.cron` are exclusive: give one".into());
                None
            }
            (Some(e), None) => match duration("poller.every", e, problems) {
                // The scheduler counts in whole seconds.
                Some(d) if d < Duration::from_secs(1) => {
                    problems.push(format!("`poller.every` = {e:?} must be at least 1s"));
                    None
                }
                d => d.map(PollSchedule::Every),
            },
            (None, Some(c)) => {
                let fields = c.split_whitespace().count();
                let parsed = valid_cron(c);
                if !(6..=7).contains(&fields) || parsed.is_err() {
                    problems.push(format!(
                        "`poller.cron` = {c:?} must be a cron expression with 6 or 7 fields, seconds first, like \"0 */5 * * * *\""
                    ));
                    None
                } else {
                    Some(PollSchedule::Cron(c.clone()))
                }
            }
            (None, None) => Some(PollSchedule::Every(Duration::from_secs(30))),
        };
        let mode = match self.mode.as_str() {
            "transactions" => Some(PollMode::Transactions),
            "list" => Some(PollMode::List),
            other => {
                problems.push(format!(
                    "`poller.mode` = {other:?} must be \"transactions\" or \"list\""
                ));
                None
            }
        };
        let strategy = match self.strategy.as_str() {
            "fixed" => Some(PollStrategy::Fixed),
            "adaptive" => {
                let max_every = duration("poller.max_every", &self.max_every, problems);
                match (&schedule, max_every) {
                    (Some(PollSchedule::Cron(_)), _) => {
                        problems.push(
                            "`poller.strategy` = \"adaptive\" chooses its own interval: give `poller.every` (the fastest), not `poller.cron`".into(),
                        );
                        None
                    }
                    (Some(PollSchedule::Every(every)), Some(max)) if max < *every => {
                        problems.push(format!(
                            "`poller.max_every` = {:?} must not be shorter than `poller.every`",
                            self.max_every
                        ));
                        None
                    }
                    (_, max) => max.map(|max_every| PollStrategy::Adaptive { max_every }),
                }
            }
            other => {
                problems.push(format!(
                    "`poller.strategy` = {other:?} must be \"fixed\" or \"adaptive\""
                ));
                None
            }
        };
        Some(PollerConfig {
            enabled: self.enabled,
            schedule: schedule?,
            mode: mode?,
            strategy: strategy?,
        })
    }
}

impl RawStore {
    fn validate(self, problems: &mut Vec<String>) -> Option<StoreConfig> {
        if self.path.trim().is_empty() {
            problems.push("`store.path` is empty".into());
            return None;
        }
        if !(8..=4096).contains(&self.cache_mb) {
            problems.push(format!(
                "`store.cache_mb` = {} must be between 8 and 4096 (MiB of sled's page cache)",
                self.cache_mb
            ));
            return None;
        }
        Some(StoreConfig {
            path: PathBuf::from(self.path),
            cache_bytes: u64::try_from(self.cache_mb).unwrap_or(64) * 1024 * 1024,
        })
    }
}

impl RawSimulator {
    fn validate(self, problems: &mut Vec<String>) -> Option<SimulatorConfig> {
        let listen = addr("simulator.listen", &self.listen, problems);
        if !(0..=100_000).contains(&self.users) {
            problems.push(format!(
                "`simulator.users` = {} must be between 0 and 100000",
                self.users
            ));
        }
        let exercise_every = duration("simulator.exercise_every", &self.exercise_every, problems);
        let activity_every = duration("simulator.activity_every", &self.activity_every, problems);
        let webhook_delay = match parse_delay_range(&self.webhook_delay) {
            Ok(r) => Some(r),
            Err(e) => {
                problems.push(format!(
                    "`simulator.webhook_delay` = {:?} is not a range like \"20ms..400ms\": {e}",
                    self.webhook_delay
                ));
                None
            }
        };
        rate(
            "simulator.webhook_drop_rate",
            self.webhook_drop_rate,
            problems,
        );
        rate(
            "simulator.webhook_duplicate_rate",
            self.webhook_duplicate_rate,
            problems,
        );
        Some(SimulatorConfig {
            enabled: self.enabled,
            listen: listen?,
            users: u32::try_from(self.users).ok()?,
            exercise_every: exercise_every?,
            activity_every: activity_every?,
            webhook_delay: webhook_delay?,
            webhook_drop_rate: self.webhook_drop_rate,
            webhook_duplicate_rate: self.webhook_duplicate_rate,
            seed: self.seed,
            replay: Vec::new(),
        })
    }
}

/// Whether `expr` is a cron expression the scheduler accepts (seconds first).
fn valid_cron(expr: &str) -> Result<(), String> {
    tokio_cron_scheduler::Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A secret from the environment: the variable `var` itself, else the file `{var}_FILE` names,
/// else the systemd credential `$CREDENTIALS_DIRECTORY/{credential}` (`LoadCredential=`; outside
/// systemd, `config::load` passes the configuration file's directory in its place), so a
/// secret need not sit in the configuration file or in a plain environment variable. A trailing
/// newline is not part of the secret.
pub(super) fn secret_from_env(
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
    credential: &str,
    problems: &mut Vec<String>,
) -> Option<Secret> {
    if let Some(v) = env(var) {
        return Some(Secret::new(v));
    }
    let path = env(&format!("{var}_FILE")).map(PathBuf::from).or_else(|| {
        env("CREDENTIALS_DIRECTORY")
            .map(|d| PathBuf::from(d).join(credential))
            .filter(|p| p.exists())
    })?;
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().is_empty() => {
            problems.push(format!(
                "the secret file {} ({var}_FILE, the credential `{credential}`, or the file of \
                 that name beside the configuration) is empty: write the secret into it \
                 (sudoedit {0}), or remove the file",
                path.display()
            ));
            None
        }
        Ok(s) => Some(Secret::new(s.trim_end_matches(['\n', '\r']).to_string())),
        Err(e) => {
            problems.push(format!(
                "cannot read the secret in {} ({var}_FILE, the credential `{credential}`, or the \
                 file of that name beside the configuration){}: {e}",
                path.display(),
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " — it is root's: run the command with sudo"
                } else {
                    ""
                }
            ));
            None
        }
    }
}

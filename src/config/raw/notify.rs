//! `[[notify]]`: each sink checked (kind, URL or command, secrets, event names, durations), under
//! a name unique among the sinks.

use serde::Deserialize;

use super::*;

/// One `[[notify]]` table as written.
#[derive(Deserialize)]
pub(super) struct RawNotify {
    kind: String,
    name: Option<String>,
    url: Option<String>,
    /// One secret, or several (the first is the newest; each signs) for rotation.
    secret: Option<OneOrMany>,
    token: Option<Secret>,
    command: Option<Vec<String>>,
    /// Environment variables an exec command gets beside the few it inherits.
    env: Option<std::collections::BTreeMap<String, String>>,
    events: Option<Vec<String>>,
    include_data: Option<bool>,
    timeout: Option<String>,
    give_up_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Secret),
    Many(Vec<Secret>),
}

/// The longest one attempt of a sink may take.
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10 * 60);
/// The longest a sink's event is retried before it is parked.
const MAX_GIVE_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The sinks, each checked, under unique names.
pub(super) fn validate_notify(
    raw: Vec<RawNotify>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Vec<NotifyConfig> {
    let kinds: Vec<String> = raw.iter().map(|n| n.kind.clone()).collect();
    let mut sinks: Vec<NotifyConfig> = Vec::new();
    for (i, n) in raw.into_iter().enumerate() {
        let field = format!("notify[{i}]");
        // The kind's name when it is the only sink of its kind, else the kind numbered by position.
        let name = n.name.clone().unwrap_or_else(|| {
            match kinds.iter().filter(|k| **k == n.kind).count() {
                1 => n.kind.clone(),
                _ => format!("{}-{}", n.kind, i + 1),
            }
        });
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(format!(
                "`{field}.name` = {name:?} must be letters, digits, '-' and '_' only"
            ));
            continue;
        }
        if sinks.iter().any(|s| s.name == name) {
            problems.push(format!(
                "`{field}.name` = {name:?} is used twice: give each sink its own `name`"
            ));
            continue;
        }
        if let Some(sink) = n.validate(&field, name, env, problems) {
            sinks.push(sink);
        }
    }
    sinks
}

impl RawNotify {
    fn validate(
        mut self,
        field: &str,
        name: String,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) -> Option<NotifyConfig> {
        let kind = match self.kind.as_str() {
            "webhook" => self.webhook_sink(field, &name, env, problems),
            "exec" => self.exec_sink(field, problems),
            "ntfy" => self.ntfy_sink(field, &name, env, problems),
            other => {
                problems.push(format!(
                    "`{field}.kind` = {other:?} must be \"webhook\", \"exec\" or \"ntfy\""
                ));
                None
            }
        }?;
        check_events(field, self.events.as_deref(), problems);
        let (timeout, give_up_after) =
            self.durations(field, matches!(kind, NotifyKind::Exec { .. }), problems);
        Some(NotifyConfig {
            name,
            kind,
            events: self.events,
            include_data: self.include_data.unwrap_or(true),
            timeout: timeout?,
            give_up_after: give_up_after?,
        })
    }

    /// The sink's `url`, required and http(s).
    fn url(&self, field: &str, problems: &mut Vec<String>) -> Option<String> {
        match &self.url {
            Some(u) if matches!(reqwest::Url::parse(u), Ok(p) if matches!(p.scheme(), "http" | "https")) => {
                Some(u.clone())
            }
            Some(u) => {
                problems.push(format!("`{field}.url` = {u:?} is not an http(s) URL"));
                None
            }
            None => {
                problems.push(format!(
                    "`{field}.url` is required for kind {:?}",
                    self.kind
                ));
                None
            }
        }
    }

    /// A problem for each of `keys` (those of other kinds of sink) that is set.
    fn refuse(&self, field: &str, keys: &[&str], problems: &mut Vec<String>) {
        for key in keys {
            let set = match *key {
                "url" => self.url.is_some(),
                "secret" => self.secret.is_some(),
                "token" => self.token.is_some(),
                "command" => self.command.is_some(),
                "env" => self.env.is_some(),
                _ => false,
            };
            if set {
                problems.push(format!(
                    "`{field}.{key}` does not apply to kind {:?}",
                    self.kind
                ));
            }
        }
    }

    /// `kind = "webhook"`: a URL and Standard Webhooks secrets. The secret of the sink named
    /// `orders` may come from HOOKRACE_NOTIFY_ORDERS_SECRET (or its _FILE, or the credential
    /// `notify_orders_secret`); spaces separate several.
    fn webhook_sink(
        &mut self,
        field: &str,
        name: &str,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) -> Option<NotifyKind> {
        self.refuse(field, &["command", "env", "token"], problems);
        let (env_var, credential) = sink_secret_names(name, "secret");
        let secrets = match self.secret.take() {
            Some(OneOrMany::One(s)) => vec![s],
            Some(OneOrMany::Many(v)) => v,
            None => secret_from_env(env, &env_var, &credential, problems)
                .map(|s| {
                    s.expose()
                        .split_whitespace()
                        .map(Secret::new)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        };
        if secrets.is_empty() {
            problems.push(format!(
                "`{field}.secret` is required for a webhook sink (a Standard Webhooks secret like \"whsec_…\", or set {env_var})"
            ));
        }
        for s in &secrets {
            check_signing_secret(field, s, problems);
        }
        Some(NotifyKind::Webhook {
            url: self.url(field, problems)?,
            secrets,
        })
    }

    /// `kind = "exec"`: a command and the environment it is given.
    fn exec_sink(&mut self, field: &str, problems: &mut Vec<String>) -> Option<NotifyKind> {
        self.refuse(field, &["url", "secret", "token"], problems);
        let env = self.env.take().unwrap_or_default();
        for name in env.keys() {
            let fine = !name.is_empty()
                && !name.contains('=')
                && !name.contains('\0')
                && !name.starts_with("HOOKRACE_EVENT_");
            if !fine {
                problems.push(format!(
                    "`{field}.env`: {name:?} is not a variable the command can be given"
                ));
            }
        }
        match self.command.take() {
            Some(c) if !c.is_empty() && !c[0].trim().is_empty() => {
                Some(NotifyKind::Exec { command: c, env })
            }
            _ => {
                problems.push(format!(
                    "`{field}.command` must name a program, like [\"/usr/local/bin/on-new-data\"]"
                ));
                None
            }
        }
    }

    /// `kind = "ntfy"`: a topic URL and an optional token, which may also come from
    /// HOOKRACE_NOTIFY_<NAME>_TOKEN (its _FILE, the credential `notify_<name>_token`): a token
    /// need not sit in the configuration file.
    fn ntfy_sink(
        &mut self,
        field: &str,
        name: &str,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) -> Option<NotifyKind> {
        self.refuse(field, &["command", "env", "secret"], problems);
        let token = self.token.take().or_else(|| {
            let (var, credential) = sink_secret_names(name, "token");
            secret_from_env(env, &var, &credential, problems)
        });
        Some(NotifyKind::Ntfy {
            url: self.url(field, problems)?,
            token,
        })
    }

    /// `timeout` (one attempt: 10 s by default, 30 s for a command) and `give_up_after` (24 h),
    /// within their ceilings: one attempt is minutes at most, and retrying stops within a month
    /// and after at least one attempt's time.
    fn durations(
        &self,
        field: &str,
        exec: bool,
        problems: &mut Vec<String>,
    ) -> (Option<std::time::Duration>, Option<std::time::Duration>) {
        let default_timeout = if exec { "30s" } else { "10s" };
        let timeout = duration(
            &format!("{field}.timeout"),
            self.timeout.as_deref().unwrap_or(default_timeout),
            problems,
        );
        let give_up_after = duration(
            &format!("{field}.give_up_after"),
            self.give_up_after.as_deref().unwrap_or("24h"),
            problems,
        );
        if let Some(t) = timeout.filter(|t| *t > MAX_TIMEOUT || t.is_zero()) {
            problems.push(format!(
                "`{field}.timeout` = {} must be between 1 ms and {}",
                humantime::format_duration(t),
                humantime::format_duration(MAX_TIMEOUT)
            ));
        }
        if let (Some(t), Some(g)) = (timeout, give_up_after) {
            if g < t || g > MAX_GIVE_UP_AFTER {
                problems.push(format!(
                    "`{field}.give_up_after` = {} must be at least the timeout ({}) and at most {}",
                    humantime::format_duration(g),
                    humantime::format_duration(t),
                    humantime::format_duration(MAX_GIVE_UP_AFTER)
                ));
            }
        }
        (timeout, give_up_after)
    }
}

/// Where a sink's `what` (`secret`, `token`) may come from besides the file: the environment
/// variable `HOOKRACE_NOTIFY_<NAME>_<WHAT>` (or its `_FILE`) and the systemd credential
/// `notify_<name>_<what>`.
fn sink_secret_names(name: &str, what: &str) -> (String, String) {
    let env_var = format!(
        "HOOKRACE_NOTIFY_{}_{}",
        name.to_ascii_uppercase().replace('-', "_"),
        what.to_ascii_uppercase()
    );
    let credential = format!("notify_{}_{what}", name.replace('-', "_"));
    (env_var, credential)
}

/// A Standard Webhooks signing secret: "whsec_" (optional) and base64 of at least 16 bytes.
fn check_signing_secret(field: &str, s: &Secret, problems: &mut Vec<String>) {
    use base64::Engine;
    let b64 = s.expose().strip_prefix("whsec_").unwrap_or(s.expose());
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(key) if key.len() >= 16 => {}
        Ok(_) => problems.push(format!(
            "`{field}.secret`: a signing secret must hold at least 16 bytes"
        )),
        Err(_) => problems.push(format!(
            "`{field}.secret` is not a Standard Webhooks secret (\"whsec_\" and base64)"
        )),
    }
}

/// `events`, when given: not empty, each an event type's name.
fn check_events(field: &str, events: Option<&[String]>, problems: &mut Vec<String>) {
    let Some(events) = events else { return };
    if events.is_empty() {
        problems.push(format!(
            "`{field}.events` is empty: leave it out to send every event type"
        ));
    }
    for e in events {
        if e.is_empty() || !e.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            problems.push(format!(
                "`{field}.events`: {e:?} is not an event type like \"EXERCISE\""
            ));
        }
    }
}

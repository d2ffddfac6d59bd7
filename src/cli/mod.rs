//! The command line: one binary, one subcommand per job. This file parses; [`run`] calls the
//! library function each command names and maps its result to an exit code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub mod run;

use crate::operations::manage::WebhookAction;
use crate::sim::SimSettings;

/// Exit code when the thing checked failed: a receiver failed a rule, a configuration is
/// invalid (the daemon's unit does not restart on it: restarting cannot fix it).
pub const EXIT_FAILED: u8 = 1;
/// Exit code when the tool could not do its job: no simulator or daemon answers, a network or
/// store error, AccessLink refused.
pub const EXIT_ERROR: u8 = 2;
/// Exit code for bad usage: an unknown command or option, a value out of range (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// The error of a command whose check came out negative (exit [`EXIT_FAILED`]), as opposed to
/// one that could not check (exit [`EXIT_ERROR`]).
#[derive(Debug)]
pub struct CheckFailed(pub String);

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckFailed {}

#[derive(Debug, Parser)]
#[command(
    name = "hookrace",
    version,
    about = "Polar AccessLink webhooks versus polling, measured",
    long_about = "hookrace receives Polar AccessLink webhooks and polls AccessLink beside them, stores what \
                  both channels see once, and measures which channel saw each new piece of data first.",
    after_help = "Exit codes: 0 ok; 1 the thing checked failed (a receiver failed a rule, a \
                  configuration is invalid); 2 hookrace could not do its job (no simulator or daemon \
                  answers, a network or store error); 64 bad usage.\n\nExample:\n  hookrace demo --seed 3"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Colour for a person: auto (on a terminal, unless $NO_COLOR is set), always or never.
    #[arg(long, global = true, value_enum, default_value_t)]
    pub color: crate::telemetry::Color,
    /// The log lines on stderr: text (under journald: with their priority, no timestamp) or
    /// json (one object per line, for a log shipper).
    #[arg(long, global = true, value_enum, default_value_t)]
    pub log_format: crate::telemetry::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM/SIGINT: webhook listener, admin listener, store.
    #[command(
        after_help = "Example:\n  sudo hookrace run -c /etc/hookrace/config.toml\n  hookrace run --log-format json          # the embedded default: the simulator on loopback"
    )]
    Run {
        /// The configuration file (default: $HOOKRACE_CONFIG, else /etc/hookrace/config.toml when
        /// it exists, else the embedded default, which uses the simulator; the one used is printed).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// The whole race on this machine: simulator + daemon on loopback, live progress, the report.
    #[command(
        after_help = "Example:\n  hookrace demo\n  hookrace demo --strategy adaptive --outage 15s@20s --seed 3\n  hookrace demo --format json > race.json"
    )]
    Demo(crate::apps::demo::DemoArgs),
    /// Print the completion script for SHELL (e.g. `hookrace completions bash >
    /// ~/.local/share/bash-completion/completions/hookrace`).
    #[command(
        after_help = "Example:\n  hookrace completions bash > ~/.local/share/bash-completion/completions/hookrace\n  hookrace completions zsh > ~/.zfunc/_hookrace"
    )]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print hookrace's man page (roff), e.g. `hookrace man | man -l -`.
    #[command(after_help = "Example:\n  hookrace man | man -l -")]
    Man,
    /// The whole delay-versus-cost curve: every poll interval, webhooks, the adaptive net, modelled
    /// at any number of users in simulated time (`--svg` draws the chart).
    #[command(
        after_help = "Example:\n  hookrace whatif --users 50 --items-per-day 5\n  hookrace whatif --format json --svg curve.svg"
    )]
    Whatif(crate::apps::whatif::WhatifArgs),
    /// The comparison report from the store (works while the daemon runs, or after).
    #[command(
        after_help = "Example:\n  sudo hookrace report\n  hookrace report --store race-data --format html > race.html"
    )]
    Report {
        /// The configuration file (default: $HOOKRACE_CONFIG, else /etc/hookrace/config.toml when
        /// it exists, else the embedded default, which uses the simulator; the one used is printed).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Read this store directory instead of the configuration's (a demo's `--store DIR`);
        /// never created: a missing store is an error.
        #[arg(long)]
        store: Option<PathBuf>,
        /// How the report is printed (html: one self-contained page).
        #[arg(long, value_enum, default_value_t = crate::apps::report::Format::Table)]
        format: crate::apps::report::Format,
    },
    /// Manage the client's AccessLink webhook (client credentials).
    #[command(
        after_help = "Example:\n  sudo hookrace webhook create --url https://hooks.example.org/acl_webhook\n  sudo hookrace webhook list --format json"
    )]
    Webhook {
        /// The configuration file (default: $HOOKRACE_CONFIG, else /etc/hookrace/config.toml when
        /// it exists, else the embedded default, which uses the simulator; the one used is printed).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// The users whose data hookrace reads.
    #[command(
        after_help = "Example:\n  sudo hookrace users list\n  sudo hookrace users remove --user 12345"
    )]
    Users {
        /// The configuration file (default: $HOOKRACE_CONFIG, else /etc/hookrace/config.toml when
        /// it exists, else the embedded default, which uses the simulator; the one used is printed).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Your app's side: the `[[notify]]` sinks.
    #[command(after_help = "Example:\n  sudo hookrace notify test")]
    Notify {
        /// The configuration file (default: $HOOKRACE_CONFIG, else /etc/hookrace/config.toml when
        /// it exists, else the embedded default, which uses the simulator; the one used is printed).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Run the AccessLink simulator alone (for tests, demos and students).
    #[command(
        after_help = "Example:\n  hookrace sim --users 2 --exercise-every 30s\n  hookrace sim --class 12 --class-file class.txt --listen 0.0.0.0:7070\n  hookrace sim trigger EXERCISE --user 10001\n  hookrace sim --dialect standard-webhooks --users 2"
    )]
    Sim(SimArgs),
    /// Grade a webhook receiver against Polar's contract on a simulator: PING, signatures,
    /// fetching with the right token, duplicates, bursts, unknown events, data gone. Exit 0 only
    /// when every rule passes.
    #[command(
        after_help = "Example:\n  hookrace check-receiver http://127.0.0.1:5000/acl_webhook --env-file receiver.env\n  hookrace check-receiver http://127.0.0.1:5000/acl_webhook --format json --junit grade.xml\n  hookrace check-receiver http://127.0.0.1:8001/webhook --dialect standard-webhooks --env-file receiver.env"
    )]
    CheckReceiver(crate::apps::workbench::grade::CheckArgs),
    /// Copy the whole store to FILE, while the daemon runs (through its admin listener) or not.
    #[command(after_help = "Example:\n  sudo hookrace backup /var/backups/hookrace-2026-12-07.bak")]
    Backup {
        /// The configuration file (default: $HOOKRACE_CONFIG, else /etc/hookrace/config.toml when
        /// it exists, else the embedded default, which uses the simulator; the one used is printed).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Read this store directory instead of the configuration's (no daemon may hold it).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Where the backup goes: written beside it, checked, then renamed into place.
        file: PathBuf,
    },
    /// Recorded traffic as a trace file: `trace export` writes a store's deliveries and
    /// sightings as JSON lines (ids hashed unless kept), for `whatif --trace` and `replay`.
    #[command(
        after_help = "Example:\n  hookrace trace export --store race-data -o race.trace\n  hookrace trace export --store restored --since 2026-11-01 --until 2026-12-01 -o november.trace"
    )]
    Trace {
        #[command(subcommand)]
        command: TraceCommand,
    },
    /// Send recorded deliveries again to a receiver, re-signed with its secret, at their
    /// original spacing scaled by --speed; a summary of its answers. Exit 1 if any was not 2xx.
    #[command(
        after_help = "Example:\n  hookrace replay --store race-data --to http://127.0.0.1:5000/acl_webhook --secret \"$SECRET\" --speed 60\n  hookrace replay --trace november.trace --to http://127.0.0.1:5000/acl_webhook --secret \"$SECRET\" --speed 3600 --event EXERCISE"
    )]
    Replay(crate::apps::replay::ReplayArgs),
    /// Make a new store in a new directory from a backup FILE (a store is never overwritten).
    #[command(
        after_help = "Example:\n  sudo hookrace restore /var/backups/hookrace-2026-12-07.bak --store /var/lib/hookrace/restored"
    )]
    Restore {
        /// The backup `hookrace backup` wrote.
        file: PathBuf,
        /// The new store's directory: it must not exist, or be empty.
        #[arg(long)]
        store: PathBuf,
    },
    /// Validate a configuration: exit 0, or print every problem and exit 1.
    #[command(
        after_help = "Example:\n  sudo hookrace check-config\n  hookrace check-config -c config.toml"
    )]
    CheckConfig {
        /// The configuration file (default: $HOOKRACE_CONFIG, else /etc/hookrace/config.toml when
        /// it exists, else the embedded default, which uses the simulator; the one used is printed).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

/// What `hookrace trace` does.
#[derive(Debug, Clone, Subcommand)]
pub enum TraceCommand {
    /// Write a store's traffic as a trace (JSON lines; the format is in docs/trace.md).
    #[command(
        after_help = "Example:\n  hookrace trace export --store race-data -o race.trace\n  hookrace trace export --store race-data --keep-ids | jq -c .first"
    )]
    Export(crate::apps::traffic::ExportArgs),
}

/// Options of `hookrace sim`.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimArgs {
    /// Talk to a running simulator instead of starting one.
    #[command(subcommand)]
    pub action: Option<SimAction>,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Users created at start, registered, each with an access token.
    #[arg(long, default_value_t = 3)]
    pub users: u32,
    /// A class on one simulator: this many students, each with their own client credentials,
    /// two users and one webhook; the scoreboard is at /sim/class.
    #[arg(long, default_value_t = 0)]
    pub class: u32,
    /// Also write the class's credentials to this file (a table to hand out).
    #[arg(long, requires = "class")]
    pub class_file: Option<PathBuf>,
    /// Seed of the generator and of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Mean time between new exercises per user (exponential); 0s turns the generator off.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub exercise_every: Duration,
    /// Mean time between daily activity updates per user; 0s turns them off.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub activity_every: Duration,
    /// Mean time between nights (sleep and Nightly Recharge) per user; 0s turns them off.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub sleep_every: Duration,
    /// Mean time between continuous heart rate updates per user; 0s turns them off.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub heart_rate_every: Duration,
    /// Webhook delivery delay range.
    #[arg(long, default_value = "20ms..400ms")]
    pub webhook_delay: String,
    /// Share of deliveries never sent.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Share of deliveries sent twice.
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_rate: f64,
    /// Share of API requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Lowered rate limits, `SHORT,LONG` requests per window (default: Polar's formula).
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// The client id the simulator accepts.
    #[arg(long, default_value = "hookrace-sim")]
    pub client_id: String,
    /// The client secret the simulator accepts.
    #[arg(long, default_value = "hookrace-sim-secret")]
    pub client_secret: String,
    /// Where OAuth authorize redirects when the request names no redirect_uri.
    #[arg(long)]
    pub redirect_uri: Option<String>,
    /// Make a recording's items again (a trace from `hookrace trace export`) at their times,
    /// instead of random ones: its users, types, lost deliveries and delivery delays.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// With --replay: time runs this many times faster than in the recording.
    #[arg(long, default_value_t = 1.0, requires = "replay")]
    pub speed: f64,
    /// How its webhook deliveries are signed: `polar` (Polar's own) or `standard-webhooks`
    /// (`webhook-id`, `webhook-timestamp`, `webhook-signature`; a `whsec_` secret; no PING).
    #[arg(long, default_value = "polar", value_parser = parse_dialect)]
    pub dialect: crate::accesslink::dialect::Dialect,
}

/// `--dialect`'s value: `polar` or `standard-webhooks`.
pub fn parse_dialect(s: &str) -> Result<crate::accesslink::dialect::Dialect, String> {
    s.parse()
}

/// What `hookrace sim trigger|log` do to a running simulator.
#[derive(Debug, Clone, Subcommand)]
pub enum SimAction {
    /// Make new data now and let the simulator deliver it to the registered webhook (or send a
    /// PING), optionally with a one-shot fault on that delivery.
    #[command(
        after_help = "Example:\n  hookrace sim trigger EXERCISE --user 10001\n  hookrace sim trigger ping\n  hookrace sim trigger SLEEP --drop --format json\n  hookrace sim trigger EXERCISE --stale-timestamp\n  hookrace sim trigger --replay-old"
    )]
    Trigger(crate::apps::workbench::TriggerArgs),
    /// Every delivery the simulator made, the receiver's answer, and what the receiver fetched.
    #[command(
        after_help = "Example:\n  hookrace sim log --follow\n  hookrace sim log --format json | jq length"
    )]
    Log(crate::apps::workbench::LogArgs),
    /// Send a logged delivery again to the same receiver, byte for byte (same body, same
    /// signature): what a replay attacker would send.
    #[command(
        after_help = "Example:\n  hookrace sim resend 12\n  hookrace sim resend 12 --sim 127.0.0.1:7070 --format json"
    )]
    Resend(crate::apps::workbench::ResendArgs),
}

impl SimArgs {
    /// The simulator settings these options mean; the error names the bad option.
    pub fn settings(&self) -> Result<SimSettings, String> {
        let a = self;
        let delay = crate::config::parse_delay_range(&a.webhook_delay)
            .map_err(|e| format!("--webhook-delay {:?}: {e}", a.webhook_delay))?;
        for (name, v) in [
            ("--drop-rate", a.drop_rate),
            ("--duplicate-rate", a.duplicate_rate),
            ("--error-rate", a.error_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} {v} must be between 0 and 1"));
            }
        }
        let rate_limit = match &a.rate_limit {
            None => None,
            Some(s) => {
                let parts: Vec<Option<u64>> = s.split(',').map(|p| p.trim().parse().ok()).collect();
                match parts.as_slice() {
                    [Some(short), Some(long)] => Some((*short, *long)),
                    _ => return Err(format!("--rate-limit {s:?} must be SHORT,LONG like 50,500")),
                }
            }
        };
        let replay = match &a.replay {
            None => Vec::new(),
            Some(path) => crate::trace::Trace::read_file(path)
                .and_then(|t| t.schedule(a.speed))
                .map_err(|e| format!("--replay {}: {e:#}", path.display()))?,
        };
        // A replay replaces the random generator.
        let nonzero = |d: Duration| (!d.is_zero() && replay.is_empty()).then_some(d);
        let users_replayed = replay.iter().map(|r| r.user + 1).max().unwrap_or(0);
        Ok(SimSettings {
            class: a.class,
            seed: a.seed,
            users: a
                .users
                .max(crate::units::u32_saturating(users_replayed as u64)),
            exercise_every: nonzero(a.exercise_every),
            activity_every: nonzero(a.activity_every),
            sleep_every: nonzero(a.sleep_every),
            heart_rate_every: nonzero(a.heart_rate_every),
            replay,
            client_id: a.client_id.clone(),
            client_secret: a.client_secret.clone(),
            default_redirect_uri: a.redirect_uri.clone(),
            faults: crate::sim::Faults {
                drop_rate: a.drop_rate,
                duplicate_rate: a.duplicate_rate,
                delay_ms: (crate::units::millis(delay.0), crate::units::millis(delay.1)),
                error_rate: a.error_rate,
                rate_limit,
                ..crate::sim::Faults::default()
            },
            dialect: a.dialect,
        })
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum WebhookCommand {
    /// Create the webhook; AccessLink PINGs the url first, so the receiver must be running.
    #[command(
        after_help = "Example:\n  sudo hookrace webhook create --url https://hooks.example.org/acl_webhook --events EXERCISE,SLEEP"
    )]
    Create {
        /// The public URL of the receiver, e.g. https://example.org/acl_webhook.
        #[arg(long)]
        url: String,
        /// Comma-separated events (default: the six documented events; PHYSICAL_INFORMATION,
        /// only in Polar's newest spec, when named here).
        #[arg(long)]
        events: Option<String>,
        /// Also print the signature secret (it is saved in the store either way).
        #[arg(long)]
        show_secret: bool,
    },
    /// Show the webhook.
    #[command(after_help = "Example:\n  sudo hookrace webhook list --format json")]
    List {
        /// table: id, state, url and events on a line; json: one array of webhooks.
        #[arg(long, value_enum, default_value_t)]
        format: crate::apps::DataFormat,
    },
    /// Change the webhook's url (PINGed) and/or events.
    #[command(
        after_help = "Example:\n  sudo hookrace webhook update --id abcd1234 --events EXERCISE,SLEEP"
    )]
    Update {
        /// The webhook's id (`hookrace webhook list` shows it).
        #[arg(long)]
        id: String,
        /// The new public URL of the receiver.
        #[arg(long)]
        url: Option<String>,
        /// The new comma-separated events, e.g. EXERCISE,SLEEP.
        #[arg(long)]
        events: Option<String>,
    },
    /// Delete the webhook.
    #[command(after_help = "Example:\n  sudo hookrace webhook delete --id abcd1234")]
    Delete {
        /// The webhook's id (`hookrace webhook list` shows it).
        #[arg(long)]
        id: String,
    },
    /// Activate the webhook (AccessLink PINGs it).
    #[command(after_help = "Example:\n  sudo hookrace webhook activate")]
    Activate,
    /// Deactivate the webhook.
    #[command(after_help = "Example:\n  sudo hookrace webhook deactivate")]
    Deactivate,
}

impl WebhookCommand {
    /// The plain arguments the management code takes (events split and upper-cased).
    pub fn action(&self) -> WebhookAction {
        let events = |e: &Option<String>| -> Option<Vec<String>> {
            e.as_ref().map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_uppercase())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
        };
        match self {
            WebhookCommand::Create {
                url,
                events: ev,
                show_secret,
            } => WebhookAction::Create {
                url: url.clone(),
                events: events(ev),
                show_secret: *show_secret,
            },
            WebhookCommand::List { format } => WebhookAction::List {
                json: *format == crate::apps::DataFormat::Json,
            },
            WebhookCommand::Update {
                id,
                url,
                events: ev,
            } => WebhookAction::Update {
                id: id.clone(),
                url: url.clone(),
                events: events(ev),
            },
            WebhookCommand::Delete { id } => WebhookAction::Delete { id: id.clone() },
            WebhookCommand::Activate => WebhookAction::Activate,
            WebhookCommand::Deactivate => WebhookAction::Deactivate,
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum NotifyCommand {
    /// Send a signed test event to each sink and say how it answered.
    #[command(after_help = "Example:\n  sudo hookrace notify test")]
    Test,
}

#[derive(Debug, Clone, Subcommand)]
pub enum UsersCommand {
    /// List the users (never their tokens).
    #[command(after_help = "Example:\n  sudo hookrace users list --format json")]
    List {
        /// table: a line per user; json: one array of users.
        #[arg(long, value_enum, default_value_t)]
        format: crate::apps::DataFormat,
    },
    /// De-register a user at AccessLink and forget their token.
    #[command(after_help = "Example:\n  sudo hookrace users remove --user 12345")]
    Remove {
        /// The Polar user id (`hookrace users list` shows it).
        #[arg(long)]
        user: u64,
    },
}

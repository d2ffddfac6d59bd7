//! `hookrace check-receiver URL`: grades a webhook receiver against Polar's contract. It starts a
//! simulator (or uses `--sim`), fixes the webhook secret and two users' tokens in advance (and
//! prints them, or writes them to `--env-file` for the receiver to read), registers URL as the
//! client's webhook (Polar's PING must pass first), then runs each rule as a scenario through
//! `POST /sim/trigger` and judges it from the simulator's log: what the receiver answered, how
//! fast, and what it fetched with whose token. Output: a table with a one-line score, JSON, or a
//! JUnit file for CI; the exit code is 0 only when every required rule passes.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::sim_base;
use crate::accesslink::dialect::Dialect;
use crate::apps::DataFormat;

/// The simulator's delivery timeout: a delivery not answered within it is lost. Polar does not
/// publish its own; this is the budget a receiver must stay far inside.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer slower than this is a warning: a receiver should answer at once and work after.
const SLOW_ANSWER_MS: u64 = 1000;
/// How many fetches of data that is gone count as retrying for ever.
const MAX_FETCHES_OF_GONE: usize = 3;

/// `hookrace check-receiver`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The receiver's URL, as Polar would call it (e.g. http://127.0.0.1:8000/acl_webhook).
    pub url: String,
    /// Use this running simulator (address or URL) instead of starting one; its webhook, if any,
    /// is replaced.
    #[arg(long)]
    pub sim: Option<String>,
    /// With --sim on a class's simulator: the teacher's `teacher:TOKEN` (the grader drives the
    /// simulator's own client, which only the teacher may).
    #[arg(
        long,
        env = "HOOKRACE_SIM_AUTH",
        hide_env_values = true,
        requires = "sim"
    )]
    pub auth: Option<String>,
    /// The webhook secret the receiver verifies signatures with (default: a new random one).
    #[arg(long)]
    pub secret: Option<String>,
    /// The access tokens of the two test users, `TOKEN_A,TOKEN_B` (default: new random ones).
    #[arg(long, value_delimiter = ',', num_args = 1..=2)]
    pub tokens: Vec<String>,
    /// Write the secret, the users and their tokens to this file (KEY=value lines) before the
    /// webhook is registered, for the receiver to read.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// How long to wait for the receiver's fetches after each delivery.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub fetch_wait: Duration,
    /// How the result is printed.
    #[arg(long, value_enum, default_value_t = DataFormat::Table)]
    pub format: DataFormat,
    /// Also write the result as a JUnit XML file (one test case per rule), for CI.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// The dialect the receiver speaks: `polar` (Polar's contract) or `standard-webhooks`
    /// (a `whsec_` secret; timestamps, rotation and message ids judged too).
    #[arg(long, default_value = "polar", value_parser = crate::cli::parse_dialect)]
    pub dialect: Dialect,
}

/// A rule's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// Kept, with a recommendation not followed.
    Warn,
    Fail,
    /// Cannot be seen: the rule judges what the receiver does with the data, and it never
    /// fetched any (the `fetch` rule fails for that, and only it).
    #[serde(rename = "not_judged")]
    NotJudged,
}

/// One rule of the contract, judged.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// A short stable name (`ping`, `signed-delivery`, …).
    pub rule: &'static str,
    /// What the rule asks.
    pub title: &'static str,
    /// Whether a failure fails the grade (every rule is required; a warning never fails).
    pub required: bool,
    pub outcome: Outcome,
    /// What was observed.
    pub observed: String,
    /// How to fix it (empty when it passed).
    pub fix: String,
}

/// The whole grade.
#[derive(Debug, Clone, Serialize)]
pub struct Grade {
    pub receiver: String,
    pub dialect: Dialect,
    pub simulator: String,
    pub verdicts: Vec<Verdict>,
    /// The receiver's answer times to signed deliveries, in milliseconds.
    pub answer_p50_ms: Option<u64>,
    pub answer_p95_ms: Option<u64>,
}

impl Grade {
    /// A grade of `receiver` in `dialect` on the simulator at `simulator`, no rule judged yet.
    fn new(receiver: &str, dialect: Dialect, simulator: &str) -> Grade {
        Grade {
            receiver: receiver.to_string(),
            dialect,
            simulator: simulator.to_string(),
            verdicts: Vec::new(),
            answer_p50_ms: None,
            answer_p95_ms: None,
        }
    }

    /// Adds `verdicts`, telling `judged` of each as it comes, so a slow receiver shows progress.
    fn add(&mut self, verdicts: Vec<Verdict>, judged: &mut (dyn FnMut(&Verdict) + Send)) {
        for v in verdicts {
            judged(&v);
            self.verdicts.push(v);
        }
    }

    pub fn passed(&self) -> bool {
        self.verdicts
            .iter()
            .all(|v| !(v.required && v.outcome == Outcome::Fail))
    }

    /// `7 of 9 rules pass, 1 warning, 1 failure`.
    pub fn score(&self) -> String {
        let n = |o| self.verdicts.iter().filter(|v| v.outcome == o).count();
        let not_judged = match n(Outcome::NotJudged) {
            0 => String::new(),
            k => format!(", {k} not judged"),
        };
        format!(
            "{} of {} rules pass, {} with a warning, {} failed{not_judged}: {}",
            n(Outcome::Pass) + n(Outcome::Warn),
            self.verdicts.len(),
            n(Outcome::Warn),
            n(Outcome::Fail),
            match (self.passed(), self.dialect) {
                (true, Dialect::Polar) => "the receiver keeps Polar's contract",
                (false, Dialect::Polar) => "the receiver does not keep Polar's contract yet",
                (true, Dialect::StandardWebhooks) => "the receiver keeps Standard Webhooks' rules",
                (false, Dialect::StandardWebhooks) => {
                    "the receiver does not keep Standard Webhooks' rules yet"
                }
            }
        )
    }
}

/// The secrets the receiver needs before its first delivery.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub secret: String,
    /// `(user id, token)` of the two test users.
    pub users: Vec<(u64, String)>,
    pub base: String,
}

impl Fixture {
    /// The `--env-file` contents: `POLAR_WEBHOOK_SECRET`, `POLAR_BASE_URL` and
    /// `POLAR_ACCESS_TOKENS=user=token,user=token`.
    pub fn env(&self) -> String {
        let tokens: Vec<String> = self.users.iter().map(|(u, t)| format!("{u}={t}")).collect();
        format!(
            "POLAR_WEBHOOK_SECRET={}\nPOLAR_BASE_URL={}\nPOLAR_ACCESS_TOKENS={}\n",
            self.secret,
            self.base,
            tokens.join(",")
        )
    }
}

fn random_hex(bytes: usize) -> String {
    let b: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(b)
}

/// The grader's own simulator on loopback, speaking `dialect`, with no users of its own and quick
/// deliveries; it stops with `shutdown`.
async fn own_simulator(dialect: Dialect, shutdown: &CancellationToken) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the grader's simulator on loopback")?;
    let settings = crate::sim::SimSettings {
        users: 0,
        faults: crate::sim::Faults {
            delay_ms: (5, 30),
            ..Default::default()
        },
        dialect,
        ..Default::default()
    };
    let running = crate::sim::start(
        listener,
        settings,
        shutdown.clone(),
        crate::server::serve_simulator,
    )?;
    Ok(running.base_url)
}

/// Runs the grade and prints it (and writes the JUnit file); [`Grade::passed`] says whether
/// every required rule passed.
pub async fn run(args: &CheckArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<Grade> {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    anyhow::ensure!(
        matches!(args.tokens.len(), 0 | 2),
        "--tokens takes the two test users' tokens, TOKEN_A,TOKEN_B ({} given)",
        args.tokens.len()
    );
    let base = match &args.sim {
        Some(s) => sim_base(s),
        None => own_simulator(args.dialect, &shutdown).await?,
    };
    let sim = SimClient::connect(&base, args.auth.as_deref()).await?;
    if sim.dialect != args.dialect {
        anyhow::bail!(
            "the simulator at {base} speaks {}, not {}: start it with `hookrace sim --dialect {}`, \
             or leave out --sim",
            sim.dialect,
            args.dialect,
            args.dialect
        );
    }
    let fixture = sim.prepare(args).await?;
    if let Some(path) = &args.env_file {
        crate::apps::write_private(path, fixture.env().as_bytes())
            .with_context(|| format!("writing the receiver's secrets to {}", path.display()))?;
    }
    if args.format == DataFormat::Table {
        writeln!(out, "hookrace check-receiver: {} against {base}", args.url)?;
        writeln!(out, "  webhook secret   {}", fixture.secret)?;
        for (u, t) in &fixture.users {
            writeln!(out, "  user {u}       access token {t}")?;
        }
        if let Some(p) = &args.env_file {
            writeln!(out, "  (also in {})", p.display())?;
        }
        writeln!(out)?;
    }
    let table = args.format == DataFormat::Table;
    let mut failed_write = None;
    let mut judged = |v: &Verdict| {
        if table && failed_write.is_none() {
            failed_write = write!(out, "{}", render_verdict(v))
                .and_then(|()| out.flush())
                .err();
        }
    };
    let grade = match args.dialect {
        Dialect::Polar => {
            rules::grade(&sim, &fixture, &args.url, args.fetch_wait, &mut judged).await?
        }
        Dialect::StandardWebhooks => {
            standard::grade(&sim, &fixture, &args.url, args.fetch_wait, &mut judged).await?
        }
    };
    if let Some(e) = failed_write {
        return Err(e).context("printing the verdicts");
    }
    match args.format {
        DataFormat::Table => writeln!(out, "\n{}", grade.score())?,
        DataFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&grade)?)?,
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, render_junit(&grade))
            .with_context(|| format!("writing the JUnit report to {}", path.display()))?;
    }
    Ok(grade)
}

mod rules;
mod sim_client;
mod standard;

use sim_client::SimClient;

/// The grade as a table for people, with the score last.
pub fn render_table(g: &Grade) -> String {
    let rows: String = g.verdicts.iter().map(render_verdict).collect();
    format!("{rows}\n{}\n", g.score())
}

/// One rule's rows of the table: the mark, what was seen, and the fix when it did not pass.
pub fn render_verdict(v: &Verdict) -> String {
    use std::fmt::Write as _;
    let mark = match v.outcome {
        Outcome::Pass => "PASS",
        Outcome::Warn => "WARN",
        Outcome::Fail => "FAIL",
        Outcome::NotJudged => "----",
    };
    let mut out = format!("{mark}  {:<19} {}\n", v.rule, v.title);
    let _ = writeln!(out, "      {:<19} {}", "", v.observed);
    if !v.fix.is_empty() {
        let _ = writeln!(out, "      {:<19} fix: {}", "", v.fix);
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The grade as JUnit XML: one test case per rule, a failure for each failed rule (a warning is
/// written to the case's system-out).
pub fn render_junit(g: &Grade) -> String {
    use std::fmt::Write as _;
    let failures = g
        .verdicts
        .iter()
        .filter(|v| v.outcome == Outcome::Fail)
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"hookrace check-receiver\" tests=\"{}\" failures=\"{failures}\">",
        g.verdicts.len()
    );
    for v in &g.verdicts {
        let _ = write!(
            out,
            "  <testcase classname=\"{}-contract\" name=\"{}: {}\">",
            g.dialect,
            v.rule,
            xml_escape(v.title)
        );
        match v.outcome {
            Outcome::Fail => {
                let _ = write!(
                    out,
                    "<failure message=\"{}\">{}</failure>",
                    xml_escape(&v.observed),
                    xml_escape(&v.fix)
                );
            }
            Outcome::Warn => {
                let _ = write!(
                    out,
                    "<system-out>warning: {} (fix: {})</system-out>",
                    xml_escape(&v.observed),
                    xml_escape(&v.fix)
                );
            }
            Outcome::NotJudged => {
                let _ = write!(out, "<skipped message=\"{}\"/>", xml_escape(&v.observed));
            }
            Outcome::Pass => {}
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("</testsuite>\n");
    out
}

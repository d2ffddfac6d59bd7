//! `hookrace demo`: the whole race in one process on loopback.
//!
//! It starts the simulator and the daemon on free ports with a fresh store, lets the simulator's
//! generator make data for `--duration` while both channels race (with live progress), then pauses
//! the generator, waits for in-flight deliveries and fetches and for one more scheduled poll cycle
//! (so every generated entity is accounted for), and prints the report with the simulator's ground
//! truth beside it.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accesslink::identity::{EntityKey, EventType, UserId};
use crate::apps::daemon::{self, Listeners, Running};
use crate::apps::report::{self, Format, GroundTruth, RaceSettings, Report};
use crate::apps::your_app::YourApp;
pub use crate::config::PollMode;

mod truth;
/// The poll strategies the demo can race (the configuration's names).
pub use crate::config::StrategyKind as Strategy;
use crate::observe::status::StatusDoc;
use crate::sim::DeliveryOutcome;
use truth::{generated_rates, ground_truth, safety_net};

/// Options of `hookrace demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long the simulator generates data.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The poll interval.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub poll_every: Duration,
    /// Simulated users.
    #[arg(long, default_value_t = 3)]
    pub users: u32,
    /// Mean time between new exercises per user (random, exponential).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub exercise_every: Duration,
    /// Mean time between daily activity updates per user.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub activity_every: Duration,
    /// Seed of the simulator's generator (default: random, printed so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Share of webhook deliveries the simulator never sends.
    #[arg(long, default_value_t = 0.02)]
    pub drop_rate: f64,
    /// Share of webhook deliveries sent twice.
    #[arg(long, default_value_t = 0.03)]
    pub duplicate_rate: f64,
    /// Delay range of webhook deliveries.
    #[arg(long, default_value = "20ms..400ms")]
    pub webhook_delay: String,
    /// Lowered AccessLink rate limits, `SHORT,LONG` requests per window (default: Polar's formula).
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Length of the short rate-limit window (Polar: 15m); with --rate-limit.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub rate_window: Duration,
    /// How the report is printed.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Open the live dashboard in a browser (its address is printed either way).
    #[arg(long)]
    pub open: bool,
    /// How the poller paces itself: `fixed` (every --poll-every) or `adaptive` (the auditor:
    /// --poll-every when webhooks miss data, --max-every while they are complete).
    #[arg(long, value_enum, default_value_t = Strategy::Fixed)]
    pub strategy: Strategy,
    /// The adaptive auditor's slowest interval.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_every: Duration,
    /// A receiver outage, `LENGTH@START` (e.g. `15s@20s`: 15 s long, 20 s into the race): the
    /// deliveries due in it are lost, and after 3 failed deliveries in a row the simulator
    /// deactivates the webhook (standing in for Polar's 7 days); hookrace's webhook watch checks
    /// every 5 s and reactivates it.
    #[arg(long, value_parser = parse_outage)]
    pub outage: Option<(Duration, Duration)>,
    /// Add the callback's second hop: a stand-in for your app on loopback that hookrace notifies
    /// of every new entity (Standard Webhooks, signatures verified); the report gains a third
    /// column, "your app", with the end-to-end delay.
    #[arg(long)]
    pub notify: bool,
    /// Keep the store in this directory (default: a temporary one, removed at the end);
    /// `hookrace report --store DIR` reads it later, with this race's settings.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// How the poller asks: `transactions` (one notifications call for every user, then a
    /// transaction per user and type with news) or `list` (every user's lists, every cycle).
    #[arg(long, value_enum, default_value_t = PollMode::Transactions)]
    pub mode: PollMode,
    /// After the report, keep the daemon and its live dashboard up until Ctrl-C.
    #[arg(long)]
    pub keep_open: bool,
    /// Race on recorded traffic: the simulator makes a trace's items (`hookrace trace export`)
    /// at their times instead of random ones, with its users, types and lost deliveries; the
    /// race lasts the trace's span divided by --speed.
    #[arg(long, conflicts_with_all = ["duration", "exercise_every", "activity_every", "drop_rate"])]
    pub replay: Option<PathBuf>,
    /// With --replay: time runs this many times faster than in the recording.
    #[arg(long, default_value_t = 1.0, requires = "replay")]
    pub speed: f64,
}

impl Default for DemoArgs {
    /// The options as `hookrace demo` has them with none given.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: DemoArgs,
        }
        // Every option has a valid default (the command line's own), so parsing no arguments
        // cannot fail.
        <Defaults as clap::Parser>::parse_from(["demo"]).args
    }
}

/// Stderr through `eprint!`, which a test harness captures (a raw `std::io::stderr()` it does not):
/// where the demo talks to a person while stdout carries a machine format.
struct Chatter;

impl Write for Chatter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        eprint!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Where to say what a person watches (addresses, progress): `out` itself for the table; stderr
/// with a machine format (json, markdown, html), so `out` carries the report alone.
fn for_person<'a>(human: bool, out: &'a mut (dyn Write + Send)) -> Box<dyn Write + 'a> {
    if human {
        Box::new(out)
    } else {
        Box::new(Chatter)
    }
}

/// `LENGTH@START`, like `15s@20s`.
fn parse_outage(s: &str) -> Result<(Duration, Duration), String> {
    let (length, start) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?} must be LENGTH@START, like 15s@20s"))?;
    let d = |v: &str| humantime::parse_duration(v.trim()).map_err(|e| format!("{v:?}: {e}"));
    Ok((d(length)?, d(start)?))
}

/// How often the demo's webhook watch checks, and how many failed deliveries in a row make the
/// simulator deactivate the webhook.
const DEMO_WATCH_EVERY: &str = "5s";
const DEMO_DEACTIVATE_AFTER_FAILURES: u32 = 3;

/// Runs the demo, writing progress and the report to `out`; returns the report.
pub async fn run(args: &DemoArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<Report> {
    let (replayed, schedule) = replayed(args)?;
    let args = &replayed;
    validate(args)?;
    let temp = tempfile::Builder::new()
        .prefix("hookrace-demo-")
        .tempdir()
        .context("creating a temporary store directory")?;
    let store_path = args
        .store
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let seed = args.seed.unwrap_or_else(rand::random);
    let shutdown = CancellationToken::new();
    let your_app = match args.notify {
        true => Some(YourApp::start(shutdown.child_token()).await?),
        false => None,
    };
    let mut config = demo_config(args, &store_path, your_app.as_ref())?;
    config.simulator.replay = schedule;

    let listeners = Listeners {
        webhook: TcpListener::bind("127.0.0.1:0").await?,
        admin: TcpListener::bind("127.0.0.1:0").await?,
        simulator: Some(TcpListener::bind("127.0.0.1:0").await?),
    };
    let running = daemon::start_with_seed(config, listeners, shutdown.clone(), Some(seed)).await?;
    let sim_url = running
        .simulator
        .as_ref()
        .map(|s| s.base_url.clone())
        .unwrap_or_default();
    if args.open {
        open_browser(&format!("{}/", running.admin_url));
    }
    if let Some(limit) = &args.rate_limit {
        set_rate_limit(&sim_url, limit, args.rate_window).await?;
    }
    if args.outage.is_some() {
        crate::sim::patch_faults(
            &crate::http::client(Duration::from_secs(10))?,
            &sim_url,
            serde_json::json!({"deactivate_after_failures": DEMO_DEACTIVATE_AFTER_FAILURES}),
        )
        .await
        .context("setting the simulator's deactivation")?;
    }
    let human = args.format == Format::Table;
    introduce(
        args,
        &running,
        &sim_url,
        seed,
        your_app.as_ref(),
        &mut *for_person(human, out),
    )?;

    let result = race(args, &running, &sim_url, your_app.as_ref(), out).await;
    if args.keep_open && result.is_ok() {
        keep_open(&running, &mut *for_person(human, out)).await?;
    }
    shutdown.cancel();
    let stopped = running.wait().await;
    let report = result?;
    stopped?;
    if let Some(p) = &args.store {
        let mut out = for_person(human, out);
        writeln!(
            out,
            "\nThe store is kept in {}: `hookrace report --store {}` reads it.",
            p.display(),
            p.display()
        )?;
    }
    Ok(report)
}

/// What the demo is about to race, and where to watch it.
fn introduce(
    args: &DemoArgs,
    running: &Running,
    sim_url: &str,
    seed: u64,
    your_app: Option<&YourApp>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "hookrace demo: webhooks versus polling, live on this machine"
    )?;
    writeln!(out, "  AccessLink simulator   {sim_url}   (seed {seed})")?;
    writeln!(out, "  webhook receiver       {}", running.webhook_url)?;
    writeln!(out, "  live dashboard         {}/", running.admin_url)?;
    writeln!(out, "  status while it runs   {}/status", running.admin_url)?;
    if let Some(app) = &your_app {
        writeln!(
            out,
            "  your app (notified)    {}   (checks each Standard Webhooks signature)",
            app.url
        )?;
    }
    let polling = match args.strategy {
        Strategy::Fixed => format!(
            "polling every {}",
            humantime::format_duration(args.poll_every)
        ),
        Strategy::Adaptive => format!(
            "an adaptive auditor polling every {} to {}",
            humantime::format_duration(args.poll_every),
            humantime::format_duration(args.max_every)
        ),
    };
    match &args.replay {
        Some(trace) => writeln!(
            out,
            "  {} users, the items of the trace {} at {}× its pace ({} of race), {polling}",
            args.users,
            trace.display(),
            args.speed,
            humantime::format_duration(Duration::from_secs(args.duration.as_secs()))
        )?,
        None => writeln!(
            out,
            "  {} users, a new exercise every ~{} per user, {polling}, {:.0}% of webhooks dropped",
            args.users,
            humantime::format_duration(args.exercise_every),
            args.drop_rate * 100.0
        )?,
    }
    if let Some((length, start)) = args.outage {
        writeln!(
            out,
            "  a receiver outage of {} starts {} into the race",
            humantime::format_duration(length),
            humantime::format_duration(start)
        )?;
    }
    writeln!(out)?;
    Ok(())
}

/// `--keep-open`: the daemon and its dashboard stay up until Ctrl-C or SIGTERM.
async fn keep_open(running: &Running, out: &mut dyn Write) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Listening before saying so: a Ctrl-C right after the line is caught, not fatal.
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    writeln!(
        out,
        "\nThe daemon and its live dashboard stay up at {}/ (generation stopped): Ctrl-C ends.",
        running.admin_url
    )?;
    out.flush()?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// With `--replay`: the options the race runs with (its users at least the trace's, its
/// duration the trace's span at `--speed`, no random drops) and the simulator's schedule.
fn replayed(args: &DemoArgs) -> anyhow::Result<(DemoArgs, Vec<crate::sim::settings::Replayed>)> {
    let Some(path) = &args.replay else {
        return Ok((args.clone(), Vec::new()));
    };
    let trace = crate::trace::Trace::read_file(path)?;
    let schedule = trace
        .schedule(args.speed)
        .with_context(|| format!("--replay {}", path.display()))?;
    let users = schedule.iter().map(|r| r.user + 1).max().unwrap_or(1);
    let span = Duration::from_secs_f64(trace.span_s() / args.speed);
    anyhow::ensure!(
        span >= Duration::from_secs(1),
        "--replay {}: the trace spans {:.1} s, under a second at --speed {}",
        path.display(),
        trace.span_s(),
        args.speed
    );
    let replayed = DemoArgs {
        duration: span,
        users: args.users.max(crate::units::u32_saturating(users as u64)),
        drop_rate: 0.0,
        duplicate_rate: 0.0,
        ..args.clone()
    };
    Ok((replayed, schedule))
}

fn validate(args: &DemoArgs) -> anyhow::Result<()> {
    for (name, v) in [
        ("--drop-rate", args.drop_rate),
        ("--duplicate-rate", args.duplicate_rate),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&v),
            "{name} {v} must be between 0 and 1"
        );
    }
    for (name, d) in [
        ("--duration", args.duration),
        ("--poll-every", args.poll_every),
        ("--exercise-every", args.exercise_every),
        ("--activity-every", args.activity_every),
    ] {
        anyhow::ensure!(!d.is_zero(), "{name} must be longer than zero");
    }
    anyhow::ensure!(args.users >= 1, "--users must be at least 1");
    anyhow::ensure!(
        args.poll_every >= Duration::from_secs(1),
        "--poll-every must be at least 1s"
    );
    if let Some(l) = &args.rate_limit {
        parse_limit(l)?;
    }
    crate::config::parse_delay_range(&args.webhook_delay)
        .map_err(|e| anyhow::anyhow!("--webhook-delay {:?}: {e}", args.webhook_delay))?;
    Ok(())
}

/// The daemon configuration the demo runs, built as a value and written by the toml crate (so a
/// store path or a `--webhook-delay` with quotes in it stays a value), then validated like any
/// configuration file.
fn demo_config(
    args: &DemoArgs,
    store: &std::path::Path,
    your_app: Option<&YourApp>,
) -> anyhow::Result<crate::config::Config> {
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    let mut config = serde_json::json!({
        "admin": {"listen": "127.0.0.1:0"},
        "webhook": {
            "listen": "127.0.0.1:0",
            "check_every": DEMO_WATCH_EVERY,
            "reactivate": true,
        },
        "poller": {
            "enabled": true,
            "every": duration(args.poll_every),
            "mode": args.mode.as_str(),
            "strategy": args.strategy.as_str(),
            "max_every": duration(args.max_every),
        },
        "store": {"path": store},
        "simulator": {
            "enabled": true,
            "listen": "127.0.0.1:0",
            "users": args.users,
            "exercise_every": duration(args.exercise_every),
            "activity_every": duration(args.activity_every),
            "webhook_delay": args.webhook_delay,
            "webhook_drop_rate": args.drop_rate,
            "webhook_duplicate_rate": args.duplicate_rate,
        },
    });
    if let Some(app) = your_app {
        config["notify"] = serde_json::json!([{
            "kind": "webhook",
            "name": "your-app",
            "url": app.url,
            "secret": app.secret,
        }]);
    }
    let text = toml::to_string(&config).context("writing the demo's configuration")?;
    crate::config::parse(&text, "the demo settings", &|_| None).map_err(|e| anyhow::anyhow!("{e}"))
}

fn status_now(running: &Running) -> anyhow::Result<StatusDoc> {
    running.view().status()
}

fn progress_line(s: &StatusDoc) -> String {
    format!(
        "webhook {} seen, {} first, {} req | poll {} seen, {} first, {} req, {}/{} cycles empty",
        s.entities.seen_by_both + s.entities.webhook_only,
        s.entities.first_by_webhook,
        s.webhook.accepted + s.webhook.duplicates + s.webhook.fetch_requests,
        s.entities.seen_by_both + s.entities.poll_only,
        s.entities.first_by_poll,
        s.poll.requests,
        s.poll.empty_cycles,
        s.poll.cycles,
    )
}

/// The race: watch it for `--duration`, stop making data, wait until everything in flight has
/// landed, then build, keep and print the report.
async fn race(
    args: &DemoArgs,
    running: &Running,
    sim_url: &str,
    your_app: Option<&YourApp>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Report> {
    let human = args.format == Format::Table;
    let http = crate::http::client(Duration::from_secs(10))?;
    let mut watched = watch(args, running, &http, sim_url, out).await?;
    crate::sim::patch_faults(
        &http,
        sim_url,
        serde_json::json!({"generator_paused": true}),
    )
    .await
    .context("pausing the generator")?;
    {
        let mut out = for_person(human, out);
        writeln!(
            out,
            "  generation stopped after {}; waiting for deliveries in flight and the next poll cycle…",
            humantime::format_duration(args.duration)
        )?;
    }
    let paused_at = chrono::Utc::now();
    let at_pause = status_now(running)?;
    watched.cycles.see(&at_pause);
    // A cycle still running at the pause (held by a rate limit) leaves its gap open.
    let running_cycle = running.poller.as_ref().is_some_and(|p| !p.is_idle());
    let window = watched
        .cycles
        .window(&at_pause, running_cycle.then_some(paused_at));
    let (s, truth) = settle(args, running, &http, sim_url, &at_pause, paused_at).await?;
    let report = final_report(args, running, your_app, &s, &truth, window, watched.samples).await?;
    if human {
        writeln!(out)?;
    }
    write!(out, "{}", report::render(&report, args.format))?;
    if args.format == Format::Json {
        writeln!(out)?;
    }
    Ok(report)
}

/// What watching the race gathered: the poll cycles it saw start, and (for the html page) what
/// each channel had spent every 250 ms.
struct Watched {
    cycles: CycleLog,
    samples: Vec<(f64, u64, u64)>,
}

/// One point of the html page's requests chart: seconds since start, webhook and poll requests.
fn sample(s: &StatusDoc) -> (f64, u64, u64) {
    (
        (chrono::Utc::now() - s.started_at).num_milliseconds() as f64 / 1000.0,
        s.webhook.accepted + s.webhook.duplicates + s.webhook.fetch_requests,
        s.poll.requests,
    )
}

/// A progress bar (indicatif draws on stderr) when a person watches; else `None` (a line every
/// 5 s instead).
fn progress_bar(args: &DemoArgs) -> Option<indicatif::ProgressBar> {
    let human = args.format == Format::Table;
    let live = std::io::stderr().is_terminal() && (!human || std::io::stdout().is_terminal());
    live.then(|| {
        let bar = indicatif::ProgressBar::new(args.duration.as_secs().max(1));
        let template = if crate::telemetry::colored(&std::io::stderr()) {
            "  {bar:24.cyan/blue} {pos:>3}/{len}s  {msg}"
        } else {
            "  {bar:24} {pos:>3}/{len}s  {msg}"
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    })
}

/// Watches the race for `--duration`, every 250 ms: shows progress, starts the receiver outage
/// when it is due, notes the poll cycles and the html page's samples.
async fn watch(
    args: &DemoArgs,
    running: &Running,
    http: &reqwest::Client,
    sim_url: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Watched> {
    let human = args.format == Format::Table;
    let started = tokio::time::Instant::now();
    let end = started + args.duration;
    let bar = progress_bar(args);
    // Lines come every five seconds of the race, labelled by their own tick, so a slow status
    // read delays one line but never shifts the ones after it.
    let mut next_line = Duration::from_secs(5);
    let mut outage = args.outage;
    let sampling = args.format == Format::Html;
    let mut watched = Watched {
        cycles: CycleLog::default(),
        samples: Vec::new(),
    };
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if sampling {
            watched.samples.push(sample(&status_now(running)?));
        }
        if let Some((length, _)) = outage.filter(|(_, start)| started.elapsed() >= *start) {
            crate::sim::patch_faults(
                http,
                sim_url,
                serde_json::json!({"outage_for": length.as_secs_f64()}),
            )
            .await
            .context("starting the receiver outage")?;
            outage = None;
        }
        let s = status_now(running)?;
        watched.cycles.see(&s);
        let elapsed = started.elapsed();
        if let Some(bar) = &bar {
            bar.set_position(elapsed.as_secs().min(args.duration.as_secs()));
            bar.set_message(progress_line(&s));
        } else if elapsed >= next_line {
            let mut out = for_person(human, out);
            writeln!(out, "  {:>4}s  {}", next_line.as_secs(), progress_line(&s))?;
            while next_line <= elapsed {
                next_line += Duration::from_secs(5);
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    Ok(watched)
}

/// Waits, after generation stopped, until the race has settled: no delivery pending at the
/// simulator, no fetch queued, a poll cycle that started after the pause has finished, nothing
/// moved while both sides were read, and every event reached your app (or was parked). Returns
/// that consistent status and the simulator's ground truth; an error when it does not settle
/// within one poll interval, 30 s and (with a rate limit) one rate window.
async fn settle(
    args: &DemoArgs,
    running: &Running,
    http: &reqwest::Client,
    sim_url: &str,
    at_pause: &StatusDoc,
    paused_at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<(StatusDoc, crate::sim::Truth)> {
    // A rate limit may hold the last fetches and the last cycle for a whole window.
    let settle = args.poll_every
        + Duration::from_secs(30)
        + args
            .rate_limit
            .as_ref()
            .map_or(Duration::ZERO, |_| args.rate_window);
    let deadline = tokio::time::Instant::now() + settle;
    let poller_idle = || running.poller.as_ref().is_none_or(|p| p.is_idle());
    loop {
        // A consistent snapshot: nothing in flight before and after reading both sides.
        let idle_before = poller_idle();
        let before = status_now(running)?;
        let truth: crate::sim::Truth = http
            .get(format!("{sim_url}/sim/truth"))
            .send()
            .await?
            .json()
            .await
            .context("reading the simulator's ground truth")?;
        let pending = truth
            .deliveries
            .iter()
            .any(|d| d.outcome == DeliveryOutcome::Pending);
        let fetching = !running.queues.fetches.is_empty();
        // The tally counts what commits made durable: commit the last writes (the senders' sent
        // marks) before reading the figures.
        running.store.durable().await?;
        let s = status_now(running)?;
        let quiet = idle_before
            && poller_idle()
            && before.poll.cycles == s.poll.cycles
            && before.poll.requests == s.poll.requests
            && before.webhook.deliveries == s.webhook.deliveries
            && before.webhook.fetch_requests == s.webhook.fetch_requests;
        // A cycle that started after the pause has finished (cycles are counted at their end).
        let polled = s.poll.cycles > at_pause.poll.cycles
            && s.poll.last_cycle_at.is_some_and(|t| t >= paused_at);
        // Every stored entity's event has reached your app (or been parked).
        let told = s.notify.iter().all(|n| n.pending == 0);
        if quiet && !pending && !fetching && polled && told {
            return Ok((s, truth));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the race did not settle within {}s after generation stopped",
            settle.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The settings the race ran with, as its report states them.
fn race_settings(args: &DemoArgs, truth: &crate::sim::Truth) -> RaceSettings {
    RaceSettings {
        // The adaptive auditor has no single interval for theory to use.
        poll_interval_s: (args.strategy == Strategy::Fixed)
            .then_some(args.poll_every.as_secs_f64()),
        adaptive: (args.strategy == Strategy::Adaptive)
            .then(|| report::adaptive_text(args.poll_every, args.max_every)),
        poll_mode: args.mode,
        users: u64::from(args.users),
        // The rate this race's simulator really made items at (new exercises and activity
        // updates, as its truth records them), not the settings' mean: a minute of a Poisson
        // stream holds a few more or fewer, and theory should describe this race.
        item_rate_per_user_s: generated_rates(truth, args),
        rates_from: match &args.replay {
            Some(trace) => format!("as replayed from {}", trace.display()),
            None => format!(
                "as generated; the settings' mean: {:.1}",
                60.0 * (1.0 / args.exercise_every.as_secs_f64()
                    + 1.0 / args.activity_every.as_secs_f64())
            ),
        },
    }
}

/// The settled race's report: the status against the ground truth, with its window, safety net,
/// samples and your app's verdicts; saved in the store when it is kept (`--store`), so
/// `hookrace report --store DIR` prints this same report again (rebuilt later, its window would
/// grow with the clock).
async fn final_report(
    args: &DemoArgs,
    running: &Running,
    your_app: Option<&YourApp>,
    s: &StatusDoc,
    truth: &crate::sim::Truth,
    window: Option<report::PollWindow>,
    mut samples: Vec<(f64, u64, u64)>,
) -> anyhow::Result<Report> {
    let settings = race_settings(args, truth);
    let truth_summary = ground_truth(truth, &running.store);
    let mut report = report::build(s, Some(settings.clone()), Some(truth_summary));
    report.generated_for_s = Some(args.duration.as_secs_f64());
    if let Some(w) = window {
        report.set_race_window(w);
    }
    if args.strategy == Strategy::Adaptive || args.outage.is_some() {
        report.safety_net = Some(safety_net(args, s, truth));
    }
    if args.format == Format::Html {
        samples.push(sample(s));
        report.samples = samples;
        report.sightings = report::sightings(&running.store, s.started_at)?;
    }
    if let (Some(r), Some(app)) = (report.your_app.as_mut(), your_app) {
        let seen = app.seen();
        r.verified = Some(seen.verified);
        r.refused = Some(seen.refused);
    }
    if args.store.is_some() {
        let json = serde_json::to_vec(&settings).context("writing the race settings")?;
        running
            .store
            .save(report::SAVED_SETTINGS, &json, "the race settings")
            .await?;
        let json = serde_json::to_vec(&report).context("writing the race's report")?;
        running
            .store
            .save(report::SAVED_REPORT, &json, "the race's report")
            .await?;
    }
    Ok(report)
}

fn parse_limit(s: &str) -> anyhow::Result<(u64, u64)> {
    crate::accesslink::client::parse_pair(s)
        .ok_or_else(|| anyhow::anyhow!("--rate-limit {s:?} must be SHORT,LONG like 30,1000"))
}

async fn set_rate_limit(sim_url: &str, limit: &str, window: Duration) -> anyhow::Result<()> {
    let (short, long) = parse_limit(limit)?;
    let patch = serde_json::json!({
        "rate_limit": [short, long],
        "short_window_s": window.as_secs().max(1),
    });
    crate::sim::patch_faults(
        &crate::http::client(Duration::from_secs(10))?,
        sim_url,
        patch,
    )
    .await?;
    Ok(())
}

/// Opens `url` with the desktop's browser when there is one; says so when there is none.
/// An opener that starts but finds no browser exits non-zero at once (xdg-open without a desktop
/// does): it is waited for a moment, so that case is said too.
fn open_browser(url: &str) {
    for opener in ["xdg-open", "sensible-browser", "open"] {
        let spawned = std::process::Command::new(opener)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(mut child) = spawned else { continue };
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return,
                Ok(Some(_)) | Err(_) => break, // no browser behind this opener: try the next
                // Still running: a browser (or its launcher) took the URL.
                Ok(None) if std::time::Instant::now() >= deadline => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    eprintln!("no browser found to open {url}: open it yourself");
}

/// The poll cycles the demo's samples saw, for the cycles that ran while data was made: those
/// after the first (which ran before any data) up to the pause, each covering a whole interval
/// of generated data, as theory assumes.
#[derive(Default)]
struct CycleLog {
    /// Cycles and empty cycles counted when the first cycle had run, and when it started.
    first: Option<(u64, u64, chrono::DateTime<chrono::Utc>)>,
    /// When each cycle started, as the samples saw them (every 250 ms; cycles are ≥ 1 s apart).
    starts: Vec<chrono::DateTime<chrono::Utc>>,
}

impl CycleLog {
    fn see(&mut self, s: &StatusDoc) {
        let Some(t) = s.poll.last_cycle_at else {
            return;
        };
        if self.starts.last() != Some(&t) {
            self.starts.push(t);
        }
        self.first
            .get_or_insert((s.poll.cycles, s.poll.empty_cycles, t));
    }

    /// The cycles from the first to those counted in `at_pause`; a cycle still running at the
    /// pause (`open_until`) leaves its gap open until then.
    fn window(
        &self,
        at_pause: &StatusDoc,
        open_until: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Option<report::PollWindow> {
        let (cycles, empty, first_at) = self.first?;
        let starts: Vec<_> = self
            .starts
            .iter()
            .copied()
            .filter(|t| *t >= first_at)
            .chain(open_until)
            .collect();
        (at_pause.poll.cycles > cycles).then(|| report::PollWindow {
            cycles: at_pause.poll.cycles - cycles,
            empty: at_pause.poll.empty_cycles - empty,
            gaps_s: starts
                .windows(2)
                .map(|w| (w[1] - w[0]).num_milliseconds() as f64 / 1000.0)
                .collect(),
        })
    }
}

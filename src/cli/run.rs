//! What each command of the `hookrace` binary runs, and how its outcome becomes an exit code (0
//! ok, 1 the thing checked failed or the configuration is invalid, 2 the tool could not do its
//! job, 64 bad usage): the command line's top, above the apps it
//! calls. It lives in the library rather than in `main.rs` so the binary's crate stays a few
//! lines: the generic code a command instantiates
//! (the runtime's `block_on` of every command's future, clap's parsing) is compiled once, here,
//! not again in the binary (that second copy was 14 s of a fresh release build).

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use super::{CheckFailed, Cli, Command, EXIT_ERROR, EXIT_FAILED, EXIT_USAGE};
use crate::apps::daemon;
use crate::{config, telemetry};

/// The command line, parsed; `Err` is the exit code once clap has printed its message (help
/// and `--version` are 0, a usage error 64).
pub fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
        let _ = e.print();
        ExitCode::from(code)
    })
}

/// Starts logging at the level the command wants: the commands that draw on the terminal
/// (the demo's progress, a report, the management commands) log only warnings.
pub fn start_logging(cli: &Cli) {
    let level = match &cli.command {
        Command::Demo(_)
        | Command::Report { .. }
        | Command::Webhook { .. }
        | Command::Users { .. }
        | Command::Notify { .. }
        | Command::CheckReceiver(_)
        | Command::Backup { .. }
        | Command::Restore { .. }
        | Command::Trace { .. }
        | Command::Replay(_)
        | Command::Sim(super::SimArgs {
            action: Some(_), ..
        }) => "warn",
        _ => "info",
    };
    telemetry::init_with(level, cli.log_format, cli.color);
}

/// Runs the command `cli` names to its end.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Demo(args) => on_runtime(async move {
            let mut out = std::io::stdout();
            crate::apps::demo::run(&args, &mut out).await.map(|_| ())
        }),
        Command::Report {
            config,
            store,
            format,
        } => with_config(config, |mut cfg| async move {
            if let Some(dir) = store {
                cfg.store.path = dir;
            }
            let report = crate::apps::report::from_config(&cfg, format).await?;
            print!("{}", crate::apps::report::render(&report, format));
            Ok(())
        }),
        Command::Whatif(args) => {
            if let Some(problem) = crate::apps::whatif::invalid(&args) {
                eprintln!("hookrace whatif: {problem}");
                return ExitCode::from(EXIT_USAGE);
            }
            let mut out = std::io::stdout();
            exit(crate::apps::whatif::run(&args, &mut out).map(|_| ()))
        }
        Command::CheckConfig { config } => check_config(config.as_deref()),
        Command::Backup {
            config,
            store,
            file,
        } => with_config(config, |cfg| async move {
            let c = crate::operations::backup::backup_command(&cfg, store, &file).await?;
            println!("{}", copied("backed up", &c, &file));
            Ok(())
        }),
        Command::Restore { file, store } => exit((|| {
            let c = crate::operations::backup::restore_command(&file, &store)?;
            println!("{}", copied("restored", &c, &store));
            Ok(())
        })()),
        Command::Trace {
            command: super::TraceCommand::Export(args),
        } => exit(trace_export(&args)),
        Command::Replay(args) => on_runtime(replay(args)),
        Command::Completions { shell } => exit(completions(shell)),
        Command::Man => exit(man_page()),
        Command::Webhook { config, command } => with_config(config, |cfg| async move {
            let mut out = std::io::stdout();
            crate::operations::manage::webhook_command(&cfg, &command.action(), &mut out).await
        }),
        Command::Notify { config, command } => with_config(config, |cfg| async move {
            match command {
                super::NotifyCommand::Test => {
                    let failed =
                        crate::notify::test_command(&cfg.notify, &mut std::io::stdout()).await?;
                    if failed == 0 {
                        return Ok(());
                    }
                    let sinks = cfg.notify.len();
                    let why = format!("{failed} of {sinks} sinks did not take the test event");
                    Err(CheckFailed(why).into())
                }
            }
        }),
        Command::Users { config, command } => {
            with_config(config, |cfg| users_command(cfg, command))
        }
        Command::CheckReceiver(args) => on_runtime(async move {
            let mut out = std::io::stdout();
            let grade = crate::apps::workbench::grade::run(&args, &mut out).await?;
            if grade.passed() {
                return Ok(());
            }
            Err(CheckFailed(format!(
                "the receiver at {} failed a required rule",
                args.url
            ))
            .into())
        }),
        Command::Sim(super::SimArgs {
            action: Some(action),
            ..
        }) => on_runtime(async move {
            let mut out = std::io::stdout();
            match action {
                super::SimAction::Trigger(t) => crate::apps::workbench::trigger(&t, &mut out).await,
                super::SimAction::Log(l) => crate::apps::workbench::log(&l, &mut out).await,
                super::SimAction::Resend(r) => crate::apps::workbench::resend(&r, &mut out).await,
            }
        }),
        Command::Sim(args) => match args.settings() {
            Ok(settings) => on_runtime(run_sim(args, settings)),
            Err(e) => {
                eprintln!("hookrace sim: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Run { config } => with_config(config, |cfg| async move {
            let shutdown = CancellationToken::new();
            let _signals = daemon::spawn_signal_handler(shutdown.clone())?;
            let listeners = daemon::Listeners::bind(&cfg).await?;
            daemon::run(cfg, listeners, shutdown).await
        }),
    }
}

/// `backed up 1234 keys of 11 trees (2.1 MB) to FILE`.
fn copied(what: &str, c: &crate::store::backup::Copied, place: &std::path::Path) -> String {
    let mb = c.bytes as f64 / 1e6;
    let (keys, trees) = (c.keys, c.trees);
    format!(
        "{what} {keys} keys of {trees} trees ({mb:.1} MB): {}",
        place.display()
    )
}

/// `hookrace completions SHELL`: the script, from the command line's own definition.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use clap_complete::Generator;
    let mut command = <super::Cli as clap::CommandFactory>::command();
    command.set_bin_name("hookrace");
    command.build();
    // `try_generate`: a closed pipe is an error to report, not a panic.
    shell
        .try_generate(&command, &mut std::io::stdout())
        .map_err(|e| anyhow::anyhow!("writing the {shell} completions: {e}"))
}

/// `hookrace man`: the man page (roff), from the command line's own definition.
fn man_page() -> anyhow::Result<()> {
    let command = <super::Cli as clap::CommandFactory>::command();
    clap_mangen::Man::new(command)
        .render(&mut std::io::stdout())
        .map_err(|e| anyhow::anyhow!("writing the man page: {e}"))
}

/// `hookrace check-config`: the configuration's problems, all at once, or that it is valid (with
/// its warnings).
fn check_config(config: Option<&std::path::Path>) -> ExitCode {
    match located(config) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// `hookrace users list|remove`.
async fn users_command(cfg: config::Config, command: super::UsersCommand) -> anyhow::Result<()> {
    use crate::operations::manage;
    match command {
        super::UsersCommand::List { format } => {
            let users = manage::list_users(&cfg).await?;
            if format == crate::apps::DataFormat::Json {
                println!("{}", serde_json::to_string_pretty(&users)?);
                return Ok(());
            }
            if users.is_empty() {
                println!("no users: connect one at /oauth/connect on the public listener");
            }
            for u in users {
                match u.disconnected_at {
                    None => println!("{}  connected since {}", u.user_id, u.added_at),
                    Some(t) => println!(
                        "{}  DISCONNECTED at {t}: {}",
                        u.user_id,
                        u.disconnect_reason.unwrap_or_default()
                    ),
                }
            }
            Ok(())
        }
        super::UsersCommand::Remove { user } => {
            if manage::remove_user_cmd(&cfg, user).await? {
                println!("user {user} de-registered and removed");
                Ok(())
            } else {
                anyhow::bail!("no user {user} is known")
            }
        }
    }
}

/// Runs `work` on a new runtime; its error is exit code 1 when a check failed, else 2.
fn on_runtime(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    exit(runtime().and_then(|rt| rt.block_on(work)))
}

/// The runtime every command runs on: a worker per core, and a blocking pool capped at
/// [`MAX_BLOCKING_THREADS`] (tokio's default is 512), so the unit's `TasksMax` holds.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()?)
}

/// The blocking pool's cap: the store's commits and reads, backups and file work; far more
/// than they use at once, and what `docs/deploy/hookrace.service` sizes `TasksMax` for.
pub const MAX_BLOCKING_THREADS: usize = 64;

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookrace: {e:#}");
            let failed = e.downcast_ref::<CheckFailed>().is_some();
            ExitCode::from(if failed { EXIT_FAILED } else { EXIT_ERROR })
        }
    }
}

/// `hookrace sim`: serve until SIGTERM/SIGINT, after printing what a student needs to start.
async fn run_sim(args: super::SimArgs, settings: crate::sim::SimSettings) -> anyhow::Result<()> {
    use anyhow::Context;
    let shutdown = CancellationToken::new();
    let _signals = daemon::spawn_signal_handler(shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the simulator on {}", args.listen))?;
    let replaying = settings.replay.len();
    let span = settings.replay.last().map(|r| r.after).unwrap_or_default();
    let running = crate::sim::start(listener, settings, shutdown, crate::server::serve_simulator)?;
    let banner = sim_banner(&args, &running, (replaying, span))?;
    // A closed stdout (`hookrace sim | head -3`) must not stop the simulator: before, the
    // banner's next line panicked on the broken pipe.
    use std::io::Write;
    let _ = std::io::stdout().write_all(banner.as_bytes());
    let _ = std::io::stdout().flush();
    running.handle.await.context("the simulator task")?;
    Ok(())
}

/// What `hookrace sim` prints when it serves: what it replays, a class's table (also written to
/// `--class-file`) and teacher token, the simulator's address and its own client and users.
fn sim_banner(
    args: &super::SimArgs,
    running: &crate::sim::RunningSim,
    (replaying, span): (usize, std::time::Duration),
) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::fmt::Write;
    let mut out = String::new();
    let base = &running.base_url;
    // Writing to a String cannot fail: the results are ignored.
    if let Some(trace) = args.replay.as_ref().filter(|_| replaying > 0) {
        let _ = writeln!(
            out,
            "replaying the {replaying} items of {} over {} (no random data)",
            trace.display(),
            humantime::format_duration(std::time::Duration::from_secs(span.as_secs()))
        );
    }
    if args.class > 0 {
        let table = crate::sim::credentials_table(&running.sim.class_credentials(), base);
        out.push_str(&table);
        if let Some(path) = &args.class_file {
            crate::apps::write_private(path, table.as_bytes()).with_context(|| {
                format!("writing the class's credentials to {}", path.display())
            })?;
            let _ = writeln!(out, "  (also in {})", path.display());
        }
        let _ = writeln!(
            out,
            "  scoreboard: {base}/sim/class   each student's log: {base}/sim/watch"
        );
        if let Some(token) = running.sim.teacher_token() {
            // Never in the class file, which is handed out: the class-wide controls need it.
            let _ = writeln!(
                out,
                "  teacher token (keep it off the projector): {token}\n  \
                 use it as --auth {}:{token} (or Authorization: Bearer {token})",
                crate::sim::TEACHER
            );
        }
    }
    let _ = writeln!(out, "AccessLink simulator at {base}");
    if args.dialect == crate::accesslink::dialect::Dialect::StandardWebhooks {
        let _ = writeln!(
            out,
            "  webhooks in the Standard Webhooks dialect: whsec_ secrets, webhook-id/-timestamp/\
             -signature headers, no PING"
        );
    }
    let _ = writeln!(
        out,
        "  client credentials (HTTP Basic): {}:{}",
        args.client_id, args.client_secret
    );
    for uid in running.sim.own_user_ids() {
        if let Some(token) = running.sim.token_of(uid) {
            let _ = writeln!(out, "  user {uid}: access token {token}");
        }
    }
    let _ = writeln!(
        out,
        "  ground truth: GET {base}/sim/truth   (see docs/simulator.md)"
    );
    Ok(out)
}

/// Loads the configuration (exit 1 when invalid) and runs `f` with it on a runtime.
fn with_config<F, Fut>(path: Option<std::path::PathBuf>, f: F) -> ExitCode
where
    F: FnOnce(crate::config::Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    match located(path.as_deref()) {
        Ok(cfg) => on_runtime(f(cfg)),
        Err(e) => {
            eprint!("{e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// `hookrace trace export`: the trace on stdout, or in `-o FILE` with a line on stderr.
fn trace_export(args: &crate::apps::traffic::ExportArgs) -> anyhow::Result<()> {
    let exported = crate::apps::traffic::export_command(args, &mut std::io::stdout())?;
    if let Some(path) = &args.output {
        eprintln!(
            "hookrace: {} entities of {} users written to {}",
            exported.entities,
            exported.users,
            path.display()
        );
    }
    Ok(())
}

/// `hookrace replay`: the plan, then the sends with a progress bar for a person, then the
/// summary; a receiver that did not take every delivery is a failed check.
async fn replay(args: crate::apps::replay::ReplayArgs) -> anyhow::Result<()> {
    use crate::apps::replay;
    use std::io::IsTerminal;
    let plan = replay::plan(&args)?;
    let span = plan.last().map_or(0.0, |p| p.offset_s);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(plan.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template("  {bar:24} {pos}/{len} {msg}") {
            bar.set_style(style);
        }
        bar.set_message(format!(
            "over {}",
            humantime::format_duration(std::time::Duration::from_secs(crate::units::round_u64(
                span
            )))
        ));
        bar
    });
    let ticker = bar.clone();
    let summary = replay::send(plan, &args, move |n| {
        if let Some(b) = &ticker {
            b.inc(n);
        }
    })
    .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match args.format {
        crate::apps::DataFormat::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        crate::apps::DataFormat::Table => print!("{}", replay::render(&summary)),
    }
    if summary.all_taken() {
        Ok(())
    } else {
        Err(CheckFailed(format!(
            "the receiver at {} did not take every delivery",
            args.to
        ))
        .into())
    }
}

/// Loads the configuration by the one rule (`-c`, `$HOOKRACE_CONFIG`, `/etc/hookrace/config.toml`,
/// the embedded default), saying on stderr which one when it was not given, and warning when a
/// `./config.toml` sits here unread.
fn located(given: Option<&std::path::Path>) -> Result<config::Config, config::ConfigErrors> {
    let source = config::ConfigSource::locate(given, &|k| std::env::var(k).ok(), &|p| p.exists());
    if let Some(line) = source.notice() {
        eprintln!("hookrace: {line}");
        let here = std::path::Path::new("config.toml");
        if here.exists() && source.path() != Some(here) {
            eprintln!("hookrace: ./config.toml is not read unless named: -c config.toml");
        }
    }
    config::load(source.path())
}

//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), in the shape the
//! reader of stderr expects: plain text for a person (coloured only on a terminal, never under
//! `NO_COLOR` or `--color never`), one JSON object per line for a log shipper
//! (`--log-format json`), and under journald (`$JOURNAL_STREAM` names our stderr) each line
//! starts with its syslog priority (`<3>` for an error … `<7>` for debug) and carries no
//! timestamp of its own, since the journal stamps every line. Secrets never reach a log line:
//! they live in [`crate::config::Secret`], whose `Debug`/`Display` print a mask.
//!
//! `RUST_LOG` takes a default level and per-module levels, `warn,hookrace::channels=debug`
//! (tracing-subscriber's `Targets` syntax). Its regex-based `EnvFilter`, which also filters on
//! span fields, cost a fresh build ~14 s of compiling for a feature nobody used.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// `--color`: whether what hookrace writes for a person is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Color {
    /// Colour on a terminal, unless `$NO_COLOR` is set (to anything but the empty string).
    #[default]
    Auto,
    Always,
    Never,
}

/// `--log-format`: the shape of the log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// A line for a person (with a priority prefix and no timestamp under journald).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `spans`).
    Json,
}

/// The `--color` chosen for this process (set once, by [`init_with`]).
static COLOR: OnceLock<Color> = OnceLock::new();

/// Whether output for a person on `stream` is coloured: `--color always|never` decides, else
/// `$NO_COLOR` (<https://no-color.org>) turns it off, else a terminal has it.
pub fn colored(stream: &impl IsTerminal) -> bool {
    match COLOR.get().copied().unwrap_or_default() {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => no_color_unset() && stream.is_terminal(),
    }
}

fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// How the daemon logs: the defaults, `info`.
pub fn init() {
    init_with("info", LogFormat::Text, Color::Auto)
}

/// Installs the global subscriber once (later calls, in tests, do nothing) with `default` as the
/// level when `RUST_LOG` is unset: the demo keeps the terminal for its progress and logs only
/// warnings.
pub fn init_with(default: &str, format: LogFormat, color: Color) {
    let _ = COLOR.set(color);
    // warp logs every connection a graceful shutdown cuts (or a client drops) as an error; those
    // are not actionable, so its server module is quiet unless RUST_LOG asks for it.
    let filter = from_env(&format!("{default},warp::server=off"));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match (format, under_journald()) {
        (LogFormat::Json, _) => tracing_subscriber::registry()
            .with(layer.json().flatten_event(true).with_current_span(false))
            .with(filter)
            .try_init(),
        (LogFormat::Text, true) => tracing_subscriber::registry()
            .with(layer.with_ansi(false).event_format(SyslogPriority(
                tracing_subscriber::fmt::format().without_time(),
            )))
            .with(filter)
            .try_init(),
        (LogFormat::Text, false) => tracing_subscriber::registry()
            .with(layer.with_ansi(colored(&std::io::stderr())))
            .with(filter)
            .try_init(),
    };
}

/// Whether stderr is the journal's stream: systemd sets `$JOURNAL_STREAM` to its `DEV:INODE`,
/// which a child that redirected stderr no longer matches.
pub fn under_journald() -> bool {
    let Some(named) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from);
    match stderr.and_then(|f| f.metadata()) {
        Ok(m) => named.to_string_lossy() == format!("{}:{}", m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// The syslog priority of a level, as journald reads it from a line's `<N>` prefix.
pub fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// An event format that starts each line with its [`syslog_priority`], then writes the inner
/// format's line.
struct SyslogPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The filter `RUST_LOG` names, or `default` when it is unset; a `RUST_LOG` that does not parse
/// is said on stderr (logging is not up yet) and `default` is used.
fn from_env(default: &str) -> Targets {
    let fallback = || {
        default
            .parse()
            // The defaults are literals of this module, in the syntax `Targets` parses.
            .expect("a valid default log filter")
    };
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => spec.parse().unwrap_or_else(|e| {
            eprintln!("hookrace: RUST_LOG={spec:?} is not a log filter ({e}); using {default:?}");
            fallback()
        }),
        _ => fallback(),
    }
}

/// For tests: logs go through the test harness's capture, so passing tests stay quiet.
pub fn init_for_tests() {
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .with(from_env("info"))
        .try_init();
}

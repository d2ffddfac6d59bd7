//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`). Secrets never reach a
//! log line: they live in [`crate::config::Secret`], whose `Debug`/`Display` print a mask.
//!
//! `RUST_LOG` takes a default level and per-module levels, `warn,hookrace::channels=debug`
//! (tracing-subscriber's `Targets` syntax). Its regex-based `EnvFilter`, which also filters on
//! span fields, cost a fresh build ~14 s of compiling for a feature nobody used.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Installs the global subscriber once; later calls (tests) do nothing.
pub fn init() {
    init_with("info")
}

/// Like [`init`] with another default level (`RUST_LOG` still wins): the demo keeps the
/// terminal for its progress and logs only warnings.
pub fn init_with(default: &str) {
    // warp logs every connection a graceful shutdown cuts (or a client drops) as an error; those
    // are not actionable, so its server module is quiet unless RUST_LOG asks for it.
    let filter = from_env(&format!("{default},warp::server=off"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(filter)
        .try_init();
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

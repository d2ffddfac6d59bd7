//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`). Secrets never reach a
//! log line: they live in [`crate::config::Secret`], whose `Debug`/`Display` print a mask.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (tests) do nothing.
pub fn init() {
    init_with("info")
}

/// Like [`init`] with another default level (`RUST_LOG` still wins): the demo keeps the
/// terminal for its progress and logs only warnings.
pub fn init_with(default: &str) {
    // warp logs every connection a graceful shutdown cuts (or a client drops) as an error; those
    // are not actionable, so its server module is quiet unless RUST_LOG asks for it.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},warp::server=off")));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// For tests: logs go through the test harness's capture, so passing tests stay quiet.
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

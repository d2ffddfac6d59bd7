//! The command line: one binary, subcommands as `design.md` lists them. Parsing only; the work is
//! done by the library functions each command calls, and `main` maps results to exit codes.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit code for bad usage or an invalid configuration (EX_USAGE).
pub const EXIT_USAGE: i32 = 64;
/// Exit code for a failure at run time.
pub const EXIT_FAILURE: i32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "hookrace",
    version,
    about = "Polar AccessLink webhooks versus polling, measured",
    long_about = "hookrace receives Polar AccessLink webhooks and polls AccessLink beside them, stores what \
                  both channels see once, and measures which channel saw each new piece of data first."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM/SIGINT: webhook listener, admin listener, store.
    Run {
        /// The configuration file (default: the embedded config.toml, which uses the simulator).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration: exit 0, or print every problem and exit 64.
    CheckConfig {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

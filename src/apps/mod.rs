//! The applications, on top of everything else: `hookrace run` ([`daemon`]: the wiring of the
//! channels, observers and operations, and the orderly shutdown), `hookrace demo` ([`demo`]: the
//! simulator and the daemon in one process, then the report) and the comparison [`report`].
//!
//! They may import any module below them; nothing below imports them.

pub mod daemon;
pub mod demo;
pub mod report;
pub mod whatif;
pub mod workbench;
pub mod your_app;

/// How a command that prints data prints it (`--format`): a table for a person, or JSON for a
/// program (one document, or one object per line for a stream), with nothing else on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DataFormat {
    #[default]
    Table,
    Json,
}

//! The applications, on top of everything else: `hookrace run` ([`daemon`]: the wiring of the
//! channels, observers and operations, and the orderly shutdown), `hookrace demo` ([`demo`]: the
//! simulator and the daemon in one process, then the report), the comparison [`report`], the
//! model [`whatif`], the receiver [`workbench`] and the commands on recorded traffic ([`traffic`], [`replay`]).
//!
//! They may import any module below them; nothing below imports them.

pub mod daemon;
pub mod demo;
pub mod replay;
pub mod report;
pub mod traffic;
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

/// Writes a file that holds secrets (a class's credentials, a receiver's tokens) readable by
/// its owner only (0600), whatever the umask; an existing file is made 0600 too.
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)
}

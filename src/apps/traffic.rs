//! The commands on recorded traffic: `hookrace trace export` (a store's traffic as a trace file,
//! `crate::trace`) and `hookrace replay` (recorded deliveries sent again to a receiver). The
//! what-if on a trace is `whatif --trace` (`apps::whatif::trace`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::store::{OpenError, Store};
use crate::trace::export::{ExportOptions, Recorded};
use crate::trace::{Pseudonyms, Trace};

/// Options of `hookrace trace export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The store directory to read (a demo's `--store DIR`, a restored backup, the daemon's own
    /// when it is stopped).
    #[arg(long)]
    pub store: PathBuf,
    /// Only entities made at or after this time (RFC 3339, or a date: 2026-11-01).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only entities made before this time (RFC 3339, or a date).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// Write the trace here (default: standard output); written beside it and renamed when whole.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Keep AccessLink's user and entity ids (for your own use; by default they are keyed hashes
    /// under a random key, so the trace can be shared).
    #[arg(long, conflicts_with = "key_file")]
    pub keep_ids: bool,
    /// Hash the ids under the key in this file instead of a random one: two exports under one key
    /// name each user and entity alike (keep the file secret).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

/// `2026-11-01T12:00:00Z` or `2026-11-01` (midnight UTC).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a date (YYYY-MM-DD)"))
}

/// What an export wrote.
pub struct Exported {
    pub entities: u64,
    pub users: u64,
}

/// `hookrace trace export`: reads the store (never one a daemon holds) and writes its trace.
pub fn export_command(args: &ExportArgs, stdout: &mut dyn Write) -> anyhow::Result<Exported> {
    if let (Some(s), Some(u)) = (args.since, args.until) {
        anyhow::ensure!(s < u, "--since {s} is not before --until {u}");
    }
    let pseudonyms = match (&args.keep_ids, &args.key_file) {
        (true, _) => None,
        (false, Some(path)) => {
            let key = std::fs::read(path)
                .with_context(|| format!("reading the key file {}", path.display()))?;
            anyhow::ensure!(
                key.len() >= 16,
                "the key file {} holds fewer than 16 bytes",
                path.display()
            );
            Some(Pseudonyms::keyed(&key))
        }
        (false, None) => Some(Pseudonyms::random()),
    };
    let store = open(&args.store)?;
    let recorded = recorded(&store);
    let options = ExportOptions {
        since: args.since,
        until: args.until,
        pseudonyms,
        recorded,
    };
    let trace = crate::trace::export::from_store(&store, &options);
    store.close().context("closing the store")?;
    let trace = trace?;
    match &args.output {
        Some(path) => write_whole(path, &trace)?,
        None => trace.write(stdout)?,
    }
    Ok(Exported {
        entities: trace.header.entities,
        users: trace.header.users,
    })
}

/// The store at `path`, read-only in spirit; one a daemon holds is refused with the way round.
pub(crate) fn open(path: &Path) -> anyhow::Result<Store> {
    match Store::open_existing(path) {
        Ok(s) => Ok(s),
        Err(OpenError::InUse { path }) => anyhow::bail!(
            "the store at {} is in use by a running daemon: copy it through the daemon's admin \
             API with `hookrace backup FILE`, make a store of the copy with `hookrace restore \
             FILE --store DIR`, and export DIR",
            path.display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// A demo's store knows its measured window and poll interval (its saved report).
fn recorded(store: &Store) -> Recorded {
    let report = store
        .saved(super::report::SAVED_REPORT)
        .and_then(|json| serde_json::from_slice::<super::report::Report>(&json).ok());
    match report {
        Some(r) => Recorded {
            measured_for_s: Some(r.measured_for_s),
            poll_every_s: r.settings.and_then(|s| s.poll_interval_s),
        },
        None => Recorded::default(),
    }
}

/// Writes `trace` beside `path`, syncs it and renames it into place: a failed export never
/// leaves half a trace under the name.
fn write_whole(path: &Path, trace: &Trace) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut out = std::io::BufWriter::new(file);
    trace
        .write(&mut out)
        .with_context(|| format!("writing {}", partial.display()))?;
    let file = out.into_inner().context("writing the trace")?;
    file.sync_all()
        .with_context(|| format!("syncing {}", partial.display()))?;
    std::fs::rename(&partial, path)
        .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))
}

//! `hookrace backup FILE` and `hookrace restore FILE --store DIR`, and the admin route
//! `GET /backup` that streams a running daemon's store (the format is `store::backup`'s).
//!
//! The daemon holds its store open, so a backup of a running daemon goes through its admin
//! listener (behind the admin token); without a daemon the command reads the store itself. The
//! file is written beside its name and renamed into place once whole and synced, so a failed or
//! interrupted backup never replaces a good one. A restore makes a new store and never
//! overwrites one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::mpsc;
use warp::reply::{Reply, Response};

use super::manage::{Target, existing_target};
use crate::config::Config;
use crate::store::Store;
use crate::store::backup::{self, Copied};

/// How much of the stream is gathered before it is sent.
const CHUNK: usize = 64 * 1024;

/// `GET /backup`: the whole store as a backup stream, written on the blocking pool as the
/// client reads it (a client that stops reading stops the copy). A commit first, so the
/// counters kept in memory are in it as of the request.
pub async fn stream(store: Arc<Store>) -> Response {
    if let Err(e) = store.durable().await {
        let message = format!("the store could not commit before the backup: {e:#}");
        let body = warp::reply::json(&serde_json::json!({ "error": message }));
        let status = warp::http::StatusCode::SERVICE_UNAVAILABLE;
        return warp::reply::with_status(body, status).into_response();
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        match backup::write(&store, &mut out) {
            Ok(c) => tracing::info!(
                trees = c.trees,
                keys = c.keys,
                bytes = c.bytes,
                "backup sent"
            ),
            Err(e) => {
                tracing::warn!(
                    error = format_args!("{e:#}"),
                    "the backup was not completed"
                );
                // The response ends in an error instead of its last chunk: the client sees a
                // cut stream, never a backup that looks whole.
                let _ = tx.blocking_send(Err(std::io::Error::other(format!("{e:#}"))));
            }
        }
    });
    let reply = warp::reply::stream(Chunks(rx));
    warp::reply::with_header(reply, "content-type", "application/octet-stream").into_response()
}

type Chunk = Result<Bytes, std::io::Error>;

/// The blocking writer's end: gathers bytes and sends them as chunks.
struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

/// The response's end: the chunks as a stream.
struct Chunks(mpsc::Receiver<Chunk>);

impl futures_util::Stream for Chunks {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Chunk>> {
        self.0.poll_recv(cx)
    }
}

/// `hookrace backup FILE`: the store the configuration names (or `store`) into `file`.
pub async fn backup_command(
    cfg: &Config,
    store: Option<PathBuf>,
    file: &Path,
) -> anyhow::Result<Copied> {
    let partial = partial_name(file);
    let written = match store {
        Some(dir) => {
            let store = Store::open_existing(&dir).map_err(anyhow::Error::from)?;
            to_file(Arc::new(store), &partial).await
        }
        None => match existing_target(cfg)? {
            Target::Store(store) => to_file(store, &partial).await,
            Target::Daemon(admin) => from_daemon(&admin, &partial).await,
        },
    };
    let copied = written.and_then(|()| {
        // Read back whole before it replaces anything: a cut stream is refused here.
        let mut f = std::fs::File::open(&partial)
            .with_context(|| format!("reading back {}", partial.display()))?;
        backup::check(&mut std::io::BufReader::new(&mut f))
            .with_context(|| format!("checking {}", partial.display()))
    });
    match copied {
        Ok(c) => {
            std::fs::rename(&partial, file)
                .with_context(|| format!("renaming {} into place", partial.display()))?;
            Ok(c)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// `FILE.partial`, beside it.
fn partial_name(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Writes the store into `path` (0600: it holds tokens and secrets), synced, then closes it.
async fn to_file(store: Arc<Store>, path: &Path) -> anyhow::Result<()> {
    let path = path.to_path_buf();
    let shared = store.clone();
    let written = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let file = create_private(&path)?;
        let mut out = std::io::BufWriter::new(file);
        backup::write(&shared, &mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
            .with_context(|| format!("syncing {}", path.display()))
    })
    .await
    .context("the backup task")?;
    store.close()?;
    written
}

/// Streams the running daemon's `GET /backup` into `path`, synced.
async fn from_daemon(admin: &crate::http::Admin, path: &Path) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let what = "backing up the running daemon's store";
    let res = admin
        .call(reqwest::Method::GET, "/backup", None, what)
        .await?;
    let mut file = std::io::BufWriter::new(create_private(path)?);
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the daemon's backup stream was cut")?;
        file.write_all(&chunk)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// `hookrace restore FILE --store DIR`.
pub fn restore_command(file: &Path, into: &Path) -> anyhow::Result<Copied> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    backup::restore(&mut std::io::BufReader::new(f), into)
        .with_context(|| format!("restoring {} into {}", file.display(), into.display()))
}

//! Serving a warp filter on a bound listener with the limits a listener on the internet needs.
//!
//! warp 0.4's own server builds hyper's connection builder without a timer, so hyper's
//! header-read timeout is off, connections may idle for ever and their number is unbounded: a
//! thousand idle sockets locked out both listeners. Here each connection must send its first byte
//! within the header timeout and its headers within it too (hyper's timer, which also closes a
//! keep-alive connection that stays idle that long), the number of
//! open connections is capped by a semaphore, and while the cap is reached the listener is
//! reported dead in [`Liveness`], so `/healthz` fails and the watchdog stops being fed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use warp::Filter;
use warp::reply::Reply;

use crate::process::Liveness;

/// What a listener allows.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Name in the liveness registry (`/healthz` names it while the listener is full).
    pub name: &'static str,
    /// Time to send a request's headers, and the longest idle wait between requests.
    pub header_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Serves `filter` on `listener` until `shutdown` completes, then waits for the open connections
/// to finish their requests (the caller bounds that wait).
pub async fn serve<F>(
    listener: TcpListener,
    filter: F,
    limits: Limits,
    liveness: Arc<Liveness>,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter<Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    liveness.set(limits.name, true);
    loop {
        // A free slot first: at the cap, accept nothing (the backlog holds the rest) and say so.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                tracing::warn!(
                    listener = limits.name,
                    max = limits.max_connections,
                    "connection limit reached: new connections wait"
                );
                liveness.set(limits.name, false);
                let slot = tokio::select! {
                    slot = slots.clone().acquire_owned() => slot,
                    _ = &mut shutdown => break,
                };
                liveness.set(limits.name, true);
                match slot {
                    Ok(slot) => slot,
                    Err(_) => break, // the semaphore is never closed
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, typically: wait for some to close.
                    tracing::error!(listener = limits.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(warp::service(filter.clone()));
        let header_timeout = limits.header_timeout;
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // hyper's header timer starts with the first byte of a request: a connection that
            // never sends one would be held open for ever. Wait for it here, as long.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return, // silent, closed or broken: close it and free the slot
            }
            // HTTP/1 only: Polar and browsers speak it, and detecting the version would wait
            // for bytes without any timeout.
            let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

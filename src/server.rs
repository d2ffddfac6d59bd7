//! Serving a warp filter on a bound listener with the limits a listener on the internet needs.
//!
//! warp 0.4's own server builds hyper's connection builder without a timer, so hyper's
//! header-read timeout is off, connections may idle for ever and their number is unbounded: a
//! thousand idle sockets locked out both listeners. Here each connection must send its first byte
//! within the header timeout and its headers within it too (hyper's timer, which also closes a
//! keep-alive connection that stays idle that long), the number of
//! open connections is capped by a semaphore. A full listener is load, not death: its
//! [`ListenerGauge`] shows it in `/status` and `/metrics`, and liveness (what the watchdog and
//! `/healthz` report) is left alone, so a flood slows hookrace down instead of making systemd
//! restart it again and again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::reply::Reply;

use crate::process::ListenerGauge;

/// What a listener allows.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time to send a request's headers, and the longest idle wait between requests.
    pub header_timeout: Duration,
    /// The longest a write may wait for the peer to take bytes: a reader that stops reading (a
    /// dashboard stream in a frozen tab, a slow-read attack) is disconnected after this.
    pub write_stall: Duration,
    /// How long open requests may run on once shutdown begins; then they are closed.
    pub grace: Duration,
    /// The most connections one peer address may hold open (`None`: no cap but the
    /// listener's): one machine on a shared network cannot take every slot.
    pub per_peer: Option<usize>,
    /// Connections kept back for a few paths: when every other slot is taken, a connection
    /// still gets one of these, answers only those paths (anything else is 503) and closes
    /// after one request. The admin listener keeps them for its probes.
    pub reserve: Option<Reserve>,
}

/// The slots a listener keeps for `paths` once it is full ([`Limits::reserve`]).
#[derive(Debug, Clone, Copy)]
pub struct Reserve {
    pub slots: usize,
    pub paths: &'static [&'static str],
}

/// The longest a connection's write may wait for its reader, unless a listener says otherwise.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// The connections one peer may hold on a local server (a class's simulator).
pub const PER_PEER: usize = 256;

/// The connections each peer address holds open, for [`Limits::per_peer`].
#[derive(Debug, Default)]
struct Peers(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One of a peer's connections, counted until it closes.
struct PeerSlot {
    peers: Arc<Peers>,
    ip: std::net::IpAddr,
}

impl Peers {
    /// A slot for a new connection from `ip`, unless it holds `cap` already.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, cap: usize) -> Option<PeerSlot> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = self.peers.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

impl Limits {
    /// For the local servers (the simulator, the demo's app), which a class shares: a
    /// connection must send its headers within 10 s and may idle that long between requests
    /// (hookrace's own clients drop pooled connections after 5 s, before it), and one peer may
    /// hold at most [`PER_PEER`] of them. Before, 4,200 idle sockets from one machine held
    /// every slot for the 600 s the timeout then was.
    pub fn local() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            write_stall: WRITE_STALL,
            grace: Duration::from_secs(10),
            per_peer: Some(PER_PEER),
            reserve: None,
        }
    }
}

/// Serves the simulator's routes on `listener` until `shutdown` (what `sim::start` is handed):
/// [`serve_local`] with the simulator's name and a cap of 4,096 connections.
pub fn serve_simulator(
    listener: TcpListener,
    routes: warp::filters::BoxedFilter<(warp::reply::Response,)>,
    shutdown: CancellationToken,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_local(
        listener,
        "simulator",
        4096,
        routes,
        shutdown.cancelled_owned(),
    ))
}

/// Serves `filter` on `listener` with [`Limits::local`] and a cap of `max` connections until
/// `shutdown` completes: the simulator's and the demo app's server (they are not on the internet,
/// but a load test must not exhaust their file descriptors either). A rejection is answered with
/// its status and name, as warp's own server would.
pub async fn serve_local<F>(
    listener: TcpListener,
    name: &'static str,
    max: usize,
    filter: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter<Error = warp::Rejection> + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    let filter = filter.recover(|r: warp::Rejection| async move {
        Ok::<_, std::convert::Infallible>(rejection_reply(&r))
    });
    let gauge = ListenerGauge::new(name, max);
    serve(listener, filter, Limits::local(), gauge, shutdown).await
}

/// The status a rejection stands for (warp keeps its own mapping private).
fn rejection_reply(r: &warp::Rejection) -> warp::reply::Response {
    use warp::http::StatusCode;
    use warp::reject;
    let status = if r.is_not_found() {
        StatusCode::NOT_FOUND
    } else if r.find::<reject::MethodNotAllowed>().is_some() {
        StatusCode::METHOD_NOT_ALLOWED
    } else if r.find::<reject::PayloadTooLarge>().is_some() {
        StatusCode::PAYLOAD_TOO_LARGE
    } else if r.find::<reject::LengthRequired>().is_some() {
        StatusCode::LENGTH_REQUIRED
    } else if r.find::<reject::UnsupportedMediaType>().is_some() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    } else {
        StatusCode::BAD_REQUEST
    };
    warp::reply::with_status(format!("{r:?}\n"), status).into_response()
}

/// A connection whose writes fail once one has waited [`Limits::write_stall`] for the peer to
/// take bytes; reads pass through.
struct StallGuard<T> {
    inner: T,
    limit: Duration,
    /// Armed while a write waits; cleared when one completes.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> StallGuard<T> {
    fn new(inner: T, limit: Duration) -> StallGuard<T> {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After the inner write answered `poll`: arms, checks or clears the stall timer.
    fn watch<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: std::task::Poll<std::io::Result<R>>,
    ) -> std::task::Poll<std::io::Result<R>> {
        use std::task::Poll;
        match poll {
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer took no bytes for the write-stall limit",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An open connection: its slot under the cap, counted in the gauge until it closes.
struct Open {
    _slot: tokio::sync::OwnedSemaphorePermit,
    gauge: Arc<ListenerGauge>,
}

impl Open {
    fn new(slot: tokio::sync::OwnedSemaphorePermit, gauge: Arc<ListenerGauge>) -> Open {
        gauge.opened();
        Open { _slot: slot, gauge }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.closed();
    }
}

/// Serves `filter` on `listener` until `shutdown` completes, then lets the open connections finish
/// their requests for up to `grace` and closes the rest. When it returns, no connection task is
/// left (nothing the filter holds, such as the store, outlives it).
pub async fn serve<F>(
    listener: TcpListener,
    filter: F,
    limits: Limits,
    gauge: Arc<ListenerGauge>,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter<Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    let graceful = GracefulShutdown::new();
    // Every connection's task, so that none outlives the server.
    let mut connections = tokio::task::JoinSet::new();
    // Cancelled when shutdown begins: a connection still waiting for its first byte is closed
    // then (graceful shutdown only ends connections that are serving HTTP).
    let closing = tokio_util::sync::CancellationToken::new();
    let slots = Slots {
        open: Arc::new(Semaphore::new(gauge.max)),
        reserved: limits.reserve.map(|r| Arc::new(Semaphore::new(r.slots))),
        gauge: gauge.clone(),
    };
    let peers = Arc::new(Peers::default());
    let mut refused_logged = false;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {} // reap the connections that ended
        // A free slot first: at the cap, accept nothing (the backlog holds the rest) and say so.
        let Some(slot) = slots.free(shutdown.as_mut()).await else {
            break;
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, typically: wait for some to close.
                    tracing::error!(listener = gauge.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let peer_slot = match limits.per_peer {
            None => None,
            Some(cap) => match peers.take(peer.ip(), cap) {
                Some(slot) => Some(slot),
                None => {
                    if !refused_logged {
                        tracing::warn!(
                            listener = gauge.name,
                            peer = %peer.ip(),
                            cap,
                            "a peer holds its share of connections: more from it are closed"
                        );
                        refused_logged = true;
                    }
                    drop(stream);
                    continue;
                }
            },
        };
        let filter = filter.clone();
        let only = match (&slot, limits.reserve) {
            (Slot::Reserved(_), Some(reserve)) => Some(reserve.paths),
            _ => None,
        };
        let connection = Connection {
            header_timeout: limits.header_timeout,
            write_stall: limits.write_stall,
            only,
        };
        let watcher = graceful.watcher();
        let open = slot.open(gauge.clone());
        let closing = closing.clone();
        connections.spawn(async move {
            let _open = open;
            let _peer = peer_slot;
            serve_connection(stream, filter, connection, watcher, closing).await;
        });
    }
    drop(listener);
    closing.cancel();
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = gauge.name,
            open = gauge.open(),
            "requests still running after the grace period are abandoned (their clients retry; \
             nothing they had not committed counts as received)"
        );
    }
    connections.shutdown().await;
}

/// A listener's connection slots: the open ones under its cap and those it keeps back.
struct Slots {
    open: Arc<Semaphore>,
    reserved: Option<Arc<Semaphore>>,
    gauge: Arc<ListenerGauge>,
}

/// The slot a new connection holds.
enum Slot {
    Open(tokio::sync::OwnedSemaphorePermit),
    /// One of the [`Reserve`]'s: the connection serves only its paths.
    Reserved(tokio::sync::OwnedSemaphorePermit),
}

impl Slot {
    /// The connection's hold on its slot, counted in the gauge when it is an open one.
    fn open(self, gauge: Arc<ListenerGauge>) -> Box<dyn Send> {
        match self {
            Slot::Open(permit) => Box::new(Open::new(permit, gauge)),
            Slot::Reserved(permit) => Box::new(permit),
        }
    }
}

impl Slots {
    /// A free slot, waiting for one when the cap and the reserve are taken (load, shown by
    /// the gauge and logged); `None` when shutdown begins meanwhile.
    async fn free(&self, shutdown: Pin<&mut impl Future<Output = ()>>) -> Option<Slot> {
        if let Ok(slot) = self.open.clone().try_acquire_owned() {
            self.set_full(false);
            return Some(Slot::Open(slot));
        }
        self.set_full(true);
        if let Some(reserved) = &self.reserved {
            if let Ok(slot) = reserved.clone().try_acquire_owned() {
                return Some(Slot::Reserved(slot));
            }
        }
        let reserved = async {
            match &self.reserved {
                Some(r) => r.clone().acquire_owned().await,
                None => std::future::pending().await,
            }
        };
        // The semaphores are never closed: `ok()` is always `Some`.
        tokio::select! {
            slot = self.open.clone().acquire_owned() => {
                self.set_full(false);
                slot.ok().map(Slot::Open)
            }
            slot = reserved => slot.ok().map(Slot::Reserved),
            _ = shutdown => None,
        }
    }

    /// Marks the listener full or not, logging when that changes.
    fn set_full(&self, full: bool) {
        let was = self.gauge.full_since().is_some();
        if full && !was {
            tracing::warn!(
                listener = self.gauge.name,
                max = self.gauge.max,
                "connection limit reached: new connections wait (load, not a fault)"
            );
        } else if !full && was {
            tracing::info!(listener = self.gauge.name, "connections are accepted again");
        }
        if full != was {
            self.gauge.set_full(full);
        }
    }
}

/// How one connection is served.
#[derive(Clone, Copy)]
struct Connection {
    header_timeout: Duration,
    write_stall: Duration,
    /// On a reserved slot, the paths it may serve.
    only: Option<&'static [&'static str]>,
}

/// One connection: waits for its first byte (as long as the header timeout allows; closed at
/// once when shutdown begins), then serves HTTP/1 on it under the graceful-shutdown `watcher`.
async fn serve_connection<F>(
    stream: tokio::net::TcpStream,
    filter: F,
    Connection {
        header_timeout,
        write_stall,
        only,
    }: Connection,
    watcher: hyper_util::server::graceful::Watcher,
    closing: CancellationToken,
) where
    F: Filter<Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    // hyper's header timer starts with the first byte of a request: a connection that
    // never sends one would be held open for ever. Wait for it here, as long.
    let mut first = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(header_timeout, stream.peek(&mut first)) => {
            match peeked {
                Ok(Ok(n)) if n > 0 => {}
                _ => return, // silent, closed or broken: close it and free the slot
            }
        }
        _ = closing.cancelled() => return,
    }
    // HTTP/1 only: Polar and browsers speak it, and leaving HTTP/2 out of the build (h2
    // and hyper-util's auto server) saves ~9 s of CPU in a fresh build.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // A reserved slot serves one request and is free again.
        .keep_alive(only.is_none());
    let stream = StallGuard::new(stream, write_stall);
    let inner = TowerToHyperService::new(warp::service(filter));
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        use hyper::service::Service;
        let refused = only.is_some_and(|paths| !paths.contains(&req.uri().path()));
        let serving = (!refused).then(|| inner.call(req));
        async move {
            match serving {
                Some(serving) => serving.await,
                None => Ok(full_reply()),
            }
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What a reserved slot answers for a path it does not serve: the listener is full.
fn full_reply() -> warp::reply::Response {
    let mut r = warp::reply::with_status(
        "this listener is at its connection limit: only its probes answer now; retry shortly\n",
        warp::http::StatusCode::SERVICE_UNAVAILABLE,
    )
    .into_response();
    r.headers_mut().insert(
        warp::http::header::RETRY_AFTER,
        warp::http::HeaderValue::from_static("1"),
    );
    r
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // A test owns the tasks it spawns.
mod tests {
    use std::time::Duration;

    use warp::Filter;

    use tokio::io::AsyncWriteExt;

    /// A connection that never sends a byte does not hold shutdown up for the header timeout
    /// (it held the simulator's and the daemon's shutdown for that long).
    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_does_not_delay_shutdown() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(super::serve_local(
            listener,
            "test",
            8,
            warp::path("x").map(|| "ok"),
            stop.clone().cancelled_owned(),
        ));
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Let the server accept it and start waiting for its first byte.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = tokio::time::Instant::now();
        stop.cancel();
        server.await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "shutdown waited {:?} for a silent connection",
            started.elapsed()
        );
    }

    /// A reader that never reads: the write waits until the stall limit, then fails (and the
    /// server drops the connection); a reader that reads lets every write through.
    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_takes_fails_after_the_stall_limit() {
        let (near, _far) = tokio::io::duplex(64);
        let mut guarded = super::StallGuard::new(near, Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        let err = guarded.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));

        let (near, mut far) = tokio::io::duplex(64);
        let mut guarded = super::StallGuard::new(near, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut far, &mut sink)
                .await
                .map(|_| sink.len())
        });
        guarded.write_all(&[0u8; 100_000]).await.unwrap();
        guarded.shutdown().await.unwrap();
        drop(guarded);
        assert_eq!(reader.await.unwrap().unwrap(), 100_000);
    }
}

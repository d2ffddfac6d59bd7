//! `cargo bench --bench ingest`: signed deliveries over loopback from 32 concurrent connections,
//! each answered only once durable, against an empty warp route measured in the same run.
//! Prints requests/s, p50 and p99 for each phase and the ratios to the empty route:
//! - distinct deliveries, durable 200 (target: at least 0.35 × the empty route, p99 ≤ 10 ms);
//! - the same without the `fdatasync` (sled's flush only), to show what the real sync costs;
//! - repeated deliveries (the duplicate path; target: at least 0.5 × the empty route).
//!
//! The load generator runs on the same cores as the server.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::disallowed_methods
)] // A test unwraps: a failure is its verdict; it owns the tasks it spawns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hookrace::accesslink::signature::sign;
use tokio_util::sync::CancellationToken;
use warp::Filter;

const SECRET: &str = "abe1f3ae-fd33-11e8-8eb2-f2801f1b9fd1";
const CONNECTIONS: usize = 32;

struct Run {
    requests: u64,
    seconds: f64,
    latency_us: Histogram<u64>,
}

/// Drives `url` from `CONNECTIONS` connections for `warmup + measure`; `body(i)` makes request i.
async fn drive(
    url: String,
    warmup: Duration,
    measure: Duration,
    body: Arc<dyn Fn(u64) -> (String, String) + Send + Sync>,
) -> Run {
    let counter = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (url, counter, measuring, stop, body) = (
            url.clone(),
            counter.clone(),
            measuring.clone(),
            stop.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = hookrace::http::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let (b, sig) = body(i);
                let t = Instant::now();
                let res = http
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .header("Polar-Webhook-Signature", sig)
                    .body(b)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(res.status(), 200);
                let _ = res.bytes().await;
                if measuring.load(Ordering::Relaxed) {
                    hist.record(t.elapsed().as_micros() as u64)
                        .expect("an auto-resizing histogram");
                    done += 1;
                }
            }
            (done, hist)
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(measure).await;
    stop.store(true, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    let mut latency_us = Histogram::<u64>::new(3).unwrap();
    let mut requests = 0;
    for t in tasks {
        let (n, h) = t.await.unwrap();
        requests += n;
        latency_us.add(&h).unwrap();
    }
    Run {
        requests,
        seconds,
        latency_us,
    }
}

fn line(name: &str, r: &Run) -> f64 {
    let rate = r.requests as f64 / r.seconds;
    println!(
        "{name:<28} {rate:>10.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} requests)",
        r.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
        r.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        r.requests
    );
    rate
}

fn main() {
    let secs = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(default))
    };
    let (warmup, measure) = (secs("BENCH_WARMUP_S", 2), secs("BENCH_MEASURE_S", 8));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The baseline: a warp route that reads the body and answers 200.
        let empty = warp::post()
            .and(warp::path("acl_webhook"))
            .and(warp::body::bytes())
            .map(|_b: bytes::Bytes| "ok\n");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let empty_url = format!("http://{}/acl_webhook", listener.local_addr().unwrap());
        tokio::spawn(hookrace::server::serve_local(listener, "empty receiver", 1024, empty, std::future::pending()));

        // hookrace: a real daemon with a fresh store, the poller off.
        let dir = tempfile::tempdir().unwrap();
        let text = toml::to_string(&serde_json::json!({
            "webhook": {"listen": "127.0.0.1:0"},
            "admin": {"listen": "127.0.0.1:0"},
            "accesslink": {"client_id": "bench", "client_secret": "x", "webhook_secret": SECRET},
            "poller": {"enabled": false},
            "store": {"path": dir.path()},
        }))
        .unwrap();
        let cfg = hookrace::config::parse(&text, "bench", &|_| None).unwrap();
        let shutdown = CancellationToken::new();
        let listeners = hookrace::apps::daemon::Listeners {
            webhook: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            simulator: None,
        };
        let running = hookrace::apps::daemon::start(cfg, listeners, shutdown.clone()).await.unwrap();
        let url = running.webhook_url.clone();

        let make: Arc<dyn Fn(u64) -> (String, String) + Send + Sync> = Arc::new(|i| {
            let body = format!(
                r#"{{"event":"EXERCISE","user_id":475,"entity_id":"b{i}","timestamp":"2026-11-28T10:00:00Z","url":"https://www.polaraccesslink.com/v3/exercises/b{i}"}}"#
            );
            let sig = sign(SECRET, body.as_bytes());
            (body, sig)
        });
        println!("{CONNECTIONS} connections, {}s warm-up, {}s measured each, on {} cores", warmup.as_secs(), measure.as_secs(), std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        let base = drive(empty_url, warmup, measure, make.clone()).await;
        let base_rate = line("empty warp route", &base);
        let ours = drive(url.clone(), warmup, measure, make.clone()).await;
        let our_rate = line("hookrace (durable 200)", &ours);

        // The same, distinct again, with sled's flush but without the fdatasync after it.
        hookrace::store::BENCHMARK_SKIP_FDATASYNC.store(true, Ordering::Relaxed);
        let offset = running.store.counter(hookrace::counter::Counter::WebhookAccepted) + 1_000_000;
        let unsynced: Arc<dyn Fn(u64) -> (String, String) + Send + Sync> = {
            let make = make.clone();
            Arc::new(move |i| make(i + offset))
        };
        let nosync = drive(url.clone(), warmup, measure, unsynced).await;
        let nosync_rate = line("hookrace (no fdatasync)", &nosync);
        hookrace::store::BENCHMARK_SKIP_FDATASYNC.store(false, Ordering::Relaxed);

        // Repeated deliveries: 1,000 entities stored above, sent again and again.
        let repeated: Arc<dyn Fn(u64) -> (String, String) + Send + Sync> = {
            let make = make.clone();
            Arc::new(move |i| make(i % 1000))
        };
        let dups = drive(url, warmup, measure, repeated).await;
        let dup_rate = line("hookrace (duplicates)", &dups);

        let p99 = ours.latency_us.value_at_quantile(0.99) as f64 / 1000.0;
        println!("ratio durable / empty route:     {:.2}  (target ≥ 0.35)", our_rate / base_rate);
        println!("ratio no-fdatasync / empty:      {:.2}  (what the sync costs: durable is {:.0}% of it)", nosync_rate / base_rate, 100.0 * our_rate / nosync_rate);
        println!("ratio duplicates / empty route:  {:.2}  (target ≥ 0.50)", dup_rate / base_rate);
        println!("hookrace p99 (durable): {p99:.2} ms  (target ≤ 10 ms)");
        let accepted = running.store.counter(hookrace::counter::Counter::WebhookAccepted);
        println!("deliveries stored durably: {accepted}");
        shutdown.cancel();
        running.wait().await.unwrap();
    });
}

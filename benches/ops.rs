//! `cargo bench --bench ops`: start-to-ready time, idle memory and CPU, the store's bytes on disk
//! per entity, and `hookrace report` on a store of 1,000,000 entities (generated here through the
//! store's own write path: webhook entities with their raw delivery body). Targets: ready ≤ 200 ms,
//! idle RSS ≤ 20 MB and CPU near zero with the poller at 30 s, at most 1.5 KB per entity on disk,
//! report ≤ 5 s and ≤ 200 MB.
//!
//! Then, on that store with a daemon running on it: ingest with the dashboard's event stream open
//! against ingest without it (target: within 10%), and `/status` and `/metrics` read while
//! deliveries keep arriving (target: p99 ≤ 50 ms).
//!
//! Last, the hop hookrace adds on the callback's way (delivery received → your app notified):
//! deliveries at `BENCH_HOP_RATE` a second (default 1,000) for `BENCH_MEASURE_S`, each fetched
//! from a stand-in AccessLink on loopback and announced to a stand-in app (a `[[notify]]`
//! webhook sink); the time from sending each delivery to the app receiving its event, p50/p99
//! (target: p99 ≤ 20 ms at 1,000/s). `BENCH_HOP_ONLY=1` runs only this part.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::disallowed_methods
)] // A test unwraps: a failure is its verdict; it owns the tasks it spawns.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use hdrhistogram::Histogram;
use hookrace::accesslink::identity::{EntityKey, EventType, UserId};
use hookrace::accesslink::signature::sign;
use hookrace::race::{Entity, FetchState};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_hookrace");

mod support;
use support::{cpu_ticks, env_u64, proc_field};

/// The multi-threaded runtime a phase runs its daemon and load on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A configuration's text built from its shape (the toml crate escapes every value).
fn toml_text(config: serde_json::Value) -> String {
    toml::to_string(&config).expect("a configuration shaped as TOML tables")
}

fn daemon_config(dir: &Path, simulator: bool) -> std::path::PathBuf {
    let path = dir.join("c.toml");
    let mut config = json!({
        "webhook": {"listen": "127.0.0.1:0"},
        "admin": {"listen": "127.0.0.1:0"},
        "poller": {"every": "30s"},
        "store": {"path": dir.join("store")},
    });
    if simulator {
        config["simulator"] = json!({
            "enabled": true, "listen": "127.0.0.1:0", "users": 3, "seed": 1,
            "exercise_every": "1000h", "activity_every": "1000h",
        });
    } else {
        config["accesslink"] =
            json!({"client_id": "x", "client_secret": "y", "webhook_secret": "s"});
    }
    std::fs::write(&path, toml_text(config)).unwrap();
    path
}

fn start_to_ready_and_idle() {
    for simulator in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = daemon_config(dir.path(), simulator);
        let sock_path = dir.path().join("n.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let t = Instant::now();
        let mut child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut buf = [0u8; 512];
        loop {
            let n = sock.recv(&mut buf).unwrap();
            if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                break;
            }
        }
        let ready = t.elapsed();
        let pid = child.id();
        std::thread::sleep(Duration::from_secs(5));
        let ticks0 = cpu_ticks(pid);
        let idle = Duration::from_secs(30);
        std::thread::sleep(idle);
        let ticks = cpu_ticks(pid) - ticks0;
        let rss_kb = proc_field(pid, "VmRSS:").unwrap_or(0);
        let hz = 100.0; // USER_HZ on Linux
        println!(
            "{:<34} ready in {:>6.1} ms   idle RSS {:>5.1} MB   idle CPU {:.2}% over {}s (poller every 30s)",
            if simulator {
                "hookrace run (embedded simulator)"
            } else {
                "hookrace run"
            },
            ready.as_secs_f64() * 1000.0,
            rss_kb as f64 / 1024.0,
            ticks as f64 / hz / idle.as_secs_f64() * 100.0,
            idle.as_secs()
        );
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        child.wait().unwrap();
    }
}

fn report_on_a_million() -> (tempfile::TempDir, std::path::PathBuf) {
    let n = env_u64("BENCH_ENTITIES", 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("store");
    let t = Instant::now();
    generate_store(&store_path, n);
    println!(
        "generated a store of {n} entities in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    store_size(&store_path, n);
    let cfg = dir.path().join("r.toml");
    let config = json!({
        "accesslink": {"client_id": "x", "client_secret": "y"},
        "poller": {"every": "30s"},
        "store": {"path": store_path},
    });
    std::fs::write(&cfg, toml_text(config)).unwrap();
    // sled releases its file lock when its last thread ends, a moment after the store is
    // dropped: a report started in that moment finds the store locked. Try a few times.
    let mut attempt = 0;
    let (took, peak_kb, report) = loop {
        attempt += 1;
        let t = Instant::now();
        let mut child = Command::new(BIN)
            .args(["report", "--format", "json", "-c"])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut peak_kb = 0;
        while child.try_wait().unwrap().is_none() {
            peak_kb = peak_kb.max(proc_field(pid, "VmHWM:").unwrap_or(0));
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = t.elapsed();
        let out = child.wait_with_output().unwrap();
        match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            Ok(report) => break (took, peak_kb, report),
            Err(e) if attempt < 5 => {
                eprintln!(
                    "report attempt {attempt} failed ({e}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!(
                "no JSON report ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    };
    assert_eq!(report["entities_total"], n);
    println!(
        "hookrace report on {n} entities: {:.2} s, peak RSS {:.0} MB (at least; sampled every 5 ms)",
        took.as_secs_f64(),
        peak_kb as f64 / 1024.0
    );
    (dir, store_path)
}

const SECRET: &str = "abe1f3ae-fd33-11e8-8eb2-f2801f1b9fd1";
const CONNECTIONS: usize = 16;

/// Posts one signed delivery, as Polar does, and expects its 200.
async fn post_signed(http: &reqwest::Client, url: &str, body: String) {
    let res = http
        .post(url)
        .header("Content-Type", "application/json")
        .header("Polar-Webhook-Signature", sign(SECRET, body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("a delivery");
    assert_eq!(res.status(), 200);
}

/// Sends distinct signed deliveries from `CONNECTIONS` connections until `stop`; returns how
/// many were answered 200 while `measuring` was set.
async fn deliver(
    url: String,
    first: u64,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
) -> u64 {
    let next = Arc::new(AtomicU64::new(first));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (url, next, stop, measuring) =
            (url.clone(), next.clone(), stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let http = hookrace::http::plain_client();
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    r#"{{"event":"EXERCISE","user_id":475,"entity_id":"load{i}","timestamp":"2026-11-28T10:00:00Z","url":"https://www.polaraccesslink.com/v3/exercises/load{i}"}}"#
                );
                post_signed(&http, &url, body).await;
                if measuring.load(Ordering::Relaxed) {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    n
}

/// Keeps the dashboard's event stream open, reading every event, until `stop`.
async fn dashboard(admin: String, stop: Arc<AtomicBool>) -> u64 {
    let mut res = reqwest::get(format!("{admin}/events"))
        .await
        .expect("the event stream");
    assert_eq!(res.status(), 200);
    let mut bytes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(500), res.chunk()).await {
            Ok(Ok(Some(chunk))) => bytes += chunk.len() as u64,
            Ok(_) => panic!("the event stream ended"),
            Err(_) => {}
        }
    }
    bytes
}

/// Reads `path` on the admin listener every 50 ms until `stop`; returns the latencies in µs.
async fn read_every(admin: String, path: &str, stop: Arc<AtomicBool>) -> Histogram<u64> {
    let http = hookrace::http::plain_client();
    let mut h = Histogram::<u64>::new(3).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let res = http.get(format!("{admin}{path}")).send().await.expect(path);
        assert_eq!(res.status(), 200, "{path}");
        res.bytes().await.expect(path);
        h.record(t.elapsed().as_micros() as u64).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h
}

/// Ingest with and without the dashboard open, and reads of `/status` and `/metrics` while
/// deliveries arrive, on the store just generated.
fn reads_under_load(store_path: &Path) {
    let measure = Duration::from_secs(env_u64("BENCH_MEASURE_S", 8));
    let rt = runtime();
    rt.block_on(async {
        let text = toml_text(json!({
            "webhook": {"listen": "127.0.0.1:0"},
            "admin": {"listen": "127.0.0.1:0"},
            "accesslink": {"client_id": "bench", "client_secret": "x", "webhook_secret": SECRET},
            "poller": {"enabled": false},
            "store": {"path": store_path},
        }));
        let cfg = hookrace::config::parse(&text, "bench", &|_| None).unwrap();
        let shutdown = CancellationToken::new();
        let listeners = hookrace::apps::daemon::Listeners {
            webhook: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            simulator: None,
        };
        let t = Instant::now();
        let running = hookrace::apps::daemon::start(cfg, listeners, shutdown.clone()).await.unwrap();
        println!(
            "daemon on {} entities started in {:.0} ms",
            running.tally.summary().total,
            t.elapsed().as_secs_f64() * 1000.0
        );
        let (url, admin) = (running.webhook_url.clone(), running.admin_url.clone());
        // Each phase: 2 s of warm-up, then `measure`.
        let mut first = 0u64;
        let mut phase = |with_dashboard: bool, with_readers: bool| {
            let (url, admin) = (url.clone(), admin.clone());
            first += 10_000_000;
            let first = first;
            async move {
                let stop = Arc::new(AtomicBool::new(false));
                let measuring = Arc::new(AtomicBool::new(false));
                let load = tokio::spawn(deliver(url, first, stop.clone(), measuring.clone()));
                let events = with_dashboard.then(|| tokio::spawn(dashboard(admin.clone(), stop.clone())));
                let readers = with_readers.then(|| {
                    (
                        tokio::spawn(read_every(admin.clone(), "/status", stop.clone())),
                        tokio::spawn(read_every(admin.clone(), "/metrics", stop.clone())),
                    )
                });
                tokio::time::sleep(Duration::from_secs(2)).await;
                measuring.store(true, Ordering::Relaxed);
                let t = Instant::now();
                tokio::time::sleep(measure).await;
                measuring.store(false, Ordering::Relaxed);
                let secs = t.elapsed().as_secs_f64();
                stop.store(true, Ordering::Relaxed);
                let rate = load.await.unwrap() as f64 / secs;
                if let Some(e) = events {
                    assert!(e.await.unwrap() > 0, "the dashboard received events");
                }
                let reads = match readers {
                    Some((s, m)) => Some((s.await.unwrap(), m.await.unwrap())),
                    None => None,
                };
                (rate, reads)
            }
        };
        // Closed, open, closed again: the store grows and warms as the phases run, so the open
        // phase is compared with the mean of the closed phases on either side of it.
        let (before, _) = phase(false, false).await;
        let (with, _) = phase(true, false).await;
        let (after, _) = phase(false, false).await;
        let without = (before + after) / 2.0;
        let (loaded, reads) = phase(true, true).await;
        println!(
            "ingest on the big store, dashboard closed:  {without:>8.0} req/s   ({before:.0} before, {after:.0} after the open phase)"
        );
        println!(
            "ingest on the big store, dashboard open:    {with:>8.0} req/s   ratio {:.2}  (target ≥ 0.90)",
            with / without
        );
        let (status, metrics) = reads.expect("the third phase reads");
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        for (name, h) in [("/status", &status), ("/metrics", &metrics)] {
            println!(
                "{name:<9} while {loaded:.0} deliveries/s arrive: p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>6.2} ms   ({} reads; target p99 ≤ 50 ms)",
                ms(h, 0.5),
                ms(h, 0.99),
                h.max() as f64 / 1000.0,
                h.len()
            );
        }
        shutdown.cancel();
        running.wait().await.unwrap();
    });
}

/// Writes `n` entities through the store's write path: nine in ten arrive by webhook (a signed
/// body of the usual size, kept raw in the record), most of those are polled too, one in ten is
/// polled only.
fn generate_store(path: &Path, n: u64) {
    let store = hookrace::store::Store::open(path).unwrap();
    // Counted as the daemon counts, so the close saves the summary (a store written with no
    // tally saves none, and the report below would recount a million records).
    let _tally = store.follow_tally().unwrap();
    let now = Utc::now();
    for i in 0..n {
        let user = 1 + i % 100;
        let at = now - chrono::Duration::seconds((n - i) as i64);
        let id = format!("g{i}");
        let mut poll_at = Some(at + chrono::Duration::seconds((i % 30) as i64));
        if i % 10 != 0 {
            let body = format!(
                r#"{{"event":"EXERCISE","user_id":{user},"entity_id":"{id}","timestamp":"{}","url":"https://www.polaraccesslink.com/v3/exercises/{id}"}}"#,
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            let delivery = match hookrace::accesslink::payload::parse(body.as_bytes()) {
                Ok(hookrace::accesslink::payload::Parsed::Delivery(d)) => d,
                other => panic!("the generator's body is not a delivery: {other:?}"),
            };
            let received = at + chrono::Duration::milliseconds((i % 400) as i64);
            store
                .record_delivery(&delivery, body.as_bytes(), received, false)
                .unwrap();
            if i % 10 == 1 {
                poll_at = None;
            }
        }
        let key = EntityKey::new(&EventType::Exercise, UserId(user), &id);
        store
            .update_entity(&key, |e| {
                let mut e =
                    e.unwrap_or_else(|| Entity::new(&EventType::Exercise, UserId(user), &id));
                e.data_available_at = Some(at);
                e.poll_at = poll_at.or(e.poll_at);
                if e.webhook_at.is_some() {
                    e.set_fetch_state(FetchState::Fetched);
                }
                (e, ())
            })
            .unwrap();
    }
    // Closed as a daemon's clean stop closes it: the summary saved, so the report reads it
    // instead of recounting (a store only flushed is unclean, and recounted at its next open).
    store.close().unwrap();
}

/// Bytes on disk per entity, against the bytes the records themselves hold (keys and values of
/// every tree), right after writing and after sled has had the chance to clean its segments.
fn store_size(path: &Path, n: u64) {
    fn on_disk(path: &Path) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let mut apparent = 0;
        let mut allocated = 0;
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            let m = entry.metadata().unwrap();
            if m.is_dir() {
                let (a, b) = on_disk(&entry.path());
                apparent += a;
                allocated += b;
            } else {
                apparent += m.len();
                allocated += m.blocks() * 512;
            }
        }
        (apparent, allocated)
    }
    let (apparent, allocated) = on_disk(path);
    let logical: u64 = {
        let db = sled::open(path).unwrap();
        db.tree_names()
            .iter()
            .map(|name| {
                db.open_tree(name)
                    .unwrap()
                    .iter()
                    .map(|kv| kv.map(|(k, v)| (k.len() + v.len()) as u64).unwrap_or(0))
                    .sum::<u64>()
            })
            .sum()
    };
    let per = |b: u64| b as f64 / n as f64;
    println!(
        "store on disk: {:.0} bytes/entity allocated ({:.0} apparent), records {:.0} bytes/entity: space amplification {:.2}  (target ≤ 1536 bytes/entity)",
        per(allocated),
        per(apparent),
        per(logical),
        allocated as f64 / logical as f64
    );
    // Reopening lets sled recover and rewrite what it keeps; sled cleans segments as it writes,
    // so a store that was opened again and flushed shows what it settles at.
    {
        let store = hookrace::store::Store::open(path).unwrap();
        // Closed, not just flushed: a store left open is recounted by the report that follows.
        store.close().unwrap();
    }
    let (apparent, allocated) = on_disk(path);
    println!(
        "store on disk after reopening: {:.0} bytes/entity allocated ({:.0} apparent)",
        per(allocated),
        per(apparent)
    );
}

/// The hop: see the module docs. Prints the rate reached, how many events arrived, and the
/// latency percentiles from delivery sent to event received.
fn notify_hop() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use warp::Filter;

    let rate = env_u64("BENCH_HOP_RATE", 1000);
    let measure = Duration::from_secs(env_u64("BENCH_MEASURE_S", 8));
    let rt = runtime();
    rt.block_on(async {
        // A stand-in AccessLink: every exercise exists and answers at once.
        let exercises = warp::path!("v3" / "exercises" / String).map(|id: String| {
            warp::reply::json(&json!({
                "id": id, "upload_time": "2026-11-28T10:00:00Z",
                "start_time": "2026-11-28T09:00:00", "sport": "RUNNING",
            }))
        });
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
        tokio::spawn(hookrace::server::serve_local(upstream, "upstream", 1024, exercises, std::future::pending()));
        // A stand-in app: notes when each entity's event arrives.
        let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let hops = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
        let (sent, h) = (sent_at.clone(), hops.clone());
        let app = warp::post()
            .and(warp::body::json())
            .map(move |event: serde_json::Value| {
                let now = Instant::now();
                let id = event["data"]["entity_id"].as_str().unwrap_or_default().to_string();
                if let Some(at) = sent.lock().unwrap().get(&id) {
                    let us = now.duration_since(*at).as_micros() as u64;
                    h.lock().unwrap().record(us.max(1)).unwrap();
                }
                warp::reply()
            });
        let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_url = format!("http://{}/events", app_listener.local_addr().unwrap());
        tokio::spawn(hookrace::server::serve_local(app_listener, "your app", 1024, app, std::future::pending()));

        let dir = tempfile::tempdir().unwrap();
        let text = toml_text(json!({
            "webhook": {"listen": "127.0.0.1:0"},
            "admin": {"listen": "127.0.0.1:0"},
            "accesslink": {"client_id": "bench", "client_secret": "x", "webhook_secret": SECRET,
                           "base_url": upstream_url},
            "users": [{"user_id": 475, "access_token": "bench-token"}],
            "poller": {"enabled": false},
            "notify": [{"kind": "webhook", "url": app_url,
                        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}],
            "store": {"path": dir.path().join("store")},
        }));
        let cfg = hookrace::config::parse(&text, "bench", &|_| None).unwrap();
        let shutdown = CancellationToken::new();
        let listeners = hookrace::apps::daemon::Listeners {
            webhook: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            simulator: None,
        };
        let running = hookrace::apps::daemon::start(cfg, listeners, shutdown.clone())
            .await
            .unwrap();
        let url = running.webhook_url.clone();
        // One delivery every 1/rate s, each on its own task (a delivery does not wait for the
        // one before it, as Polar's do not); the first 2 s warm up and are not counted.
        let http = hookrace::http::plain_client();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let warmup = Duration::from_secs(2);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut counted = 0u64;
        let mut i = 0u64;
        while start.elapsed() < warmup + measure {
            tick.tick().await;
            i += 1;
            let id = format!("hop{i}");
            let body = format!(
                r#"{{"event":"EXERCISE","user_id":475,"entity_id":"{id}","timestamp":"2026-11-28T10:00:00Z","url":"{upstream_url}/v3/exercises/{id}"}}"#
            );
            if start.elapsed() >= warmup {
                sent_at.lock().unwrap().insert(id, Instant::now());
                counted += 1;
            }
            let (http, url) = (http.clone(), url.clone());
            tasks.spawn(async move {
                post_signed(&http, &url, body).await;
            });
            while tasks.try_join_next().is_some() {}
        }
        let sent_s = start.elapsed().as_secs_f64();
        while tasks.join_next().await.is_some() {}
        // Let the last events arrive (up to 30 s).
        let wait = Instant::now();
        while hops.lock().unwrap().len() < counted && wait.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let h = hops.lock().unwrap().clone();
        println!(
            "notify hop at {rate}/s ({i} deliveries in {sent_s:.1} s): {} of {counted} events \
             arrived; delivery sent → app told p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
             (target p99 ≤ 20 ms)",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
        shutdown.cancel();
        running.wait().await.unwrap();
    });
}

fn main() {
    if std::env::var("BENCH_HOP_ONLY").is_ok() {
        notify_hop();
        return;
    }
    if std::env::var("BENCH_SKIP_IDLE").is_err() {
        start_to_ready_and_idle();
    }
    let (_dir, store_path) = report_on_a_million();
    reads_under_load(&store_path);
    notify_hop();
}

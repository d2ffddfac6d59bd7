//! The real binary under load: SIGKILL mid-stream loses no delivery that got a 200, and SIGTERM
//! drains every accepted delivery and exits 0 within the grace period.

use crate::common;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{SECRET, binary, exercise};
use hookrace::counter;
use hookrace::store::Store;

const CONNECTIONS: usize = 32;

/// Starts `hookrace run` and returns it with its webhook URL (read from its start-up log line).
fn start(config: &Path) -> (Child, String) {
    let started = binary::start(binary::hookrace(), config);
    (started.child, started.webhook_url)
}

/// Waits until `n` deliveries were acknowledged, failing the test after a minute or as soon as
/// the daemon has died (a dead child would otherwise leave the test waiting for ever).
async fn wait_for_acks(ok: &AtomicUsize, n: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ok.load(Ordering::SeqCst) < n {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the daemon exited ({status}) after {} acks",
                ok.load(Ordering::SeqCst)
            );
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} acks within a minute",
            ok.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends deliveries for ids 0..total from many connections until the daemon goes away; returns
/// the ids that were answered 200. `ok` counts them as they come.
async fn load(url: String, total: usize, ok: Arc<AtomicUsize>) -> Vec<usize> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (url, acked, next, ok) = (url.clone(), acked.clone(), next.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            let http = hookrace::http::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    return;
                }
                let body = exercise(1, &format!("c{i}"));
                match binary::post_signed(&http, &url, SECRET, body).await {
                    Some(r) if r.status() == 200 => {
                        acked.lock().unwrap().push(i);
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    // The daemon is gone (killed or stopped): stop this connection.
                    _ => return,
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    std::mem::take(&mut *acked.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_delivery() {
    for kill_at in [150usize, 900, 2200] {
        let dir = tempfile::tempdir().unwrap();
        let config = binary::write_config(dir.path());
        let (mut child, url) = start(&config);
        let ok = Arc::new(AtomicUsize::new(0));
        let sender = tokio::spawn(load(url, 3000, ok.clone()));
        // Kill as soon as `kill_at` deliveries were acknowledged, with the other connections
        // mid-request.
        wait_for_acks(&ok, kill_at, &mut child).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = sender.await.unwrap();
        assert!(acked.len() >= kill_at, "{} acknowledged", acked.len());
        {
            let store = Store::open(&dir.path().join("store")).unwrap();
            for i in &acked {
                let key =
                    hookrace::accesslink::identity::EntityKey::stored(format!("EXERCISE/1/c{i}"));
                assert!(
                    store.entity(&key).unwrap().is_some(),
                    "kill at {kill_at}: {key} was acknowledged but is lost"
                );
            }
            let entities = store.follow_tally().unwrap().summary().total;
            assert!(entities as usize >= acked.len());
            // Every entity here came from one delivery: after the crash the counters equal what
            // the store holds (recounted on open, as the store was not closed cleanly).
            assert_eq!(store.counter(counter::Counter::WebhookAccepted), entities);
            assert_eq!(store.counter(counter::Counter::WebhookDuplicates), 0);
            // Each accepted delivery's fetch job was written in the same transaction: every
            // entity has its job queued, or the fetcher already dealt with it (here it gives up
            // at once: the user has no token). No job was lost, none is there twice.
            // The fetcher's queue as a start fills it from the records.
            let queues = hookrace::observe::Queues::scanned(&store).unwrap();
            let queued: Vec<String> = queues
                .fetches
                .queued(&store)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k.to_string())
                .collect();
            let unique: std::collections::HashSet<&String> = queued.iter().collect();
            assert_eq!(unique.len(), queued.len(), "kill at {kill_at}: a job twice");
            store
                .for_each_entity(|e| {
                    assert!(
                        unique.contains(&e.key.to_string())
                            || e.fetch_state() != hookrace::race::FetchState::NotFetched,
                        "kill at {kill_at}: {} has no fetch job and was never fetched",
                        e.key
                    );
                })
                .unwrap();
        }
        // Restart on the same store; every acknowledged delivery again is a duplicate.
        let (mut child, url) = start(&config);
        let http = hookrace::http::plain_client();
        for i in acked.iter().take(200) {
            let body = exercise(1, &format!("c{i}"));
            let res = binary::post_signed(&http, &url, SECRET, body)
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert_eq!(child.wait().unwrap().code(), Some(0));
        let store = Store::open(&dir.path().join("store")).unwrap();
        let dups = store.counter(counter::Counter::WebhookDuplicates) as usize;
        assert_eq!(
            dups,
            acked.len().min(200),
            "counted once: the replays are duplicates"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = binary::write_config(dir.path());
    let (mut child, url) = start(&config);
    let pid = child.id();
    let ok = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(load(url, 100_000, ok.clone()));
    // Let the load run, then ask for shutdown while requests are in flight.
    wait_for_acks(&ok, 500, &mut child).await;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    // A deadline, not a timing assertion: a shutdown that hangs fails here instead of hanging
    // the suite (the grace period bounds it; the rest is room for a loaded machine).
    let deadline = hookrace::apps::daemon::GRACE + Duration::from_secs(30);
    let status = tokio::time::timeout(
        deadline,
        tokio::task::spawn_blocking(move || child.wait().unwrap()),
    )
    .await
    .unwrap_or_else(|_| panic!("no exit within {deadline:?} of SIGTERM"))
    .unwrap();
    assert_eq!(status.code(), Some(0), "exit 0 after SIGTERM");
    let acked = load.await.unwrap();
    assert!(acked.len() >= 500);
    let store = Store::open(&dir.path().join("store")).unwrap();
    for i in &acked {
        assert!(
            store
                .entity(&hookrace::accesslink::identity::EntityKey::stored(format!(
                    "EXERCISE/1/c{i}"
                )))
                .unwrap()
                .is_some(),
            "c{i} lost"
        );
    }
    assert_eq!(
        store.counter(counter::Counter::WebhookAccepted) as usize,
        store.follow_tally().unwrap().summary().total as usize
    );
    assert!(
        !store.found_unclean(),
        "after a clean SIGTERM the store was closed: nothing to recount"
    );
}

/// Shutdown stops every task before it closes the store, even with a dashboard stream open (its
/// snapshot builder holds the store), a connection that never sent a byte and one mid-request:
/// `stop` fails if any handle of the store is left, and the reopened store has nothing to
/// recount, with the counters as the daemon left them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_no_task_behind_and_nothing_to_recount() {
    let dir = tempfile::tempdir().unwrap();
    let app = common::spawn_app(dir.path()).await;
    for i in 0..5 {
        let res = app.deliver(&exercise(1, &format!("life{i}"))).await;
        assert_eq!(res.status(), 200);
    }
    let dashboard = app
        .http
        .get(format!("{}/events", app.admin_base))
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), 200);
    let webhook_addr = app.public_base.trim_start_matches("http://").to_string();
    let _silent = tokio::net::TcpStream::connect(&webhook_addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(&webhook_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, b"POST /acl_webhook HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let store_path = dir.path().to_path_buf();
    app.stop().await;
    drop(dashboard);
    let store = common::reopen_store(&store_path);
    assert!(!store.found_unclean(), "the stop closed the store");
    assert_eq!(store.counter(counter::Counter::WebhookAccepted), 5);
    assert_eq!(store.follow_tally().unwrap().summary().total, 5);
    store.close().unwrap();
}

/// SIGTERM ends hookrace within its grace whatever it waits on: here the poll loop waits out a
/// spent rate-limit window of 15 minutes. (A 60-minute soak over the rate limit once took 273 s
/// to exit: the poll cycle and the webhook watch waited inside the client's pause, and shutdown
/// awaited them without a bound.) The deadline is a bound, not a timing assertion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_within_the_grace_while_the_poller_waits_out_a_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::sim_config_json(dir.path(), 2, "transactions");
    cfg["poller"] = serde_json::json!({"enabled": true, "every": "1s", "mode": "transactions"});
    let app = common::spawn_with(common::config_from(cfg)).await;
    app.faults(serde_json::json!({"rate_limit": [2, 1000], "short_window_s": 900}))
        .await;
    // `paced` counts the requests that began to wait: a poll request is inside the pause.
    app.status_until("a poll request waits for the spent window", |s| {
        let rate = &s["accesslink"]["rate_limit"];
        rate["waiting"] == true
            && rate["waiting_seconds"].as_f64() > Some(60.0)
            && rate["paced"].as_u64() >= Some(1)
    })
    .await;
    let bound = hookrace::apps::daemon::GRACE
        + hookrace::apps::daemon::BACKGROUND_GRACE
        + Duration::from_secs(10);
    let store_path = dir.path().to_path_buf();
    tokio::time::timeout(bound, app.stop())
        .await
        .unwrap_or_else(|_| panic!("still stopping {bound:?} after the stop"));
    let store = common::reopen_store(&store_path);
    assert!(!store.found_unclean(), "closed cleanly, not cut off");
    store.close().unwrap();
}

//! The callback's second hop, through the real daemon, the simulator and "your app" on loopback:
//! one signed event per new entity whatever the channels did, retries under the same id, 410,
//! the exec and ntfy sinks, and (with the real binary) SIGKILL before the send.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::your_app::{self, YourApp};
use common::{App, config_from, eventually, sim_config_json, spawn_with};
use serde_json::{Value, json};

/// The embedded simulator (quiet; tests inject) with `sinks` as `[[notify]]`.
fn config(dir: &Path, sinks: Value) -> hookrace::config::Config {
    let mut c = sim_config_json(dir, 1, "transactions");
    c["notify"] = sinks;
    config_from(c)
}

fn webhook_sink(app: &YourApp) -> Value {
    json!([{"kind": "webhook", "url": app.url, "secret": your_app::SECRET}])
}

/// Waits until the sink has sent `n` events and nothing waits.
async fn until_sent(app: &App, n: u64) -> Value {
    app.status_until(&format!("{n} events sent"), |s| {
        s["notify"][0]["sent"] == n && s["notify"][0]["pending"] == 0
    })
    .await["notify"][0]
        .clone()
}

#[tokio::test]
async fn every_new_entity_reaches_your_app_once_signed_whatever_the_channels_did() {
    let dir = tempfile::tempdir().unwrap();
    let you = YourApp::start().await;
    let app = spawn_with(config(dir.path(), webhook_sink(&you))).await;
    let user = app.first_user().await;
    // Every delivery twice; then one whose deliveries are all lost (only the poll finds it).
    app.faults(json!({"duplicate_rate": 1.0})).await;
    for _ in 0..3 {
        app.inject(user, "EXERCISE").await;
    }
    app.status_until("three fetched", |s| s["webhook"]["fetches"]["ok"] == 3)
        .await;
    app.faults(json!({"duplicate_rate": 0.0, "drop_rate": 1.0}))
        .await;
    app.inject(user, "EXERCISE").await;
    // The poll sees all four: three the webhook had, one new.
    app.cycle().await;
    let status = until_sent(&app, 4).await;
    app.cycle().await;

    let got = you.got();
    assert_eq!(got.len(), 4, "one request per entity: {got:#?}");
    assert!(got.iter().all(|g| g.verified), "every signature checks out");
    let ids: BTreeSet<_> = got.iter().map(|g| g.id.clone()).collect();
    assert_eq!(ids.len(), 4, "one id per entity");
    let events: Vec<Value> = got.iter().map(|g| g.json()).collect();
    assert!(events.iter().all(|e| e["type"] == "exercise.created"));
    assert!(
        events
            .iter()
            .all(|e| e["data"]["item"]["id"].is_string() || e["data"]["item"]["sport"].is_string()),
        "each event carries the stored exercise: {events:#?}"
    );
    let by_poll = events
        .iter()
        .filter(|e| e["data"]["first_channel"] == "poll")
        .count();
    assert_eq!(by_poll, 1, "the lost delivery's entity came from the poll");
    assert!(status["latency_ms"]["count"] == 4, "{status}");
    // /metrics says the same.
    let metrics = app.admin_text("/metrics").await;
    assert!(
        metrics.contains("hookrace_notify_sent_total{sink=\"webhook\"} 4"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_fails_gets_the_same_event_again_under_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let you = YourApp::start().await;
    you.script(&[500]);
    let app = spawn_with(config(dir.path(), webhook_sink(&you))).await;
    let user = app.first_user().await;
    app.inject(user, "EXERCISE").await;
    until_sent(&app, 1).await;
    let got = you.got();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].answered, 500);
    assert_eq!(got[1].answered, 200);
    assert_eq!(got[0].id, got[1].id, "a retry keeps its webhook-id");
    assert_eq!(got[0].body, got[1].body, "and its body");
    assert!(got.iter().all(|g| g.verified));
    app.stop().await;
}

#[tokio::test]
async fn a_410_stops_the_sink_until_its_events_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let you = YourApp::start().await;
    you.script(&[410]);
    let app = spawn_with(config(dir.path(), webhook_sink(&you))).await;
    let user = app.first_user().await;
    app.inject(user, "EXERCISE").await;
    app.status_until("the event parked", |s| s["notify"][0]["failed"] == 1)
        .await;
    // The next entity is parked without a request: the sink asked for no more.
    app.inject(user, "SLEEP").await;
    let s = app
        .status_until("both parked", |s| s["notify"][0]["failed"] == 2)
        .await;
    assert!(s["notify"][0]["gone"].is_string(), "{s}");
    assert_eq!(you.got().len(), 1);

    let res = app
        .http
        .post(format!("{}/notify/retry", app.admin_base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["requeued"], 2);
    let s = until_sent(&app, 2).await;
    assert_eq!(s["failed"], 0);
    assert!(s["gone"].is_null());
    let types: BTreeSet<String> = you
        .delivered()
        .iter()
        .map(|g| g.json()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        ["exercise.created", "sleep.created"]
            .map(String::from)
            .into()
    );
    app.stop().await;
}

#[tokio::test]
async fn the_exec_sink_gets_the_event_on_stdin_and_a_failing_exit_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Saves each event; fails the first time (exit 3), succeeds after.
    let script = r#"n=$(ls "$1" | wc -l); cat > "$1/event-$n.json"; [ "$n" -gt 0 ] || { echo "not yet" >&2; exit 3; }"#;
    let sinks = json!([{
        "kind": "exec",
        "command": ["/bin/sh", "-c", script, "sh", out],
        "events": ["EXERCISE"],
    }]);
    let app = spawn_with(config(&dir.path().join("store"), sinks)).await;
    let user = app.first_user().await;
    // A sleep is not for this sink.
    app.inject(user, "SLEEP").await;
    app.inject(user, "EXERCISE").await;
    until_sent(&app, 1).await;
    let mut files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "one failed run, one that worked: {files:?}");
    let events: Vec<Value> = files
        .iter()
        .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).expect("valid JSON"))
        .collect();
    assert_eq!(events[0], events[1], "the retry sends the same event");
    assert_eq!(events[0]["type"], "exercise.created");
    assert_eq!(events[0]["data"]["user_id"], user);
    app.stop().await;
}

#[tokio::test]
async fn ntfy_gets_one_line_of_text() {
    let dir = tempfile::tempdir().unwrap();
    let you = YourApp::start().await;
    let app = spawn_with(config(
        dir.path(),
        json!([{"kind": "ntfy", "url": you.ntfy_url}]),
    ))
    .await;
    let user = app.first_user().await;
    app.inject(user, "EXERCISE").await;
    until_sent(&app, 1).await;
    let text = you.got()[0].body.clone();
    assert!(
        text.starts_with("New ") && text.contains("exercise") && !text.contains('\n'),
        "{text:?}"
    );
    assert!(text.contains(" min"), "the duration is in it: {text:?}");
    app.stop().await;
}

#[tokio::test]
async fn notify_test_sends_a_signed_test_event_to_each_sink() {
    let you = YourApp::start().await;
    let cfg = config(
        tempfile::tempdir().unwrap().path(),
        json!([
            {"kind": "webhook", "url": you.url, "secret": your_app::SECRET},
            {"kind": "ntfy", "url": you.ntfy_url},
        ]),
    );
    let mut out = Vec::new();
    let failed = hookrace::notify::test_command(&cfg.notify, &mut out)
        .await
        .unwrap();
    assert_eq!(failed, 0);
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("webhook (webhook →") && out.contains(": ok"),
        "{out}"
    );
    let got = you.got();
    assert_eq!(got.len(), 2);
    assert!(got[0].verified && got[0].json()["type"] == "hookrace.test");
    // A sink that refuses is counted (the command line exits 1 on it), saying why.
    you.script(&[500]);
    let mut out = Vec::new();
    let failed = hookrace::notify::test_command(&cfg.notify[..1], &mut out)
        .await
        .unwrap();
    assert_eq!(failed, 1);
    assert!(String::from_utf8(out).unwrap().contains("500"));
}

/// SIGKILL after the data is stored and before your app took its event: the event is in the
/// store's outbox, and the restarted daemon sends it (under the same id).
#[tokio::test]
async fn sigkill_between_the_store_and_the_send_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let you = YourApp::start().await;
    // Your app is down: every attempt fails (503) until the restart.
    you.script(&[503; 1000]);
    let config = dir.path().join("hookrace.toml");
    let mut c = sim_config_json(&dir.path().join("store"), 2, "transactions");
    c["poller"] = json!({"enabled": false});
    c["simulator"]["exercise_every"] = json!("300ms");
    c["notify"] = webhook_sink(&you);
    std::fs::write(&config, common::toml_text(c)).unwrap();

    let started = common::binary::start(common::binary::hookrace(), &config);
    let mut child = started.child;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Each user's oldest event tried and refused (the later ones wait behind it, in order),
    // a few times over.
    while you
        .got()
        .iter()
        .map(|g| &g.id)
        .collect::<BTreeSet<_>>()
        .len()
        < 2
        || you.got().len() < 4
    {
        assert!(Instant::now() < deadline, "no events within a minute");
        assert!(child.try_wait().unwrap().is_none(), "the daemon died");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let refused: BTreeSet<String> = you.got().into_iter().map(|g| g.id).collect();

    // Your app is back: 200 from now on.
    you.reset_script();
    let cleared = you.got().len();
    let restarted = common::binary::start(common::binary::hookrace(), &config);
    let mut child = restarted.child;
    let delivered = eventually(
        "every refused event delivered after the restart",
        || async {
            let ok: BTreeSet<String> = you.got()[cleared..]
                .iter()
                .filter(|g| g.answered == 200 && g.verified)
                .map(|g| g.id.clone())
                .collect();
            refused.is_subset(&ok).then_some(ok)
        },
    )
    .await;
    assert!(delivered.len() >= refused.len());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Credentials in a sink's URL (userinfo, `?key=`) never show: not in `/status`, `/metrics`,
/// the dashboard's stream, nor the error stored with a retrying event. Before the fix the URL
/// appeared whole in all of them.
#[tokio::test]
async fn credentials_in_a_sink_url_are_never_shown_nor_stored() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: every attempt fails with a connection error, which is stored.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("http://app:hunter2@127.0.0.1:{port}/hook?key=s3cret-key");
    let sinks = json!([{"kind": "webhook", "url": url, "secret": your_app::SECRET,
        "give_up_after": "1h"}]);
    let app = spawn_with(config(dir.path(), sinks)).await;
    let user = app.first_user().await;
    app.inject(user, "EXERCISE").await;
    app.status_until(
        "two failed attempts (the first one's error is stored)",
        |s| s["notify"][0]["attempts"].as_u64().unwrap_or(0) >= 2,
    )
    .await;
    let status = app.status().await;
    // With a sink, the notify part of the document matches the published schema too.
    common::assert_matches_status_schema(&status);
    let status = status.to_string();
    let metrics = app.admin_text("/metrics").await;
    let events = tokio::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt;
        let res = reqwest::get(format!("{}/events", app.admin_base))
            .await
            .unwrap();
        let mut body = res.bytes_stream();
        let mut text = String::new();
        while text.matches("\n\n").count() < 3 {
            text.push_str(&String::from_utf8_lossy(
                &body.next().await.unwrap().unwrap(),
            ));
        }
        text
    })
    .await
    .expect("the first snapshot");
    for (what, text) in [
        ("/status", &status),
        ("/metrics", &metrics),
        ("/events", &events),
    ] {
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret-key"),
            "{what}: {text}"
        );
    }
    assert!(status.contains("key=***"), "{status}");
    app.stop().await;
    // Every byte the store wrote: the stored errors are there, the credentials are not.
    let mut stored = Vec::new();
    for entry in walk(dir.path()) {
        stored.extend(std::fs::read(entry).unwrap());
    }
    let find = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(
        find(b"posting to http://***@127.0.0.1"),
        "the error is stored"
    );
    assert!(
        !find(b"hunter2") && !find(b"s3cret-key"),
        "a credential was stored"
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

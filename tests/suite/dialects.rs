//! The second dialect, Standard Webhooks: the grader passes a receiver built on the
//! specification's reference library for Python and fails one that skips the checks; the daemon
//! configured for that dialect passes the grader itself; a captured delivery replayed is refused by
//! its timestamp there and taken in Polar's dialect; `sim trigger --replay-old` replays one byte
//! for byte.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use hookrace::accesslink::dialect::{self, Dialect};
use hookrace::apps::DataFormat;
use hookrace::apps::workbench::grade::{self, CheckArgs, Grade, Outcome};
use hookrace::apps::workbench::{self, TriggerArgs};
use hookrace::sim::{self, SimSettings};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A `whsec_` secret for the tests (24 bytes, base64).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8G";
const TOKENS: [&str; 2] = ["token-of-alice-000", "token-of-bob-00000"];

fn args(url: &str) -> CheckArgs {
    CheckArgs {
        auth: None,
        url: url.to_string(),
        sim: None,
        secret: None,
        tokens: Vec::new(),
        env_file: None,
        fetch_wait: Duration::from_millis(600),
        format: DataFormat::Json,
        junit: None,
        dialect: Dialect::StandardWebhooks,
    }
}

fn failed(g: &Grade) -> BTreeSet<&'static str> {
    g.verdicts
        .iter()
        .filter(|v| v.outcome == Outcome::Fail)
        .map(|v| v.rule)
        .collect()
}

/// A Python with the `standardwebhooks` library (`HOOKRACE_PYTHON`, else `python3`), or `None`:
/// the test then says it skipped. CI installs the library and sets `HOOKRACE_REQUIRE_PYTHON_SW`,
/// which turns a missing one into a failure.
fn python_with_the_library() -> Option<String> {
    let python = std::env::var("HOOKRACE_PYTHON").unwrap_or_else(|_| "python3".into());
    let found = std::process::Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(python);
    }
    assert!(
        std::env::var_os("HOOKRACE_REQUIRE_PYTHON_SW").is_none(),
        "{python} has no standardwebhooks library (pip install standardwebhooks)"
    );
    eprintln!("skipped: {python} has no standardwebhooks library (pip install standardwebhooks)");
    None
}

/// Grades `examples/standard_receiver.py` (with `extra` arguments) run by `python`.
async fn grade_python_receiver(python: &str, extra: &[&str]) -> Grade {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/standard_receiver.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    common::eventually("the Python receiver listening", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/webhook");
    let g = grade::run(
        &CheckArgs {
            env_file: Some(dir.path().join("receiver.env")),
            ..args(&url)
        },
        &mut Vec::new(),
    )
    .await
    .unwrap();
    let _ = child.kill().await;
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_library_passes_every_rule_and_a_naive_receiver_fails_the_checks() {
    hookrace::telemetry::init_for_tests();
    let Some(python) = python_with_the_library() else {
        return;
    };
    // Three receivers graded at once, each on its own simulator.
    let (careful, naive, acknowledging) = tokio::join!(
        grade_python_receiver(&python, &[]),
        grade_python_receiver(&python, &["--naive"]),
        grade_python_receiver(&python, &["--no-fetch"]),
    );
    let table = grade::render_table(&careful);
    println!("{table}");
    assert!(
        careful.verdicts.iter().all(|v| v.outcome == Outcome::Pass),
        "{table}"
    );
    assert_eq!(careful.verdicts.len(), 11, "{table}");
    let table = grade::render_table(&naive);
    println!("{table}");
    assert!(!naive.passed());
    assert_eq!(
        failed(&naive),
        BTreeSet::from([
            "duplicate-id",
            "forged-delivery",
            "future-timestamp",
            "missing-signature",
            "stale-timestamp",
        ]),
        "{table}"
    );
    // An app of hookrace's notify events verifies and acknowledges, and fetches nothing: judged
    // by its answers, it passes; what only a fetch would show is not judged.
    let table = grade::render_table(&acknowledging);
    assert!(acknowledging.passed(), "{table}");
    let not_judged: BTreeSet<_> = acknowledging
        .verdicts
        .iter()
        .filter(|v| v.outcome == Outcome::NotJudged)
        .map(|v| v.rule)
        .collect();
    assert_eq!(
        not_judged,
        BTreeSet::from([
            "duplicate-id",
            "fetch",
            "large-payload",
            "rotated-signatures"
        ]),
        "{table}"
    );
}

/// A simulator speaking Standard Webhooks, with no generator and no users.
fn standard_sim(stop: &CancellationToken) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    sim::start(
        TcpListener::from_std(listener).unwrap(),
        SimSettings {
            dialect: Dialect::StandardWebhooks,
            ..SimSettings::default()
        },
        stop.clone(),
        hookrace::server::serve_simulator,
    )
    .unwrap()
    .base_url
}

/// The daemon configured for Standard Webhooks with [`SECRET`], its AccessLink at `sim` (the
/// grader's two users, whose ids a fresh simulator gives out first) and no poller.
async fn standard_daemon(dir: &std::path::Path, sim: Option<&str>) -> common::App {
    let mut accesslink = json!({
        "client_id": "hookrace-sim",
        "client_secret": "hookrace-sim-secret",
        "webhook_secret": SECRET,
    });
    if let Some(base) = sim {
        accesslink["base_url"] = json!(base);
    }
    common::spawn_with(common::config_from(json!({
        "webhook": {"listen": "127.0.0.1:0", "dialect": "standard-webhooks", "check_every": "off"},
        "admin": common::loopback_listeners(),
        "accesslink": accesslink,
        "users": [
            {"user_id": 10001, "access_token": TOKENS[0]},
            {"user_id": 10002, "access_token": TOKENS[1]},
        ],
        "poller": {"enabled": false},
        "store": {"path": dir.join("store")},
    })))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_in_standard_webhooks_mode_passes_the_grader() {
    hookrace::telemetry::init_for_tests();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let base = standard_sim(&stop);
    let dir = tempfile::tempdir().unwrap();
    let app = standard_daemon(dir.path(), Some(&base)).await;
    let g = grade::run(
        &CheckArgs {
            sim: Some(base.clone()),
            secret: Some(SECRET.into()),
            tokens: TOKENS.iter().map(|t| t.to_string()).collect(),
            ..args(&app.webhook_url)
        },
        &mut Vec::new(),
    )
    .await
    .unwrap();
    let table = grade::render_table(&g);
    println!("{table}");
    assert!(
        g.verdicts.iter().all(|v| v.outcome == Outcome::Pass),
        "{table}"
    );
    // What it accepted it stored once, under Polar's entity keys, and fetched.
    let status = app.status().await;
    assert_eq!(status["webhook"]["rejected"]["signature"], 4, "{status:#}");
    app.stop().await;
}

/// `body` as a Standard Webhooks delivery signed at `timestamp`.
async fn post_standard(app: &common::App, id: &str, timestamp: i64, body: &str) -> u16 {
    let signature = dialect::sign(SECRET, id, timestamp, body.as_bytes()).unwrap();
    app.http
        .post(&app.webhook_url)
        .header("Content-Type", "application/json")
        .header(dialect::ID_HEADER, id)
        .header(dialect::TIMESTAMP_HEADER, timestamp.to_string())
        .header(dialect::SIGNATURE_HEADER, signature)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_replay_is_refused_by_its_timestamp_in_standard_webhooks_and_taken_in_polars() {
    let polar_payload: serde_json::Value = serde_json::from_str(common::EXAMPLE).unwrap();
    let body = dialect::envelope(&polar_payload).to_string();
    let now = chrono::Utc::now().timestamp();

    let dir = tempfile::tempdir().unwrap();
    let app = standard_daemon(dir.path(), None).await;
    // Captured ten minutes ago, replayed now: signed correctly, refused by its timestamp.
    assert_eq!(
        post_standard(&app, "msg_captured", now - 600, &body).await,
        401
    );
    assert_eq!(app.entities("").await.as_array().unwrap().len(), 0);
    // Sent now: taken; the same message again (a sender's retry) is answered 200, stored once.
    assert_eq!(post_standard(&app, "msg_fresh", now, &body).await, 200);
    assert_eq!(post_standard(&app, "msg_fresh", now, &body).await, 200);
    let entities = app.entities("").await;
    assert_eq!(entities.as_array().unwrap().len(), 1, "{entities:#}");
    // Polar's own dialect on the same daemon's kind: a delivery captured in 2018 (the example's
    // timestamp) verifies today, since nothing signed says when it was sent.
    app.stop().await;
    let polar_dir = tempfile::tempdir().unwrap();
    let polar = common::spawn_app(polar_dir.path()).await;
    assert_eq!(polar.deliver(common::EXAMPLE).await.status(), 200);
    polar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_old_sends_the_oldest_genuine_delivery_byte_for_byte() {
    hookrace::telemetry::init_for_tests();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let base = standard_sim(&stop);
    let http = hookrace::http::plain_client();
    for token in TOKENS {
        http.post(format!("{base}/sim/users"))
            .json(&json!({"access_token": token}))
            .send()
            .await
            .unwrap();
    }
    http.post(format!("{base}/sim/webhook-secret"))
        .json(&json!({"secret": SECRET}))
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = standard_daemon(dir.path(), Some(&base)).await;
    let created = http
        .post(format!("{base}/v3/webhooks"))
        .basic_auth("hookrace-sim", Some("hookrace-sim-secret"))
        .json(&json!({"events": ["EXERCISE"], "url": app.webhook_url}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let trigger = |replay_old: bool, event: Option<&str>| TriggerArgs {
        auth: None,
        event: event.map(str::to_string),
        user: None,
        student: None,
        everyone: false,
        count: 1,
        drop: false,
        duplicate: false,
        delay: None,
        bad_signature: false,
        missing_signature: false,
        stale_timestamp: false,
        future_timestamp: false,
        rotated_signatures: false,
        large_payload: false,
        replay_old,
        data: None,
        sim: base.clone(),
        format: DataFormat::Table,
    };
    // Nothing sent yet: nothing to replay, said plainly.
    let err = workbench::trigger(&trigger(true, None), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("no genuine delivery"),
        "{err:#}"
    );
    workbench::trigger(&trigger(false, Some("EXERCISE")), &mut Vec::new())
        .await
        .unwrap();
    let log = || async {
        let log: serde_json::Value = http
            .get(format!("{base}/sim/log"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        log.as_array().unwrap().clone()
    };
    let first = common::eventually("the delivery answered", || async {
        log()
            .await
            .into_iter()
            .find(|e| e["kind"] == "delivery" && e["status"] == 200)
    })
    .await;
    let mut out = Vec::new();
    workbench::trigger(&trigger(true, None), &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(&format!("replayed delivery #{}", first["seq"])),
        "{out}"
    );
    // Within the tolerance a replay verifies: the daemon takes it as the message it already has.
    assert!(out.contains("answered 200"), "{out}");
    let replay = log()
        .await
        .into_iter()
        .rfind(|e| e["kind"] == "delivery")
        .unwrap();
    assert!(
        replay["fault"]
            .as_str()
            .unwrap()
            .starts_with(&format!("replay of #{}", first["seq"])),
        "{replay:#}"
    );
    assert_eq!(
        replay["request"], first["request"],
        "the same bytes and headers"
    );
    assert_eq!(app.entities("").await.as_array().unwrap().len(), 1);
    app.stop().await;
}

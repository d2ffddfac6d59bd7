//! The second dialect, Standard Webhooks: the grader passes a receiver built on the
//! specification's reference library for Python and fails one that skips the checks; the daemon
//! configured for that dialect passes the grader itself; a captured delivery replayed is refused by
//! its timestamp there and taken in Polar's dialect; `sim trigger --replay-old` replays one byte
//! for byte.

use crate::common;

use std::collections::BTreeSet;

use hookrace::accesslink::dialect::{self, Dialect};
use hookrace::apps::workbench::{self, TriggerArgs};
use hookrace::sim::{self, SimSettings};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A `whsec_` secret for the tests (24 bytes, base64).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8G";
const TOKENS: [&str; 2] = ["token-of-alice-000", "token-of-bob-00000"];

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

async fn listening(port: u16, what: &str) {
    common::eventually(what, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
}

/// `hookrace check-receiver --dialect standard-webhooks URL --format json ARGS`, run as a user
/// runs it: the grade as JSON, and whether it exited 0.
async fn check_receiver(url: &str, args: &[&str]) -> (serde_json::Value, bool) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookrace"))
        .args(["check-receiver", url, "--dialect", "standard-webhooks"])
        .args(["--format", "json", "--fetch-wait", "600ms"])
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let grade = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (grade, out.status.success())
}

/// The rules of `grade` whose outcome is `outcome`.
fn rules(grade: &serde_json::Value, outcome: &str) -> BTreeSet<String> {
    grade["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["outcome"] == outcome)
        .map(|v| v["rule"].as_str().unwrap().to_string())
        .collect()
}

fn set(rules: &[&str]) -> BTreeSet<String> {
    rules.iter().map(|r| r.to_string()).collect()
}

/// Grades `examples/standard_receiver.py` (with `extra` arguments) run by `python`.
async fn grade_python_receiver(python: &str, extra: &[&str]) -> (serde_json::Value, bool) {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
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
    listening(port, "the Python receiver listening").await;
    let env_file = dir.path().join("receiver.env");
    let graded = check_receiver(
        &format!("http://127.0.0.1:{port}/webhook"),
        &["--env-file", env_file.to_str().unwrap()],
    )
    .await;
    let _ = child.kill().await;
    graded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_library_passes_every_rule_and_a_naive_receiver_fails_the_checks() {
    let Some(python) = python_with_the_library() else {
        return;
    };
    // Three receivers graded at once, each by its own grader and simulator.
    let ((careful, careful_ok), (naive, naive_ok), (acknowledging, acknowledging_ok)) = tokio::join!(
        grade_python_receiver(&python, &[]),
        grade_python_receiver(&python, &["--naive"]),
        grade_python_receiver(&python, &["--no-fetch"]),
    );
    let all = set(&[
        "burst",
        "duplicate-id",
        "fetch",
        "forged-delivery",
        "future-timestamp",
        "large-payload",
        "missing-signature",
        "rotated-signatures",
        "signed-delivery",
        "stale-timestamp",
        "unknown-type",
    ]);
    assert!(careful_ok, "{careful:#}");
    assert_eq!(rules(&careful, "pass"), all, "{careful:#}");
    assert!(!naive_ok, "{naive:#}");
    assert_eq!(
        rules(&naive, "fail"),
        set(&[
            "duplicate-id",
            "forged-delivery",
            "future-timestamp",
            "missing-signature",
            "stale-timestamp",
        ]),
        "{naive:#}"
    );
    // An app of hookrace's notify events verifies and acknowledges, and fetches nothing: judged
    // by its answers, it passes; what only a fetch would show is not judged.
    assert!(acknowledging_ok, "{acknowledging:#}");
    assert_eq!(
        rules(&acknowledging, "not_judged"),
        set(&[
            "duplicate-id",
            "fetch",
            "large-payload",
            "rotated-signatures"
        ]),
        "{acknowledging:#}"
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

/// The daemon's configuration for Standard Webhooks with [`SECRET`], its AccessLink at `sim`
/// (the grader's two users, whose ids a fresh simulator gives out first) and no poller.
fn standard_config(
    dir: &std::path::Path,
    sim: Option<&str>,
    listen: [&str; 2],
) -> serde_json::Value {
    let mut accesslink = json!({
        "client_id": "hookrace-sim",
        "client_secret": "hookrace-sim-secret",
        "webhook_secret": SECRET,
    });
    if let Some(base) = sim {
        accesslink["base_url"] = json!(base);
    }
    json!({
        "webhook": {"listen": listen[0], "dialect": "standard-webhooks", "check_every": "off"},
        "admin": {"listen": listen[1]},
        "accesslink": accesslink,
        "users": [
            {"user_id": 10001, "access_token": TOKENS[0]},
            {"user_id": 10002, "access_token": TOKENS[1]},
        ],
        "poller": {"enabled": false},
        "store": {"path": dir.join("store")},
    })
}

async fn standard_daemon(dir: &std::path::Path, sim: Option<&str>) -> common::App {
    common::spawn_with(common::config_from(standard_config(
        dir,
        sim,
        ["127.0.0.1:0", "127.0.0.1:0"],
    )))
    .await
}

/// The simulator, the daemon and the grader, each the real binary in its own process, as an
/// operator would run them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_in_standard_webhooks_mode_passes_the_grader() {
    let bin = env!("CARGO_BIN_EXE_hookrace");
    let dir = tempfile::tempdir().unwrap();
    let (sim_port, hook_port, admin_port) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let quiet = [
        "--exercise-every",
        "0s",
        "--activity-every",
        "0s",
        "--sleep-every",
        "0s",
    ];
    let _sim = tokio::process::Command::new(bin)
        .args([
            "sim",
            "--listen",
            &format!("127.0.0.1:{sim_port}"),
            "--users",
            "0",
        ])
        .args(["--dialect", "standard-webhooks", "--heart-rate-every", "0s"])
        .args(quiet)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    listening(sim_port, "the simulator listening").await;
    let base = format!("http://127.0.0.1:{sim_port}");
    let config = dir.path().join("config.toml");
    let listen = [
        format!("127.0.0.1:{hook_port}"),
        format!("127.0.0.1:{admin_port}"),
    ];
    std::fs::write(
        &config,
        common::toml_text(standard_config(
            dir.path(),
            Some(&base),
            [&listen[0], &listen[1]],
        )),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _daemon = tokio::process::Command::new(bin)
        .args(["run", "-c", config.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    listening(admin_port, "the daemon listening").await;
    listening(hook_port, "the daemon's webhook listening").await;
    let url = format!("http://127.0.0.1:{hook_port}/acl_webhook");
    let tokens = TOKENS.join(",");
    let (grade, passed) = check_receiver(
        &url,
        &["--sim", &base, "--secret", SECRET, "--tokens", &tokens],
    )
    .await;
    assert!(passed, "{grade:#}");
    assert_eq!(rules(&grade, "pass").len(), 11, "{grade:#}");
    // The four it refused are counted as refused signatures.
    let status = common::get_json(&format!("http://127.0.0.1:{admin_port}/status")).await;
    assert_eq!(status["webhook"]["rejected"]["signature"], 4, "{status:#}");
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
        event: event.map(str::to_string),
        replay_old,
        ..crate::workbench::trigger_args(&base, "EXERCISE")
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
        let log = common::get_json(&format!("{base}/sim/log")).await;
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

/// `hookrace replay --dialect`: a store received in one dialect replays into a receiver of
/// either, each delivery in the shape and signature the receiver speaks (Polar's payload taken
/// out of the envelope, or put into it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stores_deliveries_replay_into_either_dialect() {
    let now = chrono::Utc::now().timestamp();
    let recorded = tempfile::tempdir().unwrap();
    let app = standard_daemon(recorded.path(), None).await;
    for (i, id) in ["d1", "d2"].iter().enumerate() {
        let payload: serde_json::Value = serde_json::from_str(&common::exercise(7, id)).unwrap();
        let body = dialect::envelope(&payload).to_string();
        assert_eq!(
            post_standard(&app, &format!("msg_{i}"), now, &body).await,
            200
        );
    }
    app.stop().await;
    let store = recorded.path().join("store");
    let replay = |to: String, dialect: &'static str, secret: &'static str| {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hookrace"))
                .args(["replay", "--store", store.to_str().unwrap(), "--to", &to])
                .args(["--secret", secret, "--dialect", dialect, "--speed", "1000"])
                .args(["--format", "json"])
                .output()
                .unwrap()
        })
    };
    let polar_dir = tempfile::tempdir().unwrap();
    let polar = common::spawn_app(polar_dir.path()).await;
    let standard_dir = tempfile::tempdir().unwrap();
    let standard = standard_daemon(standard_dir.path(), None).await;
    for (to, dialect, secret) in [
        (&polar, "polar", common::SECRET),
        (&standard, "standard-webhooks", SECRET),
    ] {
        let out = replay(to.webhook_url.clone(), dialect, secret)
            .await
            .unwrap();
        let summary: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        assert_eq!(
            summary["answers"],
            json!({"200": 2}),
            "{dialect}: {summary}"
        );
        let kept = to.entities("").await;
        assert_eq!(kept.as_array().unwrap().len(), 2, "{dialect}: {kept:#}");
    }
    polar.stop().await;
    standard.stop().await;
}

//! The receiver workbench: `sim trigger` and `sim log` against a running simulator, and
//! `check-receiver`'s rules, each shown failing for a receiver that breaks it and passing for one
//! that keeps it; the naive receiver's exact failures; the example receiver passing every rule.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hookrace::apps::DataFormat;
use hookrace::apps::workbench::grade::{self, CheckArgs, Grade, Outcome};
use hookrace::apps::workbench::{self, LogArgs, TriggerArgs};
use hookrace::sim::{self, SimSettings};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::{HeaderMap, StatusCode};

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const TOKENS: [&str; 2] = ["token-of-alice-000", "token-of-bob-00000"];

/// How a test receiver behaves: `good()` keeps every rule; each test breaks one.
#[derive(Clone)]
struct Behaviour {
    ping_status: u16,
    verify: bool,
    fetch: bool,
    /// Fetch every delivery with the first user's token.
    one_token: bool,
    dedupe: bool,
    /// Retry a failed fetch every 100 ms, for ever.
    retry_for_ever: bool,
    /// Answer an unknown event type 500.
    crash_on_unknown_event: bool,
    /// Answer a delivery for a user it has no token for 500.
    crash_on_unknown_user: bool,
    /// Answer a timestamp without a zone 400.
    strict_timestamp: bool,
    /// Answer the first this many signed deliveries 503.
    fail_first: usize,
    /// Answer a repeated delivery 409 (as if a repeat were an error).
    reject_repeats: bool,
}

fn good() -> Behaviour {
    Behaviour {
        ping_status: 200,
        verify: true,
        fetch: true,
        one_token: false,
        dedupe: true,
        retry_for_ever: false,
        crash_on_unknown_event: false,
        crash_on_unknown_user: false,
        strict_timestamp: false,
        fail_first: 0,
        reject_repeats: false,
    }
}

/// The deliberately naive receiver: 200 to anything, never verifies, fetches every delivery with
/// the one token it has, keeps no record of what it took, retries a failed fetch for ever.
fn naive() -> Behaviour {
    Behaviour {
        verify: false,
        one_token: true,
        dedupe: false,
        retry_for_ever: true,
        ..good()
    }
}

struct TestReceiver {
    url: String,
    _stop: tokio_util::sync::DropGuard,
}

async fn receiver(b: Behaviour) -> TestReceiver {
    let tokens = [
        (10_001, TOKENS[0].to_string()),
        (10_002, TOKENS[1].to_string()),
    ];
    receiver_with(b, SECRET.to_string(), tokens.into()).await
}

/// A receiver verifying with `secret` and fetching with `tokens` (user → token).
async fn receiver_with(b: Behaviour, secret: String, tokens: HashMap<u64, String>) -> TestReceiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/acl_webhook", listener.local_addr().unwrap());
    let stop_server = CancellationToken::new();
    let stop = stop_server.clone();
    let http = hookrace::http::plain_client();
    let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    let signed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let first_token = tokens
        .iter()
        .min_by_key(|(user, _)| **user)
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    let route = warp::path!("acl_webhook")
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .then(move |headers: HeaderMap, body: Bytes| {
            let (b, http, seen, signed, tokens, stop, secret, first_token) = (
                b.clone(),
                http.clone(),
                seen.clone(),
                signed.clone(),
                tokens.clone(),
                stop.clone(),
                secret.clone(),
                first_token.clone(),
            );
            async move {
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
                if header("Polar-Webhook-Event") == Some("PING") {
                    return StatusCode::from_u16(b.ping_status).unwrap();
                }
                if signed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < b.fail_first {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                if b.verify
                    && hookrace::accesslink::signature::verify(
                        &secret,
                        &body,
                        header("Polar-Webhook-Signature"),
                    )
                    .is_err()
                {
                    return StatusCode::UNAUTHORIZED;
                }
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                let event = v["event"].as_str().unwrap_or_default();
                if b.crash_on_unknown_event && event == "UNKNOWN_EVENT" {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                if b.strict_timestamp && !v["timestamp"].as_str().unwrap_or("").ends_with('Z') {
                    return StatusCode::BAD_REQUEST;
                }
                let user = v["user_id"].as_u64().unwrap_or_default();
                let token = if b.one_token {
                    Some(first_token)
                } else {
                    tokens.get(&user).cloned()
                };
                let Some(token) = token else {
                    return if b.crash_on_unknown_user {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                };
                let url = v["url"].as_str().unwrap_or_default().to_string();
                if b.dedupe && !seen.lock().unwrap().insert(url.clone()) {
                    return if b.reject_repeats {
                        StatusCode::CONFLICT
                    } else {
                        StatusCode::OK
                    };
                }
                if b.fetch && event != "UNKNOWN_EVENT" {
                    tokio::spawn(async move {
                        loop {
                            let ok = http
                                .get(&url)
                                .bearer_auth(&token)
                                .send()
                                .await
                                .is_ok_and(|r| r.status() == 200);
                            if ok || !b.retry_for_ever || stop.is_cancelled() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    });
                }
                StatusCode::OK
            }
        });
    tokio::spawn(hookrace::server::serve_local(
        listener,
        "test",
        1024,
        route,
        stop_server.clone().cancelled_owned(),
    ));
    TestReceiver {
        url,
        _stop: stop_server.drop_guard(),
    }
}

fn args(url: &str) -> CheckArgs {
    CheckArgs {
        auth: None,
        url: url.to_string(),
        sim: None,
        secret: Some(SECRET.into()),
        tokens: TOKENS.iter().map(|t| t.to_string()).collect(),
        env_file: None,
        fetch_wait: Duration::from_millis(600),
        format: DataFormat::Json,
        junit: None,
        dialect: Default::default(),
    }
}

async fn grade_of(b: Behaviour) -> Grade {
    hookrace::telemetry::init_for_tests();
    let rx = receiver(b).await;
    grade::run(&args(&rx.url), &mut Vec::new()).await.unwrap()
}

fn failed(g: &Grade) -> Vec<&'static str> {
    g.verdicts
        .iter()
        .filter(|v| v.outcome == Outcome::Fail)
        .map(|v| v.rule)
        .collect()
}

fn outcome(g: &Grade, rule: &str) -> Outcome {
    g.verdicts
        .iter()
        .find(|v| v.rule == rule)
        .unwrap_or_else(|| panic!("no rule {rule}"))
        .outcome
}

/// Each rule: a receiver that breaks it (and only it) fails that rule, and the good one passes
/// every rule. The grades run at once, each against its own simulator.
#[tokio::test]
async fn each_rule_fails_for_a_receiver_that_breaks_it() {
    let cases: Vec<(&str, Behaviour)> = vec![
        ("", good()),
        (
            "signed-delivery",
            Behaviour {
                fail_first: 5,
                ..good()
            },
        ),
        (
            "fetch",
            Behaviour {
                one_token: true,
                ..good()
            },
        ),
        (
            "forged-delivery",
            Behaviour {
                verify: false,
                ..good()
            },
        ),
        (
            "duplicate",
            Behaviour {
                reject_repeats: true,
                ..good()
            },
        ),
        (
            "unknown-event",
            Behaviour {
                crash_on_unknown_event: true,
                ..good()
            },
        ),
        (
            "unknown-user",
            Behaviour {
                crash_on_unknown_user: true,
                ..good()
            },
        ),
        (
            "gone",
            Behaviour {
                retry_for_ever: true,
                ..good()
            },
        ),
        (
            "zoneless-timestamp",
            Behaviour {
                strict_timestamp: true,
                ..good()
            },
        ),
    ];
    let grades =
        futures_util::future::join_all(cases.iter().map(|(_, b)| grade_of(b.clone()))).await;
    for ((rule, _), g) in cases.iter().zip(&grades) {
        let table = grade::render_table(g);
        let fails = failed(g);
        if rule.is_empty() {
            assert!(
                fails.is_empty() && g.passed(),
                "the good receiver:\n{table}"
            );
            assert_eq!(g.verdicts.len(), 10, "{table}");
        } else {
            assert!(fails.contains(rule), "{rule} should fail:\n{table}");
            assert!(!g.passed(), "{table}");
        }
    }
}

/// Verdicts do not cascade: a receiver that never fetches fails `fetch` and nothing else; the
/// rules that judge what it does with the data it fetched say they were not judged (before, it
/// also failed `duplicate` and `zoneless-timestamp`, with fixes about de-duplication and time
/// zones, so a student fixed the wrong thing).
#[tokio::test]
async fn a_receiver_that_never_fetches_fails_fetch_and_nothing_else() {
    let g = grade_of(Behaviour {
        fetch: false,
        ..good()
    })
    .await;
    let table = grade::render_table(&g);
    assert_eq!(failed(&g), ["fetch"], "{table}");
    for rule in ["duplicate", "gone", "zoneless-timestamp"] {
        assert_eq!(outcome(&g, rule), Outcome::NotJudged, "{rule}:\n{table}");
    }
    // It refuses the forgery with a 4xx: that much is seen.
    assert_eq!(outcome(&g, "forged-delivery"), Outcome::Pass, "{table}");
    assert!(g.score().contains("3 not judged"), "{}", g.score());
    let junit = grade::render_junit(&g);
    assert_eq!(junit.matches("<skipped").count(), 3, "{junit}");
}

/// The PING rule: a receiver that answers PING other than 200 cannot be registered, and the grade
/// stops there with that one failure.
#[tokio::test]
async fn a_receiver_that_refuses_the_ping_is_not_registered() {
    let g = grade_of(Behaviour {
        ping_status: 401,
        ..good()
    })
    .await;
    assert_eq!(failed(&g), ["ping"], "{}", grade::render_table(&g));
    assert!(
        g.verdicts[0].observed.contains("401"),
        "{:?}",
        g.verdicts[0]
    );
    assert!(!g.passed());
}

/// The naive receiver (200 to anything, no signature check, one token, no record of what it
/// took, retries for ever) fails exactly these rules, and the duplicate rule warns.
#[tokio::test]
async fn the_naive_receiver_fails_exactly_the_rules_it_breaks() {
    let g = grade_of(naive()).await;
    let table = grade::render_table(&g);
    println!("{table}");
    assert_eq!(failed(&g), ["fetch", "forged-delivery", "gone"], "{table}");
    assert_eq!(outcome(&g, "duplicate"), Outcome::Warn, "{table}");
    assert!(table.contains("the receiver does not keep Polar's contract yet"));
    let junit = grade::render_junit(&g);
    assert_eq!(junit.matches("<failure").count(), 3, "{junit}");
    assert_eq!(junit.matches("<testcase").count(), 10, "{junit}");
}

/// `examples/receiver.rs`, run as a process reading the grader's `--env-file`, passes every rule.
#[tokio::test]
async fn the_example_receiver_passes_every_rule() {
    hookrace::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples/receiver");
    let mut child = tokio::process::Command::new(&example)
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(dir.path())
        .env_remove("POLAR_WEBHOOK_SECRET")
        .env_remove("POLAR_ACCESS_TOKENS")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} ({e}): cargo test builds it", example.display()));
    let url = format!("http://127.0.0.1:{port}/acl_webhook");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let junit = dir.path().join("grade.xml");
    let g = grade::run(
        &CheckArgs {
            secret: None,
            tokens: Vec::new(),
            env_file: Some(dir.path().join("receiver.env")),
            junit: Some(junit.clone()),
            format: DataFormat::Table,
            ..args(&url)
        },
        &mut Vec::new(),
    )
    .await
    .unwrap();
    let _ = child.kill().await;
    let table = grade::render_table(&g);
    println!("{table}");
    assert!(g.passed(), "{table}");
    assert!(
        g.verdicts.iter().all(|v| v.outcome == Outcome::Pass),
        "{table}"
    );
    let xml = std::fs::read_to_string(junit).unwrap();
    assert!(xml.contains("failures=\"0\""), "{xml}");
    // The receiver's secrets are its owner's only, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    let env = std::fs::metadata(dir.path().join("receiver.env")).unwrap();
    assert_eq!(env.permissions().mode() & 0o777, 0o600);
}

/// A simulator for the trigger and log commands: no generator, one user.
async fn sim_alone() -> (String, tokio_util::sync::DropGuard) {
    hookrace::telemetry::init_for_tests();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let running = sim::start(
        listener,
        SimSettings {
            users: 1,
            ..SimSettings::default()
        },
        stop.clone(),
        hookrace::server::serve_simulator,
    )
    .unwrap();
    (running.base_url, stop.drop_guard())
}

pub(crate) fn trigger_args(sim: &str, event: &str) -> TriggerArgs {
    TriggerArgs {
        auth: None,
        event: Some(event.into()),
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
        replay_old: false,
        data: None,
        sim: sim.into(),
        format: DataFormat::Table,
    }
}

async fn register(sim: &str, url: &str) {
    let res = hookrace::http::plain_client()
        .post(format!("{sim}/v3/webhooks"))
        .basic_auth("hookrace-sim", Some("hookrace-sim-secret"))
        .json(&json!({"events": ["EXERCISE", "SLEEP"], "url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

/// `sim trigger` makes data and the simulator delivers it; `sim log` prints the delivery with the
/// receiver's answer and the fetch with whose token; a one-shot drop is logged, not sent.
#[tokio::test]
async fn trigger_makes_data_and_log_shows_the_delivery_and_the_fetch() {
    let (sim, _stop) = sim_alone().await;
    // Without a webhook there is nobody to deliver to: a clear error.
    let err = workbench::trigger(&trigger_args(&sim, "EXERCISE"), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no webhook"), "{err}");
    let rx = receiver(Behaviour {
        verify: false,
        ..good()
    })
    .await;
    register(&sim, &rx.url).await;
    let mut out = Vec::new();
    workbench::trigger(&trigger_args(&sim, "SLEEP"), &mut out)
        .await
        .unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert!(printed.contains("made SLEEP"), "{printed}");
    assert!(printed.contains(&rx.url), "{printed}");
    workbench::trigger(
        &TriggerArgs {
            drop: true,
            ..trigger_args(&sim, "EXERCISE")
        },
        &mut Vec::new(),
    )
    .await
    .unwrap();
    // The receiver answers, then fetches (with no token of its own for user 10001: it uses the
    // test's first token, which the simulator does not know).
    let log_args = LogArgs {
        student: None,
        event: None,
        answer: None,
        auth: None,
        follow: false,
        json: false,
        format: DataFormat::Table,
        sim: sim.clone(),
    };
    let mut text = String::new();
    for _ in 0..100 {
        let mut out = Vec::new();
        workbench::log(&log_args, &mut out).await.unwrap();
        text = String::from_utf8(out).unwrap();
        if text.contains("fetched") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(text.contains("PING"), "{text}");
    assert!(text.contains("SLEEP user 10001 → 200 in"), "{text}");
    assert!(
        text.contains("EXERCISE user 10001 → not sent [drop]"),
        "{text}"
    );
    assert!(text.contains("fetched /v3/users/sleep/"), "{text}");
    assert!(text.contains("an unknown token → 401"), "{text}");
    // No simulator: a clear error naming the address.
    let err = workbench::trigger(&trigger_args("127.0.0.1:9", "EXERCISE"), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no simulator answers at http://127.0.0.1:9"),
        "{err}"
    );
}

/// `sim log --follow` prints the entries already there, then each new one as it happens.
#[tokio::test]
async fn log_follow_streams_new_entries() {
    let (sim, stop) = sim_alone().await;
    let rx = receiver(good()).await;
    register(&sim, &rx.url).await;
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let follow = {
        let (sim, out) = (sim.clone(), out.clone());
        tokio::spawn(async move {
            struct Shared(Arc<Mutex<Vec<u8>>>);
            impl std::io::Write for Shared {
                fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                    self.0.lock().unwrap().extend_from_slice(b);
                    Ok(b.len())
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            let args = LogArgs {
                student: None,
                event: None,
                answer: None,
                auth: None,
                follow: true,
                json: false,
                format: DataFormat::Table,
                sim,
            };
            workbench::log(&args, &mut Shared(out)).await
        })
    };
    let seen = |needle: &str| {
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        text.contains(needle)
    };
    for _ in 0..100 {
        if seen("PING") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen("PING"));
    workbench::trigger(&trigger_args(&sim, "EXERCISE"), &mut Vec::new())
        .await
        .unwrap();
    for _ in 0..100 {
        if seen("EXERCISE user 10001 → 401") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The good receiver verifies with the test's secret, not this webhook's: 401.
    assert!(seen("EXERCISE user 10001 → 401"));
    // The stream ends when the simulator stops.
    drop(stop);
    tokio::time::timeout(Duration::from_secs(10), follow)
        .await
        .expect("the follower ends with the simulator")
        .unwrap()
        .unwrap();
    assert!(seen("the simulator at"));
}

/// A class of three on one simulator: two students register receivers (one keeps the contract,
/// one is naive), the third none; the teacher triggers for everyone, a forgery and a duplicate
/// included; the scoreboard tells the three apart, as JSON and in a real browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_on_one_simulator_and_its_scoreboard() {
    let (running, _stop) = class_sim(3).await;
    let base = running.base_url.clone();
    let http = hookrace::http::plain_client();
    let teacher = running.sim.teacher_token().unwrap().to_string();
    let class: Value = http
        .get(format!("{base}/sim/class.json"))
        .basic_auth("teacher", Some(&teacher))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let creds = class["credentials"].as_array().unwrap().clone();
    assert_eq!(creds.len(), 3);
    let table = sim::credentials_table(&creds, &base);
    assert_eq!(table.lines().count(), 2 + 3 * 2, "{table}");
    let mut receivers = Vec::new();
    for (student, behaviour) in [(1, good()), (2, naive())] {
        let c = &creds[student - 1];
        let tokens: HashMap<u64, String> = c["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["user_id"].as_u64().unwrap(),
                    u["access_token"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let secret = format!("class-secret-of-student-{student}");
        let res = http
            .post(format!("{base}/sim/webhook-secret"))
            .bearer_auth(&teacher)
            .json(&json!({"secret": secret, "student": student}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let rx = receiver_with(behaviour, secret, tokens).await;
        let res = student_webhook(&http, &base, c, &rx.url).await;
        assert_eq!(res.status(), 201, "student {student} registers");
        receivers.push(rx);
    }
    // One webhook per client holds per student: student 1 cannot register a second.
    let c1 = &creds[0];
    let again = http
        .post(format!("{base}/v3/webhooks"))
        .basic_auth(
            c1["client_id"].as_str().unwrap(),
            c1["client_secret"].as_str(),
        )
        .json(&json!({"events": ["EXERCISE"], "url": receivers[1].url}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    let everyone = |fault: (bool, bool)| TriggerArgs {
        auth: Some(format!("teacher:{teacher}")),
        everyone: true,
        count: 2,
        bad_signature: fault.0,
        duplicate: fault.1,
        ..trigger_args(&base, "EXERCISE")
    };
    let mut out = Vec::new();
    workbench::trigger(&everyone((false, false)), &mut out)
        .await
        .unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert!(
        printed.contains("skipped 1 without an active webhook for EXERCISE: student-03\n"),
        "{printed}"
    );
    assert_eq!(printed.matches("delivering to").count(), 2, "{printed}");
    workbench::trigger(&everyone((true, false)), &mut Vec::new())
        .await
        .unwrap();
    workbench::trigger(&everyone((false, true)), &mut Vec::new())
        .await
        .unwrap();
    // Settled: every delivery answered, every fetch the receivers make made.
    let mut board = Vec::new();
    for _ in 0..200 {
        board = running.sim.scoreboard();
        // Per student, both users: 2 × 2 clean items, and 2 × 2 duplicated ones sent twice.
        let settled = board[..2].iter().all(|s| s.deliveries == 4 + 8)
            && board[0].fetched_right == board[0].to_fetch
            && board[1].forged_refused == Some(false)
            && board[1].duplicates_handled == Some(false);
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (good_row, naive_row, none_row) = (&board[0], &board[1], &board[2]);
    assert_eq!(good_row.client_id, "student-01");
    assert!(good_row.active && good_row.ping_passed, "{good_row:?}");
    assert_eq!(
        (good_row.answered, good_row.deliveries),
        (12, 12),
        "{good_row:?}"
    );
    assert_eq!(
        (good_row.fetched_right, good_row.to_fetch),
        (8, 8),
        "{good_row:?}"
    );
    assert_eq!(good_row.forged_refused, Some(true), "{good_row:?}");
    assert_eq!(good_row.duplicates_handled, Some(true), "{good_row:?}");
    assert_eq!(
        (naive_row.answered, naive_row.deliveries),
        (12, 12),
        "{naive_row:?}"
    );
    // The naive receiver fetches every item with its first user's token: the second user's
    // items show it (with one user per trigger, it scored every fetch right).
    assert!(naive_row.wrong_token > 0, "{naive_row:?}");
    assert_eq!(naive_row.forged_refused, Some(false), "{naive_row:?}");
    assert_eq!(naive_row.duplicates_handled, Some(false), "{naive_row:?}");
    assert!(
        none_row.webhook.is_none() && none_row.deliveries == 0,
        "{none_row:?}"
    );

    // The teacher's log names the student on each line, and filters by student, event, answer.
    let log = |student: Option<usize>, answer: Option<&str>| LogArgs {
        student,
        event: Some("exercise".into()),
        answer: answer.map(String::from),
        follow: false,
        json: false,
        format: DataFormat::Table,
        auth: Some(format!("teacher:{teacher}")),
        sim: base.clone(),
    };
    let mut out = Vec::new();
    workbench::log(&log(Some(2), None), &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 4 + 4 + 8, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains(" student-02 EXERCISE user ")),
        "{text}"
    );
    let mut out = Vec::new();
    workbench::log(&log(Some(1), Some("4xx")), &mut out)
        .await
        .unwrap();
    let refused = String::from_utf8(out).unwrap();
    // The good receiver refused the four forgeries, and nothing else.
    assert_eq!(refused.lines().count(), 4, "{refused}");
    assert!(
        refused.lines().all(|l| l.contains("[bad_signature]")),
        "{refused}"
    );

    // The page, in a real browser: three rows, the good student's cells all green.
    let Some(browser) = common::browser_or_skip() else {
        return;
    };
    let url = format!("{base}/sim/class?snapshot=1");
    let dom = common::dump_dom(&browser, &url).await;
    assert!(
        dom.contains(">snapshot<"),
        "the event stream delivered:\n{dom}"
    );
    assert_eq!(dom.matches("data-student=").count(), 3, "{dom}");
    let row = |n: usize| {
        let at = dom.find(&format!("data-student=\"{n}\"")).unwrap();
        let end = at + dom[at..].find("</tr>").unwrap();
        dom[at..end].to_string()
    };
    assert!(!row(1).contains("class=\"no\""), "student 1: {}", row(1));
    // Naive: the other user's token, the forgery and the duplicates.
    assert_eq!(
        row(2).matches("class=\"no\"").count(),
        3,
        "student 2: {}",
        row(2)
    );
    common::screenshot(&browser, &url, "class-scoreboard.png").await;
}

/// The command line's grammar on the simulator's commands, through the binary: `--format json`
/// prints one document on stdout and nothing else, the exit code says whether the check
/// failed (1) or the tool could not do its job (2), and `check-receiver` prints each rule as it
/// is judged (the score comes last).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_commands_speak_json_and_exit_by_one_grammar() {
    use tokio::io::AsyncBufReadExt;
    let (sim, _stop) = sim_alone().await;
    let rx = receiver(good()).await;
    register(&sim, &rx.url).await;
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hookrace"))
            .args(args)
            .output()
            .await
            .unwrap()
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = run(args(&[
        "sim", "trigger", "ping", "--sim", &sim, "--format", "json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["pinged"][0]["answered"], true, "{doc}");
    let out = run(args(&["sim", "log", "--sim", &sim, "--format", "json"])).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let entries: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert!(
        entries.as_array().is_some_and(|e| !e.is_empty()),
        "{entries}"
    );
    // No simulator: the tool could not do its job.
    let out = run(args(&[
        "sim",
        "log",
        "--sim",
        "127.0.0.1:9",
        "--format",
        "json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no simulator answers"));
    // A receiver that fails a rule: the check failed. Each verdict is printed as it is judged:
    // the ping's line arrives while the later rules are still running.
    let naive_rx = receiver(naive()).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookrace"))
        .args(["check-receiver", &naive_rx.url, "--fetch-wait", "500ms"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        let ping = line.starts_with("PASS  ping");
        printed.push(line);
        if ping {
            break;
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "printed only at the end: {printed:#?}"
    );
    while let Some(line) = lines.next_line().await.unwrap() {
        printed.push(line);
    }
    assert_eq!(child.wait().await.unwrap().code(), Some(1), "{printed:#?}");
    assert!(
        printed.last().unwrap().contains("rules pass"),
        "{printed:#?}"
    );
    // Bad usage.
    let out = run(args(&["sim", "log", "--format", "yaml"])).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
}

/// Attack: a "simulator" that answers without end (`sim log --sim` read 6.4 GB, `sim trigger`
/// 8.6 GB in 25 s). Each command reads at most its cap and says which one ran out.
#[tokio::test]
async fn the_simulator_commands_read_at_most_their_cap() {
    use futures_util::StreamExt;
    use warp::Filter;
    let endless = warp::any()
        .map(|| {
            let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
            let forever = futures_util::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
            warp::reply::Reply::into_response(warp::reply::stream(forever))
        })
        .boxed();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(hookrace::server::serve_local(
        listener,
        "endless",
        16,
        endless,
        stop.cancelled_owned(),
    ));
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        workbench::trigger(&trigger_args(&base, "EXERCISE"), &mut Vec::new()),
    )
    .await
    .expect("the trigger gives up at its cap")
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("more than 1048576 bytes"),
        "{err:#}"
    );
    for follow in [false, true] {
        let args = LogArgs {
            student: None,
            event: None,
            answer: None,
            auth: None,
            follow,
            json: false,
            format: DataFormat::Table,
            sim: base.clone(),
        };
        let err = tokio::time::timeout(
            Duration::from_secs(20),
            workbench::log(&args, &mut Vec::new()),
        )
        .await
        .expect("the log gives up at its cap")
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("more than"),
            "{follow}: {err:#}"
        );
    }
}

/// `sim resend SEQ` sends a logged delivery again to the same receiver, byte for byte (the same
/// signature: what a replay attacker holds), and logs it as a resend; an unknown number is a
/// clear error.
#[tokio::test]
async fn resend_sends_a_logged_delivery_again_byte_for_byte() {
    let (sim, _stop) = sim_alone().await;
    let rx = common::receiver::Receiver::start().await;
    register(&sim, &rx.url).await;
    let ping = rx.next().await;
    assert_eq!(ping.event.as_deref(), Some("PING"));
    workbench::trigger(&trigger_args(&sim, "EXERCISE"), &mut Vec::new())
        .await
        .unwrap();
    let first = rx.next().await;
    let seq = common::eventually("the delivery is logged", || async {
        let log: Value = hookrace::http::plain_client()
            .get(format!("{sim}/sim/log"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        log.as_array()?
            .iter()
            .find(|e| e["kind"] == "delivery" && e["event"] == "EXERCISE")
            .and_then(|e| e["seq"].as_u64())
    })
    .await;
    let args = |seq: u64| workbench::ResendArgs {
        auth: None,
        seq,
        sim: sim.clone(),
        format: DataFormat::Json,
    };
    let mut out = Vec::new();
    workbench::resend(&args(seq), &mut out).await.unwrap();
    let answer: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (answer["resent"].as_u64(), answer["status"].as_u64()),
        (Some(seq), Some(200))
    );
    let again = rx.next().await;
    assert_eq!(again.body, first.body);
    assert_eq!(again.signature, first.signature);
    assert_eq!(again.event, first.event);
    let log = hookrace::http::plain_client()
        .get(format!("{sim}/sim/log"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains(&format!("resend of #{seq}")), "{log}");
    // The log shows the exchange as an inspector does: what was sent, and what came back.
    let entries: Value = serde_json::from_str(&log).unwrap();
    let entry = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["seq"] == seq)
        .unwrap();
    assert_eq!(entry["request"]["body"], first.body.as_str(), "{entry}");
    let sent_headers = entry["request"]["headers"].to_string();
    assert!(
        sent_headers.contains(first.signature.as_deref().unwrap()),
        "{entry}"
    );
    let answered = entry["answer"]["headers"].to_string();
    assert!(answered.contains("content-length"), "{entry}");
    let err = workbench::resend(&args(9999), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("no sent delivery #9999"),
        "{err:#}"
    );
}

/// `sim trigger --data FILE` makes the item with the caller's fields, served as the receiver
/// will fetch it; an unknown field, a field of the wrong type or an impossible item is refused
/// with the reason, and nothing is made.
#[tokio::test]
async fn trigger_with_data_makes_the_item_asked_for_or_nothing() {
    let (sim, _stop) = sim_alone().await;
    let rx = common::receiver::Receiver::start().await;
    register(&sim, &rx.url).await;
    let dir = tempfile::tempdir().unwrap();
    let trigger = |data: Value| {
        let path = dir.path().join("data.json");
        std::fs::write(&path, data.to_string()).unwrap();
        let args = TriggerArgs {
            data: Some(path),
            format: DataFormat::Json,
            ..trigger_args(&sim, "EXERCISE")
        };
        async move {
            let mut out = Vec::new();
            workbench::trigger(&args, &mut out).await.map(|()| out)
        }
    };
    let asked = json!({"sport": "CYCLING", "duration_ms": 5_400_000, "distance_m": 42_000.0,
                       "hr_avg": 131, "hr_max": 168, "calories": 1234});
    let out = trigger(asked).await.unwrap();
    let made: Value = serde_json::from_slice(&out).unwrap();
    let url = made["made"][0]["url"].as_str().unwrap().to_string();
    let http = hookrace::http::plain_client();
    let users: Value = http
        .get(format!("{sim}/sim/users"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = users[0]["access_token"].as_str().unwrap();
    let served: Value = http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["sport"], "CYCLING", "{served}");
    assert_eq!(served["duration"], "PT1H30M", "{served}");
    assert_eq!(served["distance"], 42_000.0);
    assert_eq!(served["calories"], 1234);
    assert_eq!(
        served["heart_rate"],
        json!({"average": 131, "maximum": 168})
    );

    let truth = || async {
        let t: Value = http
            .get(format!("{sim}/sim/truth"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        t["entities"].as_array().unwrap().len()
    };
    let before = truth().await;
    for (data, why) in [
        (json!({"speed": 3}), "has no field \"speed\""),
        (json!({"hr_avg": "fast"}), "EXERCISE:"),
        (
            json!({"hr_avg": 180, "hr_max": 150}),
            "hr_avg must not be above hr_max",
        ),
        (json!({"hashed_id": "x"}), "identity"),
    ] {
        let err = trigger(data).await.unwrap_err();
        assert!(format!("{err:#}").contains(why), "{why}: {err:#}");
    }
    assert_eq!(truth().await, before, "a refused trigger made something");
}

/// Registers `student`'s webhook (EXERCISE) at `url` with their own client's credentials.
async fn student_webhook(
    http: &reqwest::Client,
    base: &str,
    student: &Value,
    url: &str,
) -> reqwest::Response {
    http.post(format!("{base}/v3/webhooks"))
        .basic_auth(
            student["client_id"].as_str().unwrap(),
            student["client_secret"].as_str(),
        )
        .json(&json!({"events": ["EXERCISE"], "url": url}))
        .send()
        .await
        .unwrap()
}

/// A simulator with a class of `students`, stopped when the guard drops.
async fn class_sim(students: u32) -> (sim::RunningSim, tokio_util::sync::DropGuard) {
    hookrace::telemetry::init_for_tests();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    let settings = SimSettings {
        users: 0,
        class: students,
        ..SimSettings::default()
    };
    let running = sim::start(listener, settings, stop, hookrace::server::serve_simulator).unwrap();
    (running, guard)
}

/// Attack: a student runs `hookrace sim --class 24` at home with the same (default) seed and
/// reads the class file. A class's credentials come from the operating system's randomness, so
/// that file holds none of the classroom's (before, every secret and token was the seed's);
/// without a class the seed still replays the same credentials, as tests and docs rely on.
#[tokio::test]
async fn a_class_s_credentials_are_not_the_seed_s() {
    let (home, _stop_home) = class_sim(2).await;
    let (class, _stop_class) = class_sim(2).await;
    let secrets = |creds: Vec<Value>| -> Vec<String> {
        creds
            .iter()
            .flat_map(|c| {
                let tokens = c["users"].as_array().unwrap().iter();
                let tokens = tokens.map(|u| u["access_token"].as_str().unwrap().to_string());
                std::iter::once(c["client_secret"].as_str().unwrap().to_string()).chain(tokens)
            })
            .collect()
    };
    let (home, class) = (
        secrets(home.sim.class_credentials()),
        secrets(class.sim.class_credentials()),
    );
    assert_eq!(home.len(), 6);
    assert!(
        home.iter().all(|s| !class.contains(s)),
        "the same seed made the same credentials: {home:?}"
    );
    let seeded = || {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let settings = SimSettings {
            users: 2,
            ..SimSettings::default()
        };
        let sim = sim::Sim::new(settings, "http://127.0.0.1:1".into(), tx).unwrap();
        sim.own_user_ids()
            .into_iter()
            .map(|u| sim.token_of(u).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seeded(),
        seeded(),
        "without a class, a seed replays its tokens"
    );
}

/// A class's students are isolated (the outside audit's attacks, each refused): without
/// credentials the scoreboard shows no secret, token or receiver credentials and every control
/// answers 401; a student's own credentials reach only their own client: not another's users,
/// triggers, secret, log or deliveries, not the class-wide faults; the teacher's token reaches all.
#[tokio::test]
async fn a_class_keeps_each_students_work_to_themselves() {
    let (running, _stop) = class_sim(2).await;
    let base = running.base_url.clone();
    let http = hookrace::http::plain_client();
    let creds = running.sim.class_credentials();
    let (a, b) = (&creds[0], &creds[1]);
    let as_a = |req: reqwest::RequestBuilder| {
        req.basic_auth(
            a["client_id"].as_str().unwrap(),
            a["client_secret"].as_str(),
        )
    };
    let b_user = b["users"][0]["user_id"].as_u64().unwrap();
    let a_user = a["users"][0]["user_id"].as_u64().unwrap();

    // The class's page carries the daemon's page headers.
    let page = http.get(format!("{base}/sim/class")).send().await.unwrap();
    let header = |name: &str| {
        page.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert!(
        header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(header("referrer-policy").as_deref(), Some("no-referrer"));

    // Nobody: the scoreboard, without credentials; nothing else.
    let public: Value = http
        .get(format!("{base}/sim/class.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(public["credentials"], json!([]));
    assert!(
        !public
            .to_string()
            .contains(b["client_secret"].as_str().unwrap())
    );
    for (method, path) in [
        ("GET", "users"),
        ("GET", "log"),
        ("GET", "truth"),
        ("PUT", "faults"),
        ("POST", "trigger"),
        ("GET", "log/events"),
        ("GET", "watch"),
    ] {
        let req = http.request(method.parse().unwrap(), format!("{base}/sim/{path}"));
        let res = req
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            401,
            "{method} /sim/{path} without credentials"
        );
    }

    // Student A: their own, and nothing of B's.
    let mine: Value = as_a(http.get(format!("{base}/sim/class.json")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["credentials"].as_array().unwrap().len(), 1);
    assert_eq!(mine["credentials"][0]["client_id"], a["client_id"]);
    let users: Value = as_a(http.get(format!("{base}/sim/users")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["user_id"] != b_user),
        "{users}"
    );
    let refused = [
        ("PUT", "faults", json!({"outage_for": 600})),
        (
            "POST",
            "trigger",
            json!({"event": "EXERCISE", "user_id": b_user, "fault": {"bad_signature": true}}),
        ),
        (
            "POST",
            "trigger",
            json!({"event": "EXERCISE", "student": 2}),
        ),
        (
            "POST",
            "trigger",
            json!({"event": "EXERCISE", "everyone": true}),
        ),
        (
            "POST",
            "webhook-secret",
            json!({"secret": "attacker-chosen-secret", "student": 2}),
        ),
        ("POST", &format!("users/{b_user}/revoke"), json!({})),
        (
            "POST",
            "inject",
            json!({"type": "EXERCISE", "user_id": b_user}),
        ),
    ];
    for (method, path, body) in refused {
        let res = as_a(http.request(method.parse().unwrap(), format!("{base}/sim/{path}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "student A: {method} /sim/{path} {body}");
    }
    // Their own trigger works (409: no webhook yet, but it was theirs to ask).
    let own = as_a(http.post(format!("{base}/sim/trigger")))
        .json(&json!({"event": "EXERCISE", "user_id": a_user}))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 409, "{:?}", own.text().await);

    // A's receiver URL, credentials and all, shows on the public board without them.
    let rx = common::receiver::Receiver::start().await;
    let url = rx.url.replace("http://", "http://a:hunter2@") + "?token=s3cret";
    let res = as_a(http.post(format!("{base}/v3/webhooks")))
        .json(&json!({"events": ["EXERCISE"], "url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let public: Value = http
        .get(format!("{base}/sim/class.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        public["students"][0]["webhook"],
        rx.url.as_str(),
        "{public}"
    );

    // The teacher: everything.
    let teacher = running.sim.teacher_token().unwrap().to_string();
    let res = http
        .put(format!("{base}/sim/faults"))
        .bearer_auth(&teacher)
        .json(&json!({"error_rate": 0.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let all: Value = http
        .get(format!("{base}/sim/class.json"))
        .basic_auth("teacher", Some(&teacher))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["credentials"].as_array().unwrap().len(), 2);
    let wrong = http
        .get(format!("{base}/sim/users"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // A fetch counts for whoever's token it carries: A fetching the URL announced to B with a
    // token nobody has raises nothing on B's row.
    let rx_b = common::receiver::Receiver::start().await;
    let res = student_webhook(&http, &base, b, &rx_b.url).await;
    assert_eq!(res.status(), 201);
    assert_eq!(rx_b.next().await.event.as_deref(), Some("PING"));
    let res = http
        .post(format!("{base}/sim/trigger"))
        .bearer_auth(&teacher)
        .json(&json!({"event": "EXERCISE", "student": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let delivery: Value = serde_json::from_str(&rx_b.next().await.body).unwrap();
    let stolen = http
        .get(delivery["url"].as_str().unwrap())
        .bearer_auth("made-up-token-of-a")
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), 401);
    let board = running.sim.scoreboard();
    assert_eq!(board[1].wrong_token, 0, "{:?}", board[1]);
}

/// `sim trigger ping --everyone` PINGs every student at once, each with the simulator's own
/// timeout: four receivers that stopped answering cost one timeout, not four (one after another
/// they outlasted the command's 30 s, which then said no simulator answers).
#[tokio::test]
async fn pings_to_a_class_go_together() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (running, _stop) = class_sim(4).await;
    let base = running.base_url.clone();
    let teacher = running.sim.teacher_token().unwrap().to_string();
    let silent = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hang = silent.clone();
    let route = warp::post().and(warp::path("hook")).then(move || {
        let hang = hang.load(Ordering::SeqCst);
        async move {
            if hang {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            warp::reply()
        }
    });
    tokio::spawn(hookrace::server::serve_local(
        listener,
        "silent",
        1024,
        route,
        std::future::pending(),
    ));
    let http = hookrace::http::plain_client();
    for c in running.sim.class_credentials() {
        let res = http
            .post(format!("{base}/v3/webhooks"))
            .basic_auth(
                c["client_id"].as_str().unwrap(),
                c["client_secret"].as_str(),
            )
            .json(&json!({"events": ["EXERCISE"], "url": url}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    silent.store(true, Ordering::SeqCst);
    let mut out = Vec::new();
    let args = TriggerArgs {
        everyone: true,
        auth: Some(format!("teacher:{teacher}")),
        ..trigger_args(&base, "ping")
    };
    let err = workbench::trigger(&args, &mut out).await.unwrap_err();
    assert!(
        err.to_string().contains("4 PING(s) not answered 200"),
        "{err:#}"
    );
    let printed = String::from_utf8(out).unwrap();
    assert_eq!(printed.matches("PING sent to").count(), 4, "{printed}");
    assert_eq!(printed.matches("No response").count(), 4, "{printed}");
}

/// The scoreboard's streams share one board, made once per change, and at most
/// `BOARD_STREAMS_MAX` are open: the next is told 503, the open ones keep their board.
#[tokio::test]
async fn scoreboard_streams_share_one_board_and_are_capped() {
    let (running, _stop) = class_sim(2).await;
    let base = running.base_url.clone();
    let http = hookrace::http::plain_client();
    let mut open = Vec::new();
    for _ in 0..sim::BOARD_STREAMS_MAX {
        let res = http
            .get(format!("{base}/sim/class/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        open.push(res);
    }
    let refused = http
        .get(format!("{base}/sim/class/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["connection"], "close");
    // An open stream's first event is the board.
    let mut first = open.pop().unwrap();
    let mut text = String::new();
    while !text.contains("\n\n") {
        text.push_str(&String::from_utf8_lossy(
            &first.chunk().await.unwrap().unwrap(),
        ));
    }
    let data = text.lines().find_map(|l| l.strip_prefix("data:")).unwrap();
    let board: Vec<sim::StudentScore> = serde_json::from_str(data.trim()).unwrap();
    assert_eq!(board.len(), 2);
}

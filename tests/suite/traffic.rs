//! Recorded traffic as an input: a demo's store exported as a trace, the what-if replayed on it,
//! and the bad inputs refused, all through the real binary.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::binary::hookrace;

fn run(args: &[&str]) -> Output {
    hookrace().args(args).output().unwrap()
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// A short demo race kept in `dir`, polling every `every` seconds; its JSON report.
fn demo(dir: &Path, seed: u64, every: u64) -> Value {
    demo_for(dir, seed, every, 20)
}

/// [`demo`] generating for `seconds`.
fn demo_for(dir: &Path, seed: u64, every: u64, seconds: u64) -> Value {
    let store = dir.join("store");
    json(&run(&[
        "demo",
        "--seed",
        &seed.to_string(),
        "--duration",
        &format!("{seconds}s"),
        "--poll-every",
        &format!("{every}s"),
        "--exercise-every",
        "8s",
        "--format",
        "json",
        "--store",
        store.to_str().unwrap(),
    ]))
}

fn export(dir: &Path, extra: &[&str]) -> String {
    let trace = dir.join("race.trace");
    let store = dir.join("store");
    let mut args = vec![
        "trace",
        "export",
        "--store",
        store.to_str().unwrap(),
        "-o",
        trace.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = run(&args);
    assert!(out.status.success(), "{out:?}");
    trace.to_str().unwrap().to_string()
}

fn mean(v: &Value) -> f64 {
    v["mean"].as_f64().unwrap_or(0.0)
}

/// The what-if on a demo's own trace, at the demo's interval, gives what the demo measured:
/// the poll's requests within one empty cycle's request or 10%, the entities each channel saw,
/// the webhooks' delays to the millisecond, and the poll's mean delay within a tenth of the
/// interval plus half a second (the trace knows when a cycle began, the demo when its sighting
/// was stored, after the cycle's own requests). Over three seeds.
#[test]
fn whatif_on_a_demos_trace_gives_the_demos_measured_figures() {
    let every = 4;
    let runs: Vec<_> = [11u64, 12, 13]
        .into_iter()
        .map(|seed| {
            std::thread::spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                let report = demo(dir.path(), seed, every);
                let trace = export(dir.path(), &[]);
                let whatif = json(&run(&[
                    "whatif",
                    "--trace",
                    &trace,
                    "--every",
                    &format!("{every}s"),
                    "--strategy",
                    "fixed",
                    "--format",
                    "json",
                ]));
                (seed, report, whatif)
            })
        })
        .collect();
    for r in runs {
        let (seed, report, whatif) = r.join().unwrap();
        let (poll, hooks) = (&whatif["rows"][0], &whatif["rows"][1]);
        assert_eq!(hooks["label"], "webhooks (as recorded)");
        let measured = report["poll"]["requests"].as_u64().unwrap() as f64;
        let replayed = poll["requests"].as_u64().unwrap() as f64;
        assert!(
            (measured - replayed).abs() <= 1.0f64.max(0.1 * measured),
            "seed {seed}: the demo spent {measured} poll requests, the trace's replay {replayed}"
        );
        assert_eq!(
            poll["delay_ms"]["count"], report["poll"]["entities_seen"],
            "seed {seed}: entities polling saw"
        );
        assert_eq!(
            hooks["delay_ms"]["count"], report["webhook"]["entities_seen"],
            "seed {seed}: entities the webhooks announced"
        );
        let (a, b) = (
            mean(&hooks["delay_ms"]),
            mean(&report["webhook"]["delay_ms"]),
        );
        assert!(
            (a - b).abs() <= 1.0 + b * 0.01,
            "seed {seed}: webhook mean {a} vs {b} ms"
        );
        let (a, b) = (mean(&poll["delay_ms"]), mean(&report["poll"]["delay_ms"]));
        let slack = 100.0 * every as f64 + 500.0;
        assert!(
            (a - b).abs() <= slack,
            "seed {seed}: poll mean {a} vs {b} ms"
        );
    }
}

/// By default a trace names nobody: users and entities are keyed hashes, different in each
/// export; `--keep-ids` keeps AccessLink's. A store a daemon holds is refused with the way round.
#[test]
fn a_trace_is_pseudonymous_unless_asked_and_a_held_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    demo_for(dir.path(), 3, 5, 10);
    let read = |p: &str| std::fs::read_to_string(p).unwrap();
    let first = read(&export(dir.path(), &[]));
    let second = read(&export(dir.path(), &[]));
    let kept = read(&export(dir.path(), &["--keep-ids"]));
    let header: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(header["ids"], "pseudonymous");
    assert!(header["entities"].as_u64().unwrap() > 0, "{header}");
    let users = |text: &str| -> Vec<String> {
        text.lines()
            .skip(1)
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["user"]
                    .as_str()
                    .unwrap()
                    .into()
            })
            .collect()
    };
    // The simulator's users are 10001 and up.
    assert!(users(&kept).iter().all(|u| u.starts_with("100")), "{kept}");
    assert!(users(&first).iter().all(|u| u.starts_with("u-")), "{first}");
    assert!(!first.contains("\"100"), "an id leaked: {first}");
    assert_ne!(users(&first), users(&second), "two exports share a key");

    let store = hookrace::store::Store::open(&dir.path().join("store")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hookrace"))
        .args(["trace", "export", "--store"])
        .arg(dir.path().join("store"))
        .output()
        .unwrap();
    drop(store);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        err.contains("in use") && err.contains("hookrace backup"),
        "{err}"
    );
}

/// A trace that is not one, or of another version, or cut, is refused with its line, and
/// nothing is printed as if it were an answer.
#[test]
fn whatif_refuses_a_bad_trace_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"format":"hookrace-trace","version":1,"exported_at":"2026-12-01T00:00:00Z","origin":"2026-12-01T00:00:00Z","until":"2026-12-01T01:00:00Z","ids":"kept","users":1,"entities":2}"#;
    let entity = |at: &str| {
        format!(
            r#"{{"type":"EXERCISE","user":"1","entity":"a","made_at":"{at}","made_from":"source","deliveries":["{at}"],"deliveries_total":1,"first":"webhook"}}"#
        )
    };
    let cases = [
        (
            format!("{}\n", header.replace("\"version\":1", "\"version\":9")),
            "trace version 9",
        ),
        (
            format!(
                "{header}\n{}\n{}\n",
                entity("2026-12-01T00:30:00Z"),
                entity("2026-12-01T00:10:00Z")
            ),
            "line 3: made_at",
        ),
        (
            format!("{header}\n{}\n", entity("2026-12-01T00:10:00Z")),
            "announces 2",
        ),
        ("hello\n".to_string(), "line 1"),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("{i}.trace"));
        std::fs::write(&path, text).unwrap();
        let out = run(&["whatif", "--trace", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{want}: {out:?}"
        );
        assert!(out.stdout.is_empty(), "{out:?}");
    }
}

async fn replay(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || hookrace().arg("replay").args(args).output().unwrap())
        .await
        .unwrap()
}

/// `hookrace replay --store` sends every delivery the store received (a duplicate too), byte
/// for byte, signed with the receiver's secret, oldest first; its summary counts the answers,
/// and a receiver that refuses, or is not there, is a failed check or an error, never a pass.
#[tokio::test]
async fn replay_resends_a_stores_deliveries_signed_for_the_new_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::common::spawn_app(dir.path()).await;
    let bodies: Vec<String> = ["r1", "r2", "r3"]
        .iter()
        .map(|id| crate::common::exercise(7, id))
        .collect();
    for body in bodies.iter().chain([&bodies[1]]) {
        assert_eq!(app.deliver(body).await.status(), 200);
    }
    app.stop().await;

    let receiver = crate::common::receiver::Receiver::start().await;
    let secret = "the-new-receivers-secret";
    let args = |to: &str| -> Vec<String> {
        [
            "--store",
            dir.path().to_str().unwrap(),
            "--to",
            to,
            "--secret",
            secret,
        ]
        .into_iter()
        .map(String::from)
        .chain(["--speed", "1000", "--format", "json"].map(String::from))
        .collect()
    };
    let out = replay(args(&receiver.url)).await;
    let summary = json(&out);
    assert_eq!(summary["sent"], 4, "{summary}");
    assert_eq!(summary["answers"], serde_json::json!({"200": 4}));
    let got = receiver.drain().await;
    assert_eq!(got.len(), 4);
    // Sent concurrently (a few milliseconds apart at this speed), so they may arrive in any
    // order; the plan's order is `a_replay_plan_keeps_the_traces_spacing_scaled`'s.
    let mut sent: Vec<&str> = got.iter().map(|r| r.body.as_str()).collect();
    sent.sort_unstable();
    let mut recorded = vec![&bodies[0], &bodies[1], &bodies[2], &bodies[1]];
    recorded.sort_unstable();
    assert_eq!(sent, recorded);
    for r in &got {
        let sig = hookrace::accesslink::signature::sign(secret, r.body.as_bytes());
        assert_eq!(r.signature.as_deref(), Some(sig.as_str()));
        assert_eq!(r.event.as_deref(), Some("EXERCISE"));
    }

    receiver.answer(500);
    let out = replay(args(&receiver.url)).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(json_any(&out)["answers"], serde_json::json!({"500": 4}));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let out = replay(args(&url)).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no receiver answers"),
        "{out:?}"
    );
}

/// The JSON on stdout whatever the exit code.
fn json_any(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// A trace's deliveries keep their spacing, divided by `--speed`, and the filters pick by event
/// and user.
#[test]
fn a_replay_plan_keeps_the_traces_spacing_scaled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    let header = r#"{"format":"hookrace-trace","version":1,"exported_at":"2026-12-01T00:00:00Z","origin":"2026-12-01T00:00:00Z","until":"2026-12-01T01:00:00Z","ids":"pseudonymous","users":2,"entities":3}"#;
    let entity = |kind: &str, user: &str, at: &str, later: &str| {
        format!(
            r#"{{"type":"{kind}","user":"{user}","entity":"e-{at}","made_at":"2026-12-01T00:{at}:00Z","made_from":"source","deliveries":["2026-12-01T00:{at}:01Z"{later}],"deliveries_total":2,"first":"webhook"}}"#
        )
    };
    let text = [
        header.to_string(),
        entity("EXERCISE", "u-a", "00", r#","2026-12-01T00:30:01Z""#),
        entity("SLEEP", "u-b", "10", ""),
        entity("EXERCISE", "u-b", "20", ""),
    ]
    .join("\n");
    std::fs::write(&path, text).unwrap();
    let args = |extra: &[&str]| {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            replay: hookrace::apps::replay::ReplayArgs,
        }
        let base = [
            "x",
            "--trace",
            path.to_str().unwrap(),
            "--to",
            "http://127.0.0.1:1/",
            "--secret",
            "s",
        ];
        Cli::parse_from(base.iter().chain(extra)).replay
    };
    let plan = hookrace::apps::replay::plan(&args(&["--speed", "60"])).unwrap();
    let offsets: Vec<f64> = plan.iter().map(|p| p.offset_s).collect();
    // 00:00:01, 00:10:01, 00:20:01, 00:30:01 → 0, 10, 20, 30 s at sixty times.
    assert_eq!(offsets, [0.0, 10.0, 20.0, 30.0]);
    let body: Value = serde_json::from_str(&plan[1].body).unwrap();
    assert_eq!(
        (body["event"].as_str(), body["user_id"].as_u64()),
        (Some("SLEEP"), Some(2))
    );
    let exercises = hookrace::apps::replay::plan(&args(&["--event", "exercise"])).unwrap();
    assert_eq!(exercises.len(), 3);
    let b = hookrace::apps::replay::plan(&args(&["--user", "u-b"])).unwrap();
    assert_eq!(b.len(), 2);
    let none = hookrace::apps::replay::plan(&args(&["--user", "nobody"]));
    assert!(format!("{:#}", none.unwrap_err()).contains("nothing to replay"));
}

/// `demo --replay` races on a recorded trace: the simulator makes the trace's entities again
/// (each type, for as many users), drops again what no delivery announced, and the race lasts
/// the trace's span divided by `--speed`.
#[test]
fn a_demo_races_again_on_its_own_trace() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path(), 21, 4);
    let trace = export(dir.path(), &[]);
    let text = std::fs::read_to_string(&trace).unwrap();
    let entities: Vec<Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let announced = entities
        .iter()
        .filter(|e| !e["deliveries"].as_array().unwrap().is_empty())
        .count();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let span = chrono::DateTime::parse_from_rfc3339(header["until"].as_str().unwrap()).unwrap()
        - chrono::DateTime::parse_from_rfc3339(header["origin"].as_str().unwrap()).unwrap();
    let report = json(&run(&[
        "demo",
        "--replay",
        &trace,
        "--speed",
        "2",
        "--poll-every",
        "2s",
        "--format",
        "json",
    ]));
    assert_eq!(
        report["truth"]["entities_generated"].as_u64(),
        Some(entities.len() as u64),
        "{report}"
    );
    assert_eq!(
        report["webhook"]["entities_seen"].as_u64(),
        Some(announced as u64)
    );
    assert_eq!(
        report["poll"]["entities_seen"].as_u64(),
        Some(entities.len() as u64)
    );
    let generated = report["generated_for_s"].as_f64().unwrap();
    let half = span.as_seconds_f64() / 2.0;
    assert!(
        (generated - half).abs() < 1.5,
        "generated for {generated} s, the trace's span / 2 is {half}"
    );
}

/// `hookrace sim --replay FILE --speed N`: the trace's items replace the random generator, for
/// at least as many users as the trace has, at its times divided by N; a bad trace is a usage
/// error naming the file.
#[test]
fn sim_replay_settings_follow_the_trace() {
    use clap::Parser;
    use hookrace::cli::{Cli, Command};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    let header = r#"{"format":"hookrace-trace","version":1,"exported_at":"2026-12-01T00:00:00Z","origin":"2026-12-01T00:00:00Z","until":"2026-12-01T01:00:00Z","ids":"pseudonymous","users":5,"entities":2}"#;
    let lines = [
        header.to_string(),
        r#"{"type":"EXERCISE","user":"u-a","entity":"e-1","made_at":"2026-12-01T00:10:00Z","made_from":"source","deliveries":["2026-12-01T00:10:00.250Z"],"deliveries_total":1,"first":"webhook"}"#.into(),
        r#"{"type":"SLEEP","user":"u-b","entity":"e-2","made_at":"2026-12-01T00:20:00Z","made_from":"source","deliveries":[],"deliveries_total":0,"polled_at":"2026-12-01T00:25:00Z","first":"poll"}"#.into(),
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let settings = |args: &[&str]| {
        let cli = Cli::try_parse_from(["hookrace", "sim"].iter().chain(args)).unwrap();
        let Command::Sim(sim) = cli.command else {
            panic!("not sim")
        };
        sim.settings()
    };
    let s = settings(&[
        "--replay",
        path.to_str().unwrap(),
        "--speed",
        "10",
        "--users",
        "1",
    ])
    .unwrap();
    assert!(s.exercise_every.is_none() && s.sleep_every.is_none() && s.activity_every.is_none());
    assert_eq!(s.users, 2);
    let r = &s.replay;
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].after.as_secs(), r[1].after.as_secs()), (60, 120));
    assert_eq!((r[0].user, r[1].user), (0, 1));
    assert!(r[0].delivered && !r[1].delivered);
    assert_eq!(r[0].delay, Some(std::time::Duration::from_millis(250)));
    std::fs::write(&path, "{}").unwrap();
    let err = settings(&["--replay", path.to_str().unwrap()]).unwrap_err();
    assert!(
        err.contains("--replay") && err.contains("not a hookrace trace"),
        "{err}"
    );
}

/// Through the binary: `hookrace sim --replay` makes the trace's items at its times, scaled.
#[tokio::test]
async fn the_simulator_binary_replays_a_trace() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    let header = r#"{"format":"hookrace-trace","version":1,"exported_at":"2026-12-01T00:00:00Z","origin":"2026-12-01T00:00:00Z","until":"2026-12-01T00:10:00Z","ids":"kept","users":2,"entities":2}"#;
    let lines = [
        header.to_string(),
        r#"{"type":"EXERCISE","user":"7","entity":"a","made_at":"2026-12-01T00:01:00Z","made_from":"source","deliveries":["2026-12-01T00:01:00.100Z"],"deliveries_total":1,"first":"webhook"}"#.into(),
        r#"{"type":"SLEEP","user":"8","entity":"b","made_at":"2026-12-01T00:05:00Z","made_from":"source","deliveries":["2026-12-01T00:05:00.200Z"],"deliveries_total":1,"first":"webhook"}"#.into(),
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let mut child = hookrace()
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--users",
            "1",
            "--speed",
            "300",
            "--replay",
        ])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = out.next().unwrap().unwrap();
    assert!(first.contains("replaying the 2 items"), "{first}");
    let base = out
        .map(|l| l.unwrap())
        .find_map(|l| l.strip_prefix("AccessLink simulator at ").map(String::from))
        .unwrap();
    // Minute 1 and minute 5 at 300 times: 0.2 s and 1 s after the start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let kinds = loop {
        let truth: Value = hookrace::http::plain_client()
            .get(format!("{base}/sim/truth"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kinds: Vec<(String, u64)> = truth["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_string(),
                    e["user_id"].as_u64().unwrap(),
                )
            })
            .collect();
        if kinds.len() == 2 || std::time::Instant::now() > deadline {
            break kinds;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        kinds,
        [
            ("EXERCISE".to_string(), 10001),
            ("SLEEP".to_string(), 10002)
        ]
    );
}

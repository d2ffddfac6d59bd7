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
    let store = dir.join("store");
    json(&run(&[
        "demo",
        "--seed",
        &seed.to_string(),
        "--duration",
        "20s",
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
    demo(dir.path(), 3, 5);
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

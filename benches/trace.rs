//! `cargo bench --bench trace`: `hookrace whatif --trace` on a 100,000-entity trace (1,000 users
//! over 30 days, made here with a fixed seed), the real binary end to end (read, check, replay
//! every schedule, print), against the Poisson model of the same traffic (`hookrace whatif` with
//! the same users, items per day and days) measured in the same run. Target: under a second.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // A bench unwraps: a failure is its verdict.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hookrace::trace::{FirstBy, Header, IdKind, MadeFrom, Trace, TracedEntity};
use rand::{RngExt, SeedableRng};

const ENTITIES: usize = 100_000;
const USERS: u64 = 1_000;
const DAYS: f64 = 30.0;
const RUNS: usize = 5;

fn trace() -> Trace {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let origin = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let span = DAYS * 86_400.0;
    let mut made: Vec<f64> = (0..ENTITIES).map(|_| rng.random_range(0.0..span)).collect();
    made.sort_by(f64::total_cmp);
    let at = |s: f64| origin + chrono::Duration::microseconds((s * 1e6) as i64);
    let entities = made
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let delivered = (!rng.random_bool(0.02)).then(|| at(s + rng.random_range(0.02..0.4)));
            TracedEntity {
                kind: if i % 4 == 0 { "SLEEP" } else { "EXERCISE" }.into(),
                user: format!("u-{}", rng.random_range(0..USERS)),
                entity: format!("e-{i}"),
                made_at: at(*s),
                made_from: MadeFrom::Source,
                deliveries: delivered.into_iter().collect(),
                deliveries_total: u32::from(delivered.is_some()),
                polled_at: delivered.is_none().then(|| at(s + 300.0)),
                first: if delivered.is_some() {
                    FirstBy::Webhook
                } else {
                    FirstBy::Poll
                },
            }
        })
        .collect();
    Trace {
        header: Header {
            format: hookrace::trace::FORMAT.into(),
            version: hookrace::trace::VERSION,
            exported_at: Utc::now(),
            origin,
            until: at(span),
            ids: IdKind::Pseudonymous,
            users: USERS,
            entities: ENTITIES as u64,
            poll_every_s: None,
        },
        entities,
    }
}

/// The best and median wall time of `RUNS` runs of `hookrace ARGS`.
fn timed(args: &[&str]) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_hookrace"))
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[0], times[RUNS / 2])
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("100k.trace");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    trace().write(&mut file).unwrap();
    drop(file);
    let size = std::fs::metadata(&path).unwrap().len();
    let schedules = "30s,5m,15m,1h";
    let items_per_day = (ENTITIES as f64 / USERS as f64 / DAYS).to_string();
    let (model_best, model_median) = timed(&[
        "whatif",
        "--users",
        "1000",
        "--items-per-day",
        &items_per_day,
        "--days",
        "30",
        "--every",
        schedules,
        "--format",
        "json",
    ]);
    let (trace_best, trace_median) = timed(&[
        "whatif",
        "--trace",
        path.to_str().unwrap(),
        "--every",
        schedules,
        "--format",
        "json",
    ]);
    println!(
        "whatif --trace, {ENTITIES} entities ({:.1} MB), {USERS} users, {DAYS} days, every {schedules} + adaptive; {RUNS} runs each",
        size as f64 / 1e6
    );
    println!("  model of the same traffic   best {model_best:>9.3?}   median {model_median:>9.3?}");
    println!("  the trace                   best {trace_best:>9.3?}   median {trace_median:>9.3?}");
    println!(
        "  ratio trace / model (median): {:.2}; target: the trace under 1 s: {}",
        trace_median.as_secs_f64() / model_median.as_secs_f64(),
        if trace_median < Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        }
    );
}

//! `cargo bench --bench memory`: does resident memory stay flat however many entities arrive?
//! Records distinct deliveries into a store (each leaving a webhook fetch to do, as in a long
//! season over AccessLink's rate limit where fetching lags announcing), sampling the process's
//! resident memory (VmRSS) as it goes. Prints RSS against the entity count, each as a ratio to the
//! baseline measured in the same run (the process with the store open and empty), and the growth
//! per 10,000 entities over the first and the last quarter of the run: a plateau shows as a last
//! quarter that grows far less than the first.
//!
//! Environment: `HOOKRACE_BENCH_ENTITIES` (default 300000), `HOOKRACE_BENCH_CACHE_MB` (sled's
//! page cache, `store.cache_mb`; default 32).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // A test unwraps: a failure is its verdict.

use chrono::Utc;
use hookrace::accesslink::payload::{self, Parsed};
use hookrace::channels::fetch_queue::FetchQueue;
use hookrace::store::Store;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let entities = env_or("HOOKRACE_BENCH_ENTITIES", 300_000);
    let cache_mb = env_or("HOOKRACE_BENCH_CACHE_MB", 32);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open_with_cache(dir.path(), cache_mb * 1024 * 1024).expect("the store");
    // The fetcher's queue, given each job the write queued (as the commit would hand it over).
    let queue = FetchQueue::default();
    let baseline = rss_kib();
    println!(
        "memory: {entities} distinct deliveries, each leaving a fetch to do; sled cache {cache_mb} MiB"
    );
    println!(
        "  baseline (store open, empty): {:.1} MiB",
        baseline as f64 / 1024.0
    );
    println!(
        "  {:>9}  {:>9}  {:>8}  {:>10}",
        "entities", "RSS MiB", "ratio", "fetch jobs"
    );
    let step = (entities / 20).max(1);
    let mut samples = Vec::new();
    for i in 0..entities {
        let body = format!(
            r#"{{"event":"EXERCISE","user_id":{},"entity_id":"m{i}","timestamp":"2026-11-28T10:00:00Z","url":"https://www.polaraccesslink.com/v3/exercises/m{i}"}}"#,
            10_000 + i % 50
        );
        let Ok(Parsed::Delivery(d)) = payload::parse(body.as_bytes()) else {
            panic!("not a delivery: {body}");
        };
        let recorded = store
            .record_delivery(&d, body.as_bytes(), Utc::now(), true)
            .expect("recorded");
        if let Some((key, due)) = &recorded.fetch_queued {
            queue.put(key, *due);
        }
        if (i + 1) % step == 0 {
            let rss = rss_kib();
            samples.push((i + 1, rss));
            let b = queue.backlog_now();
            println!(
                "  {:>9}  {:>9.1}  {:>7.2}×  {:>9}{}",
                i + 1,
                rss as f64 / 1024.0,
                rss as f64 / baseline.max(1) as f64,
                b.jobs,
                if b.more_in_records { "+" } else { "" }
            );
        }
    }
    let per_10k = |a: (u64, u64), b: (u64, u64)| {
        (b.1 as f64 - a.1 as f64) / 1024.0 / ((b.0 - a.0) as f64 / 10_000.0)
    };
    let n = samples.len();
    if n >= 8 {
        let first = per_10k(samples[0], samples[n / 4]);
        let last = per_10k(samples[n - 1 - n / 4], samples[n - 1]);
        println!(
            "  growth per 10,000 entities: first quarter {first:.2} MiB, last quarter {last:.2} MiB"
        );
    }
}

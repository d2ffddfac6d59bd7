//! `cargo bench --bench ops`: start-to-ready time, idle memory and CPU, the store's bytes on disk
//! per entity, and `hookrace report` on a store of 1,000,000 entities (generated here through the
//! store's own write path: webhook entities with their raw delivery body). Targets: ready ≤ 200 ms,
//! idle RSS ≤ 20 MB and CPU near zero with the poller at 30 s, at most 1.5 KB per entity on disk,
//! report ≤ 5 s and ≤ 200 MB.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use hookrace::race::Entity;

const BIN: &str = env!("CARGO_BIN_EXE_hookrace");

fn proc_field(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn daemon_config(dir: &Path, simulator: bool) -> std::path::PathBuf {
    let path = dir.join("c.toml");
    let sim = if simulator {
        "[simulator]\nenabled = true\nlisten = \"127.0.0.1:0\"\nusers = 3\nexercise_every = \"1000h\"\nactivity_every = \"1000h\"\n"
    } else {
        "[accesslink]\nclient_id = \"x\"\nclient_secret = \"y\"\nwebhook_secret = \"s\"\n[simulator]\nenabled = false\n"
    };
    std::fs::write(
        &path,
        format!(
            "[webhook]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[poller]\nevery = \"30s\"\n[store]\npath = \"{}\"\n{sim}",
            dir.join("store").display()
        ),
    )
    .unwrap();
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

fn report_on_a_million() {
    let n: u64 = std::env::var("BENCH_ENTITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
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
    std::fs::write(
        &cfg,
        format!("[accesslink]\nclient_id = \"x\"\nclient_secret = \"y\"\n[poller]\nevery = \"30s\"\n[store]\npath = \"{}\"\n", store_path.display()),
    )
    .unwrap();
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
}

/// Writes `n` entities through the store's write path: nine in ten arrive by webhook (a signed
/// body of the usual size, kept raw in the record), most of those are polled too, one in ten is
/// polled only.
fn generate_store(path: &Path, n: u64) {
    let store = hookrace::store::Store::open(path).unwrap();
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
        let key = format!("EXERCISE/{user}/{id}");
        store
            .update_entity(&key, |e| {
                let mut e = e.unwrap_or_else(|| Entity::new("EXERCISE", user, &id));
                e.data_available_at = Some(at);
                e.poll_at = poll_at.or(e.poll_at);
                e.fetched = e.webhook_at.is_some();
                (e, ())
            })
            .unwrap();
    }
    store.flush().unwrap();
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
        store.flush().unwrap();
    }
    let (apparent, allocated) = on_disk(path);
    println!(
        "store on disk after reopening: {:.0} bytes/entity allocated ({:.0} apparent)",
        per(allocated),
        per(apparent)
    );
}

fn main() {
    if std::env::var("BENCH_SKIP_IDLE").is_err() {
        start_to_ready_and_idle();
    }
    report_on_a_million();
}

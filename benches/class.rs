//! `cargo bench --bench class`: a class of 40 on one simulator, as a teacher runs it. The real
//! binary's simulator (`hookrace sim --class 40`, in its own process, so its CPU and memory are
//! its own) serves 40 students, each with a receiver of their own: a third keep the contract
//! (verify the signature, answer, fetch with the delivery's user's token), a third are naive
//! (answer anything, fetch with their first user's token), a third answer the PING and then
//! never answer a delivery (the simulator waits its 10 s timeout on each). The teacher triggers
//! everyone every 6 s; every student reads their own log and users every 6 s; 40 scoreboard
//! streams stay open, as 40 projectors and laptops would.
//!
//! Measured: the scoreboard's update lag (a receiver answers a delivery → each stream's board
//! counts it), the control routes' latency (the teacher's trigger, the students' log and users),
//! and the simulator's CPU and memory, sampled every second. Targets: lag p99 ≤ 1 s, control
//! p99 ≤ 100 ms, memory bounded (the slope of the last third near zero: the log is full by then
//! in a run of 15 minutes). `BENCH_CLASS_SECS` sets the duration (default 900).
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::disallowed_methods
)] // A bench unwraps: a failure is its verdict; it owns the tasks it spawns.

mod support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use warp::Filter;

const BIN: &str = env!("CARGO_BIN_EXE_hookrace");
const STUDENTS: usize = 40;
const EVERY: Duration = Duration::from_secs(6);

/// How a student's receiver behaves.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Good,
    Naive,
    Silent,
}

/// One student: credentials, receiver kind, webhook secret, and when their receiver answered
/// each delivery (in order).
struct Student {
    client_id: String,
    client_secret: String,
    tokens: Vec<(u64, String)>,
    kind: Kind,
    secret: Mutex<Option<String>>,
    answered_at: Mutex<Vec<Instant>>,
}

/// What the run measured.
struct Measured {
    lag: Mutex<Histogram<u64>>,
    control: Mutex<Histogram<u64>>,
    trigger: Mutex<Histogram<u64>>,
    control_errors: std::sync::atomic::AtomicU64,
}

fn histogram() -> Mutex<Histogram<u64>> {
    Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).unwrap())
}

/// The simulator's process, its base URL and the teacher's token.
struct Simulator {
    child: std::process::Child,
    base: String,
    teacher: String,
}

fn start_simulator() -> Simulator {
    let mut child = Command::new(BIN)
        .args([
            "sim",
            "--class",
            &STUDENTS.to_string(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--exercise-every", "0s", "--activity-every", "0s"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut teacher) = (None, None);
    while base.is_none() {
        let line = lines.next().expect("the simulator's banner").unwrap();
        if let Some(t) = line.split("keep it off the projector): ").nth(1) {
            teacher = Some(t.trim().to_string());
        }
        if let Some(b) = line.strip_prefix("AccessLink simulator at ") {
            base = Some(b.trim().to_string());
        }
    }
    // Keep reading its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Simulator {
        child,
        base: base.unwrap(),
        teacher: teacher.expect("the teacher's token"),
    }
}

/// The JSON answer to `req`.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

async fn students(http: &reqwest::Client, sim: &Simulator) -> Vec<Arc<Student>> {
    let class = json_of(
        http.get(format!("{}/sim/class.json", sim.base))
            .bearer_auth(&sim.teacher),
    )
    .await;
    let kinds = [Kind::Good, Kind::Naive, Kind::Silent];
    class["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let tokens = c["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| {
                    let token = u["access_token"].as_str().unwrap().to_string();
                    (u["user_id"].as_u64().unwrap(), token)
                })
                .collect();
            Arc::new(Student {
                client_id: c["client_id"].as_str().unwrap().to_string(),
                client_secret: c["client_secret"].as_str().unwrap().to_string(),
                tokens,
                kind: kinds[i % kinds.len()],
                secret: Mutex::new(None),
                answered_at: Mutex::new(Vec::new()),
            })
        })
        .collect()
}

/// One delivery to student `i`'s receiver: answered (or not) as their kind does, then fetched.
async fn receive(
    student: Arc<Student>,
    http: reqwest::Client,
    event: Option<String>,
    signature: Option<String>,
    body: bytes::Bytes,
) -> warp::reply::Response {
    use warp::Reply;
    let ok = || warp::reply().into_response();
    if event.as_deref() == Some("PING") {
        return ok();
    }
    let secret = student.secret.lock().unwrap().clone().unwrap_or_default();
    let signed = hookrace::accesslink::signature::verify(&secret, &body, signature.as_deref());
    match student.kind {
        Kind::Silent => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return ok();
        }
        Kind::Good if signed.is_err() => {
            return warp::reply::with_status("", warp::http::StatusCode::UNAUTHORIZED)
                .into_response();
        }
        _ => {}
    }
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let user = payload["user_id"].as_u64();
    let token = match student.kind {
        Kind::Good => student.tokens.iter().find(|t| Some(t.0) == user),
        _ => student.tokens.first(),
    }
    .map(|t| t.1.clone())
    .unwrap_or_default();
    if let Some(url) = payload["url"].as_str().map(String::from) {
        tokio::spawn(async move {
            let _ = http.get(url).bearer_auth(token).send().await;
        });
    }
    student.answered_at.lock().unwrap().push(Instant::now());
    ok()
}

/// The class's receivers, one path per student, on one listener; returns its base URL.
async fn start_receivers(students: Arc<Vec<Arc<Student>>>, stop: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let http = hookrace::http::plain_client();
    let route = warp::post()
        .and(warp::path!("r" / usize))
        .and(warp::header::optional::<String>("polar-webhook-event"))
        .and(warp::header::optional::<String>("polar-webhook-signature"))
        .and(warp::body::bytes())
        .then(move |i: usize, event, signature, body| {
            let student = students[i].clone();
            receive(student, http.clone(), event, signature, body)
        });
    tokio::spawn(hookrace::server::serve_local(
        listener,
        "receivers",
        4096,
        route,
        stop.cancelled_owned(),
    ));
    base
}

/// Each student registers their webhook with their own credentials.
async fn register(http: &reqwest::Client, base: &str, receivers: &str, students: &[Arc<Student>]) {
    for (i, s) in students.iter().enumerate() {
        let res = json_of(
            http.post(format!("{base}/v3/webhooks"))
                .basic_auth(&s.client_id, Some(&s.client_secret))
                .json(&json!({"events": ["EXERCISE"], "url": format!("{receivers}/r/{i}")})),
        )
        .await;
        let secret = res["data"]["signature_secret_key"].as_str();
        *s.secret.lock().unwrap() = Some(secret.expect("a created webhook").to_string());
    }
}

/// One scoreboard stream: for every delivery a board newly counts as answered, the time since
/// the receiver answered it.
async fn watch_board(base: String, students: Arc<Vec<Arc<Student>>>, m: Arc<Measured>) {
    use futures_util::StreamExt;
    let res = reqwest::get(format!("{base}/sim/class/events"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "a scoreboard stream");
    let mut body = res.bytes_stream();
    let mut buf = Vec::new();
    let mut counted: Vec<Option<usize>> = vec![None; students.len()];
    while let Some(Ok(chunk)) = body.next().await {
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let Ok(board) = serde_json::from_slice::<Vec<Value>>(data) else {
                continue;
            };
            let now = Instant::now();
            for (i, row) in board.iter().enumerate().take(students.len()) {
                let answered = row["answered"].as_u64().unwrap_or(0) as usize;
                if let Some(before) = counted[i] {
                    let at = students[i].answered_at.lock().unwrap();
                    let mut lag = m.lag.lock().unwrap();
                    for t in at.iter().take(answered).skip(before) {
                        lag.saturating_record(now.saturating_duration_since(*t).as_micros() as u64);
                    }
                }
                counted[i] = Some(answered);
            }
        }
    }
}

/// Times one control request into `into`.
async fn timed(req: reqwest::RequestBuilder, into: &Mutex<Histogram<u64>>, m: &Measured) {
    let started = Instant::now();
    match req.send().await {
        Ok(res) if res.status().is_success() => {
            let _ = res.bytes().await;
            let us = started.elapsed().as_micros() as u64;
            into.lock().unwrap().saturating_record(us);
        }
        _ => {
            m.control_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The teacher: everyone triggered every 6 s.
async fn teacher(http: reqwest::Client, sim: (String, String), m: Arc<Measured>, until: Instant) {
    let mut tick = tokio::time::interval(EVERY);
    while Instant::now() < until {
        tick.tick().await;
        let req = http
            .post(format!("{}/sim/trigger", sim.0))
            .bearer_auth(&sim.1)
            .json(&json!({"event": "EXERCISE", "everyone": true}));
        timed(req, &m.trigger, &m).await;
    }
}

/// A student: their own log (what arrived since last time) and users every 6 s.
async fn student(
    http: reqwest::Client,
    base: String,
    s: Arc<Student>,
    m: Arc<Measured>,
    i: usize,
    until: Instant,
) {
    tokio::time::sleep(EVERY.mul_f64(i as f64 / STUDENTS as f64)).await;
    let mut tick = tokio::time::interval(EVERY);
    let mut after = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        let auth = |r: reqwest::RequestBuilder| r.basic_auth(&s.client_id, Some(&s.client_secret));
        let started = Instant::now();
        let res = auth(http.get(format!("{base}/sim/log?after={after}")))
            .send()
            .await;
        if let Some(res) = res.ok().filter(|r| r.status().is_success()) {
            let entries: Vec<Value> = res.json().await.unwrap_or_default();
            after = entries
                .last()
                .and_then(|e| e["seq"].as_u64())
                .unwrap_or(after);
            let us = started.elapsed().as_micros() as u64;
            m.control.lock().unwrap().saturating_record(us);
        } else {
            m.control_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        timed(auth(http.get(format!("{base}/sim/users"))), &m.control, &m).await;
    }
}

/// Samples the simulator's RSS (kB) and CPU ticks every second until `until`.
async fn sample(pid: u32, until: Instant) -> Vec<(f64, u64, u64)> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < until {
        tick.tick().await;
        let rss = support::proc_field(pid, "VmRSS:").unwrap_or(0);
        samples.push((
            started.elapsed().as_secs_f64(),
            rss,
            support::cpu_ticks(pid),
        ));
    }
    samples
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Least-squares slope of RSS (MB) per minute over `samples`.
fn slope_mb_per_min(samples: &[(f64, u64, u64)]) -> f64 {
    let n = samples.len() as f64;
    let (sx, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(x, y), s| (x + s.0, y + s.1 as f64 / 1024.0));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = samples.iter().fold((0.0, 0.0), |(a, b), s| {
        let dx = s.0 - mx;
        (a + dx * (s.1 as f64 / 1024.0 - my), b + dx * dx)
    });
    if den == 0.0 { 0.0 } else { num / den * 60.0 }
}

/// One phase's figures.
struct Phase {
    streams: usize,
    secs: u64,
    lag_p50: f64,
    lag_p99: f64,
    lag_n: u64,
    control_p50: f64,
    control_p99: f64,
    control_n: u64,
    trigger_p99: f64,
    errors: u64,
    cpu: f64,
    rss_1min: f64,
    rss_end: f64,
    rss_peak: f64,
    slope: f64,
    /// RSS at the start of each minute.
    per_minute: Vec<f64>,
}

fn phase(m: &Measured, samples: &[(f64, u64, u64)], streams: usize, secs: u64) -> Phase {
    let lag = m.lag.lock().unwrap();
    let control = m.control.lock().unwrap();
    let trigger = m.trigger.lock().unwrap();
    let (first, last) = (samples.first().unwrap(), samples.last().unwrap());
    let mb = |kb: u64| kb as f64 / 1024.0;
    Phase {
        streams,
        secs,
        lag_p50: ms(&lag, 0.5),
        lag_p99: ms(&lag, 0.99),
        lag_n: lag.len(),
        control_p50: ms(&control, 0.5),
        control_p99: ms(&control, 0.99),
        control_n: control.len(),
        trigger_p99: ms(&trigger, 0.99),
        errors: m.control_errors.load(std::sync::atomic::Ordering::Relaxed),
        cpu: (last.2 - first.2) as f64 / support::TICKS_PER_SECOND / (last.0 - first.0) * 100.0,
        rss_1min: mb(samples.get(60).unwrap_or(last).1),
        rss_end: mb(last.1),
        rss_peak: mb(samples.iter().map(|s| s.1).max().unwrap_or(0)),
        // The log fills (10,000 entries) in about 7.5 minutes of this class: the last third
        // of a 15-minute run is past it.
        slope: slope_mb_per_min(&samples[samples.len() * 2 / 3..]),
        per_minute: samples.iter().step_by(60).map(|s| mb(s.1)).collect(),
    }
}

fn print(p: &Phase) {
    println!(
        "{} s, {} scoreboard stream(s): lag p50 {:.0} ms p99 {:.0} ms ({} counted); control p50 {:.1} ms p99 {:.1} ms ({}); trigger p99 {:.1} ms; {} failed; CPU {:.1}%; RSS {:.1} MB at 1 min, {:.1} at the end, peak {:.1}, last-third slope {:+.2} MB/min",
        p.secs,
        p.streams,
        p.lag_p50,
        p.lag_p99,
        p.lag_n,
        p.control_p50,
        p.control_p99,
        p.control_n,
        p.trigger_p99,
        p.errors,
        p.cpu,
        p.rss_1min,
        p.rss_end,
        p.rss_peak,
        p.slope
    );
    let minutes: Vec<String> = p.per_minute.iter().map(|m| format!("{m:.1}")).collect();
    println!("  RSS (MB) minute by minute: {}", minutes.join(" "));
}

/// A class on a fresh simulator with `streams` scoreboard streams open, for `secs`.
fn run(streams: usize, secs: u64) -> Phase {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut sim = start_simulator();
    let pid = sim.child.id();
    let phase = rt.block_on(async {
        let http = hookrace::http::plain_client();
        let students = Arc::new(students(&http, &sim).await);
        let stop = CancellationToken::new();
        let receivers = start_receivers(students.clone(), stop.clone()).await;
        register(&http, &sim.base, &receivers, &students).await;
        let m = Arc::new(Measured {
            lag: histogram(),
            control: histogram(),
            trigger: histogram(),
            control_errors: Default::default(),
        });
        for _ in 0..streams {
            tokio::spawn(watch_board(sim.base.clone(), students.clone(), m.clone()));
        }
        let until = Instant::now() + Duration::from_secs(secs);
        let sampler = tokio::spawn(sample(pid, until));
        let teacher_auth = (sim.base.clone(), sim.teacher.clone());
        tokio::spawn(teacher(http.clone(), teacher_auth, m.clone(), until));
        for (i, s) in students.iter().enumerate() {
            let base = sim.base.clone();
            tokio::spawn(student(http.clone(), base, s.clone(), m.clone(), i, until));
        }
        let samples = sampler.await.unwrap();
        // The last round's deliveries reach the boards.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.cancel();
        phase(&m, &samples, streams, secs)
    });
    let _ = sim.child.kill();
    let _ = sim.child.wait();
    rt.shutdown_timeout(Duration::from_secs(1));
    phase
}

fn main() {
    let secs = support::env_u64("BENCH_CLASS_SECS", 900);
    let baseline_secs = support::env_u64("BENCH_CLASS_BASELINE_SECS", 120);
    println!(
        "a class of {STUDENTS} (good, naive and silent receivers), everyone triggered every {} s",
        EVERY.as_secs()
    );
    let baseline = run(1, baseline_secs);
    print(&baseline);
    let class = run(STUDENTS, secs);
    print(&class);
    println!(
        "{STUDENTS} streams against 1: control p99 x{:.2}, lag p99 x{:.2}, CPU x{:.2}",
        class.control_p99 / baseline.control_p99,
        class.lag_p99 / baseline.lag_p99,
        class.cpu / baseline.cpu
    );
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "targets: lag p99 <= 1 s {}; control p99 <= 100 ms {}",
        met(class.lag_p99 <= 1000.0),
        met(class.control_p99 <= 100.0 && class.trigger_p99 <= 100.0)
    );
}

//! The race end to end: the demo against the simulator's ground truth, the report's formats, the
//! report against `/status`, and `/metrics` as Prometheus exposition.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{sim_config, spawn_with};
use hookrace::apps::demo::{self, DemoArgs};
use hookrace::apps::report::Format;
use serde_json::Value;

const POLL_ENDPOINTS: [&str; 5] = [
    "notifications",
    "create_transaction",
    "list_transaction",
    "get_item",
    "commit",
];

fn short_demo(format: Format, store: Option<std::path::PathBuf>) -> DemoArgs {
    DemoArgs {
        duration: Duration::from_secs(3),
        poll_every: Duration::from_secs(1),
        users: 3,
        exercise_every: Duration::from_millis(300),
        activity_every: Duration::from_secs(1),
        seed: Some(7),
        drop_rate: 0.25,
        duplicate_rate: 0.2,
        webhook_delay: "0ms..50ms".into(),
        format,
        store,
        rate_limit: None,
        open: false,
        rate_window: Duration::from_secs(900),
        notify: false,
        strategy: demo::Strategy::Fixed,
        max_every: Duration::from_secs(60),
        outage: None,
        mode: demo::PollMode::Transactions,
        keep_open: false,
        replay: None,
        speed: 1.0,
    }
}

#[tokio::test]
async fn the_demo_with_notify_tells_your_app_of_every_entity_once_signed() {
    hookrace::telemetry::init_for_tests();
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let args = DemoArgs {
        notify: true,
        ..short_demo(Format::Table, Some(dir.path().to_path_buf()))
    };
    let report = demo::run(&args, &mut out).await.unwrap();
    let app = report.your_app.as_ref().expect("a third column");
    // Every entity, from either channel, reached the app once, its signature verified.
    assert_eq!(app.events, report.entities_total);
    assert_eq!(app.verified, Some(app.events));
    assert_eq!(app.refused, Some(0));
    assert_eq!((app.pending, app.failed), (0, 0));
    assert_eq!(app.delay_ms.count, app.events);
    // Each entity's app was told after a channel had seen it (the data is stored first).
    let store = common::reopen_store(dir.path());
    let mut told = 0;
    store
        .for_each_entity(|e| {
            let first = [e.webhook_latency_ms(), e.poll_latency_ms()]
                .into_iter()
                .flatten()
                .fold(f64::INFINITY, f64::min);
            let app = e.app_latency_ms().expect("every entity was told");
            assert!(
                app >= first,
                "{}: app {app} ms, first channel {first} ms",
                e.key
            );
            told += 1;
        })
        .unwrap();
    assert_eq!(told, app.events);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("your app"), "{text}");
}

#[tokio::test]
async fn the_demo_accounts_for_every_generated_entity_and_request() {
    hookrace::telemetry::init_for_tests();
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let report = demo::run(
        &short_demo(Format::Json, Some(dir.path().to_path_buf())),
        &mut out,
    )
    .await
    .unwrap();

    // The printed JSON is the returned report.
    let printed: Value = serde_json::from_slice(&out).expect("the demo prints JSON");
    assert_eq!(printed, serde_json::to_value(&report).unwrap());

    let truth = report
        .truth
        .as_ref()
        .expect("the demo knows the ground truth");
    assert!(truth.entities_generated >= 10, "{truth:?}");
    assert!(
        truth.deliveries_dropped > 0,
        "the drop rate shows: {truth:?}"
    );
    // Every generated entity is in the store, once.
    assert_eq!(report.entities_total, truth.entities_generated);
    assert_eq!(
        report.webhook.entities_seen + report.webhook_missed_poll_caught,
        report.entities_total
    );
    // What no webhook announced, the poller caught.
    assert_eq!(
        report.webhook_missed_poll_caught,
        truth.entities_never_delivered
    );
    assert!(report.webhook_missed_poll_caught > 0);
    // Requests counted by hookrace equal the requests the simulator served.
    let served: u64 = POLL_ENDPOINTS
        .iter()
        .map(|e| truth.requests.get(*e).copied().unwrap_or(0))
        .sum();
    assert_eq!(report.poll.requests, served);
    let fetches: u64 = ["get_exercise", "get_activity", "get_physical_info"]
        .iter()
        .map(|e| truth.requests.get(*e).copied().unwrap_or(0))
        .sum();
    let delivered =
        truth.deliveries_decided + truth.deliveries_duplicated - truth.deliveries_dropped;
    assert_eq!(report.webhook.requests, delivered + fetches);
    // Repeated deliveries: the simulator's duplicates and each update of a day's activity.
    assert!(report.duplicate_deliveries >= truth.deliveries_duplicated);
    // Theory is printed beside the measurement.
    assert_eq!(report.theory.mean_poll_delay_ms, Some(500.0));
    assert_eq!(report.theory.zapier_wasted_share, 0.985);
    assert_eq!(report.cost_per_day.len(), 6);
}

fn report_config(dir: &std::path::Path, store: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("report.toml");
    let text = common::toml_text(serde_json::json!({
        "accesslink": {"client_id": "x", "client_secret": "y"},
        "poller": {"every": "1s"},
        "store": {"path": store},
    }));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn report_formats_parse_and_match_the_status_of_the_same_store() {
    hookrace::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut out = Vec::new();
    let table = demo::run(&short_demo(Format::Table, Some(store.clone())), &mut out)
        .await
        .unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert!(printed.contains("hookrace demo"), "{printed}");
    let cfg = report_config(dir.path(), &store);

    let run = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_hookrace"))
            .args(["report", "-c"])
            .arg(&cfg)
            .args(["--format", format])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{format}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let json: Value = serde_json::from_str(&run("json")).expect("json parses");
    let md = run("markdown");
    let text = run("table");
    let labels = [
        "entities seen",
        "seen first (or alone)",
        "median delay",
        "p95 delay",
        "max delay",
        "HTTP requests",
        "requests per entity seen first",
        "empty (wasted) polls",
        "missed by the other channel, caught here",
        "mean poll delay",
        "empty polls, Zapier 2013",
        "Polar daily limit",
    ];
    for label in labels {
        assert!(md.contains(label), "markdown lacks {label:?}:\n{md}");
        assert!(text.contains(label), "table lacks {label:?}:\n{text}");
    }
    assert!(md.contains("|---|---:|---:|"));

    // The same numbers as the demo measured and as /status computes for this store.
    assert_eq!(json["entities_total"], table.entities_total);
    assert_eq!(json["poll"]["requests"], table.poll.requests);
    assert_eq!(json["webhook"]["requests"], table.webhook.requests);
    let store = common::reopen_store(&store);
    let rt = hookrace::process::Runtime {
        started_at: chrono::Utc::now(),
        poll_enabled: true,
        last_cycle_at: None,
        next_cycle_at: None,
        notify_sinks: Vec::new(),
        webhook_health: Default::default(),
        poll_pace: Default::default(),
        listeners: Vec::new(),
    };
    let status = serde_json::to_value(
        hookrace::observe::status::build(
            &store,
            &Default::default(),
            &store.follow_tally().unwrap().summary(),
            &rt,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(json["webhook"]["delay_ms"], status["webhook"]["latency_ms"]);
    assert_eq!(json["poll"]["delay_ms"], status["poll"]["latency_ms"]);
    assert_eq!(json["webhook_lead_ms"], status["race"]["webhook_lead_ms"]);
    assert_eq!(
        json["poll"]["empty_share"],
        status["race"]["wasted_poll_share"]
    );
    assert_eq!(
        json["poll"]["requests_per_entity"],
        status["race"]["requests_per_entity"]["poll"]
    );
    assert_eq!(json["entities_total"], status["entities"]["total"]);
}

#[tokio::test]
async fn metrics_are_prometheus_exposition_matching_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(sim_config(dir.path(), 2, "transactions")).await;
    let user = app.first_user().await;
    app.inject(user, "EXERCISE").await;
    app.inject(user, "ACTIVITY_SUMMARY").await;
    app.status_until("two fetches", |s| s["webhook"]["fetches"]["ok"] == 2)
        .await;
    app.cycle().await;
    app.cycle().await;
    let res = app
        .http
        .get(format!("{}/metrics", app.admin_base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = res.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("exposition parses");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{name} {label:?} in\n{text}"));
        match &sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{name}: {other:?}"),
        }
    };
    let s = app.status().await;
    // The document itself is what its published schema says.
    assert_eq!(s["schema_version"], 1);
    common::assert_matches_status_schema(&s);
    assert_eq!(
        value(
            "hookrace_webhook_deliveries_total",
            Some(("outcome", "accepted"))
        ),
        s["webhook"]["accepted"].as_f64().unwrap()
    );
    assert_eq!(
        value(
            "hookrace_poll_requests_total",
            Some(("endpoint", "notifications"))
        ),
        2.0
    );
    assert_eq!(value("hookrace_poll_cycles_total", None), 2.0);
    assert_eq!(value("hookrace_entities", Some(("type", "EXERCISE"))), 1.0);
    assert_eq!(
        value("hookrace_entities_seen_by", Some(("seen", "both"))),
        s["entities"]["seen_by_both"].as_f64().unwrap()
    );
    // Histograms: one per channel, count equal to the status, +Inf bucket equal to the count.
    let hist = scrape
        .samples
        .iter()
        .find(|x| {
            x.metric == "hookrace_delay_seconds" && x.labels.get("channel") == Some("webhook")
        })
        .expect("the webhook delay histogram");
    match &hist.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let inf = buckets.last().unwrap();
            assert!(inf.less_than.is_infinite());
            assert_eq!(
                inf.count,
                s["webhook"]["latency_ms"]["count"].as_f64().unwrap()
            );
        }
        other => panic!("not a histogram: {other:?}"),
    }
    assert!(text.contains("# HELP hookrace_delay_seconds"));
    // Prometheus's conventions: what only grows is a counter, a distribution a histogram (no
    // gauge with a `quantile` label), the build and the start time under their usual names.
    for (family, kind) in [
        ("hookrace_poll_misses_caught", "counter"),
        ("hookrace_notify_end_to_end_seconds", "histogram"),
        ("hookrace_build_info", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} is a {kind} in\n{text}"
        );
    }
    assert!(!text.contains("quantile="), "{text}");
    // Every hookrace metric the documented alert rules name is one the daemon exposes.
    let rules = include_str!("../../docs/deploy/alerts.yml");
    let named = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("hookrace_"));
    for metric in named {
        assert!(
            text.contains(&format!("\n{metric}")) || text.contains(&format!("# TYPE {metric} ")),
            "docs/deploy/alerts.yml names {metric}, which /metrics does not have"
        );
    }
    let build = scrape
        .samples
        .iter()
        .find(|x| x.metric == "hookrace_build_info")
        .expect("hookrace_build_info");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(value("hookrace_build_info", None), 1.0);
    let started = value("process_start_time_seconds", None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - 600.0..=now).contains(&started), "{started} vs {now}");
    app.stop().await;
}

#[tokio::test]
async fn the_html_report_is_one_page_whose_charts_render_in_a_real_browser() {
    hookrace::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let report = demo::run(
        &short_demo(Format::Html, Some(dir.path().join("store"))),
        &mut out,
    )
    .await
    .unwrap();
    let html = String::from_utf8(out).unwrap();
    let start = html.find("<!doctype html>").expect("the page");
    let page = dir.path().join("race.html");
    std::fs::write(&page, &html[start..]).unwrap();
    for fetches in ["<script", "src=\"http", "href=\"http", "@import"] {
        assert!(!html.contains(fetches), "self-contained: no {fetches}");
    }
    let sightings: usize = report
        .sightings
        .iter()
        .map(|s| usize::from(s.webhook_s.is_some()) + usize::from(s.poll_s.is_some()))
        .sum();
    assert!(sightings > 10, "{}", report.sightings.len());
    assert!(report.samples.len() > 5);

    let Some(browser) = common::browser_or_skip() else {
        return;
    };
    let url = format!("file://{}", page.display());
    let dom = common::dump_dom(&browser, &url).await;
    // The browser parsed four charts, each an SVG with its marks.
    let figure = |id: &str| -> String {
        let at = dom
            .find(&format!("<figure id=\"{id}\""))
            .unwrap_or_else(|| panic!("#{id} in the rendered page:\n{dom}"));
        let rest = &dom[at..];
        rest[..rest.find("</figure>").unwrap()].to_string()
    };
    for id in ["timeline", "delays", "requests", "whatif"] {
        let f = figure(id);
        assert!(f.contains("<svg"), "#{id} is an SVG chart");
        assert!(!f.contains("chart not drawn"), "#{id}: {f}");
    }
    assert_eq!(
        figure("timeline").matches("<circle").count(),
        sightings,
        "a dot per entity per channel"
    );
    assert!(
        figure("delays").matches("<rect").count() > 2,
        "histogram bars"
    );
    assert!(
        figure("requests").contains("<polyline"),
        "two request lines"
    );
    assert!(
        figure("whatif").contains("this race") && figure("whatif").contains("<polyline"),
        "the curve with the race marked"
    );

    // `hookrace report --format html` on the kept store draws the entities too.
    let cfg = common::config_from(serde_json::json!({
        "accesslink": {"client_id": "x", "client_secret": "y"},
        "poller": {"every": "1s"},
        "store": {"path": dir.path().join("store")},
    }));
    let from_store = hookrace::apps::report::from_config(&cfg, Format::Html)
        .await
        .unwrap();
    let page = hookrace::apps::report::render(&from_store, Format::Html);
    assert!(page.contains("<figure id=\"timeline\""));
    // The race's own report, kept with its store: its requests over time too.
    assert!(page.contains("<figure id=\"requests\""), "{page}");
    assert!(!page.contains("sampled by <code>hookrace demo</code>"));
}

//! The what-if model against reality: a short race on loopback and `whatif` at the same settings
//! agree on the poll's mean delay, empty polls and requests per entity; and the chart is drawn.

use std::time::Duration;

use hookrace::apps::demo::{self, DemoArgs, Strategy};
use hookrace::apps::report::Format;
use hookrace::apps::whatif::{self, WhatifArgs};

fn within(what: &str, measured: f64, model: f64, tolerance: f64) {
    let rel = (measured - model).abs() / model;
    println!(
        "{what}: measured {measured:.3}, model {model:.3} ({:.0}% apart)",
        rel * 100.0
    );
    assert!(
        rel <= tolerance,
        "{what}: measured {measured} and model {model} are {:.0}% apart",
        rel * 100.0
    );
}

#[tokio::test]
async fn a_race_and_the_model_at_its_settings_agree() {
    hookrace::telemetry::init_for_tests();
    let (users, exercise_every, poll_every) = (1, Duration::from_secs(1), Duration::from_secs(1));
    let args = DemoArgs {
        duration: Duration::from_secs(40),
        poll_every,
        users,
        exercise_every,
        // Exercises only: the model's items.
        activity_every: Duration::from_secs(3_600_000),
        seed: Some(5),
        drop_rate: 0.0,
        duplicate_rate: 0.0,
        webhook_delay: "0ms..50ms".into(),
        format: Format::Json,
        strategy: Strategy::Fixed,
        ..DemoArgs::default()
    };
    let race = demo::run(&args, &mut Vec::new()).await.unwrap();
    // The model gets the rate the race really had: 40 s of a Poisson stream at 1 per second
    // holds 40 ± 6 items, and the empty-poll share moves with that sample (e^(−λT)), which is the
    // race's luck, not the model's error. The setting is the mean of that rate.
    let generated = race.truth.as_ref().unwrap().entities_generated as f64;
    let items_per_day = generated / args.duration.as_secs_f64() * 86_400.0 / f64::from(users);
    println!(
        "rate: set {:.0} per user per day, the race had {items_per_day:.0}",
        86_400.0 / exercise_every.as_secs_f64()
    );
    let model = whatif::compute(&WhatifArgs {
        users: u64::from(users),
        items_per_day,
        poll_every: vec![poll_every],
        drop_rate: 0.0,
        webhook_delay: "0ms..50ms".into(),
        strategy: Strategy::Fixed,
        max_every: Duration::from_secs(60),
        days: 1.0,
        seed: 1,
        format: Format::Json,
        svg: None,
        trace: None,
        mode: hookrace::config::PollMode::Transactions,
    })
    .unwrap();
    let row = &model.rows[0];

    within(
        "mean poll delay (ms)",
        race.poll.delay_ms.mean.unwrap(),
        row.delay_ms.mean.unwrap(),
        0.25,
    );
    within(
        "empty-poll share",
        race.poll.empty_share.unwrap(),
        row.empty_share.unwrap(),
        0.25,
    );
    // Poll requests per entity the poll saw.
    let items_per_day = row.delay_ms.count as f64;
    assert!(race.poll.entities_seen > 20, "{race:?}");
    within(
        "poll requests per entity",
        race.poll.requests as f64 / race.poll.entities_seen as f64,
        row.requests_per_day / items_per_day,
        0.25,
    );
}

#[test]
fn the_chart_is_an_svg_with_the_curve_the_points_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chart.svg");
    let mut out = Vec::new();
    let w = whatif::run(
        &WhatifArgs {
            users: 100,
            items_per_day: 3.0,
            poll_every: ["10s", "1m", "15m"]
                .iter()
                .map(|d| humantime::parse_duration(d).unwrap())
                .collect(),
            drop_rate: 0.02,
            webhook_delay: "20ms..400ms".into(),
            strategy: Strategy::Adaptive,
            max_every: Duration::from_secs(900),
            days: 2.0,
            seed: 1,
            format: Format::Table,
            trace: None,
            mode: hookrace::config::PollMode::Transactions,
            svg: Some(path.clone()),
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(
        w.rows.len(),
        5,
        "three intervals, webhooks, the adaptive net"
    );
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
    for label in [
        "every 10s",
        "every 1m",
        "every 15m",
        "webhooks alone",
        "adaptive net",
        "daily limit (15000 requests)",
    ] {
        assert!(svg.contains(label), "the chart names {label:?}");
    }
    assert!(
        svg.contains("<polyline"),
        "the curve and the limit are lines"
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("chart written to"), "{text}");
}

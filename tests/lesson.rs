//! The lesson's experiments (`docs/educators.md`), shortened, and the claims the lesson makes about
//! what each shows, asserted with tolerances that hold on a loaded 2-core machine. Each runs the
//! real demo: simulator, daemon and poller on loopback.

use std::time::Duration;

use hookrace::apps::demo::{self, DemoArgs, DemoMode};
use hookrace::apps::report::{Format, Report, render};

/// A short race at lesson settings scaled down in time.
fn lesson(args: DemoArgs) -> DemoArgs {
    DemoArgs {
        seed: Some(args.seed.unwrap_or(3)),
        webhook_delay: "20ms..400ms".into(),
        format: Format::Json,
        ..args
    }
}

async fn race(args: DemoArgs) -> (Report, String) {
    hookrace::telemetry::init_for_tests();
    let report = demo::run(&lesson(args), &mut Vec::new()).await.unwrap();
    let table = render(&report, Format::Table);
    (report, table)
}

/// "The measured-versus-expected table must be right on every run": the empty share of the
/// cycles that ran while data was made matches e^(−λT) within sampling error.
#[tokio::test]
async fn measured_empty_polls_match_theory_while_data_is_made() {
    // λ = 3 users × (1/5 s + 1/30 s) = 0.7/s, T = 1 s: e^(−0.7) = 50%.
    let (report, table) = race(DemoArgs {
        duration: Duration::from_secs(30),
        poll_every: Duration::from_secs(1),
        users: 3,
        exercise_every: Duration::from_secs(5),
        activity_every: Duration::from_secs(30),
        ..DemoArgs::default()
    })
    .await;
    let window = report
        .race_window
        .as_ref()
        .expect("cycles while data was made");
    assert!(window.cycles >= 20, "{window:?}");
    let measured = window.empty_share().unwrap();
    let expected = report.theory.empty_poll_share.unwrap();
    // ~28 cycles: one standard deviation of the share is ~0.095; allow about three.
    assert!(
        (measured - expected).abs() < 0.27,
        "measured {measured} vs expected {expected}\n{table}"
    );
    assert!(table.contains("while data was made"), "{table}");
    // The header says how long data was made and how long was measured, apart.
    assert!(table.contains("30 s of new data"), "{table}");
}

/// "Quiet data: almost every poll is empty".
#[tokio::test]
async fn quiet_data_makes_almost_every_poll_empty() {
    let (report, table) = race(DemoArgs {
        duration: Duration::from_secs(12),
        poll_every: Duration::from_secs(1),
        exercise_every: Duration::from_secs(300),
        activity_every: Duration::from_secs(3600),
        ..DemoArgs::default()
    })
    .await;
    let measured = report.race_window.as_ref().unwrap().empty_share().unwrap();
    assert!(measured >= 0.8, "{measured}\n{table}");
    assert!(report.theory.empty_poll_share.unwrap() >= 0.85, "{table}");
}

/// "A rate limit: the poller slows down before the limit, the report says how often and how
/// long it waited, and the expected delays are taken at the gaps the limit left".
#[tokio::test]
async fn a_rate_limit_paces_the_poller_and_the_report_says_so() {
    let (report, table) = race(DemoArgs {
        duration: Duration::from_secs(15),
        poll_every: Duration::from_secs(1),
        exercise_every: Duration::from_secs(5),
        rate_limit: Some("12,1000".into()),
        rate_window: Duration::from_secs(6),
        ..DemoArgs::default()
    })
    .await;
    assert!(report.paced >= 1, "{table}");
    assert!(report.paced_s > 1.0, "{table}");
    let stretched = report
        .theory
        .stretched_interval_s
        .unwrap_or_else(|| panic!("no stretched interval: {:?}\n{table}", report.race_window));
    assert!(stretched > 1.2, "{stretched}");
    assert!(
        table.contains("rate limit: requests to AccessLink waited"),
        "{table}"
    );
    assert!(table.contains("gaps g kept"), "{table}");
    // The expectation at the gaps kept is far above interval / 2.
    assert!(report.theory.mean_poll_delay_ms.unwrap() > 600.0, "{table}");
}

/// "More users: one notifications call covers every user, so transactional polling costs less
/// than per-user polling (`--mode list`)".
#[tokio::test]
async fn list_mode_costs_more_poll_requests_than_transactions() {
    let args = |mode| DemoArgs {
        duration: Duration::from_secs(8),
        poll_every: Duration::from_secs(1),
        users: 8,
        exercise_every: Duration::from_secs(60),
        mode,
        ..DemoArgs::default()
    };
    let (transactions, _) = race(args(DemoMode::Transactions)).await;
    let (list, table) = race(args(DemoMode::List)).await;
    assert_eq!(list.settings.as_ref().unwrap().poll_mode, "list");
    assert!(table.contains("(list mode)"), "{table}");
    let per_cycle = |r: &Report| {
        let w = r.race_window.as_ref().unwrap();
        r.poll.requests as f64 / (w.cycles as f64 + 2.0)
    };
    assert!(
        per_cycle(&list) > 2.0 * per_cycle(&transactions),
        "list {} vs transactions {} requests",
        list.poll.requests,
        transactions.poll.requests
    );
}

/// "Lost webhooks: a webhook delay far above the network's comes from a lost first delivery
/// and a later activity update; the report says so".
#[tokio::test]
async fn a_late_webhook_is_explained_by_a_lost_first_delivery() {
    let (report, table) = race(DemoArgs {
        duration: Duration::from_secs(14),
        poll_every: Duration::from_secs(2),
        // Per user, the day's first delivery is lost half the time: with 8, one is all but sure.
        users: 8,
        exercise_every: Duration::from_secs(3600),
        activity_every: Duration::from_secs(2),
        drop_rate: 0.5,
        seed: Some(4),
        ..DemoArgs::default()
    })
    .await;
    let truth = report.truth.as_ref().unwrap();
    assert!(truth.entities_announced_late >= 1, "{table}");
    assert!(
        table.contains("announced only by a later delivery"),
        "{table}"
    );
    // Every webhook delay beyond the network's (deliveries take at most 400 ms, plus the
    // receiver's work) is one of those.
    let max = report.webhook.delay_ms.max.unwrap_or(0.0);
    if max > 1500.0 {
        // (Both come from histograms that keep three significant digits.)
        assert!(
            truth.announced_late_max_ms.unwrap() >= max * 0.99,
            "{table}"
        );
    }
}

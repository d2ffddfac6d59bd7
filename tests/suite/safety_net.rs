//! The adaptive safety net, through the simulator: with lost deliveries and a receiver outage,
//! every entity is caught by some channel and each lost one within `max_every` plus a cycle; with
//! nothing lost the auditor spends far less than fixed polling; a deactivated webhook is seen and
//! reactivated.

use crate::common;

use std::time::Duration;

use common::{eventually, sim_config_json, spawn_with};
use hookrace::apps::demo::{self, DemoArgs, Strategy};
use hookrace::apps::report::Format;
use serde_json::json;

fn adaptive_demo(drop_rate: f64, outage: Option<(Duration, Duration)>) -> DemoArgs {
    DemoArgs {
        duration: Duration::from_secs(8),
        poll_every: Duration::from_secs(1),
        users: 3,
        exercise_every: Duration::from_millis(400),
        activity_every: Duration::from_secs(1000),
        seed: Some(11),
        drop_rate,
        duplicate_rate: 0.0,
        webhook_delay: "0ms..30ms".into(),
        rate_limit: None,
        rate_window: Duration::from_secs(900),
        format: Format::Json,
        open: false,
        store: None,
        notify: false,
        strategy: Strategy::Adaptive,
        max_every: Duration::from_secs(3),
        outage,
        mode: demo::PollMode::Transactions,
        keep_open: false,
        replay: None,
        speed: 1.0,
    }
}

#[tokio::test]
async fn with_drops_and_an_outage_every_lost_delivery_is_caught_within_the_bound() {
    hookrace::telemetry::init_for_tests();
    let args = adaptive_demo(0.2, Some((Duration::from_secs(2), Duration::from_secs(2))));
    let report = demo::run(&args, &mut Vec::new()).await.unwrap();
    let truth = report.truth.as_ref().unwrap();
    let net = report.safety_net.as_ref().expect("a safety-net section");
    // Every entity the simulator made is in the store, seen by some channel.
    assert_eq!(report.entities_total, truth.entities_generated);
    assert!(
        net.lost >= 3,
        "drops and the outage lost deliveries: {net:?}"
    );
    assert_eq!(net.caught, net.lost, "{net:?}");
    let max = net.catch_delay_ms.max.expect("catch delays measured");
    assert!(
        max <= net.bound_ms,
        "the slowest catch took {max} ms, over max_every + one cycle ({} ms)",
        net.bound_ms
    );
    // The outage failed 3 deliveries in a row: the simulator deactivated the webhook, the watch
    // saw it and reactivated it.
    assert!(net.deactivated_seen >= 1, "{net:?}");
    assert!(net.reactivations >= 1, "{net:?}");
}

/// The net audits with the listings that carry the webhooks' own ids: with every delivery
/// arriving, it reads one listing per user and data type a cycle (all five at its start) and
/// fetches nothing (before, it fetched again every exercise the webhooks had brought: 43 item
/// GETs in a 2-minute demo where nothing was missing); with deliveries dropped, a missed
/// exercise is stored from the listing that found it (no fetch: the listing carries it whole),
/// a missed day's data costs one fetch.
#[tokio::test]
async fn the_net_fetches_only_what_the_webhooks_missed() {
    hookrace::telemetry::init_for_tests();
    let complete = DemoArgs {
        users: 4,
        max_every: Duration::from_secs(2),
        ..adaptive_demo(0.0, None)
    };
    let report = demo::run(&complete, &mut Vec::new()).await.unwrap();
    let net = report.safety_net.as_ref().unwrap();
    // Nothing dropped: only an item made before the webhook existed goes undelivered.
    assert!(net.lost <= 1, "{net:?}");
    // Nothing fetched: what no delivery had announced when the audit listed it (an item whose
    // delivery was still on its way) is an exercise, stored from the listing.
    assert!(net.fetched <= report.poll.entities_seen, "{net:?}");
    assert_eq!(net.poll_requests, net.listings + net.fetched, "{net:?}");
    // At its start every listing; then those with data (exercises here: activities come every
    // 1,000 s), at most two per user.
    let users = u64::from(complete.users);
    let bound = users * 5 + users * 2 * net.cycles.saturating_sub(1);
    assert!(
        net.listings <= bound,
        "{} listings over {} cycles: {net:?}",
        net.listings,
        net.cycles
    );
    assert!(net.cycles >= 3, "{net:?}");

    let lossy = adaptive_demo(0.3, None);
    let report = demo::run(&lossy, &mut Vec::new()).await.unwrap();
    let net = report.safety_net.as_ref().unwrap();
    assert!(net.lost >= 2, "{net:?}");
    assert_eq!(net.caught, net.lost, "{net:?}");
    // The misses are nearly all exercises (activities come every 1,000 s, at most one a user
    // here), stored from the listing with no fetch (before, one GET each: fetched >= caught).
    assert!(
        net.fetched + 1 < net.caught,
        "{} fetches for {} misses: {net:?}",
        net.fetched,
        net.caught
    );
    assert!(net.fetched <= u64::from(lossy.users), "{net:?}");
    assert_eq!(net.poll_requests, net.listings + net.fetched, "{net:?}");
}

#[tokio::test]
async fn with_nothing_lost_the_auditor_spends_far_less_than_fixed_polling() {
    hookrace::telemetry::init_for_tests();
    let args = DemoArgs {
        // Data as sparse as real users make it (relative to the interval): what polling costs
        // is then its cycles, which the auditor spaces out while webhooks are complete.
        duration: Duration::from_secs(15),
        users: 1,
        exercise_every: Duration::from_secs(20),
        max_every: Duration::from_secs(10),
        ..adaptive_demo(0.0, None)
    };
    let report = demo::run(&args, &mut Vec::new()).await.unwrap();
    let net = report.safety_net.as_ref().unwrap();
    assert_eq!(net.lost, 0);
    assert_eq!(report.webhook.entities_seen, report.entities_total);
    let ratio = net.poll_requests as f64 / net.fixed_requests as f64;
    println!(
        "auditor {} requests, fixed polling every 1s {} requests: ratio {ratio:.2}",
        net.poll_requests, net.fixed_requests
    );
    assert!(ratio < 0.5, "the auditor spent {ratio:.2}× fixed polling");
    // Nothing to catch: the report gives the bound alone (it once read "bound the bound of").
    let text = hookrace::apps::report::render(&report, Format::Table);
    let line = text.lines().find(|l| l.contains("catch delay")).unwrap();
    assert!(
        line.ends_with("(the bound of 11.0 s: max_every + one cycle)"),
        "{line}"
    );
}

#[tokio::test]
async fn a_deactivated_webhook_is_seen_and_reactivated_by_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = sim_config_json(dir.path(), 1, "transactions");
    c["webhook"]["check_every"] = json!("200ms");
    c["webhook"]["reactivate"] = json!(true);
    let app = spawn_with(common::config_from(c)).await;
    app.status_until("a first check", |s| {
        s["webhook"]["health"]["active"] == true
    })
    .await;
    // Deactivated at Polar's side (as after days of failed deliveries).
    let res = app
        .sim_as_client(reqwest::Method::POST, "/v3/webhooks/deactivate")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let s = app
        .status_until("reactivated", |s| {
            s["webhook"]["health"]["reactivations"] == 1
        })
        .await;
    let health = &s["webhook"]["health"];
    assert!(health["deactivated_seen"].as_u64() >= Some(1), "{health}");
    assert!(
        health["last_problem"]
            .as_str()
            .is_some_and(|p| p.contains("reactivated")),
        "{health}"
    );
    let active = eventually("active at the simulator", || async {
        let truth = app.truth().await;
        (truth["webhook"]["active"] == true).then_some(())
    })
    .await;
    assert_eq!(active, ());
    let metrics = app.admin_text("/metrics").await;
    assert!(
        metrics.contains("hookrace_webhook_reactivations_total 1"),
        "{metrics}"
    );
    app.stop().await;
}

/// `/readyz` fails while no channel can bring data (the webhook found inactive, polling off),
/// naming why, and passes again once the webhook is active; `/livez` passes throughout (a
/// restart would not reactivate a webhook).
#[tokio::test]
async fn readiness_follows_the_channels_and_liveness_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = sim_config_json(dir.path(), 1, "transactions");
    c["webhook"]["check_every"] = json!("200ms");
    c["webhook"]["reactivate"] = json!(false);
    c["poller"]["enabled"] = json!(false);
    let app = spawn_with(common::config_from(c)).await;
    let probe = |path: &'static str| {
        let (http, url) = (app.http.clone(), format!("{}{path}", app.admin_base));
        async move {
            let res = http.get(url).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    app.status_until("a first check", |s| {
        s["webhook"]["health"]["active"] == true
    })
    .await;
    assert_eq!(probe("/readyz").await.0, 200);
    let res = app
        .sim_as_client(reqwest::Method::POST, "/v3/webhooks/deactivate")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    app.status_until("seen inactive", |s| {
        s["webhook"]["health"]["active"] == false
    })
    .await;
    let (code, body) = probe("/readyz").await;
    assert_eq!(code, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert!(
        ready["webhook"]["problem"]
            .as_str()
            .unwrap()
            .contains("inactive"),
        "{body}"
    );
    assert_eq!(ready["poll"]["problem"], "polling is off", "{body}");
    assert_eq!(probe("/livez").await, (200, "ok\n".to_string()));
    let res = app
        .sim_as_client(reqwest::Method::POST, "/v3/webhooks/activate")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    app.status_until("seen active", |s| s["webhook"]["health"]["active"] == true)
        .await;
    assert_eq!(probe("/readyz").await.0, 200);
    app.stop().await;
}

/// A webhook saved through the admin listener (what `hookrace webhook create` does after
/// creating one) makes the watch look at once, so `/status` does not keep saying what it found
/// up to `check_every` ago (10 minutes by default); and what it found is named (`state`), so a
/// webhook that is missing or points elsewhere is not shown as merely "inactive".
#[tokio::test]
async fn saving_a_webhook_secret_makes_the_watch_look_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = sim_config_json(dir.path(), 1, "transactions");
    c["webhook"]["check_every"] = json!("1h");
    let app = spawn_with(common::config_from(c)).await;
    app.status_until("the first check", |s| {
        s["webhook"]["health"]["state"] == "healthy"
    })
    .await;
    // The webhook goes away at Polar's side; nothing checks for an hour...
    let id = app.truth().await["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .sim_as_client(reqwest::Method::DELETE, &format!("/v3/webhooks/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    // ... until a secret is saved, as after a `webhook create`: the watch looks now.
    let res = app
        .http
        .put(format!("{}/webhook/secret", app.admin_base))
        .body("a-new-signature-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let s = app
        .status_until("the check after the save", |s| {
            s["webhook"]["health"]["state"] == "missing"
        })
        .await;
    assert_eq!(s["webhook"]["health"]["active"], false, "{s}");
    app.stop().await;
}

/// A daemon on the simulator (one user) whose adaptive auditor runs every second.
async fn fast_auditor(dir: &std::path::Path) -> common::App {
    let mut c = sim_config_json(dir, 1, "transactions");
    c["poller"] = json!({"enabled": true, "strategy": "adaptive", "every": "1s",
        "max_every": "1s", "mode": "transactions"});
    spawn_with(common::config_from(c)).await
}

/// `/status` gives the reason for the auditor's pace that the log gives: after a clean cycle,
/// "webhooks complete" (it was null while the log said why).
#[tokio::test]
async fn the_pace_reason_is_never_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let app = fast_auditor(dir.path()).await;
    let s = app
        .status_until("the first cycle's reason", |s| {
            s["poll"]["pace_reason"]
                .as_str()
                .is_some_and(|r| r.contains("started"))
        })
        .await;
    assert!(s["poll"]["pace_reason"].is_string(), "{s}");
    app.status_until("a clean cycle's reason", |s| {
        s["poll"]["pace_reason"] == "webhooks complete"
    })
    .await;
    app.stop().await;
}

/// Once the day's usage runs ahead of an even spread of the daily limit, the net spreads what is
/// left of the day's limit over what is left of the day: `/status` says why, and the interval
/// grows far past `max_every`, so the day is not spent before it ends. (Before, the net kept
/// its evidence's pace until a window was spent: a 65-minute overloaded soak was on course to
/// spend the day in 6 hours.)
#[tokio::test]
async fn a_day_ahead_of_its_pace_slows_the_net() {
    let dir = tempfile::tempdir().unwrap();
    let app = fast_auditor(dir.path()).await;
    // 60 requests a day: the first cycle's five listings already run ahead of an even spread
    // (60 × 1 h / 24 h = 2.5 allowed by now). With an exercise stored, each cycle lists the
    // user's exercises.
    app.faults(json!({"rate_limit": [100000, 60]})).await;
    let user = app.first_user().await;
    app.inject(user, "EXERCISE").await;
    let s = app
        .status_until("the day's pace in the reason", |s| {
            s["poll"]["pace_reason"]
                .as_str()
                .is_some_and(|r| r.contains("ahead of an even spread"))
        })
        .await;
    let interval_ms = s["poll"]["interval_ms"].as_u64().unwrap();
    assert!(interval_ms > 600_000, "{interval_ms} ms: {s}");
    assert_eq!(s["accesslink"]["rate_limit"]["answered_429"], 0, "{s}");
    app.stop().await;
}

//! Both channels against the simulator on loopback: webhook + fetch, polling, and their meeting.

use crate::common;

use common::receiver::Receiver;
use common::{App, sim_config, spawn_with};
use hookrace::accesslink::signature;
use hookrace::race::FetchState;
use hookrace::sim;
use reqwest::Method;
use serde_json::{Value, json};

async fn app(dir: &std::path::Path, users: u32) -> App {
    spawn_with(sim_config(dir, users, "transactions")).await
}

fn requests(s: &Value, endpoint: &str) -> u64 {
    s["poll"]["requests_by_endpoint"][endpoint]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn webhook_only_the_data_is_fetched_and_dates_the_entity() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 1).await;
    let user = app.first_user().await;
    let truth_entity = app.inject(user, "EXERCISE").await;
    let s = app
        .status_until("the fetch", |s| s["webhook"]["fetches"]["ok"] == 1)
        .await;
    assert_eq!(s["webhook"]["accepted"], 1);
    assert_eq!(s["webhook"]["fetch_requests"], 1);
    assert_eq!(s["entities"]["webhook_only"], 1);
    assert_eq!(s["entities"]["first_by_webhook"], 1);
    // Deliveries 1 + fetches 1 for one entity.
    assert_eq!(s["race"]["requests_per_entity"]["webhook"], 2.0);
    let e = &app.entities("").await[0];
    assert_eq!(e["entity_id"], truth_entity["entity_id"]);
    // available_at comes from the data (upload_time), not from the notification timestamp.
    let upload: chrono::DateTime<chrono::Utc> = truth_entity["available_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let got: chrono::DateTime<chrono::Utc> = e["available_at"].as_str().unwrap().parse().unwrap();
    assert!(
        (got - upload).num_milliseconds().abs() <= 1,
        "{got} vs {upload}"
    );
    assert!(s["webhook"]["latency_ms"]["count"] == 1);
    app.stop().await;
}

#[tokio::test]
async fn poll_only_a_dropped_delivery_is_found_by_the_poller() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 1).await;
    let user = app.first_user().await;
    app.faults(json!({"drop_rate": 1.0})).await;
    let e = app.inject(user, "EXERCISE").await;
    let r = app.cycle().await;
    assert_eq!(
        (r.items, r.new_entities, r.committed, r.errors),
        (1, 1, 1, 0)
    );
    let s = app.status().await;
    assert_eq!(s["entities"]["poll_only"], 1);
    assert_eq!(s["entities"]["first_by_poll"], 1);
    assert_eq!(s["poll"]["cycles"], 1);
    assert_eq!(s["poll"]["empty_cycles"], 0);
    for endpoint in [
        "notifications",
        "create_transaction",
        "list_transaction",
        "get_item",
        "commit",
    ] {
        assert_eq!(requests(&s, endpoint), 1, "{endpoint}");
    }
    assert_eq!(s["poll"]["requests"], 5);
    assert_eq!(s["race"]["requests_per_entity"]["poll"], 5.0);
    assert!(s["poll"]["last_cycle_at"].is_string());
    // The simulator agrees: the delivery was dropped, the data committed.
    let truth = app.truth().await;
    assert_eq!(truth["deliveries"][0]["outcome"], "dropped");
    assert_eq!(truth["requests"]["commit"], 1);
    let list = app.entities("").await;
    assert_eq!(list[0]["first_channel"], "poll");
    assert_eq!(list[0]["entity_id"], format!("t{}", e["item_ids"][0]));
    app.stop().await;
}

#[tokio::test]
async fn seen_by_both_channels_is_one_entity_with_both_times() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 1).await;
    let user = app.first_user().await;
    // Webhook first.
    let a = app.inject(user, "EXERCISE").await;
    app.status_until("the fetch", |s| s["webhook"]["fetches"]["ok"] == 1)
        .await;
    app.cycle().await;
    // Poll first: the delivery is held back until after the cycle.
    app.faults(json!({"delay_ms": [1500, 1500]})).await;
    let b = app.inject(user, "EXERCISE").await;
    let r = app.cycle().await;
    assert_eq!(r.items, 1);
    assert_eq!(r.new_entities, 1, "the poller saw b first");
    let s = app
        .status_until("b's fetch", |s| s["webhook"]["fetches"]["ok"] == 2)
        .await;
    assert_eq!(s["entities"]["total"], 2, "{s}");
    assert_eq!(s["entities"]["seen_by_both"], 2);
    assert_eq!(s["entities"]["first_by_webhook"], 1);
    assert_eq!(s["entities"]["first_by_poll"], 1);
    assert_eq!(s["race"]["webhook_lead_ms"]["count"], 2);
    let list = app.entities("").await;
    let find = |id: &Value| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|e| e["entity_id"] == *id || e["entity_id"] == format!("t{}", id))
            .cloned()
    };
    let ea = find(&a["entity_id"]).expect("a is listed under its hashed id");
    assert_eq!(ea["first_channel"], "webhook");
    assert!(ea["webhook_at"].is_string() && ea["poll_at"].is_string());
    // b was first stored by the poller under its transaction id, then linked to its delivery.
    let eb = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["first_channel"] == "poll")
        .cloned()
        .unwrap();
    assert!(eb["webhook_at"].is_string() && eb["poll_at"].is_string());
    assert!(
        eb["entity_id"] == b["entity_id"] || eb["entity_id"] == format!("t{}", b["item_ids"][0])
    );
    // A repeated delivery for b after the merge is still a duplicate of the same entity.
    let secret = hookrace::credentials::webhook_secret(&app.running.store).unwrap();
    let body = json!({"event":"EXERCISE","user_id":user,"entity_id":b["entity_id"],"timestamp":"2026-11-28T10:00:00Z",
        "url": format!("{}/v3/exercises/{}", app.sim(), b["entity_id"].as_str().unwrap())}).to_string();
    let sig = signature::sign(secret.expose(), body.as_bytes());
    assert_eq!(app.post(&body, Some(&sig)).await.status(), 200);
    let s = app.status().await;
    assert_eq!(s["webhook"]["duplicates"], 1);
    assert_eq!(s["entities"]["total"], 2);
    app.stop().await;
}

#[tokio::test]
async fn duplicated_deliveries_store_and_fetch_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 1).await;
    let user = app.first_user().await;
    app.faults(json!({"duplicate_rate": 1.0})).await;
    app.inject(user, "EXERCISE").await;
    let s = app
        .status_until("both copies", |s| {
            s["webhook"]["accepted"] == 1
                && s["webhook"]["duplicates"] == 1
                && s["webhook"]["fetches"]["ok"] == 1
        })
        .await;
    assert_eq!(s["entities"]["total"], 1);
    assert_eq!(s["webhook"]["fetch_requests"], 1);
    app.stop().await;
}

#[tokio::test]
async fn an_idle_cycle_costs_one_request_with_1_or_50_users() {
    for users in [1, 50] {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), users).await;
        let r = app.cycle().await;
        assert_eq!(r.requests, 1, "{users} users");
        let s = app.status().await;
        assert_eq!(s["poll"]["requests"], 1);
        assert_eq!(s["poll"]["empty_cycles"], 1);
        assert_eq!(s["race"]["wasted_poll_share"], 1.0);
        assert_eq!(app.truth().await["requests"]["notifications"], 1);
        app.stop().await;
    }
}

#[tokio::test]
async fn more_than_50_items_take_two_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 1).await;
    let user = app.first_user().await;
    app.faults(json!({"drop_rate": 1.0})).await;
    for _ in 0..60 {
        app.inject(user, "EXERCISE").await;
    }
    let first = app.cycle().await;
    assert_eq!((first.items, first.committed), (50, 1));
    let second = app.cycle().await;
    assert_eq!((second.items, second.committed), (10, 1));
    let third = app.cycle().await;
    assert_eq!((third.items, third.requests), (0, 1));
    let s = app.status().await;
    assert_eq!(s["entities"]["total"], 60);
    assert_eq!(s["poll"]["new_entities"], 60);
    assert_eq!(s["poll"]["items"], 60);
    app.stop().await;
}

#[tokio::test]
async fn a_5xx_mid_transaction_leaves_it_uncommitted_and_the_data_comes_later() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 1).await;
    let user = app.first_user().await;
    app.faults(json!({"drop_rate": 1.0})).await;
    app.inject(user, "EXERCISE").await;
    app.inject(user, "EXERCISE").await;
    // More failures than the client retries: the second item cannot be fetched this cycle.
    app.faults(json!({"fail_next": {"get_item": 5}})).await;
    let r = app.cycle().await;
    assert_eq!(r.committed, 0);
    assert_eq!(r.errors, 1);
    assert_eq!(app.truth().await["requests"].get("commit"), None);
    let s = app.status().await;
    assert_eq!(s["poll"]["errors"], 1);
    // Next cycle: the open transaction is offered again and committed; nothing counted twice.
    let r = app.cycle().await;
    assert_eq!((r.committed, r.errors), (1, 0));
    let s = app.status().await;
    assert_eq!(s["entities"]["total"], 2);
    assert_eq!(app.truth().await["requests"]["commit"], 1);
    app.stop().await;
}

#[tokio::test]
async fn a_429_waits_for_the_reset() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 1).await;
    // Use up the (lowered) short window from outside, so the poller's first request gets 429.
    app.faults(json!({"rate_limit": [2, 1000], "short_window_s": 4}))
        .await;
    for _ in 0..3 {
        app.http
            .get(format!("{}/v3/notifications", app.sim()))
            .basic_auth("hookrace-sim", Some("hookrace-sim-secret"))
            .send()
            .await
            .unwrap();
    }
    let r = app.cycle().await;
    assert_eq!(r.errors, 1);
    let s = app.status().await;
    assert_eq!(s["poll"]["rate_limited"], 1);
    // The operator sees why nothing moves: the limit as Polar reported it, and the wait.
    let rate = &s["accesslink"]["rate_limit"];
    assert_eq!(rate["limit"]["short"], 2, "{rate}");
    assert!(rate["usage"]["short"].as_u64().unwrap() >= 3, "{rate}");
    assert_eq!(rate["waiting"], true, "{rate}");
    assert!(rate["waiting_until"].is_string() && rate["resets_at"]["short"].is_string());
    let metrics = app.admin_text("/metrics").await;
    assert!(
        metrics.contains("hookrace_accesslink_rate_limit_waiting 1"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"hookrace_accesslink_rate_limit{window="short"} 2"#));
    let blocked = app
        .running
        .client
        .rate_state()
        .blocked_until
        .expect("the client waits");
    let r = app.cycle().await;
    assert_eq!(
        (r.errors, r.requests),
        (0, 1),
        "after the reset the cycle succeeds"
    );
    // It waited for the reset the 429 announced before asking again.
    assert!(tokio::time::Instant::now() >= blocked);
    assert_eq!(app.status().await["poll"]["rate_limited"], 1);
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_user_is_marked_disconnected_by_both_channels() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 2).await;
    let users = app.sim_control(Method::GET, "/sim/users", json!({})).await;
    let (u1, u2) = (
        users[0]["user_id"].as_u64().unwrap(),
        users[1]["user_id"].as_u64().unwrap(),
    );
    // Poll path: data waits for u1, whose token is then revoked.
    app.faults(json!({"drop_rate": 1.0})).await;
    app.inject(u1, "EXERCISE").await;
    app.sim_control(Method::POST, &format!("/sim/users/{u1}/revoke"), json!({}))
        .await;
    let r = app.cycle().await;
    assert_eq!(r.errors, 1);
    let s = app.status().await;
    assert_eq!(s["users"]["disconnected"], json!([u1]));
    // The next cycle does not try that token again.
    let before = app.truth().await["requests"]["create_transaction"]
        .as_u64()
        .unwrap();
    app.cycle().await;
    assert_eq!(
        app.truth().await["requests"]["create_transaction"]
            .as_u64()
            .unwrap(),
        before
    );
    // Fetch path: a delivery for u2 arrives, then u2's token is revoked before the fetch.
    // Its fetches fail (500) until the token has been revoked, so the fetch that gets through
    // meets the revoked token.
    app.faults(json!({"drop_rate": 0.0, "delay_ms": [0, 0], "fail_next": {"get_exercise": 1000}}))
        .await;
    app.inject(u2, "EXERCISE").await;
    app.status_until("the delivery", |s| s["webhook"]["accepted"] == 1)
        .await;
    app.sim_control(Method::POST, &format!("/sim/users/{u2}/revoke"), json!({}))
        .await;
    app.faults(json!({"fail_next": {}})).await;
    let s = app
        .status_until("the failed fetch", |s| {
            s["webhook"]["fetches"]["failed"] == 1
        })
        .await;
    let mut d = s["users"]["disconnected"].as_array().unwrap().clone();
    d.sort_by_key(|v| v.as_u64());
    assert_eq!(d, [json!(u1), json!(u2)]);
    app.stop().await;
}

#[tokio::test]
async fn a_payload_url_on_a_foreign_host_is_never_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 1).await;
    let user = app.first_user().await;
    let attacker = Receiver::start().await;
    let secret = hookrace::credentials::webhook_secret(&app.running.store).unwrap();
    let foreign = attacker.url.replace("/hook", "/v3/exercises/steal");
    let body = json!({"event":"EXERCISE","user_id":user,"entity_id":"evil1","timestamp":"2026-11-28T10:00:00Z","url":foreign}).to_string();
    let sig = signature::sign(secret.expose(), body.as_bytes());
    assert_eq!(
        app.post(&body, Some(&sig)).await.status(),
        200,
        "a valid delivery is kept"
    );
    let s = app
        .status_until("the refused fetch", |s| {
            s["webhook"]["fetches"]["failed"] == 1
        })
        .await;
    assert_eq!(s["webhook"]["fetch_requests"], 0, "no request was made");
    assert!(attacker.drain().await.is_empty());
    app.stop().await;
    let store = common::reopen_store(dir.path());
    let e = store
        .entity(&hookrace::accesslink::identity::EntityKey::stored(format!(
            "EXERCISE/{user}/evil1"
        )))
        .unwrap()
        .unwrap();
    let FetchState::Failed(reason) = e.fetch_state() else {
        panic!("the fetch failed for good: {:?}", e.fetch_state());
    };
    assert!(reason.contains("not under the AccessLink base URL"));
}

#[tokio::test]
async fn the_list_mode_polls_new_exercises_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(sim_config(dir.path(), 1, "list")).await;
    let user = app.first_user().await;
    app.faults(json!({"drop_rate": 1.0})).await;
    let e = app.inject(user, "EXERCISE").await;
    let r = app.cycle().await;
    assert_eq!((r.items, r.new_entities, r.requests), (1, 1, 2));
    let r = app.cycle().await;
    assert_eq!(
        (r.items, r.requests),
        (0, 1),
        "a known id is not fetched again"
    );
    let list = app.entities("").await;
    assert_eq!(
        list[0]["entity_id"], e["entity_id"],
        "list mode sees hashed ids"
    );
    let s = app.status().await;
    assert_eq!(requests(&s, "list_exercises"), 2);
    assert_eq!(requests(&s, "get_exercise"), 1);
    app.stop().await;
}

#[tokio::test]
async fn the_fetch_queue_resumes_after_a_restart() {
    // A simulator that outlives the daemon.
    let polar = common::external_sim().await;
    let (user, access) = (polar.user, polar.access_token.clone());
    let http = hookrace::http::plain_client();
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &std::path::Path| {
        common::config_from(json!({
            "webhook": common::loopback_listeners(),
            "admin": common::loopback_listeners(),
            "accesslink": {
                "base_url": polar.base_url,
                "client_id": "hookrace-sim",
                "client_secret": "hookrace-sim-secret",
            },
            "users": [{"user_id": user, "access_token": access}],
            "poller": {"enabled": false},
            "store": {"path": dir},
        }))
    };
    let app = spawn_with(config(dir.path())).await;
    let created = hookrace::accesslink::webhooks::create(
        &app.running.client,
        &app.webhook_url,
        &["EXERCISE".to_string()],
    )
    .await
    .unwrap();
    hookrace::credentials::set_webhook_secret(&app.running.store, &created.secret)
        .await
        .unwrap();
    // Every fetch fails for now.
    let set_faults = |f: Value| {
        let (http, base) = (http.clone(), polar.base_url.clone());
        async move {
            sim::patch_faults(&http, &base, f).await.unwrap();
        }
    };
    set_faults(json!({"delay_ms": [0, 0], "fail_next": {"get_exercise": 1000}})).await;
    http.post(format!("{}/sim/inject", polar.base_url))
        .json(&json!({"user_id": user, "type": "EXERCISE"}))
        .send()
        .await
        .unwrap();
    app.status_until("a failed fetch attempt", |s| {
        s["webhook"]["accepted"] == 1 && s["webhook"]["fetch_requests"].as_u64().unwrap() >= 4
    })
    .await;
    app.stop().await;

    set_faults(json!({"fail_next": {}})).await;
    let app = spawn_with(config(dir.path())).await;
    let s = app
        .status_until("the resumed fetch", |s| s["webhook"]["fetches"]["ok"] == 1)
        .await;
    assert_eq!(s["webhook"]["fetches"]["failed"], 0);
    assert_eq!(s["entities"]["total"], 1);
    app.stop().await;
}

/// The daemon against a hand-made upstream at `base`: user 5 with a token, the poller on (an
/// hourly schedule, so the tests run its cycles themselves), the store in `dir`.
async fn against_upstream(base: &str, dir: &std::path::Path) -> App {
    spawn_with(common::config_from(json!({
        "webhook": common::loopback_listeners(),
        "admin": common::loopback_listeners(),
        "accesslink": {
            "base_url": base,
            "client_id": "c",
            "client_secret": "s",
            "webhook_secret": common::SECRET,
        },
        "users": [{"user_id": 5, "access_token": "token-of-five"}],
        "poller": {"enabled": true, "every": "1h"},
        "store": {"path": dir},
    })))
    .await
}

/// A commit deletes the data at Polar. An upstream whose transaction list lacks the expected key
/// (here `exercise` instead of `exercises`) must leave the transaction uncommitted: before the fix
/// the poller read "no items" and committed, deleting data it never stored.
#[tokio::test]
async fn a_transaction_list_hookrace_cannot_read_is_never_committed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use warp::Filter;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let commits = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let (base, commits) = (base.clone(), commits.clone());
        let notes = {
            let base = base.clone();
            warp::path!("v3" / "notifications").map(move || {
                warp::reply::json(&serde_json::json!({ "available-user-data": [
                    { "user-id": 5, "data-type": "EXERCISE",
                      "url": format!("{base}/v3/users/5/exercise-transactions") }
                ]}))
            })
        };
        let create = warp::post()
            .and(warp::path!("v3" / "users" / u64 / "exercise-transactions"))
            .map(move |_u| {
                warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({
                        "transaction-id": 9,
                        "resource-uri": format!("{base}/v3/users/5/exercise-transactions/9")
                    })),
                    warp::http::StatusCode::CREATED,
                )
            });
        let list = warp::get()
            .and(warp::path!(
                "v3" / "users" / u64 / "exercise-transactions" / u64
            ))
            .map(|_u, _t| warp::reply::json(&serde_json::json!({ "exercise": ["https://x/1"] })));
        let commit = warp::put()
            .and(warp::path!(
                "v3" / "users" / u64 / "exercise-transactions" / u64
            ))
            .map(move |_u, _t| {
                commits.fetch_add(1, Ordering::SeqCst);
                warp::reply()
            });
        notes.or(create).or(list).or(commit)
    };
    tokio::spawn(hookrace::server::serve_local(
        listener,
        "test",
        1024,
        upstream,
        std::future::pending(),
    ));

    let dir = tempfile::tempdir().unwrap();
    let app = against_upstream(&base, dir.path()).await;
    let report = app.cycle().await;
    assert!(
        report.errors >= 1,
        "the unreadable list is an error: {report:?}"
    );
    assert_eq!(report.committed, 0);
    assert_eq!(
        commits.load(Ordering::SeqCst),
        0,
        "nothing was committed at Polar"
    );
    app.stop().await;
}

/// Attacks from upstream (or from whoever answers for it): a redirect from a data URL to another
/// port is not followed (the user's token would go with it, past the base-URL guard), and a
/// `RateLimit-Reset` of 2^64−1 seconds neither panics the poller nor stops it for longer than a day.
#[tokio::test]
async fn upstream_redirects_are_not_followed_and_absurd_resets_do_not_panic() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use warp::Filter;

    // B: where the redirect points. It must never be asked.
    let b_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_base = format!("http://{}", b_listener.local_addr().unwrap());
    let b_hits = Arc::new(AtomicUsize::new(0));
    let b = {
        let hits = b_hits.clone();
        // `and_then`: a filter that can reject, as `serve_local` takes.
        warp::any().and_then(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, warp::Rejection>(warp::reply::json(
                &serde_json::json!({ "id": "r1", "upload_time": "2026-11-28T10:00:00Z" }),
            )))
        })
    };
    tokio::spawn(hookrace::server::serve_local(
        b_listener,
        "test",
        1024,
        b,
        std::future::pending(),
    ));

    // A: the configured AccessLink. Its notifications carry the absurd reset once `absurd` is set
    // (the poller's first cycle runs at start; a day's block then would hold up the fetch).
    let absurd = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a_base = format!("http://{}", a_listener.local_addr().unwrap());
    let a = {
        let b_base = b_base.clone();
        let exercise = warp::path!("v3" / "exercises" / String).map(move |id: String| {
            warp::http::Response::builder()
                .status(302)
                .header("Location", format!("{b_base}/v3/exercises/{id}"))
                .body(String::new())
                .unwrap()
        });
        let absurd = absurd.clone();
        let notes = warp::path!("v3" / "notifications").map(move || {
            let reply = warp::http::Response::builder().status(204);
            let reply = if absurd.load(Ordering::SeqCst) {
                reply
                    .header("RateLimit-Usage", "499, 1")
                    .header("RateLimit-Limit", "500, 5000")
                    .header("RateLimit-Reset", "18446744073709551615, 1")
            } else {
                reply
            };
            reply.body(String::new()).unwrap()
        });
        exercise.or(notes)
    };
    tokio::spawn(hookrace::server::serve_local(
        a_listener,
        "test",
        1024,
        a,
        std::future::pending(),
    ));

    let dir = tempfile::tempdir().unwrap();
    let app = against_upstream(&a_base, dir.path()).await;
    let body = format!(
        r#"{{"event":"EXERCISE","user_id":5,"entity_id":"r1","timestamp":"2026-11-28T10:00:00Z","url":"{a_base}/v3/exercises/r1"}}"#
    );
    assert_eq!(app.deliver(&body).await.status(), 200);
    let entity = common::eventually("the fetch to end", || async {
        app.running
            .store
            .entity(&hookrace::accesslink::identity::EntityKey::stored(
                "EXERCISE/5/r1",
            ))
            .unwrap()
            .filter(|e| e.fetch_state() != FetchState::NotFetched)
    })
    .await;
    let error = match entity.fetch_state() {
        FetchState::Failed(reason) => reason,
        other => format!("{other:?}"),
    };
    assert!(
        error.contains("redirect"),
        "given up for the redirect: {error:?}"
    );
    assert_eq!(
        b_hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );

    // The absurd reset: the cycle ends normally (before the fix: overflow panic in the client).
    absurd.store(true, Ordering::SeqCst);
    let report = app.cycle().await;
    assert_eq!(report.errors, 0, "{report:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_night_and_a_day_of_heart_rate_arrive_by_webhook_and_are_fetched_by_their_date() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 1).await;
    let user = app.first_user().await;
    let sleep = app.inject(user, "SLEEP").await;
    let heart = app.inject(user, "CONTINUOUS_HEART_RATE").await;
    let s = app
        .status_until("both fetches", |s| s["webhook"]["fetches"]["ok"] == 2)
        .await;
    assert_eq!(s["webhook"]["fetches"]["failed"], 0);
    assert_eq!(s["entities"]["by_type"]["SLEEP"], 1);
    assert_eq!(s["entities"]["by_type"]["CONTINUOUS_HEART_RATE"], 1);
    // Each is stored under the day the webhook announced, and linked by it.
    for (kind, truth) in [("SLEEP", &sleep), ("CONTINUOUS_HEART_RATE", &heart)] {
        let day = truth["entity_id"].as_str().unwrap();
        let key = hookrace::accesslink::identity::EntityKey::stored(format!("{kind}/{user}/{day}"));
        let e = app
            .running
            .store
            .entity(&key)
            .unwrap()
            .expect("stored under its day");
        assert_eq!(
            e.fingerprint.as_deref(),
            Some(format!("{kind}|{user}|{day}").as_str())
        );
    }
    // Four more nights: SleepWise™ periods come, announced with a from..to range, and fetched.
    for _ in 0..4 {
        app.inject(user, "SLEEP").await;
    }
    let s = app
        .status_until("the SleepWise fetches", |s| {
            s["entities"]["by_type"]["SLEEP_WISE_ALERTNESS"] == 1
                && s["entities"]["by_type"]["SLEEP_WISE_CIRCADIAN_BEDTIME"] == 1
                && app_fetched_all(s)
        })
        .await;
    assert_eq!(s["webhook"]["fetches"]["failed"], 0);
    app.stop().await;
}

/// Every accepted delivery's data has been fetched.
fn app_fetched_all(s: &Value) -> bool {
    s["webhook"]["fetches"]["ok"] == s["webhook"]["accepted"]
}

/// An upstream whose notifications answer 204 with the given rate-limit headers, counting hits.
async fn limited_upstream(
    usage: &'static str,
    limit: &'static str,
    reset: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use warp::Filter;
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let counted = hits.clone();
    let notes = warp::path!("v3" / "notifications").map(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        warp::http::Response::builder()
            .status(204)
            .header("RateLimit-Usage", usage)
            .header("RateLimit-Limit", limit)
            .header("RateLimit-Reset", reset)
            .body(String::new())
            .unwrap()
    });
    tokio::spawn(hookrace::server::serve_local(
        listener,
        "test",
        1024,
        notes,
        std::future::pending(),
    ));
    (base, hits)
}

/// One odd header must not stall AccessLink for a day. With `RateLimit-Limit: 2, 2` the reserve
/// of 5 exceeded the limit, so before the fix every request waited the 24-hour reset (here the
/// second cycle hung) while the usage (1 of 2) was nowhere near it.
#[tokio::test]
async fn a_tiny_reported_limit_does_not_hold_requests_back() {
    use std::sync::atomic::Ordering;
    let (base, hits) = limited_upstream("1, 1", "2, 2", "900, 86400").await;
    let dir = tempfile::tempdir().unwrap();
    let app = against_upstream(&base, dir.path()).await;
    let poller = app.running.poller.clone().unwrap();
    for _ in 0..3 {
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), poller.cycle())
            .await
            .expect("a cycle is not held back by a window its usage is not near");
        assert_eq!(r.errors, 0, "{r:?}");
    }
    assert!(hits.load(Ordering::SeqCst) >= 3);
    let s = app.status().await;
    assert_eq!(s["accesslink"]["rate_limit"]["waiting"], false, "{s}");
    drop(poller);
    app.stop().await;
}

/// A window really spent (usage at the limit, a day to the reset): the wait shows in `/status`
/// and `/metrics` (how long, for which window), and a stop ends the wait at once instead of
/// holding the stop for the grace period, or, before the client's waits were cancellable, for
/// as long as the cycle waited.
#[tokio::test]
async fn a_long_rate_limit_wait_is_shown_and_ended_by_a_stop() {
    let (base, _hits) = limited_upstream("5000, 5100", "5100, 5100", "900, 86400").await;
    let dir = tempfile::tempdir().unwrap();
    let app = against_upstream(&base, dir.path()).await;
    // A second cycle beside the start-up one: the later of the two waits for the window.
    let poller = app.running.poller.clone().unwrap();
    let cycle = tokio::spawn(async move { poller.cycle().await });
    let s = app
        .status_until("the wait in /status", |s| {
            s["accesslink"]["rate_limit"]["waiting"] == true
        })
        .await;
    let rate = &s["accesslink"]["rate_limit"];
    assert_eq!(rate["waiting_for"], "daily", "{s}");
    assert!(rate["waiting_seconds"].as_f64().unwrap() > 80_000.0, "{s}");
    let metrics = app.admin_text("/metrics").await;
    assert!(
        metrics.contains("hookrace_accesslink_rate_limit_wait_seconds 8"),
        "{metrics}"
    );
    let started = std::time::Instant::now();
    app.stop().await;
    // The daemon's grace for a running cycle is 10 s; the wait ends with the stop instead.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the stop waited {:?}",
        started.elapsed()
    );
    // Whichever of the start-up cycle and this one came second was waiting: both have ended.
    cycle.await.unwrap();
}

/// Ids from AccessLink's exercise list follow the webhook's rule for ids, and every path segment
/// hookrace builds is percent-encoded: before the fix an id `../users/5` made the list-mode
/// poller fetch `/v3/users/5` with the user's token and store whatever came back.
#[tokio::test]
async fn a_polled_id_that_is_a_path_is_neither_followed_nor_stored() {
    use std::sync::{Arc, Mutex};
    use warp::Filter;
    let asked = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = asked.clone();
    let upstream = warp::path::full().and_then(move |path: warp::path::FullPath| {
        let path = path.as_str().to_string();
        seen.lock().unwrap().push(path.clone());
        let body = match path.as_str() {
            "/v3/exercises" => json!([{"id": "../users/5"}, {"id": "fine1"}, {"id": "a b"}]),
            "/v3/exercises/fine1" => json!({"id": "fine1", "upload_time": "2026-11-28T10:00:00Z",
                "device_id": "D1", "start_time": "2026-11-28T09:00:00", "start_time_utc_offset": 60}),
            _ => json!({"polar-user-id": 5, "first-name": "not an exercise"}),
        };
        std::future::ready(Ok::<_, warp::Rejection>(warp::reply::json(&body)))
    });
    tokio::spawn(hookrace::server::serve_local(
        listener,
        "test",
        1024,
        upstream,
        std::future::pending(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(common::config_from(json!({
        "webhook": common::loopback_listeners(),
        "admin": common::loopback_listeners(),
        "accesslink": {"base_url": base, "client_id": "c", "client_secret": "s",
            "webhook_secret": common::SECRET},
        "users": [{"user_id": 5, "access_token": "token-of-five"}],
        "poller": {"enabled": true, "cron": "0 0 0 1 1 *", "mode": "list"},
        "store": {"path": dir.path()},
    })))
    .await;
    let r = app.cycle().await;
    assert_eq!((r.new_entities, r.errors), (1, 2), "{r:?}");
    // (The webhook watch lists `/v3/webhooks` at start; nothing else is asked.)
    let asked: Vec<String> = asked
        .lock()
        .unwrap()
        .iter()
        .filter(|p| *p != "/v3/webhooks")
        .cloned()
        .collect();
    assert_eq!(asked, ["/v3/exercises", "/v3/exercises/fine1"], "{asked:?}");
    let s = app.status().await;
    assert_eq!(s["entities"]["total"], 1, "{s}");
    app.stop().await;
}

/// The fetch backlog shows in `/status` and `/metrics` (before, only as the difference of two
/// counters): how many fetches wait, and how long the first has been due.
#[tokio::test]
async fn the_fetch_backlog_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 1).await;
    let user = app.first_user().await;
    let s = app.status().await;
    assert_eq!(s["webhook"]["fetch_backlog"]["jobs"], 0, "{s}");
    // Every fetch fails for now: the jobs wait, retrying.
    app.faults(json!({"fail_next": {"get_exercise": 1000}}))
        .await;
    app.inject(user, "EXERCISE").await;
    app.inject(user, "EXERCISE").await;
    let s = app
        .status_until("two fetches waiting", |s| {
            s["webhook"]["fetch_backlog"]["jobs"] == 2
        })
        .await;
    assert!(
        s["webhook"]["fetch_backlog"]["oldest_due_seconds"].is_number(),
        "{s}"
    );
    let metrics = app.admin_text("/metrics").await;
    assert!(
        metrics.contains("hookrace_fetch_backlog_jobs 2"),
        "{metrics}"
    );
    app.stop().await;
}

/// A fetch backlog cannot take the share of the rate limit kept for the others: with the
/// (lowered) short window's part for fetches used up, the fetches wait for the window while a
/// poll cycle (the auditor) still goes out. Before, the fetcher used the window up to its
/// reserve and the cycle's first request waited behind it, like any fetch, for the reset.
#[tokio::test]
async fn a_fetch_backlog_leaves_the_auditor_its_share_of_the_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), 1).await;
    let user = app.first_user().await;
    app.faults(json!({"rate_limit": [40, 100000], "short_window_s": 900}))
        .await;
    // More announced data than the fetches' part of the window (36 − 2 kept back = 34).
    for _ in 0..45 {
        app.inject(user, "EXERCISE").await;
    }
    let s = app
        .status_until("the fetches waiting for their share", |s| {
            s["accesslink"]["rate_limit"]["fetches_held_by"] == "short_share"
        })
        .await;
    assert!(
        s["webhook"]["fetch_backlog"]["jobs"].as_u64() > Some(0),
        "{s}"
    );
    assert_eq!(s["accesslink"]["rate_limit"]["waiting"], false, "{s}");
    // The cycle (45 items: more than the share) goes out: its first requests are answered
    // while the fetches wait.
    let poller = app.running.poller.clone().unwrap();
    let cycle = tokio::spawn(async move { poller.cycle().await });
    app.status_until("the cycle's first requests", |s| {
        requests(s, "notifications") >= 1 && requests(s, "list_transaction") >= 1
    })
    .await;
    app.stop().await;
    cycle.await.unwrap();
}

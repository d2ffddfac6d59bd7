//! The client side of AccessLink's contract, through hookrace's real client against the
//! simulator behaving as Polar does: an open transaction blocks new ones (so hookrace must
//! remember and finish it, across a restart too), strict servers want `Content-Length` on a
//! bodiless POST or PUT, links may name `polaraccesslink.com` without `www.`, and a start time
//! may carry a zone.

use crate::common;

use common::{App, ExternalSim, external_sim, spawn_with};
use hookrace::accesslink::client::{Client, Policy};
use hookrace::accesslink::webhooks;
use hookrace::config::Secret;
use serde_json::{Value, json};

/// The daemon against the external simulator `polar` at `base` (the simulator's own address
/// unless a test names another host for it), its user connected, the poller on a schedule that
/// never fires (the tests run its cycles), no webhook secret configured (a test that registers a
/// webhook saves the one AccessLink gives).
async fn daemon(polar: &ExternalSim, base: &str, dir: &std::path::Path) -> App {
    spawn_with(common::config_from(json!({
        "webhook": common::loopback_listeners(),
        "admin": common::loopback_listeners(),
        "accesslink": {
            "base_url": base,
            "client_id": "hookrace-sim",
            "client_secret": "hookrace-sim-secret",
        },
        "users": [{"user_id": polar.user, "access_token": polar.access_token}],
        "poller": {"enabled": true, "cron": "0 0 0 1 1 *", "mode": "transactions"},
        "store": {"path": dir},
    })))
    .await
}

async fn control(polar: &ExternalSim, method: reqwest::Method, path: &str, body: Value) -> Value {
    let res = hookrace::http::plain_client()
        .request(method, format!("{}{path}", polar.base_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.unwrap_or(Value::Null)
}

async fn inject(polar: &ExternalSim, kind: &str) -> Value {
    let body = json!({"user_id": polar.user, "type": kind});
    control(polar, reqwest::Method::POST, "/sim/inject", body).await
}

async fn faults(polar: &ExternalSim, patch: Value) {
    hookrace::sim::patch_faults(&hookrace::http::plain_client(), &polar.base_url, patch)
        .await
        .expect("the simulator takes the faults");
}

async fn requests(polar: &ExternalSim, endpoint: &str) -> u64 {
    let truth = control(polar, reqwest::Method::GET, "/sim/truth", json!({})).await;
    truth["requests"][endpoint].as_u64().unwrap_or(0)
}

/// Registers the daemon's receiver as the client's webhook through `client` (AccessLink PINGs
/// it first) and hands the daemon the secret AccessLink answered with.
async fn register_webhook(app: &App, client: &Client) {
    let created = webhooks::create(client, &app.webhook_url, &["EXERCISE".to_string()])
        .await
        .expect("the webhook is created (the receiver answered the PING)");
    let res = app
        .http
        .put(format!("{}/webhook/secret", app.admin_base))
        .body(created.secret.expose().to_string())
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success(),
        "saving the secret: {}",
        res.status()
    );
}

fn client(base: &str) -> Client {
    let secret = Secret::new("hookrace-sim-secret");
    Client::new(base, "hookrace-sim", Some(secret), Policy::default()).unwrap()
}

/// Polar answers 204 to a new create while a transaction is open, and the open one is reachable
/// only through its `resource-uri`. Before the fix hookrace never kept that URI: after a failed
/// item every later cycle saw "nothing new" (the second cycle here committed nothing) while the
/// notifications kept listing the data. Now the URI is kept durably and finished first, by the
/// next process too.
#[tokio::test]
async fn a_transaction_left_open_is_finished_first_even_by_the_next_process() {
    let polar = external_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(&polar, &polar.base_url, dir.path()).await;
    inject(&polar, "EXERCISE").await;
    inject(&polar, "EXERCISE").await;
    // More failures than the client retries: the second item cannot be read this cycle.
    faults(&polar, json!({"fail_next": {"get_item": 5}})).await;
    let poller = app.running.poller.clone().expect("the poller is on");
    let r = poller.cycle().await;
    assert_eq!((r.committed, r.errors), (0, 1), "{r:?}");
    assert_eq!(requests(&polar, "create_transaction").await, 1);
    let open = hookrace::channels::open_transactions::all(&app.running.store).unwrap();
    assert_eq!(open.len(), 1, "the created transaction is remembered");
    assert_eq!(open[0].kind.as_str(), "EXERCISE");
    drop(poller);
    app.stop().await;

    // The next process, same store: the open transaction is read and committed first; the
    // notifications are then empty and no new create is needed.
    let app = daemon(&polar, &polar.base_url, dir.path()).await;
    let poller = app.running.poller.clone().expect("the poller is on");
    let r = poller.cycle().await;
    assert_eq!((r.committed, r.errors, r.new_entities), (1, 0, 2), "{r:?}");
    assert_eq!(requests(&polar, "create_transaction").await, 1);
    assert_eq!(requests(&polar, "commit").await, 1);
    assert!(
        hookrace::channels::open_transactions::all(&app.running.store)
            .unwrap()
            .is_empty()
    );
    let s = app.status().await;
    assert_eq!(s["entities"]["total"], 2, "{s}");
    // Committed at the source: nothing is waiting any more.
    let waiting = hookrace::http::plain_client()
        .get(format!("{}/v3/notifications", polar.base_url))
        .basic_auth("hookrace-sim", Some("hookrace-sim-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(waiting.status(), 204);
    drop(poller);
    app.stop().await;
}

/// A transaction AccessLink has expired (or that was committed) is forgotten, not read for ever;
/// its data is offered again in a new transaction.
#[tokio::test]
async fn an_expired_open_transaction_is_forgotten_and_its_data_read_again() {
    let polar = external_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(&polar, &polar.base_url, dir.path()).await;
    inject(&polar, "EXERCISE").await;
    faults(&polar, json!({"fail_next": {"get_item": 5}})).await;
    let poller = app.running.poller.clone().expect("the poller is on");
    assert_eq!(poller.cycle().await.committed, 0);
    // Polar expires it: here after 1 s, which has passed once the sleep ends (the new
    // transaction is read and committed in milliseconds, well within its own second).
    faults(&polar, json!({"transaction_ttl_s": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = poller.cycle().await;
    assert_eq!((r.committed, r.errors, r.new_entities), (1, 0, 1), "{r:?}");
    assert_eq!(requests(&polar, "create_transaction").await, 2);
    assert!(
        hookrace::channels::open_transactions::all(&app.running.store)
            .unwrap()
            .is_empty()
    );
    drop(poller);
    app.stop().await;
}

/// Strict servers and front ends answer 411 to a POST or PUT without `Content-Length`. Before
/// the fix, activate, deactivate, the transaction create and the commit went out with neither a
/// body nor the header (and failed here).
#[tokio::test]
async fn bodiless_posts_and_puts_carry_content_length_zero() {
    let polar = external_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let app = daemon(&polar, &polar.base_url, dir.path()).await;
    faults(&polar, json!({"require_content_length": true})).await;
    let client = client(&polar.base_url);
    register_webhook(&app, &client).await;
    assert!(
        webhooks::set_active(&client, false)
            .await
            .expect("deactivate")
    );
    assert!(webhooks::set_active(&client, true).await.expect("activate"));
    // The strict answer is real: a bare POST is refused.
    let bare = hookrace::http::plain_client()
        .post(format!("{}/v3/webhooks/deactivate", polar.base_url))
        .basic_auth("hookrace-sim", Some("hookrace-sim-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 411);
    faults(
        &polar,
        json!({"drop_rate": 1.0, "require_content_length": true}),
    )
    .await;
    inject(&polar, "EXERCISE").await;
    let poller = app.running.poller.clone().expect("the poller is on");
    let r = poller.cycle().await;
    assert_eq!((r.committed, r.errors), (1, 0), "create and commit: {r:?}");
    drop(poller);
    app.stop().await;
}

/// Links on `polaraccesslink.com` without `www.` (the spec's own example) are AccessLink's,
/// and a start time with a zone names the same exercise as one without. Here the client knows
/// AccessLink as `localhost` and the simulator writes `www.localhost` into every link (payload,
/// notification, transaction and item urls) and `Z` after every start time. Before the fix the
/// payload url was refused as foreign (nothing fetched) and the zoned start time left the two
/// channels' records unlinked (two entities for one exercise).
#[tokio::test]
async fn links_without_the_configured_www_and_zoned_start_times_still_meet() {
    let polar = external_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let port = reqwest::Url::parse(&polar.base_url)
        .unwrap()
        .port()
        .unwrap();
    let base = format!("http://localhost:{port}");
    let app = daemon(&polar, &base, dir.path()).await;
    faults(
        &polar,
        json!({"links_host": "www.localhost", "start_time_zone": "Z", "delay_ms": [0, 0]}),
    )
    .await;
    register_webhook(&app, &client(&base)).await;
    let made = inject(&polar, "EXERCISE").await;
    let s = app
        .status_until("the webhook's fetch", |s| {
            s["webhook"]["fetches"]["ok"] == 1 || s["webhook"]["fetches"]["failed"] == 1
        })
        .await;
    assert_eq!(s["webhook"]["fetches"]["ok"], 1, "{s}");
    let poller = app.running.poller.clone().expect("the poller is on");
    let r = poller.cycle().await;
    assert_eq!((r.items, r.committed, r.errors), (1, 1, 0), "{r:?}");
    let s = app.status().await;
    assert_eq!(s["entities"]["total"], 1, "one exercise: {s}");
    assert_eq!(s["entities"]["seen_by_both"], 1, "{s}");
    let list = app.entities("").await;
    assert_eq!(list[0]["entity_id"], made["entity_id"], "{list}");
    drop(poller);
    app.stop().await;
}

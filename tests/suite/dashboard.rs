//! The live dashboard: the SSE stream's format, and the page in a real (headless) browser.

use crate::common;

use std::time::Duration;

use common::{sim_config, spawn_with};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Reads the event stream until `n` events arrived; returns (event name, data) pairs. `snapshot`
/// is told once the first snapshot (retry, status, entities) has arrived.
async fn read_events(
    url: &str,
    n: usize,
    mut snapshot: Option<tokio::sync::oneshot::Sender<()>>,
) -> (String, Vec<(String, String)>) {
    let res = reqwest::get(url).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.bytes_stream();
    let mut text = String::new();
    let read = async {
        while text.matches("\n\n").count() < n {
            let chunk = body.next().await.expect("the stream stays open").unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.matches("\n\n").count() >= 3 {
                if let Some(tx) = snapshot.take() {
                    let _ = tx.send(());
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("events within 15 s");
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        events.push((name, data));
    }
    (text, events)
}

#[tokio::test]
async fn the_event_stream_pushes_status_and_entities_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(sim_config(dir.path(), 1, "transactions")).await;
    let user = app.first_user().await;
    app.inject(user, "EXERCISE").await;
    app.status_until("the fetch", |s| s["webhook"]["fetches"]["ok"] == 1)
        .await;
    let (raw, events) = read_events(&format!("{}/events", app.admin_base), 3, None).await;
    assert!(
        raw.starts_with("retry:2000\n\n") || raw.starts_with("retry: 2000\n\n"),
        "{raw}"
    );
    let status: Value =
        serde_json::from_str(&events.iter().find(|e| e.0 == "status").unwrap().1).unwrap();
    assert_eq!(status["entities"]["total"], 1);
    assert_eq!(status["service"], "hookrace");
    let entities: Value =
        serde_json::from_str(&events.iter().find(|e| e.0 == "entities").unwrap().1).unwrap();
    assert_eq!(entities[0]["type"], "EXERCISE");
    assert_eq!(entities[0]["first_channel"], "webhook");

    // A change is pushed without being asked for.
    let url = format!("{}/events", app.admin_base);
    let (connected, snapshot) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move { read_events(&url, 5, Some(connected)).await });
    // Only once the reader has its first snapshot is the next change news to it.
    snapshot.await.expect("the reader got its first snapshot");
    app.inject(user, "EXERCISE").await;
    let (_, events) = reader.await.unwrap();
    let last_status = events.iter().rev().find(|e| e.0 == "status").unwrap();
    let s: Value = serde_json::from_str(&last_status.1).unwrap();
    assert!(s["webhook"]["accepted"].as_u64().unwrap() >= 1);
    app.stop().await;
}

#[tokio::test]
async fn the_page_and_events_respect_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path());
    cfg.admin.token = Some(hookrace::config::Secret::new("dashboard-token-0123"));
    let app = spawn_with(cfg).await;
    for path in ["/", "/events"] {
        let res = reqwest::get(format!("{}{path}", app.admin_base))
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path}");
    }
    // Opened with ?token=, the page moves the token into a cookie and sends the browser back
    // without it (out of the address bar and the history); the cookie then opens the page and
    // its event stream.
    let http = hookrace::http::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = http
        .get(format!(
            "{}/?token=dashboard-token-0123&snapshot=1",
            app.admin_base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "./?snapshot=1");
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    // The cookie holds a session value, not the token (before, it was the token itself).
    assert!(
        cookie.starts_with("hookrace_session=")
            && !cookie.contains("dashboard-token-0123")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && !cookie.contains("Secure"),
        "{cookie}"
    );
    let jar = cookie.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("{}/?snapshot=1", app.admin_base))
        .header("Cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    // Every admin answer carries the security headers.
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
    ] {
        assert_eq!(page.headers()[name], value, "{name}");
    }
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(page.text().await.unwrap().contains("<title>hookrace"));
    let stream = http
        .get(format!("{}/events", app.admin_base))
        .header("Cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200, "the cookie opens the stream");
    drop(stream);
    // `?token=` serves only the dashboard's first redirect: anywhere else it lets nothing in
    // (before, `/status?token=…` and `/events?token=…` answered).
    for path in ["/status", "/events", "/metrics"] {
        let res = http
            .get(format!(
                "{}{path}?token=dashboard-token-0123",
                app.admin_base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path}");
    }
    // A forged or stale session value lets nothing in.
    let res = http
        .get(format!("{}/status", app.admin_base))
        .header("Cookie", format!("hookrace_session={}", "ab".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Behind an HTTPS proxy the cookie is Secure.
    let res = http
        .get(format!("{}/?token=dashboard-token-0123", app.admin_base))
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .unwrap();
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_race_in_a_real_browser() {
    let Some(browser) = common::browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(sim_config(dir.path(), 2, "transactions")).await;
    let users = app
        .sim_control(reqwest::Method::GET, "/sim/users", json!({}))
        .await;
    let (u1, u2) = (
        users[0]["user_id"].as_u64().unwrap(),
        users[1]["user_id"].as_u64().unwrap(),
    );
    app.inject(u1, "EXERCISE").await;
    app.inject(u2, "EXERCISE").await;
    app.faults(json!({"drop_rate": 1.0})).await;
    app.inject(u1, "ACTIVITY_SUMMARY").await;
    app.status_until("two fetches", |s| s["webhook"]["fetches"]["ok"] == 2)
        .await;
    app.cycle().await;
    let status = app.status().await;
    assert_eq!(status["entities"]["total"], 3);

    // Snapshot mode closes the stream after the first update, so the headless page settles.
    let url = format!("{}/?snapshot=1", app.admin_base);
    let dom = common::dump_dom(&browser, &url).await;
    let grab = |id: &str| -> String {
        let start = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("#{id} in the page:\n{dom}"));
        let rest = &dom[start..];
        let open = rest.find('>').unwrap() + 1;
        rest[open..open + rest[open..].find('<').unwrap()].to_string()
    };
    assert!(
        dom.contains(">snapshot<"),
        "the event stream delivered:\n{dom}"
    );
    assert_eq!(grab("total"), status["entities"]["total"].to_string());
    assert_eq!(
        grab("first-wh"),
        status["entities"]["first_by_webhook"].to_string()
    );
    assert_eq!(
        grab("first-po"),
        status["entities"]["first_by_poll"].to_string()
    );
    assert_eq!(grab("req-po"), status["poll"]["requests"].to_string());
    let dots_at = dom.find("data-dots=\"").expect("the timeline") + "data-dots=\"".len();
    let dots: usize = dom[dots_at..dots_at + dom[dots_at..].find('"').unwrap()]
        .parse()
        .unwrap();
    // Two exercises seen by both channels, the activity by the poll only: five sightings.
    assert_eq!(dots, 5, "dots on the timeline");

    // A screenshot, kept as a test artifact.
    common::screenshot(&browser, &url, "dashboard.png").await;
    app.stop().await;
}

/// Open dashboards must not tax ingest. Before the fix each stream rebuilt the whole status and
/// 300 entities on every change (60 streams that never read took the daemon from 3% to 26% CPU);
/// now one snapshot per change is shared by every stream, and at most 16 streams are open (the
/// admin listener keeps room for `/healthz`): the 17th is told to come back.
#[tokio::test]
async fn streams_share_one_snapshot_per_change_and_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(sim_config(dir.path(), 1, "transactions")).await;
    let user = app.first_user().await;
    let url = format!("{}/events", app.admin_base);
    // Sixteen streams that never read past their headers.
    let mut streams = Vec::new();
    for _ in 0..16 {
        let res = reqwest::get(&url).await.unwrap();
        assert_eq!(res.status(), 200);
        streams.push(res);
    }
    let over = reqwest::get(&url).await.unwrap();
    assert_eq!(over.status(), 503);
    assert_eq!(over.headers()["retry-after"], "5");
    // Refused, it gives its connection back (it does not hold a slot the probes need).
    assert_eq!(over.headers()["connection"], "close");
    let metric = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in {text}")) as u64
    };
    let before = app.admin_text("/metrics").await;
    assert_eq!(metric(&before, "hookrace_dashboard_streams "), 16);
    let built_before = metric(&before, "hookrace_dashboard_snapshots_total ");
    for _ in 0..5 {
        app.inject(user, "EXERCISE").await;
    }
    app.status_until("five fetches", |s| s["webhook"]["fetches"]["ok"] == 5)
        .await;
    // Per change (debounced) or heartbeat, one snapshot, not sixteen (the old code built one
    // per stream per change).
    let built = common::eventually("a shared snapshot of the changes", || async {
        let after = app.admin_text("/metrics").await;
        let built = metric(&after, "hookrace_dashboard_snapshots_total ") - built_before;
        (built >= 1).then_some(built)
    })
    .await;
    assert!(
        (1..=12).contains(&built),
        "{built} snapshots for 16 streams"
    );
    // Closing a stream frees its slot.
    drop(streams.pop());
    common::eventually("a freed stream slot", || async {
        let res = reqwest::get(&url).await.unwrap();
        (res.status() == 200).then_some(())
    })
    .await;
    drop(streams);
    app.stop().await;
}

/// A base64 admin token pasted into the address bar as it is (`+` unescaped) still opens the
/// dashboard: a `+` arrives as a space, and a token has none (before, it was refused).
#[tokio::test]
async fn a_base64_token_with_a_plus_opens_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path());
    cfg.admin.token = Some(hookrace::config::Secret::new("q1w2+e3r4/t5y6u7i8o9=="));
    let app = spawn_with(cfg).await;
    let jar = common::dashboard_session(&app.admin_base, "q1w2+e3r4/t5y6u7i8o9==").await;
    let status = app
        .http
        .get(format!("{}/status", app.admin_base))
        .header("Cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200, "{jar}");
    app.stop().await;
}

/// When hookrace stops (a demo's race is over), an open dashboard gets the final state and an
/// `end` event, so the page says so instead of freezing on an older state under
/// "reconnecting…" (before, the stream just ended).
#[tokio::test]
async fn a_stop_sends_the_final_state_and_an_end_event() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(sim_config(dir.path(), 1, "transactions")).await;
    let url = format!("{}/events", app.admin_base);
    let (connected, snapshot) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let res = reqwest::get(&url).await.unwrap();
        let mut body = res.bytes_stream();
        let mut text = String::new();
        let mut connected = Some(connected);
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.matches("\n\n").count() >= 3 {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(());
                }
            }
        }
        text
    });
    snapshot.await.expect("the first snapshot");
    app.stop().await;
    let text = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream ends with the stop")
        .unwrap();
    let end = text.find("event:end").or_else(|| text.find("event: end"));
    let last_status = text
        .rfind("event:status")
        .or_else(|| text.rfind("event: status"));
    assert!(end.is_some(), "{text}");
    assert!(
        last_status.unwrap() > text.find("status").unwrap(),
        "a final status: {text}"
    );
    assert!(end > last_status, "{text}");
}

/// Attack: every connection the admin listener allows (64) held by clients that never finish
/// their request. The probes must still answer at once (an outside monitor would otherwise see
/// a well daemon as down); before, `/livez` and `/healthz` waited the 10 s header timeout for a
/// slot. Anything else on the reserved slots is told the listener is full.
#[tokio::test]
async fn the_probes_answer_while_every_admin_slot_is_held() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(common::test_config(dir.path())).await;
    let addr = app.admin_base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..hookrace::apps::daemon::ADMIN_MAX_CONNECTIONS {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(c);
    }
    // The held connections are accepted before the probes' (the listener takes them in order).
    let http = hookrace::http::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for path in ["/livez", "/healthz", "/readyz"] {
        let res = http
            .get(format!("{}{path}", app.admin_base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} while every slot is held: {e}"));
        assert_ne!(res.status(), 503, "{path}");
    }
    let res = http
        .get(format!("{}/status", app.admin_base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "a reserved slot serves only the probes");
    assert_eq!(res.headers()["connection"], "close");
    drop(held);
    common::eventually("the slots free again", || async {
        let res = http
            .get(format!("{}/status", app.admin_base))
            .send()
            .await
            .ok()?;
        (res.status() == 200).then_some(())
    })
    .await;
    app.stop().await;
}

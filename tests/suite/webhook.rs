//! The delivery route through HTTP: Polar's contract, duplicates, every refusal, restart, drain.

use crate::common;

use common::{EXAMPLE, SECRET, exercise, spawn_app};
use hookrace::accesslink::signature;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn polars_example_delivery_is_stored_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    // The documented signature of the documented body.
    let res = app
        .post(
            EXAMPLE,
            Some("443ec69698c1de6d326902d7d942be1e83f0395f685b8c040cee609660d006d6"),
        )
        .await;
    assert_eq!(res.status(), 200);
    let s = app.status().await;
    assert_eq!(s["webhook"]["deliveries"], 1);
    assert_eq!(s["webhook"]["accepted"], 1);
    assert_eq!(s["entities"]["total"], 1);
    assert_eq!(s["entities"]["by_type"]["EXERCISE"], 1);
    assert_eq!(s["entities"]["webhook_only"], 1);
    assert!(s["webhook"]["last_delivery_at"].is_string());
    let list = app.entities("").await;
    assert_eq!(list[0]["key"], "EXERCISE/475/aQlC83");
    assert_eq!(list[0]["type"], "EXERCISE");
    assert_eq!(list[0]["user_id"], 475);
    assert_eq!(list[0]["entity_id"], "aQlC83");
    assert_eq!(list[0]["first_channel"], "webhook");
    // Until the data is fetched, the webhook's timestamp stands in for availability.
    assert_eq!(list[0]["available_at"], "2018-05-15T14:22:24Z");
    assert!(list[0]["poll_at"].is_null());
    app.stop().await;
}

#[tokio::test]
async fn a_duplicate_is_answered_200_counted_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let body = exercise(7, "dup1");
    assert_eq!(app.deliver(&body).await.status(), 200);
    assert_eq!(app.deliver(&body).await.status(), 200);
    // Same entity, a later notification time: still the same entity.
    let again = body.replace("10:00:00Z", "10:05:00Z");
    assert_eq!(app.deliver(&again).await.status(), 200);
    let s = app.status().await;
    assert_eq!(s["webhook"]["accepted"], 1);
    assert_eq!(s["webhook"]["duplicates"], 2);
    assert_eq!(s["entities"]["total"], 1);
    assert_eq!(app.entities("").await.as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_duplicates_store_one_entity() {
    let dir = tempfile::tempdir().unwrap();
    let app = std::sync::Arc::new(spawn_app(dir.path()).await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            // 10 distinct entities, each delivered 4 times at once.
            app.deliver(&exercise(9, &format!("c{}", i % 10)))
                .await
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let s = app.status().await;
    assert_eq!(s["webhook"]["accepted"], 10);
    assert_eq!(s["webhook"]["duplicates"], 30);
    assert_eq!(s["entities"]["total"], 10);
}

#[tokio::test]
async fn ping_is_answered_and_counted_but_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let ping = r#"{"timestamp":"2019-01-11T08:25:10.02Z","event":"PING"}"#;
    // Unsigned (as at webhook creation, before the secret is known) and signed.
    assert_eq!(app.post(ping, None).await.status(), 200);
    assert_eq!(app.deliver(ping).await.status(), 200);
    // A zone-less timestamp, as in a real Polar body: still a PING (it used to fail the
    // timestamp check, then the signature check, so Polar would refuse to create the webhook).
    let zoneless = r#"{"timestamp":"2025-01-31T12:01:45.963","event":"PING"}"#;
    assert_eq!(app.post(zoneless, None).await.status(), 200);
    let s = app.status().await;
    assert_eq!(s["webhook"]["pings"], 3);
    assert_eq!(s["webhook"]["accepted"], 0);
    assert_eq!(s["entities"]["total"], 0);
    app.stop().await;
}

#[tokio::test]
async fn signatures_wrong_missing_and_upper_case() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let body = exercise(11, "sig1");
    let wrong = signature::sign("not-the-secret", body.as_bytes());
    assert_eq!(app.post(&body, Some(&wrong)).await.status(), 401);
    assert_eq!(app.post(&body, None).await.status(), 401);
    assert_eq!(app.post(&body, Some("zz")).await.status(), 401);
    // A signature over other bytes (the body altered after signing).
    let other = signature::sign(SECRET, exercise(11, "sig2").as_bytes());
    assert_eq!(app.post(&body, Some(&other)).await.status(), 401);
    let s = app.status().await;
    assert_eq!(s["webhook"]["rejected"]["signature"], 4);
    assert_eq!(s["entities"]["total"], 0);
    let upper = signature::sign(SECRET, body.as_bytes()).to_uppercase();
    assert_eq!(app.post(&body, Some(&upper)).await.status(), 200);
    assert_eq!(app.status().await["entities"]["total"], 1);
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_gets_400_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    for body in [
        "{not json",
        r#"{"event":"EXERCISE","user_id":475,"timestamp":"2018-05-15T14:22:24Z","url":"https://x/v3/exercises/a"}"#,
        r#"{"event":"EXERCISE","user_id":-1,"entity_id":"a","timestamp":"2018-05-15T14:22:24Z","url":"https://x/v3/exercises/a"}"#,
    ] {
        let res = app.deliver(body).await;
        assert_eq!(res.status(), 400, "{body}");
        let text = res.text().await.unwrap();
        assert!(text.starts_with("malformed delivery: "), "{text}");
    }
    let s = app.status().await;
    assert_eq!(s["webhook"]["rejected"]["malformed"], 3);
    assert_eq!(s["entities"]["total"], 0);
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_body_gets_413_declared_or_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let big = format!(r#"{{"event":"EXERCISE","pad":"{}"}}"#, "x".repeat(70_000));
    assert_eq!(app.deliver(&big).await.status(), 413);
    // Chunked, without Content-Length: the limit still holds.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..20).map(|_| Ok("y".repeat(4096))).collect();
    let res = app
        .http
        .post(&app.webhook_url)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(app.status().await["webhook"]["rejected"]["too_large"], 2);
    app.stop().await;
}

#[tokio::test]
async fn other_methods_get_405_and_other_paths_404() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let res = app.http.get(&app.webhook_url).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(
        app.http
            .put(&app.webhook_url)
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    let res = app
        .http
        .post(format!("{}/status", app.public_base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        404,
        "the public listener serves no admin routes"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_event_with_a_valid_signature_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let body = r#"{"event":"NIGHTLY_RECHARGE","user_id":5,"date":"2026-11-27","timestamp":"2026-11-28T06:00:00Z","url":"https://www.polaraccesslink.com/v3/users/nightly-recharge/2026-11-27"}"#;
    assert_eq!(app.deliver(body).await.status(), 200);
    let list = app.entities("?type=NIGHTLY_RECHARGE").await;
    assert_eq!(list[0]["key"], "NIGHTLY_RECHARGE/5/2026-11-27");
    app.stop().await;
}

#[tokio::test]
async fn entities_are_newest_first_and_filtered_by_type() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    for id in ["e1", "e2", "e3"] {
        assert_eq!(app.deliver(&exercise(1, id)).await.status(), 200);
    }
    let sleep = r#"{"event":"SLEEP","user_id":1,"date":"2026-11-27","timestamp":"2026-11-28T06:00:00Z","url":"https://www.polaraccesslink.com/v3/users/sleep/2026-11-27"}"#;
    assert_eq!(app.deliver(sleep).await.status(), 200);
    let all = app.entities("?limit=2").await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["type"], "SLEEP");
    assert_eq!(all[1]["entity_id"], "e3");
    let ex = app.entities("?type=EXERCISE").await;
    let ids: Vec<_> = ex
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entity_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["e3", "e2", "e1"]);
    let res = app
        .http
        .get(format!("{}/entities?limit=0", app.admin_base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn counters_and_entities_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let body = exercise(3, "keep");
    assert_eq!(app.deliver(&body).await.status(), 200);
    assert_eq!(app.deliver(&body).await.status(), 200);
    assert_eq!(app.post(&body, None).await.status(), 401);
    app.stop().await;

    let app = spawn_app(dir.path()).await;
    let s = app.status().await;
    assert_eq!(s["webhook"]["deliveries"], 3);
    assert_eq!(s["webhook"]["accepted"], 1);
    assert_eq!(s["webhook"]["duplicates"], 1);
    assert_eq!(s["webhook"]["rejected"]["signature"], 1);
    assert_eq!(s["entities"]["total"], 1);
    // And a duplicate after the restart is still a duplicate.
    assert_eq!(app.deliver(&body).await.status(), 200);
    assert_eq!(app.status().await["webhook"]["duplicates"], 2);
    app.stop().await;
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let body = exercise(21, "inflight");
    let sig = signature::sign(SECRET, body.as_bytes());
    let addr = app.webhook_url.trim_start_matches("http://");
    let (host, path) = addr.split_once('/').unwrap();
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nPolar-Webhook-Event: EXERCISE\r\nPolar-Webhook-Signature: {sig}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (first, rest) = body.split_at(20);
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(first.as_bytes()).await.unwrap();
    // Wait until the handler is running (it counts the delivery before reading the body).
    loop {
        if app.status().await["webhook"]["deliveries"] == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    app.shutdown.cancel();
    // New connections are refused once shutdown has begun...
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // ...but the one in flight completes.
    conn.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        answer.extend_from_slice(&buf[..n]);
        if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(conn);
    app.running.wait().await.unwrap();

    let store = common::reopen_store(dir.path());
    assert!(
        store
            .entity(&hookrace::accesslink::identity::EntityKey::stored(
                "EXERCISE/21/inflight"
            ))
            .unwrap()
            .is_some()
    );
}

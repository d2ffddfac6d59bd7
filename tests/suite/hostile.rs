//! Hostile and malformed requests: each gets the right 4xx (or a 200 that stores nothing new),
//! and the daemon serves normally afterwards.

use crate::common;

use std::time::Duration;

use common::{SECRET, exercise, spawn_app, spawn_with, test_config};
use hookrace::accesslink::signature::sign;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes, returns the status code of the answer (0 if the connection closed first).
async fn raw(host: &str, bytes: &[u8]) -> u16 {
    let mut conn = TcpStream::connect(host).await.unwrap();
    // The server may answer (and close) before it has read everything: ignore write errors.
    let _ = conn.write_all(bytes).await;
    read_status(&mut conn).await
}

async fn read_status(conn: &mut TcpStream) -> u16 {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("an answer within 20 s");
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A POST to `path` with the given body, signature and extra header lines.
fn post(host: &str, path: &str, body: &[u8], sig: Option<&str>, extra: &str) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nPolar-Webhook-Event: EXERCISE\r\nContent-Length: {}\r\n{extra}",
        body.len()
    );
    if !extra.to_ascii_lowercase().contains("content-type") {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(s) = sig {
        head.push_str(&format!("Polar-Webhook-Signature: {s}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn signed(host: &str, body: &[u8]) -> Vec<u8> {
    post(host, "/acl_webhook", body, Some(&sign(SECRET, body)), "")
}

fn fields(extra: &str) -> String {
    format!(
        r#"{{"event":"EXERCISE","user_id":475,"entity_id":"h1","timestamp":"2026-11-28T10:00:00Z","url":"https://www.polaraccesslink.com/v3/exercises/h1"{extra}}}"#
    )
}

#[tokio::test]
async fn forty_hostile_requests_are_refused_and_the_daemon_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.webhook.body_timeout = Duration::from_millis(300);
    let app = spawn_with(cfg).await;
    let host = app.public_base.trim_start_matches("http://").to_string();
    let h = host.as_str();
    let good = exercise(475, "h1");
    let good_sig = sign(SECRET, good.as_bytes());
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_obj = format!(r#"{{"event":"EXERCISE","x":{deep}}}"#);
    let big_fields = fields(&format!(r#","pad":"{}""#, "x".repeat(70_000)));
    let huge_header = format!("X-Pad: {}\r\n", "a".repeat(600_000));

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("no signature", post(h, "/acl_webhook", good.as_bytes(), None, ""), 401),
        ("empty signature", post(h, "/acl_webhook", good.as_bytes(), Some(""), ""), 401),
        ("63 hex digits", post(h, "/acl_webhook", good.as_bytes(), Some(&good_sig[..63]), ""), 401),
        ("65 hex digits", post(h, "/acl_webhook", good.as_bytes(), Some(&format!("{good_sig}0")), ""), 401),
        ("non-hex signature", post(h, "/acl_webhook", good.as_bytes(), Some(&"zz".repeat(32)), ""), 401),
        ("sha256= prefix", post(h, "/acl_webhook", good.as_bytes(), Some(&format!("sha256={good_sig}")), ""), 401),
        ("signature of another body", post(h, "/acl_webhook", good.as_bytes(), Some(&sign(SECRET, b"{}")), ""), 401),
        ("signature with another key", post(h, "/acl_webhook", good.as_bytes(), Some(&sign("guess", good.as_bytes())), ""), 401),
        ("partial signature (first half)", post(h, "/acl_webhook", good.as_bytes(), Some(&good_sig[..32]), ""), 401),
        ("unsigned garbage", post(h, "/acl_webhook", b"\x00\x01\x02", None, ""), 401),
        ("invalid UTF-8, signed", signed(h, b"{\"event\":\"\xff\xfe\"}"), 400),
        ("deeply nested JSON, signed", signed(h, deep_obj.as_bytes()), 400),
        ("deeply nested JSON, unsigned", post(h, "/acl_webhook", deep_obj.as_bytes(), None, ""), 401),
        ("JSON array", signed(h, b"[1,2,3]"), 400),
        ("JSON string", signed(h, b"\"EXERCISE\""), 400),
        ("empty body", signed(h, b""), 400),
        ("user_id as string", signed(h, fields("").replace("475", "\"475\"").as_bytes()), 400),
        ("user_id negative", signed(h, fields("").replace("475", "-475").as_bytes()), 400),
        ("user_id float", signed(h, fields("").replace("475", "475.5").as_bytes()), 400),
        ("user_id overflowing u64", signed(h, fields("").replace("475", "18446744073709551616").as_bytes()), 400),
        ("user_id zero", signed(h, fields("").replace("475", "0").as_bytes()), 400),
        ("event missing", signed(h, fields("").replace(r#""event":"EXERCISE","#, "").as_bytes()), 400),
        ("event a number", signed(h, fields("").replace(r#""EXERCISE""#, "7").as_bytes()), 400),
        ("event lower case", signed(h, fields("").replace("EXERCISE", "exercise").as_bytes()), 400),
        ("event too long", signed(h, fields("").replace("EXERCISE", &"E".repeat(100)).as_bytes()), 400),
        ("timestamp missing", signed(h, fields("").replace(r#""timestamp":"2026-11-28T10:00:00Z","#, "").as_bytes()), 400),
        ("timestamp not a time", signed(h, fields("").replace("2026-11-28T10:00:00Z", "yesterday").as_bytes()), 400),
        ("url missing", signed(h, br#"{"event":"EXERCISE","user_id":475,"entity_id":"h1","timestamp":"2026-11-28T10:00:00Z"}"#), 400),
        ("url javascript:", signed(h, fields("").replace("https://www.polaraccesslink.com/v3/exercises/h1", "javascript:alert(1)").as_bytes()), 400),
        ("entity_id missing", signed(h, fields("").replace(r#""entity_id":"h1","#, "").as_bytes()), 400),
        ("entity_id with a slash", signed(h, fields("").replace(r#""h1""#, r#""../x""#).as_bytes()), 400),
        ("entity_id with a NUL", signed(h, fields("").replace(r#""h1""#, r#""h\u0000""#).as_bytes()), 400),
        ("entity_id a number", signed(h, fields("").replace(r#""h1""#, "1").as_bytes()), 400),
        ("SLEEP without date", signed(h, fields("").replace("EXERCISE", "SLEEP").replace(r#""entity_id":"h1","#, "").as_bytes()), 400),
        ("SLEEP with a bad date", signed(h, fields(r#","date":"2024-02-30""#).replace("EXERCISE", "SLEEP").as_bytes()), 400),
        ("duplicate keys", signed(h, fields(r#","event":"SLEEP""#).as_bytes()), 400),
        ("text/plain content type", post(h, "/acl_webhook", good.as_bytes(), Some(&good_sig), "Content-Type: text/plain\r\n"), 415),
        ("form content type", post(h, "/acl_webhook", good.as_bytes(), Some(&good_sig), "Content-Type: application/x-www-form-urlencoded\r\n"), 415),
        ("body over max_body", signed(h, big_fields.as_bytes()), 413),
        ("Content-Length over max_body", format!("POST /acl_webhook HTTP/1.1\r\nHost: {h}\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n").into_bytes(), 413),
        ("oversized header", post(h, "/acl_webhook", good.as_bytes(), Some(&good_sig), &huge_header), 431),
        // RFC 9112: chunked wins over Content-Length; the (empty, unsigned) body is refused.
        ("Content-Length and chunked (smuggling)", format!("POST /acl_webhook HTTP/1.1\r\nHost: {h}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n").into_bytes(), 401),
        ("GET on the path", format!("GET /acl_webhook HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n").into_bytes(), 405),
        ("DELETE on the path", format!("DELETE /acl_webhook HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n").into_bytes(), 405),
        ("a trailing slash", post(h, "/acl_webhook/", good.as_bytes(), Some(&good_sig), ""), 404),
        ("path traversal", post(h, "/acl_webhook/../status", good.as_bytes(), Some(&good_sig), ""), 404),
        ("not HTTP at all", b"HELLO\r\n\r\n".to_vec(), 400),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for (name, bytes, expected) in &cases {
        let got = raw(h, bytes).await;
        assert_eq!(got, *expected, "{name}");
    }
    let s = app.status().await;
    assert_eq!(s["entities"]["total"], 0, "nothing hostile was stored");
    assert_eq!(s["webhook"]["accepted"], 0);

    // A slow body: 408 after body_timeout.
    let mut conn = TcpStream::connect(h).await.unwrap();
    let body = good.as_bytes();
    let head = post(h, "/acl_webhook", body, Some(&good_sig), "");
    let cut = head.len() - body.len() + 10;
    conn.write_all(&head[..cut]).await.unwrap();
    assert_eq!(read_status(&mut conn).await, 408, "slow body");
    // A truncated body: the client goes away; nothing is stored.
    let mut conn = TcpStream::connect(h).await.unwrap();
    conn.write_all(&head[..cut]).await.unwrap();
    drop(conn);

    // Replays of a valid delivery: one entity, the rest answered 200 as duplicates.
    for _ in 0..50 {
        assert_eq!(raw(h, &signed(h, good.as_bytes())).await, 200);
    }
    // A PING flood: answered, counted, never stored.
    let ping = br#"{"timestamp":"2026-11-28T10:00:00Z","event":"PING"}"#;
    let mut flood = Vec::new();
    for _ in 0..500 {
        let app_url = app.webhook_url.clone();
        let http = app.http.clone();
        flood.push(tokio::spawn(async move {
            http.post(app_url)
                .header("Content-Type", "application/json")
                .body(&ping[..])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for f in flood {
        assert_eq!(f.await.unwrap(), 200);
    }
    let s = app.status().await;
    assert_eq!(s["entities"]["total"], 1);
    assert_eq!(s["webhook"]["accepted"], 1);
    assert_eq!(s["webhook"]["duplicates"], 49);
    assert_eq!(s["webhook"]["pings"], 500);

    // And it still serves normally.
    assert_eq!(app.deliver(&exercise(475, "after")).await.status(), 200);
    let health = app
        .http
        .get(format!("{}/healthz", app.admin_base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(app.status().await["entities"]["total"], 2);
    app.stop().await;
}

/// Attack: an empty webhook key (`webhook_secret = ""` or `HOOKRACE_WEBHOOK_SECRET=`) would let anyone
/// sign deliveries with the empty key. The configuration is refused, and a blank key that reached
/// the store anyway verifies nothing (503, nothing stored).
#[tokio::test]
async fn an_empty_webhook_secret_is_refused_and_never_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let text = |secret: Option<&str>| {
        let mut accesslink = json!({"client_id": "c", "client_secret": "s"});
        if let Some(s) = secret {
            accesslink["webhook_secret"] = json!(s);
        }
        common::toml_text(json!({
            "accesslink": accesslink,
            "poller": {"enabled": false},
            "store": {"path": dir.path()},
        }))
    };
    for (file, env) in [(Some(""), None), (Some("   "), None), (None, Some(""))] {
        let env = move |name: &str| {
            (name == "HOOKRACE_WEBHOOK_SECRET")
                .then(|| env.map(String::from))
                .flatten()
        };
        let err = hookrace::config::parse(&text(file), "test", &env)
            .expect_err("an empty webhook secret is refused");
        assert!(
            err.to_string().contains("webhook_secret"),
            "the problem names the key: {err}"
        );
    }
    let no_client_secret = common::toml_text(json!({
        "accesslink": {"client_id": "c", "client_secret": "", "webhook_secret": "x"},
        "poller": {"enabled": false},
        "store": {"path": dir.path()},
    }));
    let err = hookrace::config::parse(&no_client_secret, "test", &|_| None)
        .expect_err("an empty client secret is refused");
    assert!(err.to_string().contains("client_secret"), "{err}");

    // A blank key in the store (as an older version could save) is no key.
    let mut cfg = test_config(dir.path());
    cfg.accesslink.webhook_secret = None;
    let app = spawn_with(cfg).await;
    hookrace::credentials::set_webhook_secret(
        &app.running.store,
        &hookrace::config::Secret::new(""),
    )
    .await
    .unwrap();
    let body = exercise(7, "empty-key");
    let res = app.post(&body, Some(&sign("", body.as_bytes()))).await;
    assert_eq!(res.status(), 503, "a delivery signed with the empty key");
    assert!(
        app.running
            .store
            .entity(&hookrace::accesslink::identity::EntityKey::stored(
                "EXERCISE/7/empty-key"
            ))
            .unwrap()
            .is_none()
    );
    app.stop().await;
}

/// A secret saved with `PUT /webhook/secret` while the configuration holds one would be shadowed
/// for good: the daemon answers 409 and says where the secret lives, instead of 204.
#[tokio::test]
async fn saving_a_secret_the_configuration_shadows_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(dir.path())).await;
    let res = app
        .http
        .put(format!("{}/webhook/secret", app.admin_base))
        .body("a-new-secret-from-webhook-create")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let text = res.text().await.unwrap();
    assert!(text.contains("HOOKRACE_WEBHOOK_SECRET"), "{text}");
    assert!(
        hookrace::credentials::webhook_secret(&app.running.store).is_none(),
        "nothing saved"
    );
    app.stop().await;
}

/// An operator who asks a management route with the wrong method is told the right one, and an
/// unknown route lists every route the admin listener serves.
#[tokio::test]
async fn the_admin_listener_names_the_right_method_and_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(dir.path())).await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.admin_base)).send();
    let res = get("/webhook/secret").await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "PUT");
    let text = res.text().await.unwrap();
    assert!(text.contains("use PUT /webhook/secret"), "{text}");
    let res = get("/notify/retry").await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    let res = get("/users/7").await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "DELETE");
    let res = get("/no-such-route").await.unwrap();
    assert_eq!(res.status(), 404);
    let text = res.text().await.unwrap();
    for route in [
        "/events",
        "/users",
        "/entities",
        "/metrics",
        "/notify/retry",
    ] {
        assert!(text.contains(route), "{route} missing from {text}");
    }
    app.stop().await;
}

/// Attack: the admin listener reached by other means than its own address. Beyond loopback it
/// needs a token (refused at configuration); on loopback, a request naming another host (a web
/// page that rebound its DNS name to 127.0.0.1) is refused, and so is a change asked by a page of
/// another origin, while the operator's own requests work.
#[tokio::test]
async fn the_admin_listener_answers_only_to_its_own_address_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::toml_text(json!({
        "admin": {"listen": "0.0.0.0:9999"},
        "accesslink": {"client_id": "c", "client_secret": "s"},
        "store": {"path": dir.path()},
    }));
    let err =
        hookrace::config::parse(&text, "test", &|_| None).expect_err("open admin without token");
    assert!(err.to_string().contains("admin.token"), "{err}");

    let app = spawn_with(test_config(dir.path())).await;
    let port = app.admin_base.rsplit(':').next().unwrap().to_string();
    let status = |host: String, method: reqwest::Method, path: &str, origin: Option<&str>| {
        let mut req = app
            .http
            .request(method, format!("{}{path}", app.admin_base))
            .header("Host", host);
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let own = format!("127.0.0.1:{port}");
    assert_eq!(
        status(own.clone(), reqwest::Method::GET, "/status", None).await,
        200
    );
    assert_eq!(
        status(
            format!("localhost:{port}"),
            reqwest::Method::GET,
            "/healthz",
            None
        )
        .await,
        200
    );
    assert_eq!(
        status(
            format!("evil.example:{port}"),
            reqwest::Method::GET,
            "/users",
            None
        )
        .await,
        403,
        "DNS rebinding"
    );
    assert_eq!(
        status(
            own.clone(),
            reqwest::Method::DELETE,
            "/users/1",
            Some("http://evil.example")
        )
        .await,
        403,
        "a change from another origin"
    );
    // The operator's own change (no Origin, as the CLI sends) reaches the route.
    assert_eq!(
        status(own, reqwest::Method::DELETE, "/users/1", None).await,
        404,
        "no such user"
    );
    app.stop().await;
}

/// Attack: a flood of badly signed deliveries must not flood the log, and nothing an unverified
/// body says (its `user_id` here) may appear in it. The real binary's log is read; the counters
/// stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_is_counted_exactly_but_logged_sparingly() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let config = common::binary::write_config(dir.path());
    let common::binary::Started {
        mut child,
        webhook_url: url,
        log: lines,
    } = common::binary::start(common::binary::hookrace(), &config);
    const FLOOD: usize = 400;
    let http = hookrace::http::plain_client();
    let started = std::time::Instant::now();
    for i in 0..FLOOD {
        let body = exercise(424242, &format!("flood{i}"));
        let res = common::binary::post_signed(&http, &url, "not-the-secret", body)
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    // A flood of s seconds touches at most s + 2 distinct wall-clock seconds (the limiter's windows).
    let seconds = started.elapsed().as_secs() + 2;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap()
            .success()
    );
    let lines = lines.join().unwrap();
    let refused = lines
        .iter()
        .filter(|l| l.contains("delivery refused"))
        .count();
    assert!(
        refused as u64 <= seconds * u64::from(hookrace::channels::webhook::REFUSALS_LOGGED_PER_S),
        "{refused} refusal lines for {FLOOD} refusals in {seconds} s"
    );
    assert!(
        !lines.iter().any(|l| l.contains("424242")),
        "a line repeats what an unverified body says"
    );
    let store = common::reopen_store(&dir.path().join("store"));
    assert_eq!(
        store.counter(hookrace::counter::Counter::WebhookRejectedSignature),
        FLOOD as u64,
        "every refusal counted"
    );
}

/// Attack: `GET /oauth/connect` needs no authentication, and each request used to store and flush
/// a state that was never pruned (155,863 requests grew a store by 32 MB). Now states live in
/// memory, bounded, and the route answers 429 beyond its rate: the store does not grow.
#[tokio::test]
async fn hammering_oauth_connect_neither_fills_the_disk_nor_memory() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(dir.path())).await;
    app.running.store.flush().unwrap();
    let size = |p: &std::path::Path| std::fs::metadata(p.join("db")).unwrap().len();
    let before = size(dir.path());
    let http = hookrace::http::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (mut found, mut limited) = (0, 0);
    for _ in 0..3000 {
        let res = http
            .get(format!("{}/oauth/connect", app.public_base))
            .send()
            .await
            .unwrap();
        match res.status().as_u16() {
            302 => found += 1,
            429 | 503 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        found >= 1 && limited >= 1,
        "{found} redirects, {limited} refused"
    );
    app.running.store.flush().unwrap();
    let grown = size(dir.path()) - before;
    assert!(grown < 64 * 1024, "the store grew by {grown} bytes");
    app.stop().await;
}

/// Attack: idle and half-sent connections. They are closed after the header timeout (here 3 s,
/// `webhook.body_timeout`), at most `webhook.max_connections` are open at once, and a full
/// listener is load, not death: `/status` and `/metrics` show it while `/healthz` and the
/// watchdog's health stay ok (before the fix the listener was marked dead, so systemd restarted
/// the service again and again while a flood lasted). Afterwards deliveries are served again.
#[tokio::test]
async fn idle_connections_are_closed_capped_and_reported_as_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.webhook.max_connections = 20;
    // Long enough that a loaded machine still sees the cap reached before the sockets time out.
    cfg.webhook.body_timeout = Duration::from_secs(3);
    let app = spawn_with(cfg).await;
    let host = app.public_base.trim_start_matches("http://").to_string();
    // 25 connections: 20 open idle (one sends half a request head), 5 wait in the backlog.
    let mut idle = Vec::new();
    for i in 0..25 {
        let mut conn = TcpStream::connect(&host).await.unwrap();
        if i == 0 {
            conn.write_all(b"POST /acl_webhook HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        idle.push(conn);
    }
    let s = app
        .status_until("the full listener in /status", |s| {
            s["listeners"][0]["full_since"].is_string()
        })
        .await;
    assert_eq!(s["listeners"][0]["name"], "webhook", "{s}");
    assert_eq!(s["listeners"][0]["open_connections"], 20, "{s}");
    assert_eq!(s["listeners"][0]["max_connections"], 20, "{s}");
    let healthz = app
        .http
        .get(format!("{}/healthz", app.admin_base))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200, "a full listener is load, not death");
    assert!(app.running.liveness.dead().is_empty());
    let metrics = app.admin_text("/metrics").await;
    assert!(
        metrics.contains("hookrace_listener_full{listener=\"webhook\"} 1"),
        "{metrics}"
    );
    // The server closes them (header timeout), the listener recovers.
    let mut first = idle.remove(0);
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match first.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue, // a 408 answer, then the close
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the half-sent connection was not closed");
    let s = app
        .status_until("the listener to recover", |s| {
            s["listeners"][0]["full_since"].is_null()
        })
        .await;
    assert!(
        s["listeners"][0]["times_full"].as_u64().unwrap() >= 1,
        "{s}"
    );
    assert_eq!(
        app.deliver(&exercise(3, "after-the-flood")).await.status(),
        200
    );
    drop(idle);
    app.stop().await;
}

/// Attack: more idle sockets than the admin listener takes (64). The watchdog's health (what
/// `/healthz` reports) stays ok the whole time: before the fix the full admin listener was marked
/// dead and the watchdog stopped being fed, even with an admin token set. Once the sockets go,
/// `/status` says the listener was full.
#[tokio::test]
async fn a_full_admin_listener_does_not_starve_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let host = app.admin_base.trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for _ in 0..70 {
        idle.push(TcpStream::connect(&host).await.unwrap());
    }
    common::eventually("the admin listener to fill", || async {
        let full = app
            .running
            .runtime
            .read()
            .unwrap()
            .listeners
            .iter()
            .any(|l| l.name == "admin" && l.full_since().is_some());
        full.then_some(())
    })
    .await;
    assert!(
        app.running.liveness.dead().is_empty(),
        "{:?}",
        app.running.liveness.dead()
    );
    drop(idle);
    let s = app
        .status_until("the admin listener to answer again", |_| true)
        .await;
    let admin = s["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "admin")
        .cloned()
        .unwrap();
    assert!(admin["times_full"].as_u64().unwrap() >= 1, "{s}");
    app.stop().await;
}

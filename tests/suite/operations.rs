//! Real AccessLink operation against the simulator: OAuth onboarding and its failure pages, the
//! webhook and users commands (with the daemon answering the PING), the admin token, and the
//! systemd notifications of the real binary.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, sim_config, spawn_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn browser() -> reqwest::Client {
    hookrace::http::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

/// These helpers carry the browser's cookie in a `#cookie=…` fragment of the URLs they pass on
/// (a fragment is never sent): [`follow`] turns it into the `Cookie` header.
const COOKIE_FRAGMENT: &str = "#cookie=";

/// Starts the browser flow: `/oauth/connect` → the simulator's authorize URL (not yet followed),
/// with the sign-in's cookie.
async fn start_connect(public_base: &str) -> String {
    let res = browser()
        .get(format!("{public_base}/oauth/connect"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let url = location(&res);
    assert!(url.contains("response_type=code"), "{url}");
    assert!(url.contains("state="), "{url}");
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap();
    format!("{url}{COOKIE_FRAGMENT}{cookie}")
}

/// The simulated person consents (or not): returns our callback URL as Polar redirects to it,
/// still carrying the browser's cookie.
async fn consent(authorize: &str, extra: &str) -> String {
    let (authorize, cookie) = authorize
        .split_once(COOKIE_FRAGMENT)
        .unwrap_or((authorize, ""));
    let res = browser()
        .get(format!("{authorize}{extra}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND, "{authorize}{extra}");
    format!("{}{COOKIE_FRAGMENT}{cookie}", location(&res))
}

/// GETs `url` as the browser would: with the cookie its fragment carries, if any.
async fn follow(url: &str) -> reqwest::Response {
    let mut req = match url.split_once(COOKIE_FRAGMENT) {
        Some((url, cookie)) => browser().get(url).header("Cookie", cookie),
        None => browser().get(url),
    };
    req = req.header("Accept", "text/html");
    req.send().await.unwrap()
}

#[tokio::test]
async fn onboarding_connects_registers_and_the_token_fetches_data() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(sim_config(dir.path(), 0, "transactions")).await;
    // A Polar user who has never used this client.
    let v = app
        .sim_control(Method::POST, "/sim/users", json!({"registered": false}))
        .await;
    let user = v["user_id"].as_u64().unwrap();
    let authorize = start_connect(&app.public_base).await;
    let callback = consent(&authorize, &format!("&user_id={user}")).await;
    assert!(
        callback.starts_with(&format!("{}/oauth/callback?code=", app.public_base)),
        "{callback}"
    );
    let res = follow(&callback).await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(
        page.contains(&format!("Polar user {user} is connected")),
        "{page}"
    );
    assert!(!page.contains("already registered"));
    // Registered at AccessLink, known here, token never shown.
    let users = app.sim_control(Method::GET, "/sim/users", json!({})).await;
    let sim_user = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == user)
        .unwrap();
    assert_eq!(sim_user["registered"], true);
    let s = app.status().await;
    assert_eq!(s["users"]["known"], 1);
    assert!(
        !s.to_string()
            .contains(sim_user["access_token"].as_str().unwrap())
    );
    // A delivery for that user is fetched with that token.
    app.inject(user, "EXERCISE").await;
    app.status_until("the fetch", |s| s["webhook"]["fetches"]["ok"] == 1)
        .await;
    // Replaying the same callback: the state was single use.
    let res = follow(&callback).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("not valid"));
    app.stop().await;
}

#[tokio::test]
async fn every_onboarding_failure_shows_a_page_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(sim_config(dir.path(), 0, "transactions")).await;
    let new_user = || async {
        app.sim_control(Method::POST, "/sim/users", json!({"registered": false}))
            .await["user_id"]
            .as_u64()
            .unwrap()
    };
    let get = |url: String| async move { follow(&url).await };

    // The user declines.
    let u = new_user().await;
    let cb = consent(
        &start_connect(&app.public_base).await,
        &format!("&user_id={u}&deny=1"),
    )
    .await;
    let res = get(cb).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("declined"));

    // A state nobody issued.
    let res = get(format!(
        "{}/oauth/callback?code=abc&state=forged",
        app.public_base
    ))
    .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("not valid"));

    // An expired code.
    app.faults(json!({"code_ttl_s": 0})).await;
    let cb = consent(
        &start_connect(&app.public_base).await,
        &format!("&user_id={u}"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the code's fixed deadline
    let res = get(cb).await;
    assert_eq!(res.status(), 502);
    assert!(res.text().await.unwrap().contains("refused"));
    app.faults(json!({"code_ttl_s": 600})).await;

    // A code used twice (invalid_grant): connect once, then present the code with a new state.
    let cb1 = consent(
        &start_connect(&app.public_base).await,
        &format!("&user_id={u}"),
    )
    .await;
    assert_eq!(get(cb1.clone()).await.status(), 200);
    assert_eq!(app.status().await["users"]["known"], 1);
    let code = reqwest::Url::parse(&cb1)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let authorize2 = start_connect(&app.public_base).await;
    let state2 = reqwest::Url::parse(&authorize2)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let cookie2 = authorize2
        .split_once(COOKIE_FRAGMENT)
        .unwrap()
        .1
        .to_string();
    let res = get(format!(
        "{}/oauth/callback?code={code}&state={state2}{COOKIE_FRAGMENT}{cookie2}",
        app.public_base
    ))
    .await;
    assert_eq!(res.status(), 502);
    assert!(res.text().await.unwrap().contains("refused"));

    // Consents not accepted: registration answers 403.
    let u2 = new_user().await;
    app.sim_control(
        Method::PUT,
        &format!("/sim/users/{u2}/consents"),
        json!({"granted": false}),
    )
    .await;
    let cb = consent(
        &start_connect(&app.public_base).await,
        &format!("&user_id={u2}"),
    )
    .await;
    let res = get(cb).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("consents"));

    // Registration answered 204 ("user not found"): not a registration, nothing stored.
    let u3 = new_user().await;
    app.sim_control(
        Method::PUT,
        &format!("/sim/users/{u3}/found"),
        json!({"found": false}),
    )
    .await;
    let cb = consent(
        &start_connect(&app.public_base).await,
        &format!("&user_id={u3}"),
    )
    .await;
    let res = get(cb).await;
    assert_eq!(res.status(), 502);
    assert!(res.text().await.unwrap().contains("did not find this user"));

    // Only the one successful connection was stored.
    let s = app.status().await;
    assert_eq!(s["users"]["known"], 1);
    app.stop().await;
}

#[tokio::test]
async fn the_admin_token_guards_every_admin_route() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path());
    cfg.admin.token = Some(hookrace::config::Secret::new("a-long-admin-token-123"));
    let app = spawn_with(cfg).await;
    for path in ["/healthz", "/status", "/metrics", "/entities", "/users"] {
        let url = format!("{}{path}", app.admin_base);
        let res = app.http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 401, "{path}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let res = app
            .http
            .get(&url)
            .bearer_auth("a-long-admin-token-12X")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path}");
        let res = app
            .http
            .get(&url)
            .bearer_auth("a-long-admin-token-123")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    // Attack: a page of another site posting with the operator's cookie (a browser sends it
    // along): refused, while the operator's own page (same origin) and the CLI (no Origin) pass.
    let retry = format!("{}/notify/retry", app.admin_base);
    let own = app.admin_base.clone();
    let cookie = common::dashboard_session(&own, "a-long-admin-token-123").await;
    for (origin, expected) in [
        (Some("http://evil.example"), 403),
        (Some("null"), 403),
        (Some(own.as_str()), 200),
        (None, 200),
    ] {
        let mut req = app.http.post(&retry).header("cookie", &cookie);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), expected, "Origin {origin:?}");
    }
    // The orchestrator's probes answer without the token, and say nothing else.
    let res = app
        .http
        .get(format!("{}/livez", app.admin_base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok\n");
    let res = app
        .http
        .get(format!("{}/readyz", app.admin_base))
        .send()
        .await
        .unwrap();
    let code = res.status();
    let ready: serde_json::Value = res.json().await.unwrap();
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["store"]["ok"], true, "{ready}");
    // The public listener serves deliveries and OAuth only.
    for path in [
        "/status", "/metrics", "/healthz", "/livez", "/readyz", "/users",
    ] {
        let res = app
            .http
            .get(format!("{}{path}", app.public_base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
    app.stop().await;
}

fn hookrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hookrace"))
}

#[tokio::test]
async fn webhook_and_users_commands_work_against_a_running_daemon() {
    let polar = common::external_sim().await;
    let (user, access) = (polar.user, polar.access_token.clone());
    let http = hookrace::http::plain_client();

    // The daemon, with its admin port known so the commands can reach it.
    let dir = tempfile::tempdir().unwrap();
    let webhook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhook_url = format!("http://{}/acl_webhook", webhook.local_addr().unwrap());
    let cfg_text = common::toml_text(json!({
        "admin": {"listen": admin.local_addr().unwrap().to_string()},
        "accesslink": {
            "base_url": polar.base_url,
            "client_id": "hookrace-sim",
            "client_secret": "hookrace-sim-secret",
        },
        "users": [{"user_id": user, "access_token": access}],
        "poller": {"enabled": false},
        "store": {"path": dir.path().join("store")},
    }));
    let cfg_path = dir.path().join("hookrace.toml");
    std::fs::write(&cfg_path, &cfg_text).unwrap();
    let cfg = hookrace::config::parse(&cfg_text, "t", &|_| None).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = hookrace::apps::daemon::start(
        cfg,
        hookrace::apps::daemon::Listeners {
            webhook,
            admin,
            simulator: None,
        },
        shutdown.clone(),
    )
    .await
    .unwrap();

    let run = |args: &[&str]| {
        let cfg_path = cfg_path.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                hookrace()
                    .args(&args)
                    .arg("-c")
                    .arg(&cfg_path)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    // Create: AccessLink PINGs the daemon, which answers without knowing the secret yet.
    // No --events: the six documented events.
    let out = run(&["webhook", "create", "--url", &webhook_url]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains("signature secret saved in the running daemon's store"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("signature_secret_key"),
        "the secret is not printed: {stdout}"
    );
    // The daemon now verifies deliveries with it.
    http.post(format!("{}/sim/inject", polar.base_url))
        .json(&json!({"user_id": user, "type": "EXERCISE"}))
        .send()
        .await
        .unwrap();
    eventually("the signed delivery", || async {
        (running
            .store
            .counter(hookrace::counter::Counter::WebhookAccepted)
            == 1)
            .then_some(())
    })
    .await;

    // The html report of a running daemon draws its entities (they come from the daemon too):
    // before, the page said "No entities to draw" while its table counted them.
    let out = run(&["report", "--format", "html"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(!page.contains("No entities to draw"), "{page}");

    // A second create: 409, explained.
    let out = run(&["webhook", "create", "--url", &webhook_url]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already exists") && err.contains("hookrace webhook list"),
        "{err}"
    );

    let out = run(&["webhook", "list"]).await;
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listed.contains(&webhook_url) && listed.contains("active"),
        "{listed}"
    );
    assert!(
        listed.contains("SLEEP_WISE_ALERTNESS") && !listed.contains("PHYSICAL_INFORMATION"),
        "subscribed to the six documented events by default: {listed}"
    );
    let id = listed.split_whitespace().next().unwrap().to_string();
    // --format json: one document on stdout and nothing else.
    let out = run(&["webhook", "list", "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let hooks: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(hooks[0]["id"], id.as_str(), "{hooks}");
    assert_eq!(hooks[0]["url"], webhook_url.as_str(), "{hooks}");
    let out = run(&[
        "webhook",
        "update",
        "--id",
        &id,
        "--events",
        "EXERCISE,SLEEP",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("EXERCISE, SLEEP"));
    assert_eq!(run(&["webhook", "deactivate"]).await.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&run(&["webhook", "list"]).await.stdout).contains("inactive"));
    assert_eq!(run(&["webhook", "activate"]).await.status.code(), Some(0));
    let out = run(&["webhook", "update", "--id", "nope", "--events", "EXERCISE"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no webhook with id nope"));
    assert_eq!(
        run(&["webhook", "delete", "--id", &id]).await.status.code(),
        Some(0)
    );
    assert!(
        String::from_utf8_lossy(&run(&["webhook", "list"]).await.stdout).contains("no webhook")
    );

    // Users: listed without tokens, removed (de-registered at AccessLink).
    let out = run(&["users", "list"]).await;
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listed.contains(&user.to_string()) && !listed.contains(&access),
        "{listed}"
    );
    let out = run(&["users", "list", "--format", "json"]).await;
    let users: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(users[0]["user_id"], user, "{users}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&access));
    let out = run(&["users", "remove", "--user", &user.to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let users: Value = http
        .get(format!("{}/sim/users", polar.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(users[0]["registered"], false);
    assert!(
        hookrace::credentials::all_users(&running.store)
            .unwrap()
            .is_empty()
    );

    shutdown.cancel();
    running.wait().await.unwrap();
}

#[test]
fn the_binary_notifies_systemd_and_feeds_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let cfg = dir.path().join("c.toml");
    let text = common::toml_text(json!({
        "webhook": common::loopback_listeners(),
        "admin": common::loopback_listeners(),
        "poller": {"every": "1h"},
        "store": {"path": dir.path().join("store")},
        "simulator": {"enabled": true, "listen": "127.0.0.1:0", "users": 1},
    }));
    std::fs::write(&cfg, text).unwrap();
    // systemd names the watched process: WATCHDOG_PID is the shell's pid, which `exec` keeps.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" run -c \"$1\"")
        .arg(env!("CARGO_BIN_EXE_hookrace"))
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let first = next();
    assert!(first.contains("READY=1"), "{first}");
    assert!(first.contains("STATUS="), "{first}");
    let mut fed = false;
    for _ in 0..10 {
        if next().contains("WATCHDOG=1") {
            fed = true;
            break;
        }
    }
    assert!(fed, "the watchdog is fed while healthy");
    // SIGHUP is not a reason to stop.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(next().contains("WATCHDOG=1"), "still running after SIGHUP");
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stopping = loop {
        let m = next();
        if m.contains("STOPPING=1") {
            break m;
        }
    };
    assert!(stopping.contains("STOPPING=1"));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed: unit not verified here");
        return;
    };
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/deploy/hookrace.service"
    ))
    .unwrap();
    // Verified against the binary just built (the unit names the package's /usr/bin/hookrace by
    // its full path, so a stale /usr/local/bin/hookrace cannot win).
    let unit = unit.replace(
        "ExecStart=/usr/bin/hookrace ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_hookrace")),
    );
    assert!(
        unit.contains(env!("CARGO_BIN_EXE_hookrace")),
        "the unit's ExecStart moved"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookrace.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("hookrace.service:"),
        "warnings about the unit: {text}"
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

/// Attack: a sign-in link started by someone else (their state, their Polar account) and sent to a
/// victim must not connect in the victim's browser: the callback needs the cookie of the browser
/// that started it. The rightful browser can still finish.
#[tokio::test]
async fn a_sign_in_finishes_only_in_the_browser_that_started_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(sim_config(dir.path(), 0, "transactions")).await;
    let v = app
        .sim_control(Method::POST, "/sim/users", json!({"registered": false}))
        .await;
    let user = v["user_id"].as_u64().unwrap();
    let callback = consent(
        &start_connect(&app.public_base).await,
        &format!("&user_id={user}"),
    )
    .await;
    let (bare, _) = callback.split_once(COOKIE_FRAGMENT).unwrap();
    for other in [None, Some("hookrace_oauth=someone-elses-state")] {
        let mut req = browser().get(bare);
        if let Some(c) = other {
            req = req.header("Cookie", c);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 400);
        assert!(res.text().await.unwrap().contains("another browser"));
    }
    assert_eq!(app.status().await["users"]["known"], 0, "nothing stored");
    assert_eq!(
        follow(&callback).await.status(),
        200,
        "the rightful browser finishes"
    );
    assert_eq!(app.status().await["users"]["known"], 1);
    app.stop().await;
}

/// Connects a new Polar user through the browser flow and returns the callback's answer.
async fn connect_new_user(app: &common::App) -> reqwest::Response {
    let v = app
        .sim_control(Method::POST, "/sim/users", json!({"registered": false}))
        .await;
    let user = v["user_id"].as_u64().unwrap();
    let authorize = start_connect(&app.public_base).await;
    let callback = consent(&authorize, &format!("&user_id={user}")).await;
    follow(&callback).await
}

#[tokio::test]
async fn a_person_is_told_when_the_daily_limit_is_spent_instead_of_waiting_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(sim_config(dir.path(), 0, "transactions")).await;
    // A daily limit that the first registration's request spends (the start-up's requests count
    // too; a window this small keeps no reserve: only a spent window holds requests back).
    let truth = app.truth().await;
    let spent: u64 = truth["requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !["rate_limited", "server_error"].contains(&k.as_str()))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    app.faults(json!({"rate_limit": [100, spent + 1], "long_window_s": 86_400}))
        .await;
    let first = connect_new_user(&app).await;
    assert_eq!(first.status(), 200, "the first registration spends the day");
    // Before this fix the second sign-in waited for the daily window (a day) in the callback.
    let second = tokio::time::timeout(Duration::from_secs(10), connect_new_user(&app))
        .await
        .expect("the callback answers at once");
    assert_eq!(second.status(), 503);
    let page = second.text().await.unwrap();
    assert!(
        page.contains("daily request limit is spent; it resets in 23 h 59 min"),
        "{page}"
    );
    assert_eq!(
        app.status().await["users"]["known"],
        1,
        "nothing was stored"
    );
    // A user removal someone asked for on the admin listener fails as fast, with 503.
    let users = app.admin_get("/users").await;
    let known = users[0]["user_id"].as_u64().unwrap();
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        app.http
            .delete(format!("{}/users/{known}", app.admin_base))
            .send(),
    )
    .await
    .expect("the admin route answers at once")
    .unwrap();
    assert_eq!(res.status(), 503);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("daily request limit is spent")
    );
    assert_eq!(app.status().await["users"]["known"], 1, "the user is kept");
    app.stop().await;
}

/// `hookrace backup` while the daemon runs (through its admin listener), then `hookrace
/// restore` into a new directory: the restored store reports what the original does, a restore
/// never overwrites a store, and a backup cut short is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_running_daemon_restores_to_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let app = common::spawn_with(common::sim_config(&store_dir, 2, "transactions")).await;
    let user = app.first_user().await;
    app.inject(user, "EXERCISE").await;
    app.inject(user, "SLEEP").await;
    app.status_until("two fetches", |s| s["webhook"]["fetches"]["ok"] == 2)
        .await;
    app.cycle().await;
    // The commands' configuration: the daemon's store and admin listener.
    let mut cfg = common::sim_config_json(&store_dir, 2, "transactions");
    cfg["admin"]["listen"] = json!(app.admin_base.trim_start_matches("http://"));
    let cfg_path = dir.path().join("hookrace.toml");
    std::fs::write(&cfg_path, common::toml_text(cfg)).unwrap();
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hookrace"))
            .args(args)
            .output()
            .await
            .unwrap()
    };
    let arg = |p: &std::path::Path| p.to_string_lossy().to_string();
    let file = dir.path().join("hookrace.bak");
    let out = run(vec![
        "backup".into(),
        "-c".into(),
        arg(&cfg_path),
        arg(&file),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("backed up"),
        "{out:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the backup holds tokens: owner only");
    app.stop().await;

    let restored = dir.path().join("restored");
    let restore = |into: &std::path::Path, from: &std::path::Path| {
        run(vec![
            "restore".into(),
            arg(from),
            "--store".into(),
            arg(into),
        ])
    };
    let out = restore(&restored, &file).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The same report from either store (the wall-clock age each is read at aside).
    let report = |store: std::path::PathBuf| {
        let cfg_path = cfg_path.clone();
        async move {
            let args = vec!["report", "--format", "json", "-c"];
            let mut args: Vec<String> = args.into_iter().map(String::from).collect();
            args.extend([arg(&cfg_path), "--store".into(), arg(&store)]);
            let out = run(args).await;
            assert_eq!(out.status.code(), Some(0), "{out:?}");
            let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
            strip_ages(&mut v);
            v
        }
    };
    let (before, after) = (
        report(store_dir.clone()).await,
        report(restored.clone()).await,
    );
    assert_eq!(before["entities_total"], 2, "{before:#}");
    assert_eq!(before, after);
    // Never over a store; and a cut backup is refused (and leaves nothing behind).
    let out = restore(&restored, &file).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{out:?}"
    );
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.bak");
    std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
    let out = restore(&dir.path().join("from-cut"), &cut).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ends too soon"),
        "{out:?}"
    );
}

/// Removes what a report derives from the moment it is read (ages, rates per second, times of
/// reading), so two reports of the same records compare equal.
fn strip_ages(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| {
                !["measured_for_s", "rates_from", "item_rate_per_user_s"].contains(&k.as_str())
            });
            map.values_mut().for_each(strip_ages);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_ages),
        _ => {}
    }
}

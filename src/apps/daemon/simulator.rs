//! Where AccessLink is for this daemon: the configuration's, or the embedded simulator started
//! here, whose users it connects through the OAuth flow and whose webhook it creates.

use super::*;

/// Where AccessLink is and how this daemon signs in to it: the configuration's values, or, with
/// `[simulator]` enabled, the embedded simulator started here on `listener`, which replaces
/// AccessLink (its address, its client credentials, OAuth back to this daemon's public URL).
pub(super) fn resolve_accesslink(
    config: &Config,
    listener: Option<TcpListener>,
    seed: Option<u64>,
    public_base: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<(AccessLinkConfig, Option<sim::RunningSim>)> {
    let Some(listener) = listener else {
        return Ok((config.accesslink.clone(), None));
    };
    let s = &config.simulator;
    // A replay replaces the random generator.
    let random = |every: Duration| s.replay.is_empty().then_some(every);
    let settings = sim::SimSettings {
        seed: seed.or(s.seed).unwrap_or_else(rand::random),
        users: s.users,
        exercise_every: random(s.exercise_every),
        activity_every: random(s.activity_every),
        sleep_every: random(sim::settings::SLEEP_EVERY),
        heart_rate_every: random(sim::settings::HEART_RATE_EVERY),
        replay: s.replay.clone(),
        faults: sim::Faults {
            drop_rate: s.webhook_drop_rate,
            duplicate_rate: s.webhook_duplicate_rate,
            delay_ms: (
                crate::units::millis(s.webhook_delay.0),
                crate::units::millis(s.webhook_delay.1),
            ),
            ..sim::Faults::default()
        },
        client_id: crate::config::SIMULATOR_CLIENT_ID.into(),
        client_secret: crate::config::SIMULATOR_CLIENT_SECRET.into(),
        ..sim::SimSettings::default()
    };
    let accesslink = |base: &str| AccessLinkConfig {
        base_url: base.to_string(),
        client_id: settings.client_id.clone(),
        client_secret: Some(Secret::new(settings.client_secret.clone())),
        // The webhook `connect_simulator` creates saves its secret in the store.
        webhook_secret: None,
        authorize_url: format!("{base}/oauth2/authorization"),
        token_url: format!("{base}/v2/oauth2/token"),
        redirect_uri: Some(format!("{public_base}/oauth/callback")),
    };
    let settings_for_sim = settings.clone();
    let running = sim::start(
        listener,
        settings_for_sim,
        shutdown.child_token(),
        crate::server::serve_simulator,
    )?;
    Ok((accesslink(&running.base_url), Some(running)))
}

/// Says at start-up what will happen to deliveries when no secret is known, or when the
/// configured one hides a saved one.
pub(super) fn warn_about_the_webhook_secret(
    accesslink: &AccessLinkConfig,
    store: &Store,
    simulator: bool,
) {
    let saved = crate::credentials::webhook_secret(store);
    match (&accesslink.webhook_secret, &saved) {
        (None, None) if !simulator => tracing::warn!(
            "no webhook secret is configured or stored: deliveries will be refused with 503 until one is"
        ),
        (Some(configured), Some(saved)) if configured.expose() != saved.expose() => {
            tracing::warn!(
                "the store holds a webhook secret (saved by `hookrace webhook create`) that differs \
                 from the configured one; the configured one is used: remove it from the \
                 configuration to use the saved one"
            )
        }
        _ => {}
    }
}

/// Connects the simulator's users through the OAuth flow, as a person in a browser would
/// (connect → authorize → callback, all over HTTP), and creates the webhook pointing at this
/// daemon (PING and all), keeping the returned secret in the store.
pub(super) async fn connect_simulator(
    sim: &sim::RunningSim,
    client: &Client,
    store: &Store,
    public_base: &str,
    webhook_url: &str,
) -> anyhow::Result<()> {
    let browser = crate::http::client(Duration::from_secs(10))?;
    let users: serde_json::Value = browser
        .get(format!("{}/sim/users", sim.base_url))
        .send()
        .await
        .context("asking the simulator for its users")?
        .json()
        .await
        .context("reading the simulator's users")?;
    let location = |res: &reqwest::Response| -> anyhow::Result<String> {
        res.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .ok_or_else(|| {
                anyhow::anyhow!("{} answered {} without a redirect", res.url(), res.status())
            })
    };
    for u in users.as_array().cloned().unwrap_or_default() {
        let Some(id) = u["user_id"].as_u64() else {
            continue;
        };
        // The connect route is rate-limited (it is public): a big simulated crowd waits its turn.
        let mut res = browser
            .get(format!("{public_base}/oauth/connect"))
            .send()
            .await?;
        for _ in 0..30 {
            if res.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            res = browser
                .get(format!("{public_base}/oauth/connect"))
                .send()
                .await?;
        }
        // The browser keeps the cookie that binds the sign-in to it.
        let cookie = res
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or_default()
            .to_string();
        // The simulator's consent page: `user_id` says which simulated person consents.
        let authorize = format!("{}&user_id={id}", location(&res)?);
        let res = browser.get(&authorize).send().await?;
        let callback = location(&res)?;
        let res = browser
            .get(&callback)
            .header("Cookie", cookie)
            .send()
            .await?;
        anyhow::ensure!(
            res.status().is_success(),
            "connecting simulated user {id}: {}",
            res.text().await.unwrap_or_default()
        );
    }
    // Every type: the simulator supports them all (and generates all but SleepWise).
    let events: Vec<String> = crate::accesslink::identity::EventType::KNOWN
        .iter()
        .map(|k| k.to_string())
        .collect();
    let created = webhooks::create(client, webhook_url, &events)
        .await
        .context("creating the webhook at the simulator")?;
    crate::credentials::set_webhook_secret(store, &created.secret).await?;
    tracing::info!(id = %created.webhook.id, url = webhook_url, users = crate::credentials::all_users(store)?.len(), "connected to the simulator");
    Ok(())
}

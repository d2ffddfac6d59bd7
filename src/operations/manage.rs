//! The management commands: `hookrace webhook …` and `hookrace users …`.
//!
//! They speak to AccessLink with the configured client credentials (or, with `[simulator]`
//! enabled, to the simulator `hookrace run` starts on `[simulator].listen`). What they keep goes
//! into the store; while a running daemon holds the store open, they hand it to the daemon's
//! admin listener instead (`PUT /webhook/secret`, `GET /users`, `DELETE /users/{id}`).

use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::accesslink::client::{ApiError, Auth, Client, Policy};
use crate::accesslink::identity::UserId;
use crate::accesslink::webhooks;
use crate::config::{Config, Secret};
use crate::http::Admin;
use crate::store::{OpenError, Store};

/// The AccessLink client the configuration means (base URL and client credentials), for a person
/// at the terminal: it does not wait for a spent rate-limit window.
pub fn client_for(cfg: &Config) -> anyhow::Result<Client> {
    plain_client_for(cfg).map(|c| c.interactive())
}

fn plain_client_for(cfg: &Config) -> anyhow::Result<Client> {
    if cfg.simulator.enabled {
        return Client::new(
            &format!("http://{}", cfg.simulator.listen),
            crate::config::SIMULATOR_CLIENT_ID,
            Some(Secret::new(crate::config::SIMULATOR_CLIENT_SECRET)),
            Policy::default(),
        );
    }
    Client::new(
        &cfg.accesslink.base_url,
        &cfg.accesslink.client_id,
        cfg.accesslink.client_secret.clone(),
        Policy::default(),
    )
}

/// A user as `users list` shows it (never the token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserView {
    pub user_id: u64,
    pub added_at: chrono::DateTime<chrono::Utc>,
    pub disconnected_at: Option<chrono::DateTime<chrono::Utc>>,
    pub disconnect_reason: Option<String>,
}

impl From<crate::credentials::StoredUser> for UserView {
    fn from(u: crate::credentials::StoredUser) -> Self {
        UserView {
            user_id: u.user_id.0,
            added_at: u.added_at,
            disconnected_at: u.disconnected_at,
            disconnect_reason: u.disconnect_reason,
        }
    }
}

/// De-registers a user at AccessLink (401/404 mean already gone) and forgets their token.
pub async fn remove_user(store: &Store, client: &Client, user_id: UserId) -> anyhow::Result<bool> {
    let Some(user) = crate::credentials::user(store, user_id)? else {
        return Ok(false);
    };
    let url = client.url(&format!("/v3/users/{user_id}"));
    match client
        .send(
            reqwest::Method::DELETE,
            &url,
            Auth::Bearer(&user.access_token),
            None,
            &|_| {},
        )
        .await
    {
        Ok(_) | Err(ApiError::Unauthorized { .. }) | Err(ApiError::Status { status: 404, .. }) => {}
        Err(e) => return Err(e).context("de-registering the user at AccessLink"),
    }
    crate::credentials::remove_user(store, user_id)?;
    store.durable().await?;
    Ok(true)
}

/// Where the store is, or the running daemon's admin listener when it holds the store.
pub enum Target {
    Store(Arc<Store>),
    Daemon(Admin),
}

/// Opens the store the configuration names; when the daemon holds it, its admin listener. Any
/// other failure to open (permissions, a damaged store) is an error, not a reason to ask the
/// daemon.
pub fn target(cfg: &Config) -> anyhow::Result<Target> {
    target_with(cfg, Store::open)
}

/// [`target`] for a command that only reads: a store that does not exist is an error, never
/// created.
pub fn existing_target(cfg: &Config) -> anyhow::Result<Target> {
    target_with(cfg, Store::open_existing)
}

fn target_with(
    cfg: &Config,
    open: fn(&std::path::Path) -> Result<Store, OpenError>,
) -> anyhow::Result<Target> {
    // A store of another user (the service's dynamic user, seen from `sudo hookrace …`) is the
    // daemon's to touch: files root wrote into it would be files the service cannot write.
    let daemon = || {
        Ok(Target::Daemon(Admin::new(
            &cfg.admin.listen.to_string(),
            cfg.admin.token.clone(),
        )?))
    };
    if let Some(owner) = foreign_owner(&cfg.store.path) {
        tracing::info!(
            store = %cfg.store.path.display(),
            owner,
            "the store belongs to another user: asking the daemon"
        );
        return daemon();
    }
    match open(&cfg.store.path) {
        Ok(s) => Ok(Target::Store(Arc::new(s))),
        Err(OpenError::InUse { .. }) => daemon(),
        Err(e) => Err(e.into()),
    }
}

/// The owner of the store directory when it is not this process's user (Linux: `/proc/self`
/// belongs to the process's effective user).
fn foreign_owner(store: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").ok()?.uid();
    let owner = std::fs::metadata(store).ok()?.uid();
    (owner != me).then_some(owner)
}

/// Saves a new webhook secret where the daemon will use it; returns where it went.
pub async fn save_webhook_secret(cfg: &Config, secret: &Secret) -> anyhow::Result<String> {
    match target(cfg)? {
        Target::Store(store) => {
            let saved = crate::credentials::set_webhook_secret(&store, secret).await;
            store.close()?;
            saved?;
            Ok(format!("the store at {}", cfg.store.path.display()))
        }
        Target::Daemon(admin) => {
            let body = Some(secret.expose().to_string());
            let what = "saving the webhook secret";
            admin
                .call(reqwest::Method::PUT, "/webhook/secret", body, what)
                .await?;
            Ok(format!(
                "the running daemon's store (via {})",
                admin.url("")
            ))
        }
    }
}

/// The users hookrace knows.
pub async fn list_users(cfg: &Config) -> anyhow::Result<Vec<UserView>> {
    match existing_target(cfg)? {
        Target::Store(store) => {
            let users = crate::credentials::all_users(&store);
            store.close()?;
            Ok(users?.into_iter().map(UserView::from).collect())
        }
        Target::Daemon(admin) => Ok(admin
            .call(reqwest::Method::GET, "/users", None, "listing users")
            .await?
            .json()
            .await
            .context("reading the daemon's list of users")?),
    }
}

/// Removes a user (de-registering at AccessLink); `false` when unknown.
pub async fn remove_user_cmd(cfg: &Config, user_id: u64) -> anyhow::Result<bool> {
    match existing_target(cfg)? {
        Target::Store(store) => {
            let removed = match client_for(cfg) {
                Ok(client) => remove_user(&store, &client, UserId(user_id)).await,
                Err(e) => Err(e),
            };
            store.close()?;
            removed
        }
        Target::Daemon(admin) => {
            let path = format!("/users/{user_id}");
            let what = "asking the daemon to remove the user";
            let res = admin
                .send(reqwest::Method::DELETE, &path, None, what)
                .await?;
            match res.status().as_u16() {
                200..=299 => Ok(true),
                404 => Ok(false),
                s => anyhow::bail!(
                    "{what}: the daemon answered {s}: {}",
                    res.text().await.unwrap_or_default().trim()
                ),
            }
        }
    }
}

/// What `hookrace webhook …` asks for, as plain arguments (the command line builds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAction {
    /// Create the webhook for `events` (default: every documented event).
    Create {
        url: String,
        events: Option<Vec<String>>,
        show_secret: bool,
    },
    /// List the webhook (`json`: AccessLink's objects as one array).
    List {
        json: bool,
    },
    Update {
        id: String,
        url: Option<String>,
        events: Option<Vec<String>>,
    },
    Delete {
        id: String,
    },
    Activate,
    Deactivate,
}

/// `hookrace webhook …`.
pub async fn webhook_command(
    cfg: &Config,
    cmd: &WebhookAction,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let result = webhook_action(cfg, cmd, out).await;
    match result {
        // A configuration with the simulator reaches the one `hookrace run` starts: say so.
        Err(e) if cfg.simulator.enabled && is_refused(&e) => Err(e.context(format!(
            "this configuration uses the simulator that `hookrace run` starts on {}, and nothing \
             answers there: start `hookrace run` with it first, or name your configuration \
             with -c (or $HOOKRACE_CONFIG)",
            cfg.simulator.listen
        ))),
        other => other,
    }
}

/// Whether the error chain ends in a refused connection.
fn is_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// `hookrace webhook create`: the webhook, its secret saved where the daemon reads it.
async fn create_webhook(
    cfg: &Config,
    client: &Client,
    url: &str,
    events: Option<&[String]>,
    show_secret: bool,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let ev = events.map(<[String]>::to_vec).unwrap_or_else(|| {
        crate::accesslink::identity::EventType::default_subscription()
            .map(|k| k.to_string())
            .collect()
    });
    let created = webhooks::create(client, url, &ev).await?;
    let place = save_webhook_secret(cfg, &created.secret).await?;
    writeln!(
        out,
        "created webhook {} → {}",
        created.webhook.id, created.webhook.url
    )?;
    writeln!(out, "  events: {}", created.webhook.events.join(", "))?;
    writeln!(out, "  signature secret saved in {place}")?;
    if show_secret {
        writeln!(out, "  signature_secret_key: {}", created.secret.expose())?;
    } else {
        writeln!(
            out,
            "  (AccessLink shows the secret only once; add --show-secret to print it)"
        )?;
    }
    Ok(())
}

/// `hookrace webhook list`.
async fn list_webhooks(
    client: &Client,
    json: bool,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let hooks = webhooks::list(client).await?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&hooks)?)?;
        return Ok(());
    }
    if hooks.is_empty() {
        writeln!(
            out,
            "no webhook: create one with `hookrace webhook create --url URL`"
        )?;
    }
    for h in hooks {
        let state = match h.active {
            Some(false) => "inactive",
            Some(true) => "active",
            None => "state unknown",
        };
        writeln!(
            out,
            "{}  {}  {}  [{}]",
            h.id,
            state,
            h.url,
            h.events.join(", ")
        )?;
    }
    Ok(())
}

async fn webhook_action(
    cfg: &Config,
    cmd: &WebhookAction,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    use WebhookAction as W;
    let client = client_for(cfg)?;
    match cmd {
        W::Create {
            url,
            events,
            show_secret,
        } => create_webhook(cfg, &client, url, events.as_deref(), *show_secret, out).await?,
        W::List { json } => list_webhooks(&client, *json, out).await?,
        W::Update {
            id,
            url,
            events: ev,
        } => {
            anyhow::ensure!(url.is_some() || ev.is_some(), "give --url and/or --events");
            let h = webhooks::update(&client, id, url.as_deref(), ev.as_deref()).await?;
            writeln!(
                out,
                "updated webhook {} → {} [{}]",
                h.id,
                h.url,
                h.events.join(", ")
            )?;
        }
        W::Delete { id } => {
            webhooks::delete(&client, id).await?;
            writeln!(out, "deleted webhook {id}")?;
        }
        W::Activate | W::Deactivate => {
            let active = matches!(cmd, W::Activate);
            let existed = webhooks::set_active(&client, active).await?;
            if existed {
                writeln!(
                    out,
                    "webhook {}",
                    if active { "activated" } else { "deactivated" }
                )?;
            } else {
                writeln!(out, "no webhook exists for this client")?;
            }
        }
    }
    Ok(())
}

//! The credentials hookrace keeps in its store: each user's access token (and whether AccessLink
//! still accepts it), in the store's `users` tree, and the webhook's signature secret when
//! `hookrace webhook create` (or the simulator's connection) saved one, in `meta`. The store keeps
//! them as values it does not read ([`Store::kept`], [`Store::save`]); this module owns what they
//! mean. Used by the channels (whose token a fetch or a poll carries), operations (onboarding,
//! removal) and the observers (the users `/status` lists).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::accesslink::Secret;
use crate::accesslink::identity::UserId;
use crate::store::{Kept, Store};

/// The `meta` key of a saved webhook signature secret.
const WEBHOOK_SECRET: &str = "webhook.signature_secret_key";

/// A user whose data hookrace may read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredUser {
    pub user_id: UserId,
    pub access_token: Secret,
    pub added_at: DateTime<Utc>,
    /// Set when AccessLink answered 401 for this user's token.
    #[serde(default)]
    pub disconnected_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub disconnect_reason: Option<String>,
}

/// The users' tree: user id (big-endian) → [`StoredUser`].
fn users(store: &Store) -> anyhow::Result<Kept<StoredUser>> {
    store.kept("users")
}

fn key(user_id: UserId) -> [u8; 8] {
    user_id.0.to_be_bytes()
}

/// Adds or replaces a user (and clears a disconnection: the token is new).
pub fn put_user(store: &Store, user_id: UserId, token: &Secret) -> anyhow::Result<()> {
    let users = users(store)?;
    if let Some(old) = users.get(key(user_id))? {
        if old.access_token == *token && old.disconnected_at.is_none() {
            return Ok(());
        }
    }
    let user = StoredUser {
        user_id,
        access_token: token.clone(),
        added_at: Utc::now(),
        disconnected_at: None,
        disconnect_reason: None,
    };
    users.put(key(user_id), &user)
}

/// The user, if hookrace has their token.
pub fn user(store: &Store, user_id: UserId) -> anyhow::Result<Option<StoredUser>> {
    users(store)?.get(key(user_id))
}

/// Every user, by id.
pub fn all_users(store: &Store) -> anyhow::Result<Vec<StoredUser>> {
    users(store)?.values()
}

/// Removes a user and their token; whether there was one.
pub fn remove_user(store: &Store, user_id: UserId) -> anyhow::Result<bool> {
    users(store)?.remove(key(user_id))
}

/// Marks a user as disconnected (AccessLink answered 401 for the token).
pub fn mark_disconnected(store: &Store, user_id: UserId, reason: &str) -> anyhow::Result<()> {
    let users = users(store)?;
    let Some(mut u) = users.get(key(user_id))? else {
        return Ok(());
    };
    if u.disconnected_at.is_none() {
        tracing::warn!(
            user = user_id.0,
            reason,
            "user disconnected: AccessLink refuses the token"
        );
        u.disconnected_at = Some(Utc::now());
        u.disconnect_reason = Some(reason.to_string());
        users.put(key(user_id), &u)?;
    }
    Ok(())
}

/// A webhook signature key saved by `hookrace webhook create`, if any.
pub fn webhook_secret(store: &Store) -> Option<Secret> {
    String::from_utf8(store.saved(WEBHOOK_SECRET)?)
        .ok()
        .map(Secret::new)
}

/// Saves the webhook signature key durably (through the group commit: never blocks the runtime).
pub async fn set_webhook_secret(store: &Store, secret: &Secret) -> anyhow::Result<()> {
    let bytes = secret.expose().as_bytes();
    store
        .save(WEBHOOK_SECRET, bytes, "the webhook secret")
        .await
}

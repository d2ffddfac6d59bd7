//! Users and their tokens.

use anyhow::Context;
use chrono::Utc;

use super::*;

impl Store {
    // ---- users ----

    /// Adds or replaces a user (and clears a disconnection: the token is new).
    pub fn put_user(&self, user_id: UserId, token: &crate::config::Secret) -> anyhow::Result<()> {
        let user = StoredUser {
            user_id,
            access_token: token.clone(),
            added_at: Utc::now(),
            disconnected_at: None,
            disconnect_reason: None,
        };
        if let Some(old) = self.user(user_id)? {
            if old.access_token == *token && old.disconnected_at.is_none() {
                return Ok(());
            }
        }
        self.users
            .insert(user_id.0.to_be_bytes(), serde_json::to_vec(&user)?)
            .with_context(|| format!("storing user {user_id}"))?;
        Ok(())
    }

    pub fn user(&self, user_id: UserId) -> anyhow::Result<Option<StoredUser>> {
        match self.users.get(user_id.0.to_be_bytes())? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).with_context(|| format!("decoding user {user_id}"))?,
            )),
            None => Ok(None),
        }
    }

    pub fn users(&self) -> anyhow::Result<Vec<StoredUser>> {
        self.users
            .iter()
            .values()
            .map(|v| Ok(serde_json::from_slice(&v.context("reading users")?)?))
            .collect()
    }

    /// Removes a user and their token.
    pub fn remove_user(&self, user_id: UserId) -> anyhow::Result<bool> {
        Ok(self.users.remove(user_id.0.to_be_bytes())?.is_some())
    }

    /// Marks a user as disconnected (AccessLink answered 401 for the token).
    pub fn mark_disconnected(&self, user_id: UserId, reason: &str) -> anyhow::Result<()> {
        if let Some(mut u) = self.user(user_id)? {
            if u.disconnected_at.is_none() {
                tracing::warn!(
                    user = user_id.0,
                    reason,
                    "user disconnected: AccessLink refuses the token"
                );
                u.disconnected_at = Some(Utc::now());
                u.disconnect_reason = Some(reason.to_string());
                self.users
                    .insert(user_id.0.to_be_bytes(), serde_json::to_vec(&u)?)?;
            }
        }
        Ok(())
    }
}

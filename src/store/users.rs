//! Users and their tokens, and the pending OAuth states of the onboarding flow.

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::*;

impl Store {
    // ---- OAuth states ----

    /// Remembers an OAuth `state` (flushed: the browser may come back after a restart).
    pub async fn put_oauth_state(&self, state: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
        self.oauth_states
            .insert(state.as_bytes(), at.to_rfc3339().as_bytes())
            .context("saving an OAuth state")?;
        self.durable().await?;
        Ok(())
    }

    /// Takes an OAuth `state` (single use): when it was issued, or `None` if unknown or used.
    pub fn take_oauth_state(&self, state: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        let v = self
            .oauth_states
            .remove(state.as_bytes())
            .context("reading an OAuth state")?;
        Ok(v.and_then(|v| {
            DateTime::parse_from_rfc3339(&String::from_utf8_lossy(&v))
                .ok()
                .map(|t| t.with_timezone(&Utc))
        }))
    }

    // ---- users ----

    /// Adds or replaces a user (and clears a disconnection: the token is new).
    pub fn put_user(&self, user_id: u64, token: &crate::config::Secret) -> anyhow::Result<()> {
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
            .insert(user_id.to_be_bytes(), serde_json::to_vec(&user)?)
            .with_context(|| format!("storing user {user_id}"))?;
        Ok(())
    }

    pub fn user(&self, user_id: u64) -> anyhow::Result<Option<StoredUser>> {
        match self.users.get(user_id.to_be_bytes())? {
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
    pub fn remove_user(&self, user_id: u64) -> anyhow::Result<bool> {
        Ok(self.users.remove(user_id.to_be_bytes())?.is_some())
    }

    /// Marks a user as disconnected (AccessLink answered 401 for the token).
    pub fn mark_disconnected(&self, user_id: u64, reason: &str) -> anyhow::Result<()> {
        if let Some(mut u) = self.user(user_id)? {
            if u.disconnected_at.is_none() {
                tracing::warn!(
                    user = user_id,
                    reason,
                    "user disconnected: AccessLink refuses the token"
                );
                u.disconnected_at = Some(Utc::now());
                u.disconnect_reason = Some(reason.to_string());
                self.users
                    .insert(user_id.to_be_bytes(), serde_json::to_vec(&u)?)?;
            }
        }
        Ok(())
    }
}

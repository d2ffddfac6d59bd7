//! The AccessLink transactions hookrace created and has not committed yet.
//!
//! While a transaction is open, AccessLink answers `204` to a new create for the same user and
//! kind, as if nothing were new, and the only way back to the open one is its `resource-uri`. So
//! the URI is kept here from the moment the create answers until the commit does: a failed item,
//! a failed commit or a crash in between leaves it here, and the next poll cycle (the first after
//! a start too) reads and commits it before creating a new one.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::*;

/// A transaction created and not yet committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenTransaction {
    /// The `resource-uri` AccessLink gave it, verbatim.
    pub resource_uri: String,
    pub user_id: UserId,
    /// The notification `data-type` it was created for (`EXERCISE`, …).
    pub kind: EventType,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Remembers a created transaction, durably: it returns once the URI is on disk.
    pub async fn remember_transaction(&self, t: &OpenTransaction) -> anyhow::Result<()> {
        self.open_transactions
            .insert(t.resource_uri.as_bytes(), serde_json::to_vec(t)?)
            .with_context(|| format!("remembering the open transaction {}", t.resource_uri))?;
        self.durable().await
    }

    /// Forgets a transaction (committed, or gone at AccessLink). Durable with the next commit:
    /// forgetting it late only costs one read of a transaction that is gone.
    pub fn forget_transaction(&self, resource_uri: &str) -> anyhow::Result<()> {
        self.open_transactions
            .remove(resource_uri.as_bytes())
            .with_context(|| format!("forgetting the transaction {resource_uri}"))?;
        Ok(())
    }

    /// The transactions created and not committed, oldest first.
    pub fn open_transactions(&self) -> anyhow::Result<Vec<OpenTransaction>> {
        let mut out: Vec<OpenTransaction> = self
            .open_transactions
            .iter()
            .values()
            .map(|v| {
                let v = v.context("reading the open transactions")?;
                serde_json::from_slice(&v).context("decoding an open transaction")
            })
            .collect::<anyhow::Result<_>>()?;
        out.sort_by_key(|t| t.created_at);
        Ok(out)
    }
}

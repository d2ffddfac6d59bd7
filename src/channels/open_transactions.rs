//! The AccessLink transactions the poller created and has not committed yet, kept in the store's
//! `open_transactions` tree (`resource-uri` → [`OpenTransaction`]).
//!
//! While a transaction is open, AccessLink answers `204` to a new create for the same user and
//! kind, as if nothing were new, and the only way back to the open one is its `resource-uri`. So
//! the URI is kept from the moment the create answers until the commit does: a failed item, a
//! failed commit or a crash in between leaves it here, and the next poll cycle (the first after a
//! start too) reads and commits it before creating a new one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::accesslink::identity::{EventType, UserId};
use crate::store::{Kept, Store};

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

fn tree(store: &Store) -> anyhow::Result<Kept<OpenTransaction>> {
    store.kept("open_transactions")
}

/// Remembers a created transaction, durably: it returns once the URI is on disk.
pub async fn remember(store: &Store, t: &OpenTransaction) -> anyhow::Result<()> {
    tree(store)?.put(t.resource_uri.as_bytes(), t)?;
    store.durable().await
}

/// Forgets a transaction (committed, or gone at AccessLink). Durable with the next commit:
/// forgetting it late only costs one read of a transaction that is gone.
pub fn forget(store: &Store, resource_uri: &str) -> anyhow::Result<()> {
    tree(store)?.remove(resource_uri.as_bytes())?;
    Ok(())
}

/// The transactions created and not committed, oldest first.
pub fn all(store: &Store) -> anyhow::Result<Vec<OpenTransaction>> {
    let mut out = tree(store)?.values()?;
    out.sort_by_key(|t| t.created_at);
    Ok(out)
}

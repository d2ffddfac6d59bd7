//! The rate-limit window known to be spent, kept in the store so a restart honours it: the
//! client publishes every block it sets ([`Client::blocks`]), [`keep`] saves it, and the next
//! start [`restore`]s it before any request goes out. Without it, a daemon restarted inside a
//! spent daily window sent its first requests into it and was answered 429.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::accesslink::client::{Client, SavedBlock};
use crate::store::Store;

/// The saved document's key in the store.
const KEY: &str = "accesslink.rate_block";

/// Honours the block an earlier run saved, if it has not ended (call before any request).
pub fn restore(store: &Store, client: &Client) {
    let Some(bytes) = store.saved(KEY) else {
        return;
    };
    match serde_json::from_slice::<SavedBlock>(&bytes) {
        Ok(saved) => client.restore_block(&saved),
        Err(e) => {
            tracing::warn!(error = %e, "a saved rate-limit block that does not read: ignored")
        }
    }
}

/// Saves each block the client sets, until `shutdown`.
pub async fn keep(store: Arc<Store>, client: Arc<Client>, shutdown: CancellationToken) {
    let mut blocks = client.blocks();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = blocks.changed() => if changed.is_err() { return },
        }
        let Some(block) = *blocks.borrow_and_update() else {
            continue;
        };
        let saved = serde_json::to_vec(&block).map_err(anyhow::Error::from);
        let saved = match saved {
            Ok(bytes) => store.save(KEY, &bytes, "the rate-limit block").await,
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            tracing::warn!(
                error = format_args!("{e:#}"),
                "the rate-limit block could not be saved: a restart may not honour it"
            );
        }
    }
}

//! What owners outside the store keep in it besides the entity records: typed values in a tree of
//! their own ([`Kept`]: the users, the open transactions), and single documents in `meta` (a saved
//! webhook secret, what a demo raced with). The store knows only that they are JSON (or bytes)
//! under keys; what they mean is their owners' business.

use std::marker::PhantomData;

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;

/// A tree of `V`s under byte keys, kept for an owner outside the store.
pub struct Kept<V> {
    tree: sled::Tree,
    name: &'static str,
    value: PhantomData<fn() -> V>,
}

impl<V> Clone for Kept<V> {
    fn clone(&self) -> Self {
        Kept {
            tree: self.tree.clone(),
            name: self.name,
            value: PhantomData,
        }
    }
}

impl<V: Serialize + DeserializeOwned> Kept<V> {
    /// The value under `key`, if any.
    pub fn get(&self, key: impl AsRef<[u8]>) -> anyhow::Result<Option<V>> {
        let Some(bytes) = self
            .tree
            .get(key)
            .with_context(|| format!("reading {}", self.name))?
        else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&bytes)
            .with_context(|| format!("decoding a value of {}", self.name))?;
        Ok(Some(value))
    }

    /// Puts `value` under `key` (durable with the next commit).
    pub fn put(&self, key: impl AsRef<[u8]>, value: &V) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(value)
            .with_context(|| format!("encoding a value of {}", self.name))?;
        self.tree
            .insert(key, bytes)
            .with_context(|| format!("writing {}", self.name))?;
        Ok(())
    }

    /// Removes the value under `key`; whether there was one.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> anyhow::Result<bool> {
        let removed = self
            .tree
            .remove(key)
            .with_context(|| format!("removing from {}", self.name))?;
        Ok(removed.is_some())
    }

    /// Every value, in key order.
    pub fn values(&self) -> anyhow::Result<Vec<V>> {
        self.tree
            .iter()
            .values()
            .map(|v| {
                let v = v.with_context(|| format!("reading {}", self.name))?;
                serde_json::from_slice(&v)
                    .with_context(|| format!("decoding a value of {}", self.name))
            })
            .collect()
    }
}

impl Store {
    /// The tree `name`, kept for an owner outside the store (opened, or created, on first use).
    pub fn kept<V>(&self, name: &'static str) -> anyhow::Result<Kept<V>> {
        let tree = self
            .db
            .open_tree(name)
            .with_context(|| format!("opening tree {name} in {}", self.path.display()))?;
        Ok(Kept {
            tree,
            name,
            value: PhantomData,
        })
    }

    /// A document an owner saved in `meta` under `key`, if any.
    pub fn saved(&self, key: &str) -> Option<Vec<u8>> {
        self.meta.get(key).ok().flatten().map(|v| v.to_vec())
    }

    /// Forgets the document under `key` (durable with the next commit); whether there was one.
    pub fn forget_saved(&self, key: &str) -> anyhow::Result<bool> {
        let removed = self
            .meta
            .remove(key)
            .with_context(|| format!("forgetting {key}"))?;
        Ok(removed.is_some())
    }

    /// Saves a document in `meta` under `key` and waits for it to be on disk (`what` names it
    /// in an error).
    pub async fn save(&self, key: &str, value: &[u8], what: &str) -> anyhow::Result<()> {
        self.meta
            .insert(key, value)
            .with_context(|| format!("saving {what}"))?;
        self.durable().await
    }
}

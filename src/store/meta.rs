//! The store's small documents beside the records, in the `meta` tree: when the store was
//! created, the last delivery's time, a saved webhook secret, and what a demo raced with and
//! printed. Each is saved durably through the group commit.

use anyhow::Context;

use super::*;

impl Store {
    /// Saves `value` under `key` and waits for it to be on disk (`what` names it in an error).
    async fn save_meta(&self, key: &str, value: &[u8], what: &str) -> anyhow::Result<()> {
        self.meta
            .insert(key, value)
            .with_context(|| format!("saving {what}"))?;
        self.durable().await
    }

    fn meta_bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.meta.get(key).ok().flatten().map(|v| v.to_vec())
    }

    /// When the store was created.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        super::meta_time(&self.meta, META_CREATED_AT)
    }

    /// When the last valid delivery arrived.
    pub fn last_delivery_at(&self) -> Option<DateTime<Utc>> {
        let ms = self.last_delivery_ms.load(Ordering::Acquire);
        (ms != i64::MIN)
            .then(|| DateTime::from_timestamp_millis(ms))
            .flatten()
    }

    /// A webhook signature key saved by `hookrace webhook create`, if any.
    pub fn webhook_secret(&self) -> Option<crate::config::Secret> {
        String::from_utf8(self.meta_bytes(META_WEBHOOK_SECRET)?)
            .ok()
            .map(crate::config::Secret::new)
    }

    /// Saves the webhook signature key durably (through the group commit: never blocks the
    /// runtime).
    pub async fn set_webhook_secret(&self, secret: &crate::config::Secret) -> anyhow::Result<()> {
        let key = secret.expose().as_bytes();
        self.save_meta(META_WEBHOOK_SECRET, key, "the webhook secret")
            .await
    }

    /// Saves the settings a demo raced with (its report's JSON), so a report read from this
    /// store later shows them rather than those of whatever configuration names the store.
    pub async fn save_race_settings(&self, json: &[u8]) -> anyhow::Result<()> {
        self.save_meta(META_RACE_SETTINGS, json, "the race settings")
            .await
    }

    /// What [`Store::save_race_settings`] saved, if anything.
    pub fn race_settings(&self) -> Option<Vec<u8>> {
        self.meta_bytes(META_RACE_SETTINGS)
    }

    /// Saves the report a demo printed (its JSON), durably: `report --store` prints it again.
    pub async fn save_race_report(&self, json: &[u8]) -> anyhow::Result<()> {
        self.save_meta(META_RACE_REPORT, json, "the race's report")
            .await
    }

    /// What [`Store::save_race_report`] saved, if anything.
    pub fn race_report(&self) -> Option<Vec<u8>> {
        self.meta_bytes(META_RACE_REPORT)
    }
}

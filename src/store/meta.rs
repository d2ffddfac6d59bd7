//! The store's own facts in the `meta` tree: when the store was created and when the last
//! delivery arrived. (Owners keep their documents there through [`Store::save`].)

use super::*;

impl Store {
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
}

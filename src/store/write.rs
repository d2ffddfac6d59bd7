//! The write path of one record: a delivery ([`Store::record_delivery`]: one compare-and-swap of
//! the entity's record, carrying its raw body and fetch job), and the read-modify-write every other
//! change goes through, keeping the rest of the record.

use std::sync::atomic::Ordering;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::*;

impl Store {
    /// The stored bytes of the record at `key` (following aliases), with the key it lives under.
    fn record_bytes(&self, key: &str) -> anyhow::Result<Option<(String, sled::IVec)>> {
        let key = self.resolve_key(key)?;
        let bytes = self
            .entities
            .get(&key)
            .with_context(|| format!("reading entity {key}"))?;
        Ok(bytes.map(|b| (key, b)))
    }

    /// The record at `key` (following aliases), with the key it lives under.
    pub(super) fn record(&self, key: &str) -> anyhow::Result<Option<(String, Record)>> {
        match self.record_bytes(key)? {
            Some((key, v)) => {
                let r = decode_record(&key, &v)?;
                Ok(Some((key, r)))
            }
            None => Ok(None),
        }
    }

    /// Records a valid delivery in one write: creates its entity with its raw body and, when
    /// `fetch` is set, its fetch job; or marks an existing one (seen by the poller first, or a
    /// duplicate), queueing the fetch again if its data was never fetched and no job is pending.
    /// Returns what it did and the fetch it queued (the fetcher's queue gets it from the commit).
    /// Not yet durable: call [`Store::durable`] before answering 200.
    pub fn record_delivery(
        &self,
        delivery: &Delivery,
        body: &[u8],
        received_at: DateTime<Utc>,
        fetch: bool,
    ) -> anyhow::Result<DeliveryRecorded> {
        self.group_commit.ensure_open()?;
        let r = delivery.entity();
        let natural = r.key();
        let mut body = Some(String::from_utf8_lossy(body).into_owned());
        loop {
            // Resolved on every try: a merge may have moved the record meanwhile.
            let key = self.resolve_key(natural.as_str())?;
            let old = self
                .entities
                .get(&key)
                .with_context(|| format!("reading entity {key}"))?;
            let created = old.is_none();
            let mut rec = match &old {
                Some(v) => decode_record(&key, v)?,
                None => Record {
                    entity: Entity::new(&r.kind, r.user_id, &r.entity_id),
                    seq: Some(self.db.generate_id().context("generating a sequence")?),
                    raw: None,
                    fetch: None,
                    notify: None,
                },
            };
            let had_job = rec.fetch.is_some();
            let first = rec.entity.webhook_at.is_none();
            // Only a first delivery changes what the summary counts (a duplicate changes none of
            // the entity's times): the duplicate path takes no summary lock and copies nothing.
            let before = (first && !created).then(|| rec.entity.times().into_owned());
            mark_delivered(&mut rec, delivery, received_at, &mut body, fetch, &key);
            let bytes = serde_json::to_vec(&rec).context("encoding an entity")?;
            let swapped = self
                .entities
                .compare_and_swap(&key, old, Some(bytes))
                .with_context(|| format!("writing entity {key}"))?;
            if swapped.is_err() {
                // Lost a race: give the body back for the next try.
                if let Some(raw) = rec.raw.take().filter(|_| first) {
                    body = Some(raw.body);
                }
                continue;
            }
            return self.delivery_written(&key, &rec, created, had_job, before, received_at);
        }
    }

    /// A new record's entry in the newest-first index, and its sequence marked written (after
    /// the record's write: a commit that reads this mark flushes the record).
    fn index_new(&self, key: &str, seq: Option<u64>) -> anyhow::Result<()> {
        if let Some(seq) = seq {
            self.recent
                .insert(seq.to_be_bytes(), key.as_bytes())
                .context("indexing a new entity")?;
            self.written_seq.fetch_max(seq, Ordering::AcqRel);
        }
        Ok(())
    }

    /// What follows a delivery's record write that won: the newest-first index for a new
    /// entity, the fetch job handed to the journal, the summary's times, the counters.
    fn delivery_written(
        &self,
        key: &str,
        rec: &Record,
        created: bool,
        had_job: bool,
        before: Option<EntityTimes<'static>>,
        received_at: DateTime<Utc>,
    ) -> anyhow::Result<DeliveryRecorded> {
        // This delivery was the entity's first: a new record, or one only the poller had seen
        // (`before` holds its times then).
        let first = before.is_some() || created;
        if created {
            self.index_new(key, rec.seq)?;
        }
        let queued_now = !had_job && rec.fetch.is_some();
        let record_durable = rec
            .seq
            .is_none_or(|s| s <= self.durable_seq.load(Ordering::Acquire));
        let fetch_queued = match &rec.fetch {
            Some(job) if queued_now => {
                self.work_changed(
                    key,
                    rec.entity.user_id,
                    (None, rec.notify.as_ref()),
                    Some(job),
                    rec.notify.as_ref(),
                );
                Some((EntityKey::stored(key), job.next_at))
            }
            _ => None,
        };
        if first {
            self.entity_changed(before.as_ref(), Some(&rec.entity.times()));
        }
        let outcome = if first {
            self.incr(RecordCount::FirstDeliveries, 1);
            Recorded::Accepted
        } else {
            self.incr(RecordCount::Duplicates, 1);
            Recorded::Duplicate
        };
        self.last_delivery_ms
            .fetch_max(received_at.timestamp_millis(), Ordering::AcqRel);
        Ok(DeliveryRecorded {
            outcome,
            fetch_queued,
            already_durable: !first && !queued_now && record_durable,
        })
    }

    /// The entity's pending fetch, if its record holds one, with the key the record lives under.
    pub fn fetch_job(&self, key: &EntityKey) -> anyhow::Result<Option<(EntityKey, FetchJob)>> {
        /// Only the job: the rest of the record (its entity, its raw body) is skipped, not
        /// decoded (the fetcher reads this for every job it takes).
        #[derive(Deserialize)]
        struct JobOnly {
            #[serde(default)]
            fetch: Option<FetchJob>,
        }
        let Some((key, bytes)) = self.record_bytes(key.as_str())? else {
            return Ok(None);
        };
        let r: JobOnly = serde_json::from_slice(&bytes)
            .with_context(|| format!("decoding the fetch job of entity {key}"))?;
        Ok(r.fetch.map(|job| (EntityKey::stored(key), job)))
    }

    /// The key an entity key now lives under (itself unless it was merged into another).
    pub fn resolve(&self, key: &EntityKey) -> anyhow::Result<EntityKey> {
        self.resolve_key(key.as_str()).map(EntityKey::stored)
    }

    /// [`Store::resolve`] on a key as the store's trees hold it.
    pub(super) fn resolve_key(&self, key: &str) -> anyhow::Result<String> {
        let mut key = key.to_string();
        // Aliases point at a record that existed when they were written; a chain is short.
        for _ in 0..8 {
            match self
                .aliases
                .get(&key)
                .with_context(|| format!("reading alias {key}"))?
            {
                Some(to) => key = String::from_utf8_lossy(&to).into_owned(),
                None => return Ok(key),
            }
        }
        Ok(key)
    }

    /// Atomically read-modify-writes the entity at `key`, following aliases (compare-and-swap,
    /// retried on a race). `f` gets the current entity (or `None`) and returns the new one and
    /// a result; it may run more than once. The rest of the record is kept.
    pub fn update_entity<T>(
        &self,
        key: &EntityKey,
        mut f: impl FnMut(Option<Entity>) -> (Entity, T),
    ) -> anyhow::Result<T> {
        let (_, out) = self.upsert_record(key.as_str(), |current| match current {
            Some(mut r) => {
                let (entity, out) = f(Some(r.entity));
                r.entity = entity;
                (r, out)
            }
            None => {
                let (entity, out) = f(None);
                let r = Record {
                    entity,
                    seq: None,
                    raw: None,
                    fetch: None,
                    notify: None,
                };
                (r, out)
            }
        })?;
        Ok(out)
    }

    /// Atomically read-modify-writes (or creates) the record at `key`, following aliases
    /// (compare-and-swap, retried on a race). `f` gets the current record (or `None`) and returns
    /// the new one and a result; it may run more than once. A new record gets its creation
    /// sequence here. Returns the key it lives under and `f`'s result.
    pub(super) fn upsert_record<T>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<Record>) -> (Record, T),
    ) -> anyhow::Result<(String, T)> {
        self.group_commit.ensure_open()?;
        loop {
            // Resolved on every try: a merge may have moved the record meanwhile.
            let key = self.resolve_key(key)?;
            let old = self
                .entities
                .get(&key)
                .with_context(|| format!("reading entity {key}"))?;
            let current = old.as_ref().map(|v| decode_record(&key, v)).transpose()?;
            let created = current.is_none();
            let before = current.as_ref().map(|r| r.entity.times().into_owned());
            let work_before = current
                .as_ref()
                .map(|r| (r.fetch.clone(), r.notify.clone()))
                .unwrap_or_default();
            let (mut rec, out) = f(current);
            rec.entity.key = EntityKey::stored(key.clone());
            if created && rec.seq.is_none() {
                rec.seq = Some(self.db.generate_id().context("generating a sequence")?);
            }
            let bytes = serde_json::to_vec(&rec).context("encoding an entity")?;
            let swapped = self
                .entities
                .compare_and_swap(&key, old, Some(bytes))
                .with_context(|| format!("writing entity {key}"))?;
            if swapped.is_ok() {
                if created {
                    self.index_new(&key, rec.seq)?;
                }
                self.entity_changed(before.as_ref(), Some(&rec.entity.times()));
                self.record_work_changed(&key, &work_before, &rec);
                return Ok((key, out));
            }
        }
    }

    /// Read-modify-writes an existing record (compare-and-swap, retried on a race); returns the
    /// key it lives under. `f` may run more than once.
    pub(super) fn update_record(
        &self,
        key: &str,
        mut f: impl FnMut(&mut Record),
    ) -> anyhow::Result<String> {
        self.group_commit.ensure_open()?;
        loop {
            let Some((key, old)) = self.record_bytes(key)? else {
                anyhow::bail!("no entity {}", self.resolve_key(key)?);
            };
            let mut rec = decode_record(&key, &old)?;
            let before = rec.entity.times().into_owned();
            let work_before = (rec.fetch.clone(), rec.notify.clone());
            f(&mut rec);
            let bytes = serde_json::to_vec(&rec).context("encoding an entity")?;
            if self
                .entities
                .compare_and_swap(&key, Some(old), Some(bytes))
                .with_context(|| format!("writing entity {key}"))?
                .is_ok()
            {
                self.entity_changed(Some(&before), Some(&rec.entity.times()));
                self.record_work_changed(&key, &work_before, &rec);
                return Ok(key);
            }
        }
    }

    /// Journals the record's work when the write changed it (see `changes.rs`).
    fn record_work_changed(
        &self,
        key: &str,
        before: &(Option<FetchJob>, Option<Notice>),
        rec: &Record,
    ) {
        self.work_changed(
            key,
            rec.entity.user_id,
            (before.0.as_ref(), before.1.as_ref()),
            rec.fetch.as_ref(),
            rec.notify.as_ref(),
        );
    }
}

/// A delivery's marks on its entity's record: the first delivery sets the webhook's sighting,
/// timestamp, url and raw body (taken from `body`); every one is counted; a fetch job is queued
/// (with `fetch`) while the data was never fetched and none is pending.
fn mark_delivered(
    rec: &mut Record,
    delivery: &Delivery,
    received_at: DateTime<Utc>,
    body: &mut Option<String>,
    fetch: bool,
    key: &str,
) {
    let first = rec.entity.webhook_at.is_none();
    let e = &mut rec.entity;
    if first {
        e.webhook_at = Some(received_at);
        e.webhook_timestamp = Some(delivery.timestamp);
        e.url = Some(delivery.url.clone());
        rec.raw = Some(RawDelivery {
            received_at,
            body: body.take().unwrap_or_default(),
        });
    }
    if !first {
        e.note_later_delivery(received_at);
    }
    e.webhook_deliveries = e.webhook_deliveries.saturating_add(1);
    e.key = EntityKey::stored(key.to_string());
    if fetch && rec.fetch.is_none() && e.fetch_state() == FetchState::NotFetched {
        if let Some(url) = &e.url {
            rec.fetch = Some(FetchJob {
                url: url.clone(),
                user_id: e.user_id,
                event: e.kind.clone(),
                attempts: 0,
                next_at: received_at,
            });
        }
    }
}

//! Linking the two channels: a polled item and a webhook's fetched data find their entity by
//! fingerprint, and two records of one entity are merged into one (see `docs/architecture.md`).

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::*;

impl Store {
    /// Stores a polled item: links it to its entity by fingerprint (or by key), creating the
    /// entity when no channel has seen it. Not yet durable: call [`Store::durable`].
    pub fn record_poll(
        &self,
        user_id: UserId,
        id: &crate::accesslink::data::Identity,
        data: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> anyhow::Result<PollRecorded> {
        let _guard = self.link_lock.lock().map_err(poisoned)?;
        let natural = EntityKey::new(&id.kind, user_id, &id.entity_id);
        let key = match &id.fingerprint {
            Some(fp) => match self.fingerprints.get(fp).context("reading fingerprints")? {
                Some(k) => EntityKey::stored(String::from_utf8_lossy(&k)),
                None => natural,
            },
            None => natural,
        };
        // Stable while the link lock is held: only linking merges records.
        let key = self.resolve_key(key.as_str())?;
        let notice = self.new_notice(&id.kind, at)?;
        // The data first, then the record with its event (see `notices.rs`).
        self.put_data(&key, data)?;
        let (key, outcome) = self.upsert_record(&key, |current| {
            let mut r = current.unwrap_or_else(|| Record {
                entity: Entity::new(&id.kind, user_id, &id.entity_id),
                seq: None,
                raw: None,
                fetch: None,
                notify: None,
            });
            let e = &mut r.entity;
            let had_data = e.poll_at.is_some() || e.fetch_state() == FetchState::Fetched;
            let outcome = match (e.poll_at, e.webhook_at) {
                (Some(_), _) => PollRecorded::Known,
                (None, Some(_)) => PollRecorded::SeenByWebhookFirst,
                (None, None) => PollRecorded::New,
            };
            e.poll_at = e.poll_at.or(Some(at));
            e.data_available_at = e.data_available_at.or(id.available_at);
            e.fingerprint = e.fingerprint.take().or(id.fingerprint.clone());
            Self::attach_notice(&mut r, &notice, had_data);
            (r, outcome)
        })?;
        if let Some(fp) = &id.fingerprint {
            self.fingerprints
                .insert(fp.as_bytes(), key.as_bytes())
                .context("indexing a fingerprint")?;
        }
        Ok(outcome)
    }

    /// Records the data fetched for a webhook's entity: its availability, its fingerprint and,
    /// when the poller already holds the same entity under another key, merges the two records.
    pub fn record_fetched(
        &self,
        key: &EntityKey,
        id: &crate::accesslink::data::Identity,
        data: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let _guard = self.link_lock.lock().map_err(poisoned)?;
        let key = self.resolve_key(key.as_str())?;
        if let Some(fp) = &id.fingerprint {
            let other = self
                .fingerprints
                .get(fp)
                .context("reading fingerprints")?
                .map(|k| String::from_utf8_lossy(&k).into_owned());
            if let Some(other) = other {
                let other = self.resolve_key(&other)?;
                if other != key {
                    self.merge(&other, &key)?;
                }
            }
            self.fingerprints
                .insert(fp.as_bytes(), key.as_bytes())
                .context("indexing a fingerprint")?;
        }
        let notice = self.new_notice(&id.kind, Utc::now())?;
        // The data first: a crash before the record says "fetched" fetches again, harmlessly,
        // and makes the event then (see `notices.rs`).
        self.put_data(&key, data)?;
        self.update_record(&key, |r| {
            let e = &mut r.entity;
            let had_data = e.poll_at.is_some() || e.fetch_state() == FetchState::Fetched;
            e.data_available_at = id.available_at.or(e.data_available_at);
            e.fingerprint = id.fingerprint.clone().or(e.fingerprint.take());
            e.set_fetch_state(FetchState::Fetched);
            r.fetch = None;
            Self::attach_notice(r, &notice, had_data);
        })?;
        Ok(())
    }

    /// Moves the record at `from` into the one at `into`, leaving an alias behind.
    pub(super) fn merge(&self, from: &str, into: &str) -> anyhow::Result<()> {
        loop {
            let Some(old) = self.entities.get(from).context("reading a merged entity")? else {
                return Ok(());
            };
            let absorbed = decode_record(from, &old)?;
            // The alias first: from now on deliveries and polls for `from` go to `into`.
            self.aliases
                .insert(from.as_bytes(), into.as_bytes())
                .context("writing an alias")?;
            // Delete only the version read; if it changed meanwhile, merge the new version.
            let deleted = self
                .entities
                .compare_and_swap(from, Some(old), None as Option<&[u8]>)
                .context("removing a merged entity")?;
            if deleted.is_err() {
                continue;
            }
            self.entity_changed(Some(&absorbed.entity.times()), None);
            if absorbed.fetch.is_some() {
                // Counted again below if it moves into `into` (which had none).
                self.job_ended();
            }
            // The work moves with the record: the consumers' pointers to `from` follow the alias.
            let into = self.update_record(into, |r| {
                if r.entity.key != absorbed.entity.key {
                    r.entity.absorb(&absorbed.entity);
                }
                r.raw = r.raw.take().or(absorbed.raw.clone());
                r.fetch = r.fetch.take().or(absorbed.fetch.clone());
                r.notify = r.notify.take().or(absorbed.notify.clone());
            })?;
            let into = into.as_str();
            if let Some(d) = self.data.remove(from).context("moving data")? {
                if self.data.get(into)?.is_none() {
                    self.data.insert(into.as_bytes(), d)?;
                }
            }
            tracing::debug!(from, into, "linked two records of one entity");
            return Ok(());
        }
    }

    /// Marks the webhook fetch of an entity as failed for good (an entity that is gone stays gone)
    /// and ends its pending fetch; returns the key its record lives under (`None`: no record).
    /// An entity that had no data gets its event now, saying the fetch failed.
    pub fn fetch_failed(
        &self,
        key: &EntityKey,
        kind: &EventType,
        reason: &str,
    ) -> anyhow::Result<Option<EntityKey>> {
        // The event, for the sinks that want this type (the job's, which is its record's).
        let notice = self.new_notice(kind, Utc::now())?;
        match self.update_record(key.as_str(), |r| {
            let e = &mut r.entity;
            let had_data = e.poll_at.is_some() || e.fetch_state() == FetchState::Fetched;
            e.set_fetch_state(FetchState::Failed(reason.to_string()));
            r.fetch = None;
            Self::attach_notice(r, &notice, had_data);
        }) {
            Ok(at) => Ok(Some(EntityKey::stored(at))),
            Err(e) if self.entity(key)?.is_none() => {
                tracing::debug!(
                    entity = %key,
                    error = format_args!("{e:#}"),
                    "no record to mark"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Schedules the entity's pending fetch again (a retry with its new attempt count and time);
    /// returns the key its record lives under.
    pub fn reschedule_fetch(&self, key: &EntityKey, job: &FetchJob) -> anyhow::Result<EntityKey> {
        self.update_record(key.as_str(), |r| {
            r.fetch = Some(job.clone());
        })
        .map(EntityKey::stored)
        .with_context(|| format!("rescheduling the fetch of {key}"))
    }

    pub(super) fn put_data(&self, key: &str, data: &serde_json::Value) -> anyhow::Result<()> {
        self.group_commit.ensure_open()?;
        self.data
            .insert(key.as_bytes(), serde_json::to_vec(data)?)
            .with_context(|| format!("storing data of {key}"))?;
        Ok(())
    }

    /// The newest data stored for an entity.
    pub fn data(&self, key: &EntityKey) -> anyhow::Result<Option<serde_json::Value>> {
        let key = self.resolve_key(key.as_str())?;
        match self.data.get(&key)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }
}

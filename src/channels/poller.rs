//! The second channel: polling AccessLink on a schedule.
//!
//! `transactions` mode asks `GET /v3/notifications` (one request when nothing is waiting, however
//! many users there are) and, for each entry, creates the user's transaction, lists it, fetches
//! every item, stores every item durably and only then commits; on any failure the transaction is
//! left uncommitted, so its data is offered again. `list` mode reads `GET /v3/exercises` per known
//! user and fetches the ids it has not stored yet. Every request is counted by endpoint and
//! outcome. A cycle never overlaps another: a tick that finds one running is skipped and counted.

use crate::accesslink::identity::{EntityKey, EventType, UserId};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use chrono::Utc;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::accesslink::client::{ApiError, Auth, Client, Outcome};
use crate::accesslink::data;
use crate::channels::fetch_queue::FetchQueue;
use crate::channels::open_transactions::OpenTransaction;
use crate::config::PollMode;
use crate::counter;
use crate::counter::PollEndpoint;
use crate::process::Runtime;
use crate::store::{PollRecorded, Store};

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    pub requests: u64,
    /// Of those, the safety net's listings (the rest of its requests are fetches).
    pub listings: u64,
    pub items: u64,
    pub new_entities: u64,
    pub errors: u64,
    pub committed: u64,
    /// The entities this cycle saw first (no channel had them), with their availability.
    pub new_keys: Vec<(EntityKey, Option<chrono::DateTime<Utc>>)>,
}

pub struct Poller {
    pub store: Arc<Store>,
    pub client: Arc<Client>,
    pub mode: PollMode,
    pub runtime: Arc<RwLock<Runtime>>,
    /// The fetcher's queue: the adaptive auditor leaves the budget to due fetches.
    pub fetches: Arc<FetchQueue>,
    running: Mutex<()>,
    /// Rung when there is news the adaptive auditor should not sleep through (the webhook watch
    /// found the webhook unhealthy): it polls at once.
    pub alarm: tokio::sync::Notify,
    /// Which listings the safety net's audit reads for each user.
    pub(super) audit_plan: crate::channels::audit::Plan,
    /// The transaction kinds whose deprecation has been logged (once per kind per process).
    deprecations_logged: std::sync::Mutex<std::collections::HashSet<EventType>>,
}

/// What Polar says of a transaction kind's future, if anything.
fn deprecation(kind: &EventType) -> Option<&'static str> {
    match kind {
        EventType::Exercise | EventType::ActivitySummary => Some(
            "Polar marked the exercise and activity transactions deprecated on 2025-08-18 in favour of the non-transactional endpoints; they still work (`[poller] mode = \"list\"` polls GET /v3/exercises instead)",
        ),
        EventType::PhysicalInformation => Some(
            "Polar's newest spec marks the physical-information transactions deprecated in favour of GET /v3/users/physical-info; they still work",
        ),
        _ => None,
    }
}

/// What became of an open transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    Committed,
    /// Nothing to commit: empty, expired, or committed already.
    Gone,
    /// Still open: read again next cycle.
    LeftOpen,
}

/// Maps a notification `data-type` to the entity type and the list key of its transaction.
fn kind_of(data_type: &str) -> Option<(EventType, &'static str)> {
    let kind = EventType::parse(data_type);
    let list_key = match kind {
        EventType::Exercise => "exercises",
        EventType::ActivitySummary => "activity-log",
        EventType::PhysicalInformation => "physical-informations",
        _ => return None,
    };
    Some((kind, list_key))
}

impl Poller {
    pub fn new(
        store: Arc<Store>,
        client: Arc<Client>,
        mode: PollMode,
        runtime: Arc<RwLock<Runtime>>,
        fetches: Arc<FetchQueue>,
    ) -> Arc<Poller> {
        Arc::new(Poller {
            store,
            client,
            mode,
            runtime,
            fetches,
            running: Mutex::new(()),
            alarm: tokio::sync::Notify::new(),
            audit_plan: Default::default(),
            deprecations_logged: std::sync::Mutex::new(Default::default()),
        })
    }

    /// Says once per kind that the transactions it is about to use are deprecated at Polar.
    fn note_deprecation(&self, kind: &EventType) {
        let Some(note) = deprecation(kind) else {
            return;
        };
        let first = self
            .deprecations_logged
            .lock()
            .map(|mut seen| seen.insert(kind.clone()))
            .unwrap_or(false);
        if first {
            tracing::info!(kind = %kind, "{note}");
        }
    }

    /// Runs one cycle now, waiting for a running one to end first.
    pub async fn cycle(&self) -> CycleReport {
        let _guard = self.running.lock().await;
        self.cycle_locked(false).await
    }

    /// Runs one of the safety net's audits now (`channels::audit`), waiting for a running cycle
    /// to end first.
    pub async fn audit(&self) -> CycleReport {
        let _guard = self.running.lock().await;
        self.cycle_locked(true).await
    }

    /// Whether no cycle is running right now.
    pub fn is_idle(&self) -> bool {
        self.running.try_lock().is_ok()
    }

    #[tracing::instrument(name = "poll_cycle", skip_all, fields(mode = %self.mode))]
    async fn cycle_locked(&self, audit: bool) -> CycleReport {
        let started = Utc::now();
        let mut report = CycleReport::default();
        match (audit, &self.mode) {
            (true, _) => self.audit_cycle(&mut report).await,
            (false, PollMode::Transactions) => self.transactions_cycle(&mut report).await,
            (false, PollMode::List) => self.list_cycle(&mut report).await,
        }
        let store = &self.store;
        store.incr(counter::Counter::PollCycles, 1);
        if report.items == 0 {
            store.incr(counter::Counter::PollEmptyCycles, 1);
        }
        store.incr(counter::Counter::PollItems, report.items);
        store.incr(counter::Counter::PollNewEntities, report.new_entities);
        store.incr(counter::Counter::PollErrors, report.errors);
        if let Ok(mut rt) = self.runtime.write() {
            rt.last_cycle_at = Some(started);
        }
        tracing::info!(
            requests = report.requests,
            items = report.items,
            new = report.new_entities,
            errors = report.errors,
            ms = (Utc::now() - started).num_milliseconds(),
            "poll cycle"
        );
        report
    }

    /// Sends a request counted under `endpoint`.
    pub(super) async fn request<T: serde::de::DeserializeOwned>(
        &self,
        report: &mut CycleReport,
        endpoint: PollEndpoint,
        method: Method,
        url: &str,
        auth: Auth<'_>,
    ) -> Result<Option<T>, ApiError> {
        let store = &self.store;
        let attempts = std::sync::atomic::AtomicU64::new(0);
        let observe = |o: Outcome| {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            store.incr(counter::Counter::PollRequests(endpoint), 1);
            store.incr(counter::Counter::PollOutcome(o), 1);
            if o == Outcome::RateLimited {
                store.incr(counter::Counter::PollRateLimited, 1);
            }
        };
        let result = self
            .client
            .send(method.clone(), url, auth, None, &observe)
            .await;
        report.requests += attempts.load(std::sync::atomic::Ordering::Relaxed);
        let answer = result?;
        if answer.status == reqwest::StatusCode::NO_CONTENT || answer.body.is_empty() {
            return Ok(None);
        }
        answer.json(&method, url).map(Some)
    }

    pub(super) fn failed(
        &self,
        report: &mut CycleReport,
        user: Option<UserId>,
        what: &str,
        e: &ApiError,
    ) {
        report.errors += 1;
        if let (ApiError::Unauthorized { .. }, Some(u)) = (e, user) {
            if let Err(e) =
                crate::credentials::mark_disconnected(&self.store, u, "401 while polling")
            {
                tracing::error!(
                    user = u.0,
                    error = format_args!("{e:#}"),
                    "marking a user disconnected"
                );
            }
        }
        tracing::warn!(user = user.map(|u| u.0), error = %e, "{what}");
    }

    async fn transactions_cycle(&self, report: &mut CycleReport) {
        // First what an earlier cycle (or process) created and did not commit: while it is open
        // AccessLink answers 204 to a new create for the same user and kind.
        let mut still_open: HashSet<(UserId, EventType)> = HashSet::new();
        match crate::channels::open_transactions::all(&self.store) {
            Ok(open) => {
                for t in open {
                    if !self.resume(report, &t).await {
                        still_open.insert((t.user_id, t.kind));
                    }
                }
            }
            Err(e) => {
                report.errors += 1;
                tracing::error!(
                    error = format_args!("{e:#}"),
                    "reading the open transactions"
                );
            }
        }
        let url = self.client.url("/v3/notifications");
        let notes = match self
            .request(
                report,
                PollEndpoint::Notifications,
                Method::GET,
                &url,
                Auth::Basic,
            )
            .await
        {
            Ok(Some(v)) => v,
            Ok(None) => return,
            Err(e) => return self.failed(report, None, "pull notifications failed", &e),
        };
        let notes: data::Notifications = match serde_json::from_value(notes) {
            Ok(n) => n,
            Err(e) => {
                let e = ApiError::Decode {
                    method: Method::GET,
                    url,
                    message: e.to_string(),
                };
                return self.failed(report, None, "pull notifications failed", &e);
            }
        };
        for entry in notes.available_user_data {
            let Some((kind, list_key)) = kind_of(&entry.data_type) else {
                tracing::warn!(
                    user = entry.user_id.0,
                    data_type = entry.data_type,
                    "skipping a notification hookrace does not understand"
                );
                continue;
            };
            let user = entry.user_id;
            if still_open.contains(&(user, kind.clone())) {
                // Its open transaction could not be finished this cycle: a create would only
                // answer 204. The next cycle tries the open one again.
                continue;
            }
            let Some(token) = self.token(user) else {
                continue;
            };
            self.note_deprecation(&kind);
            if let Err(e) = self
                .transaction(report, user, &token, &entry.url, &kind, list_key)
                .await
            {
                self.failed(report, Some(user), "transaction left uncommitted", &e);
            }
        }
    }

    /// The access token of a connected user, if there is one.
    fn token(&self, user: UserId) -> Option<crate::config::Secret> {
        match crate::credentials::user(&self.store, user) {
            Ok(Some(u)) if u.disconnected_at.is_none() => Some(u.access_token),
            Ok(_) => {
                tracing::warn!(
                    user = user.0,
                    "data waiting for a user without a valid token"
                );
                None
            }
            Err(e) => {
                tracing::error!(error = format_args!("{e:#}"), "reading a user");
                None
            }
        }
    }

    /// Reads and commits a transaction an earlier cycle left open; false when it is still open.
    async fn resume(&self, report: &mut CycleReport, t: &OpenTransaction) -> bool {
        let Some(list_key) = kind_of(t.kind.as_str()).map(|(_, key)| key) else {
            // Never remembered by this code; nothing can read it.
            return crate::channels::open_transactions::forget(&self.store, &t.resource_uri)
                .is_ok();
        };
        let Some(token) = self.token(t.user_id) else {
            return false;
        };
        tracing::info!(
            user = t.user_id.0,
            transaction = t.resource_uri,
            "finishing a transaction left open"
        );
        let auth = Auth::Bearer(&token);
        match self
            .read_and_commit(report, t.user_id, auth, &t.resource_uri, &t.kind, list_key)
            .await
        {
            Ok(closed) => closed != Closed::LeftOpen,
            Err(e) => {
                self.failed(report, Some(t.user_id), "transaction left uncommitted", &e);
                false
            }
        }
    }

    /// One transaction: create, remember its URI, then [`Poller::read_and_commit`].
    async fn transaction(
        &self,
        report: &mut CycleReport,
        user: UserId,
        token: &crate::config::Secret,
        create_url: &str,
        kind: &EventType,
        list_key: &str,
    ) -> Result<(), ApiError> {
        let auth = Auth::Bearer(token);
        let created = self
            .request(
                report,
                PollEndpoint::CreateTransaction,
                Method::POST,
                create_url,
                auth,
            )
            .await?;
        let Some(created) = created else {
            // 204 although the notifications list data: nothing new after all, or a transaction
            // hookrace does not know is open (created by another client process, or before a
            // crash that lost its answer) and blocks new ones until AccessLink expires it.
            tracing::info!(
                user = user.0,
                kind = %kind,
                "AccessLink lists data but answered 204 to a new transaction: an open transaction hookrace does not know may block it until AccessLink expires it"
            );
            return Ok(());
        };
        let created: data::TransactionLocation =
            serde_json::from_value(created).map_err(|e| ApiError::Decode {
                method: Method::POST,
                url: create_url.to_string(),
                message: format!("the transaction's location: {e}"),
            })?;
        let open = OpenTransaction {
            resource_uri: created.resource_uri,
            user_id: user,
            kind: kind.clone(),
            created_at: Utc::now(),
        };
        if let Err(e) = crate::channels::open_transactions::remember(&self.store, &open).await {
            // Reading it now is still safe (the commit waits for the items to be durable); only
            // a failure before the commit would leave it to AccessLink's expiry.
            report.errors += 1;
            tracing::error!(
                error = format_args!("{e:#}"),
                transaction = open.resource_uri,
                "could not keep the transaction's URI"
            );
        }
        self.read_and_commit(report, user, auth, &open.resource_uri, kind, list_key)
            .await
            .map(|_| ())
    }

    /// Lists an open transaction, fetches and stores every item, makes them durable, commits,
    /// and forgets the transaction; on any failure it stays open (and remembered), so its data
    /// is read again next cycle and never deleted at the source before it is on disk here.
    #[tracing::instrument(name = "transaction", skip_all, fields(user = %user, kind = %kind))]
    async fn read_and_commit(
        &self,
        report: &mut CycleReport,
        user: UserId,
        auth: Auth<'_>,
        uri: &str,
        kind: &EventType,
        list_key: &str,
    ) -> Result<Closed, ApiError> {
        let gone = |report: &mut CycleReport| {
            if let Err(e) = crate::channels::open_transactions::forget(&self.store, uri) {
                report.errors += 1;
                tracing::error!(error = format_args!("{e:#}"), "forgetting a transaction");
            }
            Ok(Closed::Gone)
        };
        let list = match self
            .request(
                report,
                PollEndpoint::ListTransaction,
                Method::GET,
                uri,
                auth,
            )
            .await
        {
            Ok(Some(list)) => list,
            // 204: nothing in it; 404: expired or committed already. Either way nothing to commit.
            Ok(None) => return gone(report),
            Err(e) if e.status() == Some(404) => return gone(report),
            Err(e) => return Err(e),
        };
        // A commit deletes the data at Polar: a list hookrace cannot read is never committed.
        let decode = |message: String| ApiError::Decode {
            method: Method::GET,
            url: uri.to_string(),
            message,
        };
        let items = serde_json::from_value::<data::TransactionList>(list)
            .map_err(|e| decode(format!("the transaction's list: {e}")))?
            .items(list_key)
            .ok_or_else(|| decode(format!("the transaction's list has no `{list_key}` array")))?;
        let mut all_stored = true;
        for item_url in &items {
            let Some(item) = self
                .request(report, PollEndpoint::GetItem, Method::GET, item_url, auth)
                .await?
            else {
                continue;
            };
            all_stored &= self.store_item(report, user, kind, &item);
        }
        if !all_stored {
            tracing::error!(
                user = user.0,
                transaction = uri,
                "an item could not be read or stored: not committing (the transaction stays open and is read again next cycle)"
            );
            return Ok(Closed::LeftOpen);
        }
        // Every item is on disk before the commit deletes it at the source.
        if let Err(e) = self.store.durable().await {
            tracing::error!(
                error = format_args!("{e:#}"),
                "flush failed: not committing"
            );
            report.errors += 1;
            return Ok(Closed::LeftOpen);
        }
        match self
            .request::<Value>(report, PollEndpoint::Commit, Method::PUT, uri, auth)
            .await
        {
            Ok(_) => {}
            // Expired between the list and the commit: its data is offered again.
            Err(e) if e.status() == Some(404) => return gone(report),
            Err(e) => return Err(e),
        }
        report.committed += 1;
        gone(report)?;
        Ok(Closed::Committed)
    }

    /// Stores one polled item; false when the store refused it.
    fn store_item(
        &self,
        report: &mut CycleReport,
        user: UserId,
        kind: &EventType,
        item: &Value,
    ) -> bool {
        self.store_found(report, user, kind, item, None)
    }

    /// Stores one item the poll found, named by `announced` where the item does not name
    /// itself (a day's data); false when the store refused it.
    pub(super) fn store_found(
        &self,
        report: &mut CycleReport,
        user: UserId,
        kind: &EventType,
        item: &Value,
        announced: Option<&str>,
    ) -> bool {
        let id = data::identify(kind, user, item, announced);
        report.items += 1;
        if id.entity_id.is_empty() {
            report.errors += 1;
            tracing::error!(
                user = user.0,
                kind = %kind,
                "a polled item names no entity (its id or date breaks the rule for ids): not stored"
            );
            return false;
        }
        match self.store.record_poll(user, &id, item, Utc::now()) {
            Ok(PollRecorded::New) => {
                report.new_entities += 1;
                let key = EntityKey::new(&id.kind, user, &id.entity_id);
                report.new_keys.push((key, id.available_at));
                true
            }
            Ok(_) => true,
            Err(e) => {
                report.errors += 1;
                tracing::error!(error = format_args!("{e:#}"), "storing a polled item");
                false
            }
        }
    }

    /// The users polling may read (none disconnected); none, counted as an error, when the
    /// store cannot say.
    pub(super) fn connected_users(
        &self,
        report: &mut CycleReport,
    ) -> Vec<crate::credentials::StoredUser> {
        match crate::credentials::all_users(&self.store) {
            Ok(u) => u
                .into_iter()
                .filter(|u| u.disconnected_at.is_none())
                .collect(),
            Err(e) => {
                tracing::error!(error = format_args!("{e:#}"), "reading users");
                report.errors += 1;
                Vec::new()
            }
        }
    }

    async fn list_cycle(&self, report: &mut CycleReport) {
        let list_url = self.client.url("/v3/exercises");
        for u in self.connected_users(report) {
            let auth = Auth::Bearer(&u.access_token);
            let list = match self
                .request(
                    report,
                    PollEndpoint::ListExercises,
                    Method::GET,
                    &list_url,
                    auth,
                )
                .await
            {
                Ok(v) => v.unwrap_or(Value::Null),
                Err(e) => {
                    self.failed(report, Some(u.user_id), "listing exercises failed", &e);
                    continue;
                }
            };
            for ex in list.as_array().cloned().unwrap_or_default() {
                let Some(id) = ex.get("id").and_then(Value::as_str) else {
                    continue;
                };
                let key = EntityKey::new(&EventType::Exercise, u.user_id, id);
                let seen = matches!(self.store.entity(&key), Ok(Some(e)) if e.poll_at.is_some());
                if seen {
                    continue;
                }
                if !crate::accesslink::identity::is_plain_id(id) {
                    report.errors += 1;
                    tracing::warn!(
                        user = u.user_id.0,
                        id = id.chars().take(80).collect::<String>(),
                        "skipping an exercise whose id is not one AccessLink gives"
                    );
                    continue;
                }
                let url = self.client.url_of(&["exercises", id]);
                match self
                    .request(report, PollEndpoint::GetExercise, Method::GET, &url, auth)
                    .await
                {
                    Ok(Some(item)) => {
                        // List mode commits nothing: a failed store is read again next cycle.
                        self.store_item(report, u.user_id, &EventType::Exercise, &item);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.failed(report, Some(u.user_id), "fetching an exercise failed", &e)
                    }
                }
            }
        }
        if let Err(e) = self.store.durable().await {
            report.errors += 1;
            tracing::error!(error = format_args!("{e:#}"), "flushing polled items");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transaction_kind_polled_has_its_deprecation_said() {
        for data_type in ["EXERCISE", "ACTIVITY_SUMMARY", "PHYSICAL_INFORMATION"] {
            let (kind, _) = kind_of(data_type).unwrap();
            assert!(
                deprecation(&kind).is_some_and(|d| d.contains("deprecated")),
                "{kind}"
            );
        }
    }
}

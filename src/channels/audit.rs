//! The adaptive safety net's cycle: it audits the webhooks with the listings that carry the
//! webhooks' own ids, Polar's non-transactional endpoints, so an entity a webhook announced is
//! recognised by its key without being fetched again, and only what no webhook announced is
//! fetched (once, at the URL a webhook would have named, and stored under the same key).
//!
//! Before, the net audited with transactions, whose items carry integer ids that nothing maps to
//! the webhook's hashed ones: every item was fetched again to be recognised, and the net cost more
//! than the webhooks it audited. Now a cycle with nothing missing costs one request per user and
//! data type they have, and the listing of a type a user has none of is read only hourly
//! ([`RECHECK`]) and at a start.
//!
//! | data | listing | ids |
//! |---|---|---|
//! | exercises | `GET /v3/exercises` (30 days) | the hashed exercise id |
//! | daily activity | `GET /v3/users/activities` (28 days) | the day (from `start_time`) |
//! | sleep | `GET /v3/users/sleep/available` | the night's date |
//! | continuous heart rate | `GET /v3/users/continuous-heart-rate?from&to` (28 days) | the day |
//! | physical information | `GET /v3/users/physical-info` (the item itself) | its `modified` time |
//!
//! The SleepWise events have neither a listing nor transactions: the net does not audit them.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use serde_json::Value;

use crate::accesslink::client::Auth;
use crate::accesslink::data;
use crate::accesslink::identity::{EntityKey, EventType, UserId};
use crate::channels::poller::{CycleReport, Poller};
use crate::counter::PollEndpoint;

/// How often a listing that had nothing for a user is asked again.
pub const RECHECK: Duration = Duration::from_secs(3600);

/// How many days back the daily listings reach (Polar serves 28).
const DAYS: i64 = 28;

/// One listing the audit reads per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listing {
    Exercises,
    Activities,
    Sleep,
    ContinuousHeartRate,
    PhysicalInfo,
}

impl Listing {
    pub const ALL: [Listing; 5] = [
        Listing::Exercises,
        Listing::Activities,
        Listing::Sleep,
        Listing::ContinuousHeartRate,
        Listing::PhysicalInfo,
    ];

    fn kind(self) -> EventType {
        match self {
            Listing::Exercises => EventType::Exercise,
            Listing::Activities => EventType::ActivitySummary,
            Listing::Sleep => EventType::Sleep,
            Listing::ContinuousHeartRate => EventType::ContinuousHeartRate,
            Listing::PhysicalInfo => EventType::PhysicalInformation,
        }
    }

    /// The listing's path and query.
    fn path(self) -> String {
        let today = Utc::now().date_naive() + chrono::Duration::days(1);
        let from = today - chrono::Duration::days(DAYS);
        match self {
            Listing::Exercises => "/v3/exercises".into(),
            Listing::Activities => "/v3/users/activities".into(),
            Listing::Sleep => "/v3/users/sleep/available".into(),
            Listing::ContinuousHeartRate => {
                format!("/v3/users/continuous-heart-rate?from={from}&to={today}")
            }
            Listing::PhysicalInfo => "/v3/users/physical-info".into(),
        }
    }

    /// The entries of a listing's answer, each with the id it names.
    fn entries(self, answer: &Value) -> Vec<(String, Value)> {
        let array = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
        let day = |s: Option<&str>| s.map(|s| s.chars().take(10).collect::<String>());
        let named = |list: Vec<Value>, id: &dyn Fn(&Value) -> Option<String>| {
            list.into_iter()
                .filter_map(|v| id(&v).map(|id| (id, v)))
                .collect()
        };
        match self {
            Listing::Exercises => named(array(Some(answer)), &|v| {
                v.get("id").and_then(Value::as_str).map(String::from)
            }),
            Listing::Activities => named(array(Some(answer)), &|v| {
                day(v.get("start_time").and_then(Value::as_str))
            }),
            Listing::Sleep => named(array(answer.get("available")), &|v| {
                v.get("date").and_then(Value::as_str).map(String::from)
            }),
            Listing::ContinuousHeartRate => named(array(answer.get("heart_rates")), &|v| {
                let samples = v.get("heart_rate_samples").and_then(Value::as_array);
                samples.filter(|s| !s.is_empty())?;
                v.get("date").and_then(Value::as_str).map(String::from)
            }),
            Listing::PhysicalInfo if answer.is_object() => {
                let id = data::identify(&self.kind(), UserId(0), answer, None).entity_id;
                vec![(id, answer.clone())]
            }
            Listing::PhysicalInfo => Vec::new(),
        }
    }

    /// Where one entity's data is fetched, as a webhook's `url` would name it; `None` when the
    /// listing's entry is the data itself.
    fn item_segments(self, id: &str) -> Option<Vec<&str>> {
        match self {
            Listing::Exercises => Some(vec!["exercises", id]),
            Listing::Activities => Some(vec!["users", "activities", id]),
            Listing::Sleep => Some(vec!["users", "sleep", id]),
            Listing::ContinuousHeartRate => Some(vec!["users", "continuous-heart-rate", id]),
            Listing::PhysicalInfo => None,
        }
    }
}

/// When each user's listings were last read: a listing of a data type the user has (the store
/// holds any of it) is read every cycle, any other once every [`RECHECK`] (and at a start).
#[derive(Debug, Default)]
pub struct Plan(std::sync::Mutex<HashMap<(UserId, Listing), tokio::time::Instant>>);

impl Plan {
    fn due(&self, store: &crate::store::Store, user: UserId, listing: Listing) -> bool {
        let plan = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let rechecked = plan
            .get(&(user, listing))
            .is_some_and(|at| at.elapsed() < RECHECK);
        !rechecked || store.holds_any(&listing.kind(), user).unwrap_or(true)
    }

    fn listed(&self, user: UserId, listing: Listing) {
        let mut plan = self.0.lock().unwrap_or_else(|p| p.into_inner());
        plan.insert((user, listing), tokio::time::Instant::now());
    }
}

impl Poller {
    /// One audit: every connected user's listings, compared with the store by key.
    pub(super) async fn audit_cycle(&self, report: &mut CycleReport) {
        for u in self.connected_users(report) {
            for listing in Listing::ALL {
                if self.audit_plan.due(&self.store, u.user_id, listing) {
                    self.audit_listing(report, u.user_id, &u.access_token, listing)
                        .await;
                }
            }
        }
        if let Err(e) = self.store.durable().await {
            report.errors += 1;
            tracing::error!(error = format_args!("{e:#}"), "flushing audited items");
        }
    }

    /// One user's listing: what no channel has is fetched and stored as the poll's find.
    async fn audit_listing(
        &self,
        report: &mut CycleReport,
        user: UserId,
        token: &crate::config::Secret,
        listing: Listing,
    ) {
        let auth = Auth::Bearer(token);
        let url = self.client.url(&listing.path());
        let answer = match self
            .request(report, PollEndpoint::AuditList, Method::GET, &url, auth)
            .await
        {
            Ok(v) => v.unwrap_or(Value::Null),
            // Physical information answers 404 for a user who has none: nothing listed.
            Err(e) if e.status() == Some(404) => Value::Null,
            Err(e) => {
                self.failed(report, Some(user), "an audit listing failed", &e);
                return;
            }
        };
        let entries = listing.entries(&answer);
        self.audit_plan.listed(user, listing);
        let kind = listing.kind();
        for (id, entry) in entries {
            if !crate::accesslink::identity::is_plain_id(&id) {
                report.errors += 1;
                tracing::warn!(user = user.0, kind = %kind, "skipping a listed id AccessLink would not give");
                continue;
            }
            let known = matches!(
                self.store.entity(&EntityKey::new(&kind, user, &id)),
                Ok(Some(_))
            );
            if known {
                continue;
            }
            let item = match listing.item_segments(&id) {
                None => Some(entry),
                Some(segments) => {
                    let url = self.client.url_of(&segments);
                    match self
                        .request(report, PollEndpoint::AuditGet, Method::GET, &url, auth)
                        .await
                    {
                        Ok(item) => item,
                        // Deleted at Polar between the listing and now: nothing to find.
                        Err(e) if e.status() == Some(404) => None,
                        Err(e) => {
                            self.failed(
                                report,
                                Some(user),
                                "fetching an unannounced item failed",
                                &e,
                            );
                            continue;
                        }
                    }
                }
            };
            if let Some(item) = item {
                self.store_found(report, user, &kind, &item, Some(&id));
            }
        }
    }
}

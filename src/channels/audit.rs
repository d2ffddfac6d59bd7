//! The adaptive safety net's cycle: it audits the webhooks with the listings that carry the
//! webhooks' own ids, Polar's non-transactional endpoints, so an entity a webhook announced is
//! recognised by its key without being fetched again, and only what no webhook announced is
//! stored, under the same key: an exercise straight from the listing, which carries it whole;
//! the daily types by one fetch at the URL a webhook would have named.
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
use serde_json::value::RawValue;

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

    /// Whether the listing is an array of whole entries, read as raw text ([`Entry::Raw`]).
    fn is_array(self) -> bool {
        matches!(self, Listing::Exercises | Listing::Activities)
    }

    /// The entries of an array listing, each with the id it names, each kept as its raw text:
    /// a 30-day listing of a busy user is the largest answer the net reads (hundreds of
    /// exercises), and only what no webhook announced is parsed whole.
    fn raw_entries(self, list: Vec<Box<RawValue>>) -> Vec<(String, Entry)> {
        /// The fields that name an entry, of whatever type they come (an activity's `id` may be a
        /// number: it must not make the entry unreadable).
        #[derive(serde::Deserialize)]
        struct Head {
            id: Option<Value>,
            start_time: Option<Value>,
        }
        list.into_iter()
            .filter_map(|raw| {
                let head: Head = serde_json::from_str(raw.get()).ok()?;
                let id = match self {
                    Listing::Exercises => head.id?.as_str()?.to_string(),
                    _ => head.start_time?.as_str()?.chars().take(10).collect(),
                };
                Some((id, Entry::Raw(raw)))
            })
            .collect()
    }

    /// The entries of any other listing's answer, each with the id it names.
    fn json_entries(self, mut answer: Value) -> Vec<(String, Entry)> {
        let array = |v: Option<&mut Value>| match v.map(Value::take) {
            Some(Value::Array(list)) => list,
            _ => Vec::new(),
        };
        let named = |list: Vec<Value>, id: &dyn Fn(&Value) -> Option<String>| {
            list.into_iter()
                .filter_map(|v| id(&v).map(|id| (id, Entry::Json(v))))
                .collect()
        };
        match self {
            Listing::Sleep => named(array(answer.get_mut("available")), &|v| {
                v.get("date").and_then(Value::as_str).map(String::from)
            }),
            Listing::ContinuousHeartRate => named(array(answer.get_mut("heart_rates")), &|v| {
                let samples = v.get("heart_rate_samples").and_then(Value::as_array);
                samples.filter(|s| !s.is_empty())?;
                v.get("date").and_then(Value::as_str).map(String::from)
            }),
            Listing::PhysicalInfo if answer.is_object() => {
                let id = data::identify(&self.kind(), UserId(0), &answer, None).entity_id;
                vec![(id, Entry::Json(answer))]
            }
            Listing::Exercises | Listing::Activities | Listing::PhysicalInfo => Vec::new(),
        }
    }

    /// Where one entity's data is fetched, as a webhook's `url` would name it; `None` when the
    /// listing's entry is the data itself: physical information, and an exercise, which
    /// `GET /v3/exercises` lists whole, as `GET /v3/exercises/{id}` answers it (so a miss
    /// costs no request beyond the listing).
    fn item_segments(self, id: &str) -> Option<Vec<&str>> {
        match self {
            Listing::Exercises | Listing::PhysicalInfo => None,
            Listing::Activities => Some(vec!["users", "activities", id]),
            Listing::Sleep => Some(vec!["users", "sleep", id]),
            Listing::ContinuousHeartRate => Some(vec!["users", "continuous-heart-rate", id]),
        }
    }
}

/// One entry of a listing: raw text from an array listing, or JSON.
enum Entry {
    Raw(Box<RawValue>),
    Json(Value),
}

impl Entry {
    /// The entry as JSON (a raw entry parsed whole; `None` if it is not JSON after all).
    fn into_value(self) -> Option<Value> {
        match self {
            Entry::Raw(raw) => serde_json::from_str(raw.get()).ok(),
            Entry::Json(v) => Some(v),
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

    /// The listings a cycle reads in the steady state: those of a data type the user has (the
    /// others are rechecked hourly). A start reads every listing, so its cost is no measure of
    /// the cycles that follow.
    pub fn steady_listings(&self, store: &crate::store::Store) -> u64 {
        let plan = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let has_data = |(user, listing): &&(UserId, Listing)| {
            store.holds_any(&listing.kind(), *user).unwrap_or(true)
        };
        plan.keys().filter(has_data).count() as u64
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
        let endpoint = PollEndpoint::AuditList;
        let answer = if listing.is_array() {
            self.request::<Vec<Box<RawValue>>>(report, endpoint, Method::GET, &url, auth)
                .await
                .map(|list| listing.raw_entries(list.unwrap_or_default()))
        } else {
            self.request::<Value>(report, endpoint, Method::GET, &url, auth)
                .await
                .map(|v| listing.json_entries(v.unwrap_or(Value::Null)))
        };
        report.listings += 1;
        let entries = match answer {
            Ok(entries) => entries,
            // Physical information answers 404 for a user who has none: nothing listed.
            Err(e) if e.status() == Some(404) => Vec::new(),
            Err(e) => {
                self.failed(report, Some(user), "an audit listing failed", &e);
                return;
            }
        };
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
                None => entry.into_value(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(list: &str) -> Vec<Box<RawValue>> {
        serde_json::from_str(list).unwrap()
    }

    /// An array listing names each entry by its id (an exercise) or its day (an activity, whose
    /// own `id` may be a number), keeps it whole, and skips an entry that names nothing.
    #[test]
    fn array_listings_name_their_entries_and_keep_them_whole() {
        let exercises = raw(
            r#"[{"id":"aQlC83","sport":"RUNNING","duration":"PT45M"},{"sport":"no id"},{"id":7}]"#,
        );
        let named = Listing::Exercises.raw_entries(exercises);
        assert_eq!(named.len(), 1);
        let (id, entry) = named.into_iter().next().unwrap();
        assert_eq!(id, "aQlC83");
        assert_eq!(
            entry.into_value().unwrap()["duration"],
            "PT45M",
            "the entry is the exercise, whole"
        );
        let activities = raw(
            r#"[{"id":12345,"start_time":"2026-12-07T00:00:00","steps":9000},{"id":1,"steps":1}]"#,
        );
        let named = Listing::Activities.raw_entries(activities);
        let days: Vec<&str> = named.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(days, ["2026-12-07"]);
    }
}

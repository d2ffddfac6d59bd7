//! Non-transactional data: `GET /v3/exercises` (hashed ids, snake_case keys), one exercise, a day's
//! activity and physical information, readable without a transaction.

use chrono::Utc;
use serde_json::Value;
use warp::http::StatusCode;

use super::model::{Item, ItemData, Kind};
use super::*;

impl State {
    pub(super) fn exercises_of(&self, uid: u64) -> impl Iterator<Item = &Item> {
        let since = Utc::now() - chrono::Duration::days(30);
        self.items.values().filter(move |i| {
            i.user_id == uid && i.kind == Kind::Exercise && i.available_at >= since
        })
    }

    /// `GET /v3/exercises` (`?samples=true&zones=true&route=true` add those parts).
    pub(super) fn list_exercises(&self, uid: u64, query: &str, base: &str) -> SimResponse {
        let list = self
            .exercises_of(uid)
            .map(|i| self.exercise_json(i, query, base))
            .collect();
        Value::Array(list).into_ok()
    }

    /// `GET /v3/exercises/{hashed-id}` (the same query parts).
    pub(super) fn exercise(&self, uid: u64, hid: &str, query: &str, base: &str) -> SimResponse {
        let found = self
            .exercises_of(uid)
            .find(|i| matches!(&i.data, ItemData::Exercise(e) if e.hashed_id == hid));
        match found {
            Some(i) => self.exercise_json(i, query, base).into_ok(),
            None => SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such exercise"),
        }
    }

    /// A non-transactional exercise with the parts its query asks for, in the dialect the
    /// faults choose.
    fn exercise_json(&self, item: &Item, query: &str, base: &str) -> Value {
        let mut v = item.snake_json(base);
        if let ItemData::Exercise(e) = &item.data {
            super::files::add_parts(e, &mut v, query);
        }
        self.zoned_start(v)
    }

    /// An exercise rendering with the `start_time_zone` fault's zone appended to its start time.
    pub(super) fn zoned_start(&self, mut v: Value) -> Value {
        let Some(zone) = &self.settings.faults.start_time_zone else {
            return v;
        };
        for key in ["start_time", "start-time"] {
            if let Some(t) = v.get(key).and_then(Value::as_str) {
                v[key] = Value::String(format!("{t}{zone}"));
            }
        }
        v
    }

    pub(super) fn physical(&self, uid: u64, base: &str) -> SimResponse {
        let found = self
            .items
            .values()
            .rev()
            .find(|i| i.user_id == uid && i.kind == Kind::PhysicalInformation);
        match found {
            Some(i) => i.snake_json(base).into_ok(),
            // Polar documents 401, 403 and 404 here, no 204.
            None => SimResponse::error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no physical information for this user",
            ),
        }
    }

    /// A `/v3/users/…` data path the simulator does not serve (sleep, nightly recharge, …):
    /// answered as Polar answers for a user without such data, never 403 (which means "consents
    /// missing" to a client).
    pub(super) fn unserved(&self) -> SimResponse {
        // Polar's answer for no data on most of these (SleepWise documents 204 itself).
        SimResponse::empty(StatusCode::NO_CONTENT)
    }
}

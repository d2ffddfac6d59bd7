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

    pub(super) fn list_exercises(&self, uid: u64, base: &str) -> SimResponse {
        Value::Array(self.exercises_of(uid).map(|i| i.snake_json(base)).collect()).into_ok()
    }

    pub(super) fn exercise(&self, uid: u64, hid: &str, base: &str) -> SimResponse {
        let found = self
            .exercises_of(uid)
            .find(|i| matches!(&i.data, ItemData::Exercise(e) if e.hashed_id == hid));
        match found {
            Some(i) => i.snake_json(base).into_ok(),
            None => SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such exercise"),
        }
    }

    pub(super) fn activity(&self, uid: u64, date: &str, base: &str) -> SimResponse {
        // Polar documents 400 for a date that is not one, or more than 365 days old.
        let today = Utc::now().date_naive();
        match chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d") {
            Ok(d) if (today - d).num_days() <= 365 => {}
            _ => {
                return SimResponse::error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the date must be YYYY-MM-DD and at most 365 days ago",
                );
            }
        }
        // The newest version of that day's summary.
        let found = self.items.values().rev().find(|i| {
            i.user_id == uid && matches!(&i.data, ItemData::Activity(a) if a.date == date)
        });
        match found {
            Some(i) => i.snake_json(base).into_ok(),
            None => SimResponse::empty(StatusCode::NO_CONTENT),
        }
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

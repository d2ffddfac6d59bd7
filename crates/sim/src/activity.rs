//! Daily activity beyond the one day's summary: the list (`GET /v3/users/activities[?from&to]`),
//! the samples (`GET /v3/users/activities/samples[/{date}]`), the optional parts a day's summary
//! adds on request (`steps`, `activity_zones`, `inactivity_stamps`), and the deprecated activity
//! transaction's `step-samples` and `zone-samples`, with the field names of Polar's schemas.
//!
//! The samples are derived from the day's step count, so every view of one day agrees: an hour's
//! steps follow a fixed daytime profile (none at night), a zone follows the hour's steps, and an
//! hour with fewer than 100 steps in the daytime earns an inactivity stamp.

use std::collections::{BTreeMap, HashMap};

use chrono::{Duration as ChronoDuration, NaiveDate, Utc};
use serde_json::{Value, json};
use warp::http::StatusCode;

use super::model::{Activity, Item, ItemData, Kind};
use super::*;

/// The share of the day's steps in each hour (per mille; sums to 1000): none at night.
const HOURLY_PER_MILLE: [u32; 24] = [
    0, 0, 0, 0, 0, 0, 10, 60, 90, 70, 60, 80, 90, 60, 50, 60, 80, 100, 90, 60, 30, 10, 0, 0,
];

/// Each hour's steps: the cumulative profile's differences, so the hours sum to the day exactly.
fn steps_per_hour(a: &Activity) -> impl Iterator<Item = (u32, u32)> + '_ {
    let total = u64::from(a.active_steps);
    let upto = move |h: usize| {
        let per_mille: u32 = HOURLY_PER_MILLE[..h].iter().sum();
        total * u64::from(per_mille) / 1000
    };
    (0u32..24).map(move |h| {
        let h_at = h as usize;
        let steps = u32::try_from(upto(h_at + 1) - upto(h_at)).unwrap_or(u32::MAX);
        (h, steps)
    })
}

/// The activity zone an hour of `steps` falls in (Polar's `activity-zone-sample2` names).
fn zone_of(hour: u32, steps: u32) -> &'static str {
    match steps {
        _ if !(6..22).contains(&hour) => "SLEEP",
        0..100 => "SEDENTARY",
        100..500 => "LIGHT",
        500..1000 => "MODERATE",
        _ => "VIGOROUS",
    }
}

/// The flags a query turns on (`name=true`).
fn flags(query: &str) -> HashMap<String, bool> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.eq_ignore_ascii_case("true")))
        .collect()
}

fn bad_date() -> SimResponse {
    SimResponse::error(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "dates are YYYY-MM-DD, at most 365 days ago, and a range spans at most 28 days",
    )
}

/// A date at most 365 days old, as Polar takes it.
fn recent_date(s: &str) -> Option<NaiveDate> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    ((Utc::now().date_naive() - d).num_days() <= 365).then_some(d)
}

/// `from`/`to` of a list query: the last 28 days when absent; `to` defaults to today, the
/// user's today: activity is dated in the user's time zone, which may be a day ahead of UTC.
fn range(query: &str) -> Result<(NaiveDate, NaiveDate), SimResponse> {
    let q: HashMap<String, String> = serde_urlencoded::from_str(query).unwrap_or_default();
    let today = Utc::now().date_naive() + ChronoDuration::days(1);
    let from = match q.get("from") {
        None => return Ok((today - ChronoDuration::days(28), today)),
        Some(f) => recent_date(f).ok_or_else(bad_date)?,
    };
    let to = match q.get("to") {
        None => today,
        Some(t) => NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| bad_date())?,
    };
    if to < from || (to - from).num_days() > 28 {
        return Err(bad_date());
    }
    Ok((from, to))
}

impl Activity {
    /// Polar's `activity-day-with-samples`: the parts asked for (`None`: all of them).
    pub fn day_samples(&self, parts: Option<&HashMap<String, bool>>) -> Value {
        let wants = |name: &str| parts.is_none_or(|p| p.get(name).copied().unwrap_or(false));
        let mut v = json!({ "date": self.date });
        if wants("steps") {
            let samples: Vec<Value> = steps_per_hour(self)
                .map(|(h, steps)| json!({"steps": steps, "timestamp": format!("{}T{h:02}:00", self.date)}))
                .collect();
            v["steps"] = json!({
                "interval_ms": 3_600_000,
                "total_steps": self.active_steps,
                "samples": samples,
            });
        }
        if wants("activity_zones") {
            let samples: Vec<Value> = steps_per_hour(self)
                .map(|(h, steps)| json!({"zone": zone_of(h, steps), "timestamp": format!("{}T{h:02}:00", self.date)}))
                .collect();
            v["activity_zones"] = json!({ "samples": samples });
        }
        if wants("inactivity_stamps") {
            let stamps: Vec<Value> = steps_per_hour(self)
                .filter(|(h, steps)| (6..22).contains(h) && *steps < 100)
                .map(|(h, _)| json!({"stamp": format!("{}T{h:02}:30", self.date)}))
                .collect();
            v["inactivity_stamps"] = json!(stamps);
        }
        v
    }

    /// The transaction item's `step-samples` (Polar's `activity-step-samples`).
    pub fn step_samples(&self) -> Value {
        let samples: Vec<Value> = steps_per_hour(self)
            .map(|(h, steps)| json!({"steps": steps, "time": format!("{h:02}:00:00.000")}))
            .collect();
        json!({"date": self.date, "interval": 60, "samples": samples})
    }

    /// The transaction item's `zone-samples` (Polar's `activity-zone-samples`): each hour's
    /// minutes in its zone (index 0 sleep … 5 vigorous).
    pub fn zone_samples(&self) -> Value {
        let samples: Vec<Value> = steps_per_hour(self)
            .map(|(h, steps)| {
                let index = match zone_of(h, steps) {
                    "SLEEP" => 0,
                    "SEDENTARY" => 1,
                    "LIGHT" => 2,
                    "MODERATE" => 3,
                    _ => 4,
                };
                json!({
                    "activity-zones": [{"index": index, "inzone": "PT1H"}],
                    "time": format!("{h:02}:00:00.000"),
                })
            })
            .collect();
        json!({"date": self.date, "interval": 60, "samples": samples})
    }
}

fn activity_of(item: &Item) -> Option<&Activity> {
    match &item.data {
        ItemData::Activity(a) => Some(a),
        _ => None,
    }
}

impl State {
    /// The newest version of each of the user's days in `from..=to`, oldest day first.
    fn activity_days(&self, uid: u64, from: NaiveDate, to: NaiveDate) -> Vec<(&Item, &Activity)> {
        let mut newest: BTreeMap<&str, (&Item, &Activity)> = BTreeMap::new();
        for i in self.items.values().filter(|i| i.user_id == uid) {
            let Some(a) = activity_of(i) else { continue };
            let Ok(d) = NaiveDate::parse_from_str(&a.date, "%Y-%m-%d") else {
                continue;
            };
            if d >= from && d <= to {
                newest.insert(&a.date, (i, a));
            }
        }
        newest.into_values().collect()
    }

    /// A day's summary as the non-transactional endpoints render it, with the sample parts the
    /// query asks for under `samples`.
    fn activity_summary(&self, item: &Item, a: &Activity, query: &str, base: &str) -> Value {
        let mut v = item.snake_json(base);
        let asked = flags(query);
        if ["steps", "activity_zones", "inactivity_stamps"]
            .iter()
            .any(|k| asked.get(*k).copied().unwrap_or(false))
        {
            v["samples"] = a.day_samples(Some(&asked));
        }
        v
    }

    /// `GET /v3/users/activities/{date}` (204 for a day without data).
    pub(super) fn activity(&self, uid: u64, date: &str, query: &str, base: &str) -> SimResponse {
        let Some(d) = recent_date(date) else {
            return bad_date();
        };
        match self.activity_days(uid, d, d).first() {
            Some((i, a)) => self.activity_summary(i, a, query, base).into_ok(),
            None => SimResponse::empty(StatusCode::NO_CONTENT),
        }
    }

    /// The days of a list query's range, each as `render` makes it: 200 with a list (empty when
    /// there is nothing), or the 400 of a bad range.
    fn days_in_range(
        &self,
        uid: u64,
        query: &str,
        render: impl Fn(&Item, &Activity) -> Value,
    ) -> SimResponse {
        match range(query) {
            Ok((from, to)) => {
                let days = self.activity_days(uid, from, to);
                Value::Array(days.into_iter().map(|(i, a)| render(i, a)).collect()).into_ok()
            }
            Err(r) => r,
        }
    }

    /// `GET /v3/users/activities[?from&to]`.
    pub(super) fn activities(&self, uid: u64, query: &str, base: &str) -> SimResponse {
        self.days_in_range(uid, query, |i, a| self.activity_summary(i, a, query, base))
    }

    /// `GET /v3/users/activities/samples[?from&to]` (a list) or `…/samples/{date}` (one day,
    /// 204 without data).
    pub(super) fn activity_samples(
        &self,
        uid: u64,
        date: Option<&str>,
        query: &str,
    ) -> SimResponse {
        match date {
            Some(date) => {
                let Some(d) = recent_date(date) else {
                    return bad_date();
                };
                match self.activity_days(uid, d, d).first() {
                    Some((_, a)) => a.day_samples(None).into_ok(),
                    None => SimResponse::empty(StatusCode::NO_CONTENT),
                }
            }
            None => self.days_in_range(uid, query, |_, a| a.day_samples(None)),
        }
    }

    /// An activity transaction item's `step-samples` or `zone-samples`; 204 when there is no
    /// such item in an open transaction, as Polar documents for these calls.
    pub(super) fn activity_item_samples(
        &self,
        uid: u64,
        tid: &str,
        iid: &str,
        what: &str,
    ) -> SimResponse {
        let found = self
            .transaction_item(uid, tid, iid)
            .filter(|(_, i)| i.kind == Kind::Activity)
            .and_then(|(_, i)| activity_of(i));
        match (found, what) {
            (Some(a), "step-samples") => a.step_samples().into_ok(),
            (Some(a), "zone-samples") => a.zone_samples().into_ok(),
            (None, "step-samples" | "zone-samples") => SimResponse::empty(StatusCode::NO_CONTENT),
            _ => SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such resource"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_view_of_a_day_agrees_on_its_steps() {
        assert_eq!(HOURLY_PER_MILLE.iter().sum::<u32>(), 1000);
        let a = Activity {
            date: "2026-11-30".into(),
            created: Utc::now(),
            calories: 2000,
            active_calories: 500,
            duration_s: 3600,
            active_steps: 10_007,
        };
        let day = a.day_samples(None);
        let hourly: u64 = day["steps"]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["steps"].as_u64().unwrap())
            .sum();
        assert_eq!(hourly, 10_007);
        assert_eq!(day["steps"]["total_steps"], 10_007);
        let tx: u64 = a.step_samples()["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["steps"].as_u64().unwrap())
            .sum();
        assert_eq!(tx, 10_007);
        // Asked for steps only, a summary's samples carry only steps.
        let only = a.day_samples(Some(&flags("steps=true")));
        assert!(only.get("steps").is_some() && only.get("activity_zones").is_none());
    }
}

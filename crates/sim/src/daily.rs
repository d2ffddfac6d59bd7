//! The daily data webhooks announce beside exercises and activity: a night's sleep (with its
//! Nightly Recharge, measured over the same night) and a day's continuous heart rate. They are
//! served only non-transactionally, as Polar serves them: `/v3/users/sleep[/available|/{date}]`,
//! `/v3/users/nightly-recharge[/{date}]`, `/v3/users/continuous-heart-rate[/{date}]`, with the
//! field names of Polar's schemas (`sleep`, `nightly-recharge`, `continuous-heartrate`).
//!
//! SleepWise™ periods (alertness, circadian bedtime) are derived from each night once a user has
//! five, as Polar computes them after five days of sleep data, and served at
//! `/v3/users/sleepwise/{alertness,circadian-bedtime}[/date?from=…&to=…]`.
//!
//! Choices where Polar's record is silent: a night belongs to the date its sleep ended; samples
//! are every 5 minutes; a night's SleepWise periods are announced with `from` = `to` = its date.

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};
use warp::http::StatusCode;

use super::model::{HeartRateDay, Item, ItemData, Kind, Night};
use super::*;

fn zoned(t: NaiveDateTime, offset_minutes: i32) -> String {
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let m = offset_minutes.unsigned_abs();
    format!(
        "{}{sign}{:02}:{:02}",
        t.format("%Y-%m-%dT%H:%M:%S"),
        m / 60,
        m % 60
    )
}

/// `"HH:MM"` → value, every 5 minutes from `from` for `minutes` (a 5-minute sample map).
fn samples(from: NaiveDateTime, minutes: i64, value: impl Fn(i64) -> Value) -> Value {
    let mut map = Map::new();
    for k in (0..minutes).step_by(5) {
        let at = from + ChronoDuration::minutes(k);
        map.insert(at.format("%H:%M").to_string(), value(k));
    }
    Value::Object(map)
}

impl Night {
    /// Polar's `sleep` object.
    pub fn sleep_json(&self, polar_user: &str) -> Value {
        let asleep = self.light + self.deep + self.rem;
        let awake = u32::try_from((self.end - self.start).num_seconds().max(0))
            .unwrap_or(u32::MAX)
            .saturating_sub(asleep);
        let minutes = (self.end - self.start).num_minutes();
        json!({
            "polar_user": polar_user,
            "date": self.date,
            "sleep_start_time": zoned(self.start, self.utc_offset_minutes),
            "sleep_end_time": zoned(self.end, self.utc_offset_minutes),
            "device_id": self.device_id,
            "continuity": 2.0 + f64::from(self.score % 30) / 10.0,
            "continuity_class": 2 + self.score % 3,
            "light_sleep": self.light,
            "deep_sleep": self.deep,
            "rem_sleep": self.rem,
            "unrecognized_sleep_stage": 0,
            "sleep_score": self.score,
            "total_interruption_duration": awake,
            "sleep_charge": 3,
            "sleep_goal": 28_800,
            "sleep_rating": 0,
            "short_interruption_duration": awake / 2,
            "long_interruption_duration": awake - awake / 2,
            "sleep_cycles": 4 + self.score % 3,
            "group_duration_score": f64::from(self.score),
            "group_solidity_score": f64::from(self.score.saturating_sub(5)),
            "group_regeneration_score": f64::from(self.score.saturating_sub(10)),
            "hypnogram": samples(self.start, minutes, |k| json!([2, 3, 4, 1][(k / 5 % 4) as usize])),
            "heart_rate_samples": samples(self.start, minutes, |k| json!(self.heart_rate_avg as i64 + (k / 5) % 5 - 2)),
        })
    }

    /// Polar's `available-sleep` entry.
    pub fn available_json(&self) -> Value {
        json!({
            "date": self.date,
            "start_time": zoned(self.start, self.utc_offset_minutes),
            "end_time": zoned(self.end, self.utc_offset_minutes),
        })
    }

    /// Polar's `nightly-recharge` object (the first four hours of the night).
    pub fn recharge_json(&self, polar_user: &str) -> Value {
        json!({
            "polar_user": polar_user,
            "date": self.date,
            "heart_rate_avg": self.heart_rate_avg,
            "beat_to_beat_avg": 60_000 / self.heart_rate_avg.max(1),
            "heart_rate_variability_avg": self.hrv_avg,
            "breathing_rate_avg": 14.1,
            "nightly_recharge_status": 1 + self.score % 6,
            "ans_charge": f64::from(self.hrv_avg % 20) - 10.0,
            "ans_charge_status": 1 + self.hrv_avg % 5,
            "hrv_samples": samples(self.start, 240, |k| json!(self.hrv_avg as i64 + (k / 5) % 3 - 1)),
            "breathing_samples": samples(self.start, 240, |k| json!(13.4 + ((k / 5) % 3) as f64 / 10.0)),
        })
    }
}

fn utc(t: NaiveDateTime, offset_minutes: i32) -> String {
    (t - ChronoDuration::minutes(i64::from(offset_minutes)))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

impl Night {
    /// Polar's `alertness` period: the day after this night (UTC times, no zone, as Polar's).
    pub fn alertness_json(&self) -> Value {
        let off = self.utc_offset_minutes;
        let day_end = self.end + ChronoDuration::hours(16);
        let hourly: Vec<Value> = (0..16)
            .map(|h| {
                let from = self.end + ChronoDuration::hours(h);
                const LEVELS: [&str; 4] = [
                    "ALERTNESS_LEVEL_LOW",
                    "ALERTNESS_LEVEL_HIGH",
                    "ALERTNESS_LEVEL_VERY_HIGH",
                    "ALERTNESS_LEVEL_HIGH",
                ];
                let level = LEVELS[(h % 4) as usize];
                json!({
                    "validity": "VALIDITY_ESTIMATE",
                    "alertness_level": level,
                    "start_time": utc(from, off),
                    "end_time": utc(from + ChronoDuration::hours(1), off),
                })
            })
            .collect();
        json!({
            "grade": f64::from(self.score) / 10.0,
            "grade_validity_seconds": 57_600,
            "grade_type": "GRADE_TYPE_PRIMARY",
            "grade_classification": if self.score >= 80 { "GRADE_CLASSIFICATION_STRONG" } else { "GRADE_CLASSIFICATION_FAIR" },
            "validity": "VALIDITY_ESTIMATE",
            "sleep_inertia": "SLEEP_INERTIA_MILD",
            "sleep_type": "SLEEP_TYPE_PRIMARY",
            "result_type": "ALERTNESS_TYPE_HISTORY",
            "period_start_time": utc(self.start, off),
            "period_end_time": utc(day_end, off),
            "sleep_period_start_time": utc(self.start, off),
            "sleep_period_end_time": utc(self.end, off),
            "sleep_timezone_offset_minutes": off,
            "hourly_data": hourly,
        })
    }

    /// Polar's `circadian-bedtime` period for the night after this one.
    pub fn bedtime_json(&self) -> Value {
        let off = self.utc_offset_minutes;
        let start = self.start + ChronoDuration::hours(24);
        let end = self.end + ChronoDuration::hours(24);
        json!({
            "validity": "VALIDITY_ESTIMATE",
            "quality": "CIRCADIAN_BEDTIME_QUALITY_CLEARLY_RECOGNIZABLE",
            "result_type": "CIRCADIAN_BEDTIME_TYPE_PREDICTION",
            "period_start_time": utc(start, off),
            "period_end_time": utc(end, off),
            "preferred_sleep_period_start_time": utc(start, off),
            "preferred_sleep_period_end_time": utc(end, off),
            "sleep_gate_start_time": utc(start - ChronoDuration::minutes(15), off),
            "sleep_gate_end_time": utc(start + ChronoDuration::minutes(15), off),
            "sleep_timezone_offset_minutes": off,
        })
    }
}

impl HeartRateDay {
    /// Polar's `continuous-heartrate` object.
    pub fn json(&self, polar_user: &str) -> Value {
        let mut v = self.range_json();
        v["polar_user"] = json!(polar_user);
        v
    }

    /// One day of a range answer's `heart_rates`: its date and samples.
    pub fn range_json(&self) -> Value {
        json!({
            "date": self.date,
            "heart_rate_samples": self
                .samples
                .iter()
                .map(|(t, hr)| json!({"heart_rate": hr, "sample_time": t}))
                .collect::<Vec<_>>(),
        })
    }
}

/// A night for a user whose local time is `local_now`, ending now.
pub fn new_night(
    local_now: NaiveDateTime,
    offset: i32,
    device_id: String,
    draw: &mut impl FnMut(u32, u32) -> u32,
) -> Night {
    let end = local_now;
    let length = draw(6 * 3600, 9 * 3600);
    let start = end - ChronoDuration::seconds(i64::from(length));
    let deep = length / 5;
    let rem = length / 5;
    let light = length - deep - rem - draw(300, 1800).min(length / 10);
    Night {
        date: end.date().format("%Y-%m-%d").to_string(),
        start,
        end,
        utc_offset_minutes: offset,
        device_id,
        light,
        deep,
        rem,
        score: draw(55, 95),
        heart_rate_avg: draw(48, 66),
        hrv_avg: draw(20, 70),
    }
}

/// The day's samples up to `local_now`, every 5 minutes.
pub fn new_heart_rate_day(
    local_now: NaiveDateTime,
    draw: &mut impl FnMut(u32, u32) -> u32,
) -> HeartRateDay {
    let midnight = local_now.date().and_hms_opt(0, 0, 0).unwrap_or(local_now);
    let minutes = (local_now - midnight).num_minutes().max(5);
    let base = draw(55, 75);
    let samples = (0..minutes)
        .step_by(5)
        .map(|k| {
            let at = midnight + ChronoDuration::minutes(k);
            (
                at.format("%H:%M:%S").to_string(),
                base + u32::try_from(k / 5 % 7).unwrap_or(0),
            )
        })
        .collect();
    HeartRateDay {
        date: local_now.date().format("%Y-%m-%d").to_string(),
        samples,
    }
}

/// A date path segment as Polar takes it, or the 400 Polar documents.
fn date(s: &str) -> Result<NaiveDate, SimResponse> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        SimResponse::error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "invalid date: use YYYY-MM-DD",
        )
    })
}

fn not_found(what: &str) -> SimResponse {
    SimResponse::error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("no {what} found for date"),
    )
}

impl State {
    fn daily(&self, uid: u64, kind: Kind, since: DateTime<Utc>) -> impl Iterator<Item = &Item> {
        self.items
            .values()
            .filter(move |i| i.user_id == uid && i.kind == kind && i.available_at >= since)
    }

    fn nights(&self, uid: u64) -> Vec<&Night> {
        let since = Utc::now() - ChronoDuration::days(28);
        self.daily(uid, Kind::Sleep, since)
            .filter_map(|i| match &i.data {
                ItemData::Sleep(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    /// `GET /v3/users/sleep[/available|/{date}]`, `GET /v3/users/nightly-recharge[/{date}]`.
    pub(super) fn sleep(&self, uid: u64, rest: &[&str], base: &str) -> SimResponse {
        let user = format!("{base}/v3/users/{uid}");
        let nights = self.nights(uid);
        match rest {
            ["sleep"] => json!({"nights": nights.iter().map(|n| n.sleep_json(&user)).collect::<Vec<_>>()}).into_ok(),
            ["sleep", "available"] => json!({"available": nights.iter().map(|n| n.available_json()).collect::<Vec<_>>()}).into_ok(),
            ["nightly-recharge"] => json!({"recharges": nights.iter().map(|n| n.recharge_json(&user)).collect::<Vec<_>>()}).into_ok(),
            [what, day] => {
                let day = match date(day) {
                    Ok(d) => d.format("%Y-%m-%d").to_string(),
                    Err(r) => return r,
                };
                match nights.iter().rev().find(|n| n.date == day) {
                    Some(n) if *what == "sleep" => n.sleep_json(&user).into_ok(),
                    Some(n) => n.recharge_json(&user).into_ok(),
                    None => not_found(what),
                }
            }
            _ => SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such resource"),
        }
    }

    /// `GET /v3/users/continuous-heart-rate/{date}`, or `?from=…&to=…` for a range: one object
    /// whose `heart_rates` lists the days found, the newest version of each.
    pub(super) fn heart_rate(
        &self,
        uid: u64,
        day: Option<&str>,
        query: &str,
        base: &str,
    ) -> SimResponse {
        let user = format!("{base}/v3/users/{uid}");
        let days: Vec<&HeartRateDay> = self
            .daily(uid, Kind::ContinuousHeartRate, DateTime::<Utc>::MIN_UTC)
            .filter_map(|i| match &i.data {
                ItemData::HeartRate(d) => Some(d),
                _ => None,
            })
            .collect();
        match day {
            Some(day) => {
                let day = match date(day) {
                    Ok(d) => d.format("%Y-%m-%d").to_string(),
                    Err(r) => return r,
                };
                match days.iter().rev().find(|d| d.date == day) {
                    Some(d) => d.json(&user).into_ok(),
                    None => not_found("continuous heart rate"),
                }
            }
            None => {
                let q: std::collections::HashMap<String, String> =
                    serde_urlencoded::from_str(query).unwrap_or_default();
                let (Some(from), Some(to)) = (q.get("from"), q.get("to")) else {
                    return SimResponse::error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "from and to are required",
                    );
                };
                let (from, to) = match (date(from), date(to)) {
                    (Ok(f), Ok(t)) => (
                        f.format("%Y-%m-%d").to_string(),
                        t.format("%Y-%m-%d").to_string(),
                    ),
                    (Err(r), _) | (_, Err(r)) => return r,
                };
                let mut newest: std::collections::BTreeMap<&str, &HeartRateDay> =
                    Default::default();
                for d in days.iter().filter(|d| d.date >= from && d.date <= to) {
                    newest.insert(&d.date, d);
                }
                // One object, `{"heart_rates": [{date, heart_rate_samples}, …]}`, as observed
                // live (never a bare array).
                let days: Vec<Value> = newest.values().map(|d| d.range_json()).collect();
                json!({ "heart_rates": days }).into_ok()
            }
        }
    }

    /// The user's newest night, if any.
    pub(super) fn newest_night(&self, uid: u64) -> Option<Night> {
        self.nights(uid).last().map(|n| (*n).clone())
    }

    /// How many nights the user has in the last 28 days.
    pub(super) fn night_count(&self, uid: u64) -> usize {
        self.nights(uid).len()
    }

    /// `GET /v3/users/sleepwise/{alertness,circadian-bedtime}[/date?from=…&to=…]`: the periods
    /// of the last 28 days, or of a range of at most 28 days; 204 when there are none.
    pub(super) fn sleepwise(&self, uid: u64, rest: &[&str], query: &str) -> SimResponse {
        let kind = match rest.first() {
            Some(&"alertness") => Kind::SleepWiseAlertness,
            Some(&"circadian-bedtime") => Kind::SleepWiseCircadianBedtime,
            _ => return SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such resource"),
        };
        // The user's today, not UTC's: a night is dated in the user's time zone, which may be
        // a day ahead of UTC (a user at +05:30 is on tomorrow from 18:30 UTC).
        let today = Utc::now().date_naive() + ChronoDuration::days(1);
        let (from, to) = match rest.get(1) {
            None => (today - ChronoDuration::days(28), today),
            Some(&"date") => {
                let q: std::collections::HashMap<String, String> =
                    serde_urlencoded::from_str(query).unwrap_or_default();
                let range = q
                    .get("from")
                    .zip(q.get("to"))
                    .map(|(f, t)| (date(f), date(t)));
                match range {
                    Some((Ok(f), Ok(t))) if f <= t && (t - f).num_days() <= 28 => (f, t),
                    _ => {
                        return SimResponse::error(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            "from and to must be dates at most 28 days apart",
                        );
                    }
                }
            }
            Some(_) => {
                return SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such resource");
            }
        };
        let periods: Vec<Value> = self
            .daily(uid, kind, DateTime::<Utc>::MIN_UTC)
            .filter_map(|i| match &i.data {
                ItemData::SleepWise(n) => {
                    let d = NaiveDate::parse_from_str(&n.date, "%Y-%m-%d").ok()?;
                    (d >= from && d <= to).then(|| match kind {
                        Kind::SleepWiseAlertness => n.alertness_json(),
                        _ => n.bedtime_json(),
                    })
                }
                _ => None,
            })
            .collect();
        if periods.is_empty() {
            SimResponse::empty(StatusCode::NO_CONTENT)
        } else {
            Value::Array(periods).into_ok()
        }
    }
}

/// One day of cardio load without data, as Polar lists every day of a range "even if the cardio
/// load values cannot be calculated" (the field names follow clients of the real service; the
/// simulator computes no cardio load).
fn cardio_load_not_available(day: NaiveDate) -> Value {
    json!({
        "date": day.format("%Y-%m-%d").to_string(),
        "cardio_load_status": "LOAD_STATUS_NOT_AVAILABLE",
        "cardio_load": 0.0,
        "strain": 0.0,
        "tolerance": 0.0,
        "cardio_load_ratio": 0.0,
    })
}

/// `GET /v3/users/cardio-load[/{date}|/date?from&to|/period/days/{n}|/period/months/{n}]`:
/// every day of the range, each `LOAD_STATUS_NOT_AVAILABLE`; 400 for what Polar refuses.
pub(super) fn cardio_load(rest: &[&str], query: &str) -> SimResponse {
    let today = Utc::now().date_naive();
    let bad = || SimResponse::error(StatusCode::BAD_REQUEST, "BadRequest", "invalid request");
    let (from, to) = match rest {
        [] => (today - ChronoDuration::days(27), today),
        ["date"] => {
            let q: std::collections::HashMap<String, String> =
                serde_urlencoded::from_str(query).unwrap_or_default();
            match q
                .get("from")
                .zip(q.get("to"))
                .map(|(f, t)| (date(f), date(t)))
            {
                Some((Ok(f), Ok(t))) if f <= t && (t - f).num_days() <= 366 => (f, t),
                _ => return bad(),
            }
        }
        ["period", "days", n] => match n.parse::<i64>() {
            Ok(n @ 1..=180) => (today - ChronoDuration::days(n - 1), today),
            _ => return bad(),
        },
        ["period", "months", n] => match n.parse::<i64>() {
            Ok(n @ 1..=6) => (today - ChronoDuration::days(30 * n - 1), today),
            _ => return bad(),
        },
        [day] => match date(day) {
            Ok(d) => (d, d),
            Err(r) => return r,
        },
        _ => return SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such resource"),
    };
    let days: Vec<Value> = from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(cardio_load_not_available)
        .collect();
    Value::Array(days).into_ok()
}

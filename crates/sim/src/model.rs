//! The simulator's data: users, exercises, activity summaries and physical information, and how
//! each is rendered in AccessLink's two dialects (transactional: hyphenated keys and integer ids;
//! non-transactional: snake_case keys and hashed string ids). One exercise renders identically in
//! both where a client must match them: start time, UTC offset, duration and device id.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use accesslink::identity::EventType;

/// The kinds of data the simulator makes: the three with transactions, and the daily data
/// served only non-transactionally (see `daily.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Exercise,
    Activity,
    PhysicalInformation,
    Sleep,
    ContinuousHeartRate,
    /// Derived from the nights once a user has five (SleepWise™).
    SleepWiseAlertness,
    SleepWiseCircadianBedtime,
}

impl Kind {
    /// The `{kind}` path segment of `/v3/users/{id}/{kind}-transactions` (the daily kinds have
    /// no transactions: their segment names no transaction route).
    pub fn segment(self) -> &'static str {
        match self {
            Kind::Exercise => "exercise",
            Kind::Activity => "activity",
            Kind::PhysicalInformation => "physical-information",
            Kind::Sleep => "sleep",
            Kind::ContinuousHeartRate => "continuous-heart-rate",
            Kind::SleepWiseAlertness => "sleepwise/alertness",
            Kind::SleepWiseCircadianBedtime => "sleepwise/circadian-bedtime",
        }
    }
    pub fn from_segment(s: &str) -> Option<Kind> {
        match s {
            "exercise" => Some(Kind::Exercise),
            "activity" => Some(Kind::Activity),
            "physical-information" => Some(Kind::PhysicalInformation),
            _ => None,
        }
    }
    /// The list key of a transaction and the item path segment.
    pub fn list_key(self) -> &'static str {
        match self {
            Kind::Exercise => "exercises",
            Kind::Activity => "activity-log",
            Kind::PhysicalInformation => "physical-informations",
            Kind::Sleep => "nights",
            Kind::ContinuousHeartRate => "heart_rate_samples",
            Kind::SleepWiseAlertness => "alertness",
            Kind::SleepWiseCircadianBedtime => "circadian-bedtime",
        }
    }
    pub fn item_segment(self) -> &'static str {
        match self {
            Kind::Exercise => "exercises",
            Kind::Activity => "activities",
            Kind::PhysicalInformation => "physical-informations",
            Kind::Sleep => "sleep",
            Kind::ContinuousHeartRate => "continuous-heart-rate",
            Kind::SleepWiseAlertness => "alertness",
            Kind::SleepWiseCircadianBedtime => "circadian-bedtime",
        }
    }
    /// The pull-notification `data-type` and webhook event.
    pub fn event_type(self) -> EventType {
        match self {
            Kind::Exercise => EventType::Exercise,
            Kind::Activity => EventType::ActivitySummary,
            Kind::PhysicalInformation => EventType::PhysicalInformation,
            Kind::Sleep => EventType::Sleep,
            Kind::ContinuousHeartRate => EventType::ContinuousHeartRate,
            Kind::SleepWiseAlertness => EventType::SleepWiseAlertness,
            Kind::SleepWiseCircadianBedtime => EventType::SleepWiseCircadianBedtime,
        }
    }
    /// Every kind (what `/sim/inject` takes).
    pub const ALL: [Kind; 5] = [
        Kind::Exercise,
        Kind::Activity,
        Kind::PhysicalInformation,
        Kind::Sleep,
        Kind::ContinuousHeartRate,
    ];
    /// The kinds with transactions and pull notifications.
    pub const TRANSACTIONAL: [Kind; 3] =
        [Kind::Exercise, Kind::Activity, Kind::PhysicalInformation];
}

/// A registered (or not yet registered) user of the simulated client.
#[derive(Debug, Clone)]
pub struct User {
    pub id: u64,
    pub token: String,
    pub registered: bool,
    pub member_id: String,
    pub registration_date: DateTime<Utc>,
    /// When false, data endpoints answer 403 (mandatory consents not accepted).
    pub consents: bool,
    /// When false, `POST /v3/users` answers 204 ("user not found" in Polar's newest spec).
    pub found: bool,
    /// Deleted or disconnected: the token answers 401.
    pub revoked: bool,
    /// The API client the user connected to (0: the simulator's own; a student's in class mode).
    pub client: usize,
}

impl User {
    pub fn json(&self) -> Value {
        json!({
            "polar-user-id": self.id,
            "member-id": self.member_id,
            "registration-date": self.registration_date.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "first-name": "Sim",
            "last-name": format!("User {}", self.id),
            "birthdate": "1990-01-01",
            "gender": "MALE",
            "weight": 70.0,
            "height": 180.0,
            // Null without partner questions, as the schema says ("null if there are no
            // required fields defined by the partner").
            "extra-info": null,
        })
    }
}

/// One transaction item: an exercise, one version of a day's activity, or a physical record.
#[derive(Debug, Clone)]
pub struct Item {
    /// The transactional integer id.
    pub id: u64,
    pub user_id: u64,
    pub kind: Kind,
    /// When it became available to the client.
    pub available_at: DateTime<Utc>,
    /// Committed by the client: gone from transactions for good.
    pub committed: bool,
    pub data: ItemData,
}

#[derive(Debug, Clone)]
pub enum ItemData {
    Exercise(Exercise),
    Activity(Activity),
    Physical(Physical),
    Sleep(Night),
    HeartRate(HeartRateDay),
    /// A SleepWise™ period derived from a night (alertness or circadian bedtime, by the kind).
    SleepWise(Night),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exercise {
    /// The non-transactional hashed id (what a webhook carries as `entity_id`).
    pub hashed_id: String,
    pub device: String,
    pub device_id: String,
    /// Local wall-clock start.
    pub start_time: NaiveDateTime,
    pub utc_offset_minutes: i32,
    /// With milliseconds: Polar renders them in the transactional dialect.
    pub duration_ms: u64,
    pub sport: String,
    pub calories: u32,
    pub distance_m: f64,
    pub hr_avg: u32,
    pub hr_max: u32,
}

impl Exercise {
    /// A plausible training load: 1.3 per minute.
    fn training_load(&self) -> f64 {
        (self.duration_ms as f64 / 60_000.0 * 1.3 * 100.0).round() / 100.0
    }

    /// A plausible running index for runs (a number, as the schema has it), 0 otherwise.
    fn running_index(&self) -> u32 {
        if self.sport == "RUNNING" {
            40 + self.hr_avg % 20
        } else {
            0
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Activity {
    /// The day, `YYYY-MM-DD`.
    pub date: String,
    /// When the day's summary was first created (the same for every later version).
    pub created: DateTime<Utc>,
    pub calories: u32,
    pub active_calories: u32,
    pub duration_s: u32,
    pub active_steps: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Physical {
    pub weight: f64,
    pub resting_heart_rate: u32,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An ISO-8601 duration with milliseconds, as Polar's transactional answers carry it
/// (`PT44M5.252S`); whole seconds are written without a fraction.
pub fn iso_duration_ms(total_ms: u64) -> String {
    let (whole, ms) = (total_ms / 1000, total_ms % 1000);
    let seconds = match ms {
        0 => format!("{}", whole % 60),
        ms => format!("{}.{ms:03}", whole % 60),
    };
    iso(
        whole / 3600,
        whole / 60 % 60,
        &seconds,
        whole % 60 > 0 || ms > 0,
    )
}

/// The same to the whole second, as real non-transactional answers carry it (`PT2H44M45S`; the
/// spec's example `PT2H44M` has minute precision, but live answers keep the seconds).
pub fn iso_duration_seconds(total_ms: u64) -> String {
    iso_duration(u32::try_from(total_ms / 1000).unwrap_or(u32::MAX))
}

/// ISO-8601 duration as AccessLink writes it: `PT2H44M45S`.
pub fn iso_duration(total_s: u32) -> String {
    let total_s = u64::from(total_s);
    let s = total_s % 60;
    iso(total_s / 3600, total_s / 60 % 60, &s.to_string(), s > 0)
}

/// `PT{h}H{m}M{seconds}S`, leaving out zero hours and minutes, and the seconds when zero
/// (unless nothing else is written: `PT0S`).
fn iso(h: u64, m: u64, seconds: &str, seconds_nonzero: bool) -> String {
    let mut out = String::from("PT");
    if h > 0 {
        out += &format!("{h}H");
    }
    if m > 0 {
        out += &format!("{m}M");
    }
    if seconds_nonzero || (h == 0 && m == 0) {
        out += &format!("{seconds}S");
    }
    out
}

/// A short mixed-case id derived from the integer id and the seed, like Polar's `aQlC83`.
pub fn hashed_id(seed: u64, id: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let digest = Sha256::digest([seed.to_be_bytes(), id.to_be_bytes()].concat());
    let mut n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    (0..8)
        .map(|_| {
            let c = ALPHABET[(n % 62) as usize] as char;
            n /= 62;
            c
        })
        .collect()
}

impl Item {
    /// The transactional rendering (hyphenated keys).
    pub fn transactional_json(&self, base: &str, transaction_id: u64) -> Value {
        let polar_user = format!("{base}/v3/users/{}", self.user_id);
        match &self.data {
            ItemData::Exercise(e) => json!({
                "id": self.id,
                "upload-time": rfc3339(self.available_at),
                "polar-user": polar_user,
                "transaction-id": transaction_id,
                "device": e.device,
                "device-id": e.device_id,
                "start-time": e.start_time.format("%Y-%m-%dT%H:%M:%S").to_string(),
                "start-time-utc-offset": e.utc_offset_minutes,
                "duration": iso_duration_ms(e.duration_ms),
                "calories": e.calories,
                "distance": e.distance_m,
                "heart-rate": { "average": e.hr_avg, "maximum": e.hr_max },
                "training-load": e.training_load(),
                "sport": e.sport,
                "has-route": e.distance_m > 0.0,
                "detailed-sport-info": e.sport,
            }),
            ItemData::Activity(a) => json!({
                "id": self.id,
                "polar-user": polar_user,
                "transaction-id": transaction_id,
                "date": a.date,
                "created": rfc3339(a.created),
                "calories": a.calories,
                "active-calories": a.active_calories,
                "duration": iso_duration(a.duration_s),
                "active-steps": a.active_steps,
            }),
            ItemData::Physical(p) => json!({
                "id": self.id,
                "transaction-id": transaction_id,
                "created": rfc3339(self.available_at),
                "polar-user": polar_user,
                "weight": p.weight,
                "height": 180.0,
                "maximum-heart-rate": 190,
                "resting-heart-rate": p.resting_heart_rate,
                "aerobic-threshold": 140,
                "anaerobic-threshold": 170,
                "vo2-max": 50,
                "weight-source": "SOURCE_MEASURED",
            }),
            // Never in a transaction (no transactions exist for daily data): the daily form.
            ItemData::Sleep(_) | ItemData::HeartRate(_) | ItemData::SleepWise(_) => {
                self.snake_json(base)
            }
        }
    }

    /// The non-transactional rendering (snake_case keys, hashed exercise id).
    pub fn snake_json(&self, base: &str) -> Value {
        let polar_user = format!("{base}/v3/users/{}", self.user_id);
        match &self.data {
            ItemData::Exercise(e) => json!({
                "id": e.hashed_id,
                "upload_time": rfc3339(self.available_at),
                "polar_user": polar_user,
                "device": e.device,
                "device_id": e.device_id,
                "start_time": e.start_time.format("%Y-%m-%dT%H:%M:%S").to_string(),
                "start_time_utc_offset": e.utc_offset_minutes,
                "duration": iso_duration_seconds(e.duration_ms),
                "calories": e.calories,
                "distance": e.distance_m,
                "heart_rate": { "average": e.hr_avg, "maximum": e.hr_max },
                "training_load": e.training_load(),
                "sport": e.sport,
                "has_route": e.distance_m > 0.0,
                "detailed_sport_info": e.sport,
                "running-index": e.running_index(),
            }),
            // Polar's daily answer: no date, creation time or user (the day is in the request).
            ItemData::Activity(a) => {
                let active_s = a.active_steps / 50 * 60;
                json!({
                    "start_time": format!("{}T00:00:00", a.date),
                    "end_time": format!("{}T23:59:59", a.date),
                    "active_duration": iso_duration(active_s),
                    "inactive_duration": iso_duration(86_400 - active_s),
                    "daily_activity": f64::from(a.active_steps / 100),
                    "calories": a.calories,
                    "active_calories": a.active_calories,
                    "steps": a.active_steps,
                    "inactivity_alert_count": u32::from(a.active_steps < 2000),
                    "distance_from_steps": f64::from(a.active_steps) * 0.75,
                })
            }
            // Fifteen snake_case fields; `modified` equals `created` for a record never updated.
            ItemData::Physical(p) => json!({
                "weight": p.weight,
                "height": 180.0,
                "created": rfc3339(self.available_at),
                "modified": rfc3339(self.available_at),
                "birthday": "1990-01-01",
                "gender": "MALE",
                "maximum_heart_rate": 190,
                "resting_heart_rate": p.resting_heart_rate,
                "aerobic_threshold": 140,
                "anaerobic_threshold": 170,
                "vo2_max": 50,
                "weight_source": "SOURCE_MEASURED",
                "training_background": "REGULAR",
                "typical_day": "MOSTLY_SITTING",
                // An ISO-8601 duration here (the sleep schema's `sleep_goal` is seconds).
                "sleep_goal": "PT8H",
            }),
            ItemData::Sleep(n) => n.sleep_json(&polar_user),
            ItemData::HeartRate(d) => d.json(&polar_user),
            ItemData::SleepWise(n) if self.kind == Kind::SleepWiseAlertness => n.alertness_json(),
            ItemData::SleepWise(n) => n.bedtime_json(),
        }
    }

    /// The webhook payload announcing this item (without signature).
    pub fn webhook_payload(&self, base: &str, sent_at: DateTime<Utc>) -> Value {
        let (identity, path) = self.located();
        let mut payload = json!({
            "event": self.kind.event_type().as_str(),
            "user_id": self.user_id,
            "timestamp": rfc3339(sent_at),
            "url": format!("{base}{path}"),
        });
        if let (Some(p), Value::Object(id)) = (payload.as_object_mut(), identity) {
            p.extend(id);
        }
        payload
    }

    /// Where a receiver fetches this item: the `url` its deliveries name.
    pub fn data_url(&self, base: &str) -> String {
        format!("{base}{}", self.located().1)
    }

    /// The payload's identity fields and the data's path.
    fn located(&self) -> (Value, String) {
        match &self.data {
            ItemData::Exercise(e) => (
                json!({"entity_id": e.hashed_id}),
                format!("/v3/exercises/{}", e.hashed_id),
            ),
            ItemData::Activity(a) => (
                json!({"date": a.date}),
                format!("/v3/users/activities/{}", a.date),
            ),
            ItemData::Physical(_) => (json!({}), "/v3/users/physical-info".to_string()),
            ItemData::Sleep(n) => (
                json!({"date": n.date}),
                format!("/v3/users/sleep/{}", n.date),
            ),
            ItemData::HeartRate(d) => (
                json!({"date": d.date}),
                format!("/v3/users/continuous-heart-rate/{}", d.date),
            ),
            ItemData::SleepWise(n) => (
                json!({"from": n.date, "to": n.date}),
                format!(
                    "/v3/users/{}/date?from={1}&to={1}",
                    self.kind.segment(),
                    n.date
                ),
            ),
        }
    }

    /// The identity the ground truth lists it under (hashed id for exercises, date for activity).
    pub fn source_id(&self) -> String {
        match &self.data {
            ItemData::Exercise(e) => e.hashed_id.clone(),
            ItemData::Activity(a) => a.date.clone(),
            ItemData::Physical(_) => rfc3339(self.available_at),
            ItemData::Sleep(n) => n.date.clone(),
            ItemData::HeartRate(d) => d.date.clone(),
            ItemData::SleepWise(n) => format!("{0}..{0}", n.date),
        }
    }
}

/// One night: the sleep and its Nightly Recharge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Night {
    /// The day the sleep ended, `YYYY-MM-DD`.
    pub date: String,
    /// Local wall-clock start and end, and the user's UTC offset in minutes.
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub utc_offset_minutes: i32,
    pub device_id: String,
    /// Seconds in each stage.
    pub light: u32,
    pub deep: u32,
    pub rem: u32,
    pub score: u32,
    pub heart_rate_avg: u32,
    pub hrv_avg: u32,
}

/// One day of continuous heart rate (a sample every 5 minutes of local time).
#[derive(Debug, Clone)]
pub struct HeartRateDay {
    pub date: String,
    pub samples: Vec<(String, u32)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations() {
        assert_eq!(iso_duration(2 * 3600 + 44 * 60 + 45), "PT2H44M45S");
        assert_eq!(iso_duration(60), "PT1M");
        assert_eq!(iso_duration(0), "PT0S");
        assert_eq!(iso_duration_ms(44 * 60_000 + 5_252), "PT44M5.252S");
        assert_eq!(iso_duration_ms(3_600_000), "PT1H");
        assert_eq!(iso_duration_ms(61_005), "PT1M1.005S");
        assert_eq!(
            iso_duration_seconds(2 * 3_600_000 + 44 * 60_000 + 45_999),
            "PT2H44M45S"
        );
    }

    #[test]
    fn hashed_ids_are_stable_and_differ() {
        assert_eq!(hashed_id(1, 5), hashed_id(1, 5));
        assert_ne!(hashed_id(1, 5), hashed_id(1, 6));
        assert_ne!(hashed_id(1, 5), hashed_id(2, 5));
        assert_eq!(hashed_id(1, 5).len(), 8);
    }
}

//! What a fetched or polled data item says about its entity: when it became available and the
//! fingerprint that recognises the same entity across channels.
//!
//! An exercise is named by a hashed string id through the non-transactional API (and webhooks)
//! and by an integer id in transactions; nothing public maps one to the other. Both renderings
//! carry the user, the local start time with its UTC offset, the duration and the device id, and
//! together those name one exercise: that is its fingerprint. Daily data is named by user and date.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::identity::{EventType, UserId};

/// `GET /v3/notifications`' 200 answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Notifications {
    #[serde(rename = "available-user-data", default)]
    pub available_user_data: Vec<AvailableUserData>,
}

/// One entry of [`Notifications`]: data of one type waiting for one user.
#[derive(Debug, Clone, Deserialize)]
pub struct AvailableUserData {
    #[serde(rename = "user-id")]
    pub user_id: UserId,
    #[serde(rename = "data-type")]
    pub data_type: String,
    /// Where to create the transaction.
    pub url: String,
}

/// A transaction create's 201 answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TransactionLocation {
    #[serde(rename = "transaction-id")]
    pub transaction_id: Option<u64>,
    #[serde(rename = "resource-uri")]
    pub resource_uri: String,
}

/// An open transaction's list of item URLs. Its one array is named by the transaction's kind:
/// `exercises`, `activity-log` or `physical-informations`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TransactionList {
    #[serde(default)]
    pub exercises: Option<Vec<String>>,
    #[serde(rename = "activity-log", default)]
    pub activity_log: Option<Vec<String>>,
    #[serde(rename = "physical-informations", default)]
    pub physical_informations: Option<Vec<String>>,
}

impl TransactionList {
    /// The item URLs under `list_key` (one of the three names), if the list has that array.
    pub fn items(self, list_key: &str) -> Option<Vec<String>> {
        match list_key {
            "exercises" => self.exercises,
            "activity-log" => self.activity_log,
            "physical-informations" => self.physical_informations,
            _ => None,
        }
    }
}

/// What an item tells. An `entity_id` left empty means the item names no entity hookrace may
/// store (an id against the rule, a date that is none): it is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The entity type (`EXERCISE`, `ACTIVITY_SUMMARY`, …).
    pub kind: EventType,
    /// The id this item gives its entity in a store key: the hashed exercise id (snake_case
    /// rendering), `t<id>` for a transactional exercise, the date for daily data.
    pub entity_id: String,
    /// Links records of the same entity; `None` when the item lacks the fields.
    pub fingerprint: Option<String>,
    /// `upload-time`/`upload_time` of an exercise, `created` of activity and physical information.
    pub available_at: Option<DateTime<Utc>>,
}

fn field<'a>(v: &'a Value, hyphen: &str) -> Option<&'a Value> {
    v.get(hyphen)
        .or_else(|| v.get(hyphen.replace('-', "_")))
        .filter(|x| !x.is_null())
}

fn time(v: &Value, name: &str) -> Option<DateTime<Utc>> {
    super::payload::parse_time(field(v, name)?.as_str()?)
}

/// Seconds of an ISO-8601 duration like `PT2H44M45S` or `PT1H0.5S`.
pub fn iso_duration_seconds(s: &str) -> Option<f64> {
    let rest = s.strip_prefix("PT")?;
    let (mut total, mut num) = (0.0, String::new());
    for c in rest.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'H' | 'M' | 'S' => {
                let n: f64 = num.parse().ok()?;
                total += n * match c {
                    'H' => 3600.0,
                    'M' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => return None,
        }
    }
    num.is_empty().then_some(total)
}

/// The fingerprint of an exercise rendering (either dialect), if it has the fields: the user, the
/// device, and the local start time to the second with its UTC offset.
///
/// The duration is left out on purpose: Polar renders it with milliseconds in the transactional
/// dialect (`PT44M5.252S`) and at minute precision in the spec's non-transactional example
/// (`PT44M`), so requiring equal durations would split one exercise into two entities. Leaving it
/// out merges nothing distinct: one device records one exercise at a time, so two exercises of the
/// same user on the same device cannot start in the same second.
pub fn exercise_fingerprint(user_id: UserId, v: &Value) -> Option<String> {
    let start = field(v, "start-time")?.as_str()?;
    // The wall-clock digits: Polar's start times are zone-less local times, but older examples
    // and some answers add a `Z` or an offset, which must not unlink the two channels' records
    // (the offset that counts is `start-time-utc-offset`).
    let (start, _zone) = NaiveDateTime::parse_and_remainder(start, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    let offset = field(v, "start-time-utc-offset")?.as_i64()?;
    let device = field(v, "device-id")?.as_str()?;
    Some(format!(
        "EXERCISE|{user_id}|{}|{offset}|{device}",
        start.format("%Y-%m-%dT%H:%M:%S")
    ))
}

/// Identifies an item of `kind` (`EXERCISE`, `ACTIVITY_SUMMARY`, `PHYSICAL_INFORMATION`, …).
/// `announced` is the id a webhook gave the entity (its `date` for daily data), for answers that
/// do not repeat it: Polar's `GET /v3/users/activities/{date}` carries no `date` field.
pub fn identify(kind: &EventType, user_id: UserId, v: &Value, announced: Option<&str>) -> Identity {
    match kind {
        EventType::Exercise => {
            // An id that breaks the rule for ids from outside is no id: the item is refused.
            let entity_id = match v.get("id") {
                Some(Value::String(s)) if super::identity::is_plain_id(s) => s.clone(),
                Some(Value::Number(n)) if n.is_u64() => format!("t{n}"),
                _ => String::new(),
            };
            Identity {
                kind: kind.clone(),
                entity_id,
                fingerprint: exercise_fingerprint(user_id, v),
                available_at: time(v, "upload-time"),
            }
        }
        EventType::PhysicalInformation => {
            // A record is named by its last change: `modified` (the non-transactional answer)
            // or, without one, `created` (the transactional item). An update that moves
            // `modified` is new data, not the first record again.
            let changed = time(v, "modified").or_else(|| time(v, "created"));
            let id = changed
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            Identity {
                kind: kind.clone(),
                fingerprint: changed.map(|_| format!("{kind}|{user_id}|{id}")),
                entity_id: id,
                available_at: changed,
            }
        }
        _ => {
            // Daily data: the date names it in both channels; the transactional item carries
            // it, the non-transactional answer does not (the day is in the request).
            // Only a real date names a day (a normalised `YYYY-MM-DD`); anything else is refused.
            let date = field(v, "date")
                .and_then(Value::as_str)
                .or(announced)
                .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            Identity {
                kind: kind.clone(),
                fingerprint: (!date.is_empty()).then(|| format!("{kind}|{user_id}|{date}")),
                entity_id: date,
                // `created` in the transactional item; the daily answer has no such time.
                available_at: time(v, "created"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_zone_on_the_start_time_does_not_unlink_the_channels() {
        let tx = json!({"device-id": "1111AAAA", "start-time": "2008-10-13T10:40:02",
            "start-time-utc-offset": 180});
        let plain = exercise_fingerprint(UserId(7), &tx).unwrap();
        for zoned in [
            "2008-10-13T10:40:02Z",
            "2008-10-13T10:40:02+03:00",
            "2008-10-13T10:40:02.000Z",
            "2008-10-13T10:40:02-05:00",
        ] {
            let snake = json!({"device_id": "1111AAAA", "start_time": zoned,
                "start_time_utc_offset": 180});
            assert_eq!(
                exercise_fingerprint(UserId(7), &snake),
                Some(plain.clone()),
                "{zoned}"
            );
        }
    }

    #[test]
    fn notifications_and_transaction_locations_deserialize() {
        let n: Notifications = serde_json::from_value(json!({"available-user-data": [
            {"user-id": 475, "data-type": "EXERCISE",
             "url": "https://www.polaraccesslink.com/v3/users/475/exercise-transactions"}]}))
        .unwrap();
        assert_eq!(n.available_user_data[0].user_id, UserId(475));
        assert_eq!(n.available_user_data[0].data_type, "EXERCISE");
        let t: TransactionLocation = serde_json::from_value(json!({"transaction-id": 122,
            "resource-uri": "https://polaraccesslink.com/v3/users/21/physical-information-transactions/32"}))
        .unwrap();
        assert_eq!(t.transaction_id, Some(122));
        assert!(t.resource_uri.ends_with("/32"));
    }

    #[test]
    fn a_transaction_list_yields_its_kind_s_array_and_refuses_what_is_not_urls() {
        let list: TransactionList = serde_json::from_value(json!({
            "activity-log": ["https://polaraccesslink.com/v3/users/1/activity-transactions/2/activities/3"]
        }))
        .unwrap();
        assert_eq!(list.clone().items("activity-log").map(|v| v.len()), Some(1));
        assert_eq!(list.items("exercises"), None);
        // A list hookrace cannot read entirely is never committed (a commit deletes the data).
        assert!(serde_json::from_value::<TransactionList>(json!({"exercises": ["u", 7]})).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(iso_duration_seconds("PT2H44M45S"), Some(9885.0));
        assert_eq!(iso_duration_seconds("PT1M"), Some(60.0));
        assert_eq!(iso_duration_seconds("PT0.5S"), Some(0.5));
        assert_eq!(iso_duration_seconds("P1D"), None);
        assert_eq!(iso_duration_seconds("PT5"), None);
    }

    #[test]
    fn both_dialects_of_one_exercise_share_a_fingerprint() {
        // The duration at Polar's two precisions: milliseconds (transactional), minutes (the
        // spec's non-transactional example). The old fingerprint rounded to seconds and split
        // this exercise in two.
        let hyphen = json!({"id": 1937529874, "upload-time": "2008-10-13T10:40:02Z", "device-id": "1111AAAA",
            "start-time": "2008-10-13T10:40:02", "start-time-utc-offset": 180, "duration": "PT2H44M45.252S"});
        let snake = json!({"id": "2AC312F", "upload_time": "2008-10-13T10:40:02.000Z", "device_id": "1111AAAA",
            "start_time": "2008-10-13T10:40:02", "start_time_utc_offset": 180, "duration": "PT2H44M"});
        let a = identify(&EventType::Exercise, UserId(475), &hyphen, None);
        let b = identify(&EventType::Exercise, UserId(475), &snake, None);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert!(a.fingerprint.is_some());
        assert_eq!(a.available_at, b.available_at);
        assert_eq!(a.entity_id, "t1937529874");
        assert_eq!(b.entity_id, "2AC312F");
        // Another user, offset, start second or device: another exercise.
        assert_ne!(
            identify(&EventType::Exercise, UserId(476), &hyphen, None).fingerprint,
            a.fingerprint
        );
        let mut other = snake.clone();
        other["start_time_utc_offset"] = json!(120);
        assert_ne!(
            identify(&EventType::Exercise, UserId(475), &other, None).fingerprint,
            a.fingerprint
        );
        let mut later = snake.clone();
        later["start_time"] = json!("2008-10-13T10:40:03");
        assert_ne!(
            identify(&EventType::Exercise, UserId(475), &later, None).fingerprint,
            a.fingerprint
        );
        let mut missing = snake;
        missing["device_id"] = Value::Null;
        assert_eq!(
            identify(&EventType::Exercise, UserId(475), &missing, None).fingerprint,
            None
        );
    }

    #[test]
    fn daily_data_and_physical_information() {
        let act = json!({"id": 1, "date": "2026-11-28", "created": "2026-11-28T08:00:00.000Z"});
        let i = identify(&EventType::ActivitySummary, UserId(7), &act, None);
        assert_eq!(i.entity_id, "2026-11-28");
        assert_eq!(
            i.fingerprint.as_deref(),
            Some("ACTIVITY_SUMMARY|7|2026-11-28")
        );
        assert!(i.available_at.is_some());
        let phys = json!({"id": 3, "created": "2026-11-28T08:00:00Z", "weight": 70.0});
        let p = identify(&EventType::PhysicalInformation, UserId(7), &phys, None);
        assert_eq!(p.entity_id, "2026-11-28T08:00:00.000Z");
        assert!(p.fingerprint.is_some());
    }

    #[test]
    fn a_day_is_named_by_its_date_in_both_channels_though_the_daily_answer_omits_it() {
        let kind = EventType::ActivitySummary;
        let polled = identify(
            &kind,
            UserId(7),
            &crate::fixture_json("activity_transactional.json"),
            None,
        );
        // The webhook announced the day; Polar's daily answer has no `date` field.
        let fetched = identify(
            &kind,
            UserId(7),
            &crate::fixture_json("daily_activity.json"),
            Some("2026-11-28"),
        );
        assert_eq!(polled.entity_id, "2026-11-28");
        assert_eq!(fetched.entity_id, "2026-11-28");
        assert_eq!(polled.fingerprint, fetched.fingerprint);
        assert!(polled.fingerprint.is_some());
        assert!(polled.available_at.is_some(), "the item's `created`");
        assert_eq!(
            fetched.available_at, None,
            "the daily answer has no creation time"
        );
    }

    #[test]
    fn a_physical_record_is_named_by_its_last_change() {
        let kind = EventType::PhysicalInformation;
        let polled = identify(
            &kind,
            UserId(7),
            &crate::fixture_json("physical_info_transactional.json"),
            None,
        );
        assert_eq!(polled.entity_id, "2026-11-28T08:00:00.000Z");
        // Modified later than created: an update, so new data.
        let updated = identify(
            &kind,
            UserId(7),
            &crate::fixture_json("physical_info.json"),
            None,
        );
        assert_eq!(updated.entity_id, "2026-11-28T09:30:00.000Z");
        assert_ne!(updated.fingerprint, polled.fingerprint);
        // Not modified since it was created: the same record in both channels.
        let mut first = crate::fixture_json("physical_info.json");
        first["modified"] = first["created"].clone();
        let fetched = identify(&kind, UserId(7), &first, None);
        assert_eq!(fetched.fingerprint, polled.fingerprint);
    }
}

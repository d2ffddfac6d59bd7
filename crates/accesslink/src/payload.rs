//! Webhook delivery payloads: the JSON Polar posts, checked field by field, and the identity of the
//! entity a delivery announces.
//!
//! A payload only notifies: `event`, `user_id`, `timestamp`, `url`, plus the identity fields of its
//! event type (`entity_id` for exercises, `date` for daily data, `from`/`to` for SleepWise). An
//! unknown event name is accepted (Polar adds types over time) and identified by whatever identity
//! field it carries, or by its timestamp.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::identity::{EntityKey, EventType, UserId};

/// One validated webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub event: EventType,
    pub user_id: UserId,
    /// When Polar sent the notification.
    pub timestamp: DateTime<Utc>,
    /// Where the data can be fetched (with the user's token).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// A PING: `{"timestamp":"…","event":"PING"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    pub timestamp: Option<DateTime<Utc>>,
}

/// What a request body turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Ping(Ping),
    Delivery(Delivery),
}

/// Identifies one entity at the source: `(type, user, id)` where id is the hashed exercise id, a
/// date, a date range, or a timestamp for types that carry no identity of their own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntityRef {
    pub kind: EventType,
    pub user_id: UserId,
    pub entity_id: String,
}

impl EntityRef {
    /// The store key: `TYPE/user/id`.
    pub fn key(&self) -> EntityKey {
        EntityKey::new(&self.kind, self.user_id, &self.entity_id)
    }
}

impl Delivery {
    /// The entity this delivery announces.
    pub fn entity(&self) -> EntityRef {
        let entity_id = match (&self.entity_id, &self.date, &self.from, &self.to) {
            (Some(id), _, _, _) => id.clone(),
            (None, Some(date), _, _) => date.clone(),
            (None, None, Some(from), Some(to)) => format!("{from}..{to}"),
            // PHYSICAL_INFORMATION (and unknown types without identity): the notification time.
            _ => self
                .timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        EntityRef {
            kind: self.event.clone(),
            user_id: self.user_id,
            entity_id,
        }
    }
}

/// Parses a raw body: a PING (no signature needed) or a delivery whose every field is checked.
/// The error is a short reason for a 400 answer.
pub fn parse(body: &[u8]) -> Result<Parsed, String> {
    // Parsers disagree on which of two equal keys wins; a signed body must mean one thing, so
    // the top-level object is read with a visitor that refuses duplicates.
    let StrictObject(map) = strict_object(body)?;
    let obj = &map;
    let event = match obj.get("event") {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.as_str(),
        Some(_) => return Err("`event` must be a non-empty string".into()),
        None => return Err("`event` is missing".into()),
    };
    if event == "PING" {
        // Recognised by its event alone: a PING is answered 200 whatever its timestamp says
        // (Polar refuses to create the webhook otherwise), and it is never stored.
        let timestamp = obj
            .get("timestamp")
            .and_then(serde_json::Value::as_str)
            .and_then(parse_time);
        return Ok(Parsed::Ping(Ping { timestamp }));
    }
    if event.len() > 64
        || !event
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err("`event` must be an upper-case name like EXERCISE".into());
    }
    let user_id = match obj.get("user_id") {
        Some(v) => v
            .as_u64()
            .filter(|id| *id > 0)
            .ok_or_else(|| "`user_id` must be a positive integer".to_string())?,
        None => return Err("`user_id` is missing".into()),
    };
    let timestamp = timestamp(required_str(obj, "timestamp")?)?;
    let url = required_str(obj, "url")?.to_string();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err("`url` must be an absolute http(s) URL".into());
    }
    let entity_id = optional_str(obj, "entity_id")?;
    let date = optional_str(obj, "date")?;
    let from = optional_str(obj, "from")?;
    let to = optional_str(obj, "to")?;
    for (name, d) in [("date", &date), ("from", &from), ("to", &to)] {
        if let Some(d) = d {
            NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| format!("`{name}` must be a date like 2024-05-31"))?;
        }
    }
    if let Some(id) = &entity_id {
        if !super::identity::is_plain_id(id) {
            return Err("`entity_id` must be a short id of letters, digits, - and _".into());
        }
    }
    let event = EventType::parse(event);
    require_identity(
        &event,
        entity_id.is_some(),
        date.is_some(),
        [from.is_some(), to.is_some()],
    )?;
    Ok(Parsed::Delivery(Delivery {
        event,
        user_id: UserId(user_id),
        timestamp,
        url,
        entity_id,
        date,
        from,
        to,
    }))
}

/// `body` as one JSON object with distinct keys, or why not.
fn strict_object(body: &[u8]) -> Result<StrictObject, String> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data if e.to_string().starts_with("duplicate key") => {
            format!("body has a {e}")
        }
        serde_json::error::Category::Data => "body is not a JSON object".to_string(),
        _ => format!("body is not JSON: {e}"),
    })
}

/// The fields each documented event needs to name its entity: an exercise's `entity_id`, a
/// day's `date`, SleepWise's `from` and `to`.
fn require_identity(
    event: &EventType,
    entity_id: bool,
    date: bool,
    from_to: [bool; 2],
) -> Result<(), String> {
    let need = |field: &str, present: bool| {
        if present {
            Ok(())
        } else {
            Err(format!("`{field}` is required for {}", event.as_str()))
        }
    };
    match event {
        EventType::Exercise => need("entity_id", entity_id),
        EventType::Sleep | EventType::ContinuousHeartRate | EventType::ActivitySummary => {
            need("date", date)
        }
        EventType::SleepWiseCircadianBedtime | EventType::SleepWiseAlertness => {
            need("from", from_to[0])?;
            need("to", from_to[1])
        }
        EventType::PhysicalInformation | EventType::Other(_) => Ok(()),
    }
}

/// A JSON object whose keys are all distinct (serde_json alone keeps the last of two).
struct StrictObject(serde_json::Map<String, serde_json::Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<StrictObject, A::Error> {
                let mut map = serde_json::Map::new();
                while let Some((k, v)) = a.next_entry::<String, serde_json::Value>()? {
                    if map.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key `{k}`")));
                    }
                    map.insert(k, v);
                }
                Ok(StrictObject(map))
            }
        }
        d.deserialize_map(V)
    }
}

fn timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    parse_time(s).ok_or_else(|| "`timestamp` must be a time like 2018-05-15T14:22:24Z".to_string())
}

/// A time as Polar writes it: RFC 3339 (`2018-05-15T14:22:24Z`, `…+02:00`), or without a zone
/// (`2025-01-31T12:01:45.963`, seen in a real Polar body), which is read as UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

fn required_str<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<&'a str, String> {
    match obj.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(format!("`{name}` must be a string")),
        None => Err(format!("`{name}` is missing")),
    }
}

fn optional_str(
    obj: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<String>, String> {
    match obj.get(name) {
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(_) => Err(format!("`{name}` must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(body: &str) -> Delivery {
        match parse(body.as_bytes()).unwrap() {
            Parsed::Delivery(d) => d,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    #[test]
    fn polar_example_exercise() {
        let d = delivery(
            r#"{"event":"EXERCISE","user_id":475,"entity_id":"aQlC83","timestamp":"2018-05-15T14:22:24Z","url":"https://www.polaraccesslink.com/v3/exercises/aQlC83"}"#,
        );
        assert_eq!(d.entity().key().as_str(), "EXERCISE/475/aQlC83");
    }

    #[test]
    fn every_documented_event_type() {
        let cases = [
            (
                r#""event":"SLEEP","date":"2024-05-31""#,
                "SLEEP/7/2024-05-31",
            ),
            (
                r#""event":"CONTINUOUS_HEART_RATE","date":"2024-05-31""#,
                "CONTINUOUS_HEART_RATE/7/2024-05-31",
            ),
            (
                r#""event":"ACTIVITY_SUMMARY","date":"2024-05-31""#,
                "ACTIVITY_SUMMARY/7/2024-05-31",
            ),
            (
                r#""event":"SLEEP_WISE_ALERTNESS","from":"2024-05-30","to":"2024-05-31""#,
                "SLEEP_WISE_ALERTNESS/7/2024-05-30..2024-05-31",
            ),
            (
                r#""event":"SLEEP_WISE_CIRCADIAN_BEDTIME","from":"2024-05-30","to":"2024-05-31""#,
                "SLEEP_WISE_CIRCADIAN_BEDTIME/7/2024-05-30..2024-05-31",
            ),
            (
                r#""event":"PHYSICAL_INFORMATION""#,
                "PHYSICAL_INFORMATION/7/2024-05-31T10:00:00.000Z",
            ),
            (
                r#""event":"NEW_THING","date":"2024-05-31""#,
                "NEW_THING/7/2024-05-31",
            ),
        ];
        for (fields, key) in cases {
            let body = format!(
                r#"{{{fields},"user_id":7,"timestamp":"2024-05-31T10:00:00Z","url":"https://www.polaraccesslink.com/v3/x"}}"#
            );
            assert_eq!(delivery(&body).entity().key().as_str(), key, "{body}");
        }
    }

    #[test]
    fn ping_needs_no_other_fields() {
        assert!(matches!(
            parse(br#"{"timestamp":"2019-01-11T08:25:10.02Z","event":"PING"}"#),
            Ok(Parsed::Ping(_))
        ));
    }

    #[test]
    fn a_ping_is_a_ping_whatever_its_timestamp() {
        let zoneless = crate::fixture("ping_zoneless.json");
        let Ok(Parsed::Ping(p)) = parse(zoneless.trim().as_bytes()) else {
            panic!("a zone-less PING is a PING: {zoneless}");
        };
        let at = p.timestamp.expect("read as UTC").to_rfc3339();
        assert_eq!(at, "2025-01-31T12:01:45.963+00:00");
        for body in [
            r#"{"event":"PING"}"#,
            r#"{"event":"PING","timestamp":"soon"}"#,
            r#"{"event":"PING","timestamp":12}"#,
        ] {
            assert!(
                matches!(parse(body.as_bytes()), Ok(Parsed::Ping(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn zone_less_timestamps_are_read_as_utc() {
        let d = delivery(
            r#"{"event":"EXERCISE","user_id":475,"entity_id":"aQlC83","timestamp":"2025-01-31T12:01:45.963","url":"https://www.polaraccesslink.com/v3/exercises/aQlC83"}"#,
        );
        assert_eq!(d.timestamp.to_rfc3339(), "2025-01-31T12:01:45.963+00:00");
        assert_eq!(
            parse_time("2018-05-15T16:22:24+02:00")
                .unwrap()
                .to_rfc3339(),
            "2018-05-15T14:22:24+00:00"
        );
    }

    #[test]
    fn malformed_bodies_have_reasons() {
        for (body, reason) in [
            ("not json", "not JSON"),
            ("[1,2]", "not a JSON object"),
            (r#"{"user_id":1}"#, "`event` is missing"),
            (
                r#"{"event":"EXERCISE","user_id":"475","timestamp":"2018-05-15T14:22:24Z","url":"https://x/v3","entity_id":"a"}"#,
                "user_id",
            ),
            (
                r#"{"event":"EXERCISE","user_id":475,"timestamp":"yesterday","url":"https://x/v3","entity_id":"a"}"#,
                "timestamp",
            ),
            (
                r#"{"event":"EXERCISE","user_id":475,"timestamp":"2018-05-15T14:22:24Z","url":"https://x/v3"}"#,
                "`entity_id` is required",
            ),
            (
                r#"{"event":"SLEEP","user_id":475,"timestamp":"2018-05-15T14:22:24Z","url":"https://x/v3","date":"31.5.2024"}"#,
                "`date`",
            ),
            (
                r#"{"event":"EXERCISE","user_id":18446744073709551616,"timestamp":"2018-05-15T14:22:24Z","url":"https://x/v3","entity_id":"a"}"#,
                "user_id",
            ),
        ] {
            let err = parse(body.as_bytes()).unwrap_err();
            assert!(err.contains(reason), "{body}: {err}");
        }
    }
}

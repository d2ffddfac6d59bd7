//! What a sink receives: the event JSON (`{"type": "exercise.created", "timestamp", "data"}`),
//! typed and serialized once ([`Outgoing`]), its stable id, and the one-line text a phone push
//! shows.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::accesslink::data::iso_duration_seconds;
use crate::accesslink::identity::{EntityKey, EventType};
use crate::race::{Channel, Entity, FetchState};
use crate::store::Notice;

/// The event's type name: `exercise.created`, `sleep.created`, `activity_summary.created`, …
pub fn type_name(kind: &EventType) -> String {
    format!("{}.created", kind.as_str().to_ascii_lowercase())
}

/// The `webhook-id` of an entity's event to a sink: the same on every retry (and after a
/// restart), different for another entity or sink, so a receiver can drop repeats.
pub fn event_id(entity_key: &EntityKey, sink: &str) -> String {
    let digest = Sha256::digest(format!("{entity_key}\n{sink}").as_bytes());
    format!("msg_{}", hex::encode(&digest[..16]))
}

fn time(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// An event as every sink receives it, serialized once: its type name (a command's
/// `HOOKRACE_EVENT_TYPE`), its JSON body (signed and sent as it is, the same on every retry) and
/// the one line a phone shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub type_name: String,
    pub body: String,
    pub headline: String,
}

/// The event's JSON: `{"data", "timestamp", "type"}`. Fields in name order, as the JSON has
/// always had them.
#[derive(Serialize)]
struct Event<'a, D: Serialize> {
    data: D,
    timestamp: Option<String>,
    #[serde(rename = "type")]
    type_name: &'a str,
}

/// What an entity's event says of it (fields in name order).
#[derive(Serialize)]
struct EntityData<'a> {
    available_at: Option<String>,
    entity_id: &'a str,
    /// Why its data could not be fetched, when no data came.
    #[serde(skip_serializing_if = "Option::is_none")]
    fetch_error: Option<String>,
    first_channel: Option<Channel>,
    /// The stored data (`null` when there is none), only with `include_data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<Value>,
    key: &'a str,
    poll_at: Option<String>,
    #[serde(rename = "type")]
    kind: &'a str,
    user_id: u64,
    webhook_at: Option<String>,
}

/// What `hookrace notify test` sends.
#[derive(Serialize)]
struct TestData {
    message: &'static str,
}

impl Outgoing {
    fn new<D: Serialize>(
        type_name: String,
        timestamp: DateTime<Utc>,
        data: D,
        headline: String,
    ) -> Outgoing {
        let event = Event {
            data,
            timestamp: time(Some(timestamp)),
            type_name: &type_name,
        };
        // Strings, numbers and JSON values only: serializing them cannot fail.
        let body = serde_json::to_string(&event).expect("an event serializes");
        Outgoing {
            type_name,
            body,
            headline,
        }
    }
}

/// The event for `entity`. `item` is its stored data (left out unless `include_data`); the
/// `timestamp` is when the event was made, so a retry sends the very same body.
pub fn payload(
    entity: &Entity,
    notice: &Notice,
    item: Option<Value>,
    include_data: bool,
) -> Outgoing {
    let fetch_error = match entity.fetch_state() {
        FetchState::Failed(reason) if item.is_none() => Some(reason),
        _ => None,
    };
    let line = headline(&entity.kind, item.as_ref(), fetch_error.is_some());
    let data = EntityData {
        available_at: time(notice.available_at.or(entity.available_at())),
        entity_id: &entity.entity_id,
        fetch_error,
        first_channel: entity.first_channel(),
        item: include_data.then(|| item.unwrap_or(Value::Null)),
        key: entity.key.as_str(),
        poll_at: time(entity.poll_at),
        kind: entity.kind.as_str(),
        user_id: entity.user_id.0,
        webhook_at: time(entity.webhook_at),
    };
    Outgoing::new(type_name(&entity.kind), notice.created_at, data, line)
}

/// A signed test event (`hookrace notify test`): the same shape, marked as a test.
pub fn test_payload(now: DateTime<Utc>) -> Outgoing {
    let data = TestData {
        message: "a test event from `hookrace notify test`",
    };
    let line = "hookrace test: notifications reach this topic".to_string();
    Outgoing::new("hookrace.test".into(), now, data, line)
}

/// The one-line text for a phone: "New running exercise, 45 min, 8.2 km".
fn headline(kind: &EventType, item: Option<&Value>, fetch_failed: bool) -> String {
    let item = item.unwrap_or(&Value::Null);
    let words = |s: &str| s.to_ascii_lowercase().replace('_', " ");
    let mut parts = Vec::new();
    let first = match kind {
        EventType::Exercise => {
            let sport = item["sport"]
                .as_str()
                .or(item["detailed-sport-info"].as_str())
                .map(words);
            match sport {
                Some(s) => format!("New {s} exercise"),
                None => "New exercise".into(),
            }
        }
        EventType::Sleep => "New sleep".into(),
        EventType::ActivitySummary => "New activity summary".into(),
        EventType::ContinuousHeartRate => "New heart rate day".into(),
        other => format!("New {}", words(other.as_str())),
    };
    parts.push(first);
    parts.extend(item_facts(item));
    if parts.len() == 1 {
        if let Some(date) = item["date"].as_str() {
            parts.push(date.to_string());
        }
    }
    if fetch_failed {
        parts.push("its data could not be fetched".into());
    }
    parts.join(", ")
}

/// What a phone line says of an item: its duration, distance, sleep length, steps.
fn item_facts(item: &Value) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(d) = item["duration"].as_str().and_then(iso_duration_seconds) {
        parts.push(human_minutes(d));
    }
    if let Some(m) = item["distance"].as_f64().filter(|m| *m > 0.0) {
        parts.push(format!("{:.1} km", m / 1000.0));
    }
    if let (Some(start), Some(end)) = (
        item["sleep_start_time"].as_str(),
        item["sleep_end_time"].as_str(),
    ) {
        if let (Ok(s), Ok(e)) = (
            DateTime::parse_from_rfc3339(start),
            DateTime::parse_from_rfc3339(end),
        ) {
            parts.push(human_minutes((e - s).num_seconds() as f64));
        }
    }
    if let Some(steps) = item["steps"].as_u64() {
        parts.push(format!("{steps} steps"));
    }
    parts
}

/// "45 min" or "7 h 32 min".
fn human_minutes(seconds: f64) -> String {
    let minutes = crate::units::round_u64(seconds / 60.0);
    match minutes {
        0..60 => format!("{minutes} min"),
        _ => format!("{} h {} min", minutes / 60, minutes % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accesslink::identity::UserId;
    use serde_json::json;

    fn notice() -> Notice {
        Notice {
            seq: 1,
            created_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            available_at: None,
            sinks: vec![],
        }
    }

    #[test]
    fn an_exercise_reads_as_one_line() {
        let mut e = Entity::new(&EventType::Exercise, UserId(7), "abc");
        e.poll_at = Some(Utc::now());
        let item = json!({"sport": "RUNNING", "duration": "PT45M12S", "distance": 8210.0});
        let event = payload(&e, &notice(), Some(item), true);
        let json: Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(json["type"], "exercise.created");
        assert_eq!(event.type_name, "exercise.created");
        assert_eq!(json["data"]["first_channel"], "poll");
        assert_eq!(json["data"]["item"]["sport"], "RUNNING");
        assert_eq!(event.headline, "New running exercise, 45 min, 8.2 km");
    }

    #[test]
    fn a_sleep_and_a_failed_fetch_read_as_one_line() {
        let mut e = Entity::new(&EventType::Sleep, UserId(7), "2026-11-28");
        let item = json!({"sleep_start_time": "2026-11-28T23:10:00+02:00",
                          "sleep_end_time": "2026-11-29T06:42:00+02:00"});
        let event = payload(&e, &notice(), Some(item), true);
        assert_eq!(event.headline, "New sleep, 7 h 32 min");
        e.set_fetch_state(FetchState::Failed("404".into()));
        let event = payload(&e, &notice(), None, true);
        let json: Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(json["data"]["fetch_error"], "404");
        assert_eq!(json["data"]["item"], Value::Null);
        assert!(
            json["data"].get("item").is_some(),
            "item is null, not left out"
        );
        assert!(event.headline.ends_with("its data could not be fetched"));
        let without = payload(&e, &notice(), None, false);
        let json: Value = serde_json::from_str(&without.body).unwrap();
        assert!(
            json["data"].get("item").is_none(),
            "no data asked for: no item"
        );
    }

    #[test]
    fn the_id_is_stable_per_entity_and_sink() {
        let event_id = |key: &str, sink: &str| event_id(&EntityKey::stored(key), sink);
        assert_eq!(
            event_id("EXERCISE/1/a", "app"),
            event_id("EXERCISE/1/a", "app")
        );
        assert_ne!(
            event_id("EXERCISE/1/a", "app"),
            event_id("EXERCISE/1/b", "app")
        );
        assert_ne!(
            event_id("EXERCISE/1/a", "app"),
            event_id("EXERCISE/1/a", "phone")
        );
    }
}

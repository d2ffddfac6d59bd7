//! What a sink receives: the event JSON (`{"type": "exercise.created", "timestamp", "data"}`),
//! its stable id, and the one-line text a phone push shows.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::accesslink::data::iso_duration_seconds;
use crate::accesslink::identity::{EntityKey, EventType};
use crate::race::{Entity, FetchState};
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

fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true))
    })
}

/// The event for `entity`. `item` is its stored data (left out unless `include_data`); the
/// `timestamp` is when the event was made, so a retry sends the very same body.
pub fn payload(entity: &Entity, notice: &Notice, item: Option<Value>, include_data: bool) -> Value {
    let mut data = json!({
        "key": entity.key.as_str(),
        "type": entity.kind.as_str(),
        "user_id": entity.user_id.0,
        "entity_id": entity.entity_id,
        "available_at": time(notice.available_at.or(entity.available_at())),
        "first_channel": entity.first_channel(),
        "webhook_at": time(entity.webhook_at),
        "poll_at": time(entity.poll_at),
    });
    if let FetchState::Failed(reason) = entity.fetch_state() {
        if item.is_none() {
            data["fetch_error"] = Value::String(reason);
        }
    }
    if include_data {
        data["item"] = item.unwrap_or(Value::Null);
    }
    json!({
        "type": type_name(&entity.kind),
        "timestamp": time(Some(notice.created_at)),
        "data": data,
    })
}

/// A signed test event (`hookrace notify test`): the same shape, marked as a test.
pub fn test_payload(now: DateTime<Utc>) -> Value {
    json!({
        "type": "hookrace.test",
        "timestamp": time(Some(now)),
        "data": {"message": "a test event from `hookrace notify test`"},
    })
}

/// The one-line text for a phone: "New running exercise, 45 min, 8.2 km".
pub fn headline(event: &Value) -> String {
    let data = &event["data"];
    if event["type"] == "hookrace.test" {
        return "hookrace test: notifications reach this topic".into();
    }
    let item = &data["item"];
    let kind = EventType::parse(data["type"].as_str().unwrap_or(""));
    let words = |s: &str| s.to_ascii_lowercase().replace('_', " ");
    let mut parts = Vec::new();
    let first = match &kind {
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
    if parts.len() == 1 {
        if let Some(date) = item["date"].as_str() {
            parts.push(date.to_string());
        }
    }
    if data["fetch_error"].is_string() {
        parts.push("its data could not be fetched".into());
    }
    parts.join(", ")
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
        assert_eq!(event["type"], "exercise.created");
        assert_eq!(event["data"]["first_channel"], "poll");
        assert_eq!(headline(&event), "New running exercise, 45 min, 8.2 km");
    }

    #[test]
    fn a_sleep_and_a_failed_fetch_read_as_one_line() {
        let mut e = Entity::new(&EventType::Sleep, UserId(7), "2026-11-28");
        let item = json!({"sleep_start_time": "2026-11-28T23:10:00+02:00",
                          "sleep_end_time": "2026-11-29T06:42:00+02:00"});
        let event = payload(&e, &notice(), Some(item), true);
        assert_eq!(headline(&event), "New sleep, 7 h 32 min");
        e.set_fetch_state(FetchState::Failed("404".into()));
        let event = payload(&e, &notice(), None, true);
        assert_eq!(event["data"]["fetch_error"], "404");
        assert_eq!(event["data"]["item"], Value::Null);
        assert!(headline(&event).ends_with("its data could not be fetched"));
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

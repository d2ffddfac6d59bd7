//! Who and what an entity is: its [`EventType`], its [`UserId`] and the store's [`EntityKey`]
//! (`TYPE/user/id`). Shared by the receiver, the poller, the store and the simulator, so the names
//! of the event types and the shape of a key are written once.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The type of a webhook event and of the entity it announces. Polar adds types over time: an
/// unknown name is kept as [`EventType::Other`] rather than refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Exercise,
    Sleep,
    ContinuousHeartRate,
    ActivitySummary,
    SleepWiseCircadianBedtime,
    SleepWiseAlertness,
    PhysicalInformation,
    /// A name AccessLink did not document when this was written.
    Other(String),
}

impl EventType {
    /// The event types AccessLink documents, in its order.
    pub const KNOWN: [EventType; 7] = [
        EventType::Exercise,
        EventType::Sleep,
        EventType::ContinuousHeartRate,
        EventType::ActivitySummary,
        EventType::SleepWiseCircadianBedtime,
        EventType::SleepWiseAlertness,
        EventType::PhysicalInformation,
    ];

    /// What a new webhook subscribes to unless told otherwise: the six event types Polar's
    /// documentation page lists. `PHYSICAL_INFORMATION` is only in the newest spec (a deployment
    /// that predates it answers 400), so it is added only when asked for.
    pub fn default_subscription() -> impl Iterator<Item = EventType> {
        EventType::KNOWN
            .into_iter()
            .filter(|k| *k != EventType::PhysicalInformation)
    }

    /// The name on the wire (`EXERCISE`, `ACTIVITY_SUMMARY`, …).
    pub fn as_str(&self) -> &str {
        match self {
            EventType::Exercise => "EXERCISE",
            EventType::Sleep => "SLEEP",
            EventType::ContinuousHeartRate => "CONTINUOUS_HEART_RATE",
            EventType::ActivitySummary => "ACTIVITY_SUMMARY",
            EventType::SleepWiseCircadianBedtime => "SLEEP_WISE_CIRCADIAN_BEDTIME",
            EventType::SleepWiseAlertness => "SLEEP_WISE_ALERTNESS",
            EventType::PhysicalInformation => "PHYSICAL_INFORMATION",
            EventType::Other(name) => name,
        }
    }

    /// The type a wire name means (any name: unknown ones are [`EventType::Other`]).
    pub fn parse(name: &str) -> EventType {
        EventType::KNOWN
            .into_iter()
            .find(|k| k.as_str() == name)
            .unwrap_or_else(|| EventType::Other(name.to_string()))
    }

    /// Whether AccessLink documents this type.
    pub fn is_known(&self) -> bool {
        !matches!(self, EventType::Other(_))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(EventType::parse(&name))
    }
}

/// A Polar user id (`polar-user-id`, a webhook's `user_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub u64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for UserId {
    fn from(id: u64) -> Self {
        UserId(id)
    }
}

/// The store's key of an entity: `TYPE/user/id`, where id is the hashed exercise id, `t<id>` for
/// a transactional exercise, a date, a date range or a time. Built only by [`EntityKey::new`];
/// a key read back from the store is taken as it is ([`EntityKey::stored`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EntityKey(String);

impl EntityKey {
    pub fn new(kind: &EventType, user: UserId, id: &str) -> EntityKey {
        EntityKey(format!("{kind}/{user}/{id}"))
    }

    /// A key as the store holds it (a record's key, an alias's target).
    pub fn stored(key: impl Into<String>) -> EntityKey {
        EntityKey(key.into())
    }

    /// The entity's own id: what follows `TYPE/user/` (an exercise's id, a date, a range).
    pub fn entity_id(&self) -> Option<&str> {
        self.0.splitn(3, '/').nth(2)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for EntityKey {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for EntityKey {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `id` is an id AccessLink could have given an entity (a hashed exercise id like
/// `aQlC83`): 1 to 128 letters, digits, `-` and `_`. The one rule for ids from outside, whether a
/// webhook carried them or a poll read them: nothing else goes into a store key or a URL path.
pub fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_are_taken() {
        assert!(is_plain_id("aQlC83"));
        assert!(is_plain_id("2026-11-28"));
        for bad in [
            "",
            "../users/475",
            "a/b",
            "a b",
            "a%2F",
            "é",
            &"x".repeat(129),
        ] {
            assert!(!is_plain_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_kept() {
        for k in EventType::KNOWN {
            assert_eq!(EventType::parse(k.as_str()), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(serde_json::from_str::<EventType>(&json).unwrap(), k);
        }
        let new = EventType::parse("NIGHTLY_RECHARGE_2");
        assert_eq!(new, EventType::Other("NIGHTLY_RECHARGE_2".into()));
        assert!(!new.is_known());
        assert_eq!(new.to_string(), "NIGHTLY_RECHARGE_2");
    }

    #[test]
    fn a_key_names_type_user_and_id() {
        let k = EntityKey::new(&EventType::Exercise, UserId(475), "aQlC83");
        assert_eq!(k.as_str(), "EXERCISE/475/aQlC83");
    }
}

//! Custom data for `sim trigger --data FILE`: the fields of the item made, set by the caller
//! instead of drawn from the seed. Every field the simulator models can be set (an exercise's
//! sport, duration, distance, calories and heart rates; a day's activity; physical information;
//! a night's times and stages), by its name in the model; ids, dates and devices cannot (they
//! are the item's identity). A value of the wrong type, an unknown field or an impossible item
//! (an average heart rate above the maximum, stages longer than the night) is refused before
//! anything is made.

use serde_json::{Map, Value};

use super::model::{ItemData, Kind};

/// Fields that name the item rather than describe it.
const FIXED: &[&str] = &["hashed_id", "device", "device_id", "date", "created"];

/// Sets `fields` on `data` (an item of `kind`), or says why not.
pub fn apply(kind: Kind, data: &mut ItemData, fields: &Map<String, Value>) -> Result<(), String> {
    let name = kind.event_type().to_string();
    *data = match data {
        ItemData::Exercise(e) => ItemData::Exercise(merged(&name, e, fields)?),
        ItemData::Activity(a) => ItemData::Activity(merged(&name, a, fields)?),
        ItemData::Physical(p) => ItemData::Physical(merged(&name, p, fields)?),
        ItemData::Sleep(n) => ItemData::Sleep(merged(&name, n, fields)?),
        ItemData::HeartRate(_) | ItemData::SleepWise(_) => {
            return Err(format!("{name} has no fields --data can set"));
        }
    };
    plausible(data)
}

/// `item` with `fields` written over its own, checked field by field.
fn merged<T>(kind: &str, item: &T, fields: &Map<String, Value>) -> Result<T, String>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let Ok(Value::Object(mut own)) = serde_json::to_value(item) else {
        return Err(format!("{kind} cannot be changed"));
    };
    let settable = own
        .keys()
        .filter(|k| !FIXED.contains(&k.as_str()))
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    for (key, value) in fields {
        if FIXED.contains(&key.as_str()) {
            return Err(format!(
                "{kind}: {key} is the item's identity and cannot be set"
            ));
        }
        if !own.contains_key(key) {
            return Err(format!("{kind} has no field {key:?}; it has: {settable}"));
        }
        own.insert(key.clone(), value.clone());
    }
    serde_json::from_value(Value::Object(own)).map_err(|e| format!("{kind}: {e}"))
}

/// What no device would record.
fn plausible(data: &ItemData) -> Result<(), String> {
    match data {
        ItemData::Exercise(e) => {
            check(e.duration_ms > 0, "EXERCISE: duration_ms must be above 0")?;
            check(
                e.hr_avg <= e.hr_max,
                "EXERCISE: hr_avg must not be above hr_max",
            )?;
            check(e.hr_max <= 250, "EXERCISE: hr_max must be at most 250")?;
            check(
                e.distance_m >= 0.0 && e.distance_m.is_finite(),
                "EXERCISE: distance_m must be 0 or more",
            )?;
            check(
                !e.sport.trim().is_empty(),
                "EXERCISE: sport must not be empty",
            )
        }
        ItemData::Activity(a) => check(
            a.active_calories <= a.calories,
            "ACTIVITY_SUMMARY: active_calories must not be above calories",
        ),
        ItemData::Physical(p) => check(
            p.weight > 0.0 && p.weight < 500.0 && p.resting_heart_rate > 0,
            "PHYSICAL_INFORMATION: weight must be above 0 and below 500, resting_heart_rate above 0",
        ),
        ItemData::Sleep(n) => {
            let night = (n.end - n.start).num_seconds();
            check(night > 0, "SLEEP: end must be after start")?;
            let stages = i64::from(n.light) + i64::from(n.deep) + i64::from(n.rem);
            check(
                stages <= night,
                "SLEEP: light + deep + rem (seconds) must fit between start and end",
            )?;
            check(n.score <= 100, "SLEEP: score must be at most 100")
        }
        ItemData::HeartRate(_) | ItemData::SleepWise(_) => Ok(()),
    }
}

fn check(ok: bool, why: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why.to_string()) }
}

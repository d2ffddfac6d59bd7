//! An exercise's sub-resources, in both dialects: `/fit`, `/tcx`, `/gpx` under
//! `/v3/exercises/{hashed-id}` and under a transaction's item, plus the transactional
//! `/heart-rate-zones`, `/samples` and `/samples/{type}` (Polar's `zones`, `samples` and `sample`
//! schemas), and the parts a non-transactional exercise adds on request (`?zones`, `?samples`,
//! `?route`). The content is plausible, not a real recording: a FIT file with a valid header and
//! CRC and no records, XML with the exercise's start, duration and average heart rate.
//!
//! Choices where Polar's record is silent or the simulator simplifies: TCX is served as plain XML
//! (Polar documents it gzipped); an exercise without a route (strength training) answers 204 for
//! GPX in a transaction and 404 without one, as Polar documents "no data" for each form.

use chrono::Duration as ChronoDuration;
use serde_json::{Value, json};
use warp::http::StatusCode;

use super::model::{Exercise, Item, ItemData};
use super::*;

/// The CRC-16 the FIT protocol uses (polynomial 0xA001, nibble table).
fn fit_crc(bytes: &[u8]) -> u16 {
    const TABLE: [u16; 16] = [
        0x0000, 0xCC01, 0xD801, 0x1400, 0xF001, 0x3C00, 0x2800, 0xE401, 0xA001, 0x6C00, 0x7800,
        0xB401, 0x5000, 0x9C01, 0x8801, 0x4400,
    ];
    let mut crc = 0u16;
    for &b in bytes {
        for nibble in [b & 0x0F, b >> 4] {
            let tmp = TABLE[(crc & 0xF) as usize];
            crc = (crc >> 4) & 0x0FFF;
            crc = crc ^ tmp ^ TABLE[nibble as usize];
        }
    }
    crc
}

/// A FIT file with a 14-byte header (protocol 2.0, `.FIT`, header CRC), no records, file CRC.
pub fn fit_file() -> Vec<u8> {
    let mut header = vec![14u8, 0x20, 0x08, 0x52, 0, 0, 0, 0, b'.', b'F', b'I', b'T'];
    let crc = fit_crc(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    let crc = fit_crc(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

fn start_utc(e: &Exercise) -> chrono::DateTime<chrono::Utc> {
    (e.start_time - ChronoDuration::minutes(i64::from(e.utc_offset_minutes))).and_utc()
}

fn gpx(e: &Exercise) -> String {
    let start = start_utc(e);
    let points: String = (0..5)
        .map(|k| {
            let at = start + ChronoDuration::minutes(k * 5);
            format!(
                "<trkpt lat=\"{:.5}\" lon=\"{:.5}\"><time>{}</time></trkpt>",
                60.17 + k as f64 * 0.001,
                24.94 + k as f64 * 0.001,
                at.format("%Y-%m-%dT%H:%M:%SZ")
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"Polar (hookrace simulator)\" xmlns=\"http://www.topografix.com/GPX/1/1\"><trk><name>{}</name><trkseg>{points}</trkseg></trk></gpx>\n",
        e.sport
    )
}

fn tcx(e: &Exercise) -> String {
    let start = start_utc(e).format("%Y-%m-%dT%H:%M:%S%.3fZ");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<TrainingCenterDatabase xmlns=\"http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2\"><Activities><Activity Sport=\"Other\"><Id>{start}</Id><Lap StartTime=\"{start}\"><TotalTimeSeconds>{:.3}</TotalTimeSeconds><DistanceMeters>{:.1}</DistanceMeters><Calories>{}</Calories><AverageHeartRateBpm><Value>{}</Value></AverageHeartRateBpm><MaximumHeartRateBpm><Value>{}</Value></MaximumHeartRateBpm></Lap></Activity></Activities></TrainingCenterDatabase>\n",
        e.duration_ms as f64 / 1000.0,
        e.distance_m,
        e.calories,
        e.hr_avg,
        e.hr_max
    )
}

/// Polar's `zones`: time in five heart-rate zones summing to the exercise's duration.
fn zones(e: &Exercise) -> Value {
    let total = e.duration_ms / 1000;
    let shares = [10u64, 25, 35, 20, 10];
    let zone: Vec<Value> = shares
        .iter()
        .enumerate()
        .map(|(i, share)| {
            let lower = 95 + 19 * u32::try_from(i).unwrap_or(u32::MAX);
            json!({
                "index": i + 1,
                "lower-limit": lower,
                "upper-limit": lower + 19,
                "in-zone": super::model::iso_duration(u32::try_from(total * share / 100).unwrap_or(u32::MAX)),
            })
        })
        .collect();
    json!({ "zone": zone })
}

/// Heart rate (type 0) every second, as Polar's `sample` renders it: comma-separated values.
fn heart_rate_sample(e: &Exercise) -> Value {
    let n = (e.duration_ms / 1000).min(600);
    let data: Vec<String> = (0..n)
        .map(|k| {
            (e.hr_avg + u32::try_from(k % 9).unwrap_or(0))
                .saturating_sub(4)
                .to_string()
        })
        .collect();
    json!({"recording-rate": 1, "sample-type": "0", "data": data.join(",")})
}

/// The parts `?samples=true&zones=true&route=true` add to a non-transactional exercise:
/// `heart_rate_zones` (Polar's `zone` objects), `samples` (its `sample` objects) and `route` (its
/// `location` objects; none for an exercise without a route).
pub(super) fn add_parts(e: &Exercise, v: &mut Value, query: &str) {
    let asked: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let on = |name: &str| {
        asked
            .iter()
            .any(|(k, val)| k == name && val.eq_ignore_ascii_case("true"))
    };
    if on("zones") {
        v["heart_rate_zones"] = zones(e)["zone"].clone();
    }
    if on("samples") {
        v["samples"] = json!([heart_rate_sample(e)]);
    }
    if on("route") {
        v["route"] = Value::Array(route(e));
    }
}

/// Route points every five minutes (none without a route), as Polar's `location` objects.
fn route(e: &Exercise) -> Vec<Value> {
    if e.distance_m <= 0.0 {
        return Vec::new();
    }
    (0..5)
        .map(|k| {
            json!({
                "latitude": 60.17 + k as f64 * 0.001,
                "longitude": 24.94 + k as f64 * 0.001,
                "time": format!("PT{}S", k * 300),
                "satellites": 8,
                "fix": 3,
            })
        })
        .collect()
}

fn exercise_of(item: &Item) -> Option<&Exercise> {
    match &item.data {
        ItemData::Exercise(e) => Some(e),
        _ => None,
    }
}

impl State {
    /// `GET /v3/exercises/{hashed-id}/{fit|tcx|gpx}` (404 when there is no such exercise or
    /// no route for GPX, as documented).
    pub(super) fn exercise_file(&self, uid: u64, hid: &str, what: &str) -> SimResponse {
        let found = self
            .exercises_of(uid)
            .filter_map(exercise_of)
            .find(|e| e.hashed_id == hid);
        let not_found =
            || SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "exercise not found");
        match (found, what) {
            (None, _) => not_found(),
            (Some(e), "gpx") if e.distance_m <= 0.0 => not_found(),
            (Some(e), what) => file(e, what).unwrap_or_else(not_found),
        }
    }

    /// A transactional item's sub-resource: the files, `heart-rate-zones`, `samples`,
    /// `samples/{type}`; 204 when there is nothing, as Polar documents for these calls.
    pub(super) fn item_file(
        &self,
        uid: u64,
        tid: &str,
        iid: &str,
        rest: &[&str],
        base: &str,
    ) -> SimResponse {
        let item = self.transaction_item(uid, tid, iid).map(|(_, i)| i);
        let Some(e) = item.and_then(exercise_of) else {
            return SimResponse::empty(StatusCode::NO_CONTENT);
        };
        let here = format!("{base}/v3/users/{uid}/exercise-transactions/{tid}/exercises/{iid}");
        match rest {
            ["heart-rate-zones"] => zones(e).into_ok(),
            ["samples"] => json!({"samples": [format!("{here}/samples/0")]}).into_ok(),
            ["samples", "0"] => heart_rate_sample(e).into_ok(),
            ["samples", _] => SimResponse::empty(StatusCode::NO_CONTENT),
            ["gpx"] if e.distance_m <= 0.0 => SimResponse::empty(StatusCode::NO_CONTENT),
            [what] => file(e, what).unwrap_or_else(|| SimResponse::empty(StatusCode::NO_CONTENT)),
            _ => SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such resource"),
        }
    }
}

/// The file `what` (`fit`, `tcx`, `gpx`) of an exercise.
fn file(e: &Exercise, what: &str) -> Option<SimResponse> {
    match what {
        "fit" => Some(SimResponse::file("application/octet-stream", fit_file())),
        "tcx" => Some(SimResponse::file(
            "application/vnd.garmin.tcx+xml",
            tcx(e).into_bytes(),
        )),
        "gpx" => Some(SimResponse::file(
            "application/gpx+xml",
            gpx(e).into_bytes(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fit_header_carries_its_signature_and_valid_crcs() {
        let f = super::fit_file();
        assert_eq!(f.len(), 16);
        assert_eq!(f[0], 14, "header size");
        assert_eq!(&f[8..12], b".FIT");
        // The CRC of data followed by its own CRC is zero.
        assert_eq!(super::fit_crc(&f[..14]), 0, "header CRC");
        assert_eq!(super::fit_crc(&f), 0, "file CRC");
    }
}

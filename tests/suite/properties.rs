//! Property tests: signature verification and delivery parsing hold for any input.

use hookrace::accesslink::payload::{self, Parsed};
use hookrace::accesslink::signature::{self, SignatureError};
use proptest::prelude::*;

proptest! {
    // A fixed seed: the same cases on every run and machine (failures still shrink and persist).
    #![proptest_config(ProptestConfig {
        rng_seed: proptest::test_runner::RngSeed::Fixed(20261128),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_signature_verifies_in_either_case(secret in ".{0,64}", body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let sig = signature::sign(&secret, &body);
        prop_assert_eq!(sig.len(), 64);
        prop_assert!(signature::verify(&secret, &body, Some(&sig)).is_ok());
        prop_assert!(signature::verify(&secret, &body, Some(&sig.to_uppercase())).is_ok());
    }

    #[test]
    fn any_change_to_body_or_secret_is_refused(
        secret in "[a-z0-9-]{1,40}",
        body in proptest::collection::vec(any::<u8>(), 1..1024),
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
        other in "[a-z0-9-]{1,40}",
    ) {
        let sig = signature::sign(&secret, &body);
        let mut flipped = body.clone();
        let i = index.index(flipped.len());
        flipped[i] ^= 1 << bit;
        prop_assert_eq!(signature::verify(&secret, &flipped, Some(&sig)), Err(SignatureError::Mismatch));
        prop_assume!(other != secret);
        prop_assert_eq!(signature::verify(&other, &body, Some(&sig)), Err(SignatureError::Mismatch));
    }

    #[test]
    fn any_malformed_signature_header_is_refused(header in ".{0,80}", body in ".{0,100}") {
        let real = signature::sign("k", body.as_bytes());
        prop_assume!(!header.trim().eq_ignore_ascii_case(&real));
        prop_assert!(signature::verify("k", body.as_bytes(), Some(&header)).is_err());
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = payload::parse(&body);
    }

    #[test]
    fn parsing_arbitrary_json_objects_never_panics(
        keys in proptest::collection::vec(prop_oneof![
            Just("event".to_string()), Just("user_id".to_string()), Just("entity_id".to_string()),
            Just("timestamp".to_string()), Just("url".to_string()), Just("date".to_string()), "[a-z_]{1,8}"
        ], 0..8),
        values in proptest::collection::vec(prop_oneof![
            Just(serde_json::json!(null)), any::<i64>().prop_map(|v| serde_json::json!(v)),
            any::<f64>().prop_map(|v| serde_json::json!(v)), ".{0,20}".prop_map(|v| serde_json::json!(v)),
            Just(serde_json::json!("EXERCISE")), Just(serde_json::json!("2026-11-28T10:00:00Z")),
            Just(serde_json::json!([1, {"a": []}])),
        ], 8),
    ) {
        let mut map = serde_json::Map::new();
        for (k, v) in keys.into_iter().zip(values) {
            map.insert(k, v);
        }
        let _ = payload::parse(serde_json::Value::Object(map).to_string().as_bytes());
    }

    #[test]
    fn every_well_formed_exercise_delivery_parses_to_its_fields(
        user in 1u64..u64::MAX,
        id in "[A-Za-z0-9_-]{1,32}",
        secs in 0i64..4_000_000_000,
        millis in 0u32..1000,
    ) {
        let t = chrono::DateTime::from_timestamp(secs, millis * 1_000_000).unwrap();
        let ts = t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = serde_json::json!({
            "event": "EXERCISE", "user_id": user, "entity_id": id, "timestamp": ts,
            "url": format!("https://www.polaraccesslink.com/v3/exercises/{id}"),
        }).to_string();
        match payload::parse(body.as_bytes()) {
            Ok(Parsed::Delivery(d)) => {
                prop_assert_eq!(d.user_id.0, user);
                prop_assert_eq!(d.timestamp, t);
                prop_assert_eq!(d.entity().key().to_string(), format!("EXERCISE/{user}/{id}"));
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

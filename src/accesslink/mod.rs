//! Polar's AccessLink API v3 as hookrace sees it: what a webhook delivery looks like and how it
//! is signed. Both the daemon (receiving) and the simulator (sending) use these definitions, so
//! the two sides cannot drift apart; they share no state, only these pure types and functions.

pub mod client;
pub mod data;
pub mod error;
pub mod identity;
pub mod payload;
pub mod signature;
pub mod webhooks;

/// Header naming the event of a delivery.
pub const EVENT_HEADER: &str = "Polar-Webhook-Event";
/// Header carrying the lowercase hex HMAC-SHA256 of the raw body.
pub const SIGNATURE_HEADER: &str = "Polar-Webhook-Signature";

/// A file of `tests/fixtures/polar/`, the project's record of Polar's answers (tests only).
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/polar/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// [`fixture`] as JSON.
#[cfg(test)]
pub(crate) fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

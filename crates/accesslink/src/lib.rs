//! Polar's AccessLink API v3 as hookrace sees it: what a webhook delivery looks like and how it
//! is signed, the entity identities built from it, and the HTTP client that talks to it (with its
//! model of the rate limit, [`rate`]). The
//! daemon (receiving), the simulator (sending) and the receiver grader all use these definitions,
//! so the sides cannot drift apart; they share no state, only these types and functions.
//!
//! Beside Polar's API it holds the few things that API's client needs and the whole project
//! shares: the [`Secret`] credential type, the HTTP client policy ([`http`]), the retry schedule
//! ([`retry`]) and saturating numeric conversions ([`units`]). It depends on no other crate of
//! hookrace's.

pub mod client;
pub mod data;
pub mod dialect;
pub mod error;
pub mod http;
pub mod identity;
pub mod payload;
pub mod rate;
pub mod retry;
mod secret;
pub mod signature;
pub mod units;
pub mod webhooks;

pub use secret::Secret;

/// Header naming the event of a delivery.
pub const EVENT_HEADER: &str = "Polar-Webhook-Event";
/// Header carrying the lowercase hex HMAC-SHA256 of the raw body.
pub const SIGNATURE_HEADER: &str = "Polar-Webhook-Signature";

/// A file of `tests/fixtures/polar/`, the project's record of Polar's answers (tests only).
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../tests/fixtures/polar/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// [`fixture`] as JSON.
#[cfg(test)]
pub(crate) fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

//! What the simulator is started with ([`SimSettings`]) and the faults and limits that can be
//! changed while it runs ([`Faults`], through `PUT /sim/faults`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the simulator is started with.
#[derive(Debug, Clone)]
pub struct SimSettings {
    pub seed: u64,
    /// Users created (registered, with tokens) at start.
    pub users: u32,
    /// Class mode: this many students, each an API client of their own (`student-01`, …) with
    /// two users and one webhook; 0 for none.
    pub class: u32,
    /// Mean time between new exercises per user; `None` = no generator.
    pub exercise_every: Option<Duration>,
    /// Mean time between activity updates per user; `None` = none.
    pub activity_every: Option<Duration>,
    /// Mean time between nights per user (each with its Nightly Recharge); `None` = none.
    pub sleep_every: Option<Duration>,
    /// Mean time between continuous heart rate updates per user; `None` = none.
    pub heart_rate_every: Option<Duration>,
    pub client_id: String,
    pub client_secret: String,
    /// Where authorize redirects when the request names no `redirect_uri`.
    pub default_redirect_uri: Option<String>,
    pub faults: Faults,
    /// Recorded traffic to make again instead of the random generator's (`sim --replay`,
    /// `demo --replay`): each item at its time after the generator starts.
    pub replay: Vec<Replayed>,
    /// How its webhook deliveries are signed (Polar's own by default; `sim --dialect`).
    pub dialect: accesslink::dialect::Dialect,
}

/// One item of a replayed recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// When, after the start (already divided by the replay's speed).
    pub after: Duration,
    /// Which user: the n-th of the simulator's active users (by id), wrapping around.
    pub user: usize,
    pub kind: accesslink::identity::EventType,
    /// Whether its webhook was delivered in the recording (if not, it is dropped again).
    pub delivered: bool,
    /// The recorded delay of its first delivery.
    pub delay: Option<Duration>,
}

/// A night's sleep per user per day, on average: what the daemon's simulator and `hookrace sim`
/// generate unless told otherwise.
pub const SLEEP_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Continuous heart rate is synced a few times a day.
pub const HEART_RATE_EVERY: Duration = Duration::from_secs(6 * 3600);

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            seed: 1,
            users: 0,
            exercise_every: None,
            activity_every: None,
            sleep_every: None,
            heart_rate_every: None,
            client_id: "hookrace-sim".into(),
            client_secret: "hookrace-sim-secret".into(),
            class: 0,
            default_redirect_uri: None,
            faults: Faults::default(),
            replay: Vec::new(),
            dialect: accesslink::dialect::Dialect::Polar,
        }
    }
}

/// Faults and limits, changeable at run time through `PUT /sim/faults`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of deliveries never sent.
    pub drop_rate: f64,
    /// Share of deliveries sent twice.
    pub duplicate_rate: f64,
    /// Delivery delay range in milliseconds.
    pub delay_ms: (u64, u64),
    /// Share of `/v3` requests answered 500.
    pub error_rate: f64,
    /// The next N requests to an endpoint (by ground-truth name) answer 500.
    pub fail_next: BTreeMap<String, u32>,
    /// Replaces the documented per-window limits `(short, long)`.
    pub rate_limit: Option<(u64, u64)>,
    /// Length of the short rate-limit window in seconds (Polar: 900).
    pub short_window_s: u64,
    /// Length of the long window in seconds (Polar: 86400).
    pub long_window_s: u64,
    /// Failed deliveries for this long deactivate the webhook (Polar: 7 days).
    pub deactivate_after_s: u64,
    /// This many failed deliveries in a row deactivate the webhook too (standing in for Polar's
    /// 7 days in a short run); `None`: only the time above.
    pub deactivate_after_failures: Option<u32>,
    /// Starts a receiver outage now, lasting this many seconds: every delivery due in it is lost
    /// (not sent, recorded as failed, never retried), as Polar loses deliveries a receiver does
    /// not take. Taken when put; the simulator answers with `outage_until` set.
    pub outage_for: Option<f64>,
    /// The end of the outage in progress, if any.
    pub outage_until: Option<chrono::DateTime<chrono::Utc>>,
    /// An uncommitted transaction expires after this long (the simulator's choice: 600).
    pub transaction_ttl_s: u64,
    /// An authorization code is valid this long (Polar: 600).
    pub code_ttl_s: u64,
    /// While true the generator makes nothing (injections still work).
    pub generator_paused: bool,
    /// Answer `411 Length Required` to a `POST`, `PUT` or `PATCH` that carries neither
    /// `Content-Length` nor `Transfer-Encoding`, as strict servers and front ends do (Polar's own
    /// example client always sends `Content-Length`).
    pub require_content_length: bool,
    /// Write this host (with the simulator's port) into the links a client follows (notification
    /// urls, `resource-uri`, transaction item urls, webhook payload urls) instead of its own:
    /// Polar's links name both `www.polaraccesslink.com` and, in the spec's own example,
    /// `polaraccesslink.com`.
    pub links_host: Option<String>,
    /// Append this zone (`Z`, `+02:00`) to exercise start times in both dialects, as older
    /// examples and some mocks do (Polar's schema has local times without a zone).
    pub start_time_zone: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            delay_ms: (20, 400),
            error_rate: 0.0,
            fail_next: BTreeMap::new(),
            rate_limit: None,
            short_window_s: 900,
            long_window_s: 86_400,
            deactivate_after_s: 7 * 86_400,
            deactivate_after_failures: None,
            outage_for: None,
            outage_until: None,
            transaction_ttl_s: 600,
            code_ttl_s: 600,
            generator_paused: false,
            require_content_length: false,
            links_host: None,
            start_time_zone: None,
        }
    }
}

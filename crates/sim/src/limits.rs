//! Rate limits (a short and a long window, `RateLimit-*` headers, 429) and injected server errors.

use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;

use super::*;

#[derive(Debug, Default)]
pub(super) struct Window {
    pub(super) started: Option<Instant>,
    pub(super) used: u64,
}

impl Window {
    pub(super) fn tick(&mut self, now: Instant, len: Duration) {
        if self.started.is_none_or(|s| now.duration_since(s) >= len) {
            self.started = Some(now);
            self.used = 0;
        }
        self.used += 1;
    }
    pub(super) fn reset_in(&self, now: Instant, len: Duration) -> u64 {
        let left = self
            .started
            .map(|s| len.saturating_sub(now.duration_since(s)))
            .unwrap_or(len);
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }
}

impl State {
    /// Counts a request in both windows; returns whether it is refused, and the headers.
    pub(super) fn rate_limit(&mut self) -> (bool, Vec<(String, String)>) {
        let now = Instant::now();
        let f = &self.settings.faults;
        let (short_len, long_len) = (
            Duration::from_secs(f.short_window_s.max(1)),
            Duration::from_secs(f.long_window_s.max(1)),
        );
        let users = self.registered_users();
        let (short_limit, long_limit) = f
            .rate_limit
            .unwrap_or((500 + users * 20, 5000 + users * 100));
        self.short.tick(now, short_len);
        self.long.tick(now, long_len);
        let limited = self.short.used > short_limit || self.long.used > long_limit;
        let headers = vec![
            (
                "RateLimit-Usage".into(),
                format!("{}, {}", self.short.used, self.long.used),
            ),
            (
                "RateLimit-Limit".into(),
                format!("{short_limit}, {long_limit}"),
            ),
            (
                "RateLimit-Reset".into(),
                format!(
                    "{}, {}",
                    self.short.reset_in(now, short_len),
                    self.long.reset_in(now, long_len)
                ),
            ),
        ];
        (limited, headers)
    }

    pub(super) fn inject_error(&mut self, endpoint: &str) -> bool {
        if let Some(n) = self.settings.faults.fail_next.get_mut(endpoint) {
            if *n > 0 {
                *n -= 1;
                return true;
            }
        }
        let rate = self.settings.faults.error_rate;
        rate > 0.0 && self.rng.random_bool(rate.min(1.0))
    }
}

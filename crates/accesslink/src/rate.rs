//! AccessLink's rate limit as the client models it: the state the `RateLimit-*` headers last
//! reported (and the requests in flight), when one more request may go, the bulk lane's part
//! of each window and its spread over the day, and the block a restart must honour. Pure: the
//! [`Client`](crate::client::Client) holds the state and does the waiting.

use std::time::Duration;

use tokio::time::Instant;

pub use crate::error::Window;

/// The rate-limit state last reported by AccessLink.
#[derive(Debug, Clone, Default)]
pub struct RateState {
    pub usage: Option<(u64, u64)>,
    pub limit: Option<(u64, u64)>,
    /// No request before this instant (after a 429, or when the reserve is reached).
    pub blocked_until: Option<Instant>,
    /// What set `blocked_until`.
    pub blocked_by: Option<Window>,
    /// When each window resets (short, long), as last reported.
    pub resets_at: Option<(Instant, Instant)>,
    /// Since when requests wait for a window (a pacing episode, logged once when it starts and
    /// when it ends); `None` while they go out.
    pub pacing_since: Option<Instant>,
    /// Pacing episodes so far, and the time they lasted (ended episodes).
    pub paced: u64,
    pub paced_for: Duration,
    /// Answers 429 (Too Many Requests) since the start, whoever asked.
    pub answered_429: u64,
    /// No bulk request ([`Client::bulk`]: the webhook fetches) before this instant: the bulk
    /// lane stops short of the share kept for the others, and is paced over the day.
    pub bulk_blocked_until: Option<Instant>,
    /// Why the bulk lane waits.
    pub bulk_held_by: Option<BulkHold>,
    /// Requests sent and not answered yet: the server may count them already, so a request
    /// goes only while the usage last reported plus these stay short of the limit (before, eight
    /// fetches let go together after a wait overshot a window nearly spent: 429s).
    pub in_flight: u64,
}

impl RateState {
    /// Whether one more request would reach a window's limit (less the reserve), counting the
    /// requests in flight: the window to wait for, and until when.
    pub(crate) fn admits(&self, reserve: u64) -> Option<(Instant, Window)> {
        let ((us, ul), (ls, ll), (rs, rl)) = (self.usage?, self.limit?, self.resets_at?);
        let now = Instant::now();
        // A window that has reset since it was reported: a request still in flight may land in
        // the new one, so one request at a time until an answer reports the new window.
        if rs <= now || rl <= now {
            let window = if rl <= now {
                Window::Daily
            } else {
                Window::Short
            };
            return (self.in_flight > 0).then(|| (now + Duration::from_millis(50), window));
        }
        let full =
            |used: u64, limit: u64| used + self.in_flight + reserve_for(reserve, limit) >= limit;
        if full(ul, ll) {
            return Some((rl, Window::Daily));
        }
        if full(us, ls) {
            return Some((rs, Window::Short));
        }
        None
    }
}

/// Why the bulk lane waits while the others may still go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkHold {
    /// It used its part of a window; the rest ([`KEPT_FROM_BULK`]) is the others'.
    Share(Window),
    /// It is ahead of its even spread over the daily window.
    Paced,
}

/// The share of each window the bulk lane leaves to the others (the auditor, the webhook
/// watch, people waiting on a command), one part in this many: a fetch backlog of any size
/// cannot take it.
pub const KEPT_FROM_BULK: u64 = 10;

/// The length of AccessLink's long window: the bulk lane spreads its part of it evenly.
pub const DAY_S: u64 = 24 * 3600;

/// The part of a window of `limit` requests the bulk lane may use: all but the share kept for
/// the others and the reserve.
pub fn bulk_part(limit: u64, reserve: u64) -> u64 {
    let part = limit - limit.div_ceil(KEPT_FROM_BULK);
    part.saturating_sub(reserve_for(reserve, limit))
}

/// How long the bulk lane must wait, from what a response reported: at its share's ceiling of
/// the daily window, until that resets; of the short window, until that resets; ahead of an
/// even spread of its daily part (plus an hour's worth), until the spread catches up.
pub fn bulk_wait(
    usage: (u64, u64),
    limit: (u64, u64),
    reset_s: (u64, u64),
    reserve: u64,
) -> Option<(Duration, BulkHold)> {
    let part = |limit: u64| bulk_part(limit, reserve);
    let (daily, short) = (part(limit.1), part(limit.0));
    if usage.1 >= daily {
        return Some((
            Duration::from_secs(reset_s.1),
            BulkHold::Share(Window::Daily),
        ));
    }
    if usage.0 >= short {
        return Some((
            Duration::from_secs(reset_s.0),
            BulkHold::Share(Window::Short),
        ));
    }
    let per_s = daily as f64 / DAY_S as f64;
    let ahead = usage.1 as f64 - spread_allows(daily, reset_s.1);
    (ahead > 0.0 && per_s > 0.0).then(|| {
        (
            Duration::from_secs_f64((ahead / per_s).min(DAY_S as f64)),
            BulkHold::Paced,
        )
    })
}

/// What an even spread of `daily` requests over the day allows by now, with an hour's worth
/// to start with, the daily window resetting in `reset_s` seconds: the line the bulk lane keeps
/// under, and past which the daemon's safety net slows.
pub fn spread_allows(daily: u64, reset_s: u64) -> f64 {
    let elapsed = DAY_S.saturating_sub(reset_s) as f64;
    daily as f64 * (elapsed + 3600.0) / DAY_S as f64
}

/// A block in force, in wall-clock time: what a restart must not forget (a process that
/// starts inside a spent window would otherwise send its first requests into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedBlock {
    pub until: chrono::DateTime<chrono::Utc>,
    pub window: Window,
}

impl RateState {
    /// Blocks requests until `until` (keeping a later block already set).
    pub(crate) fn block(&mut self, until: Instant, by: Window) {
        if self.blocked_until.is_none_or(|b| until > b) {
            self.blocked_until = Some(until);
            self.blocked_by = Some(by);
        }
    }
}

/// Of two reports of one window's usage, `(reset instant, used)`, the one to believe: a newer
/// window's (its reset is later by more than the reports' rounding of a second); not an
/// answer of an older window that arrived late (an earlier reset and a lower usage), but one
/// whose earlier reset comes with a higher usage (the window was shortened); of the same
/// window, the higher usage (usage only grows within a window).
pub(crate) fn newest(reported: (Instant, u64), known: (Instant, u64)) -> (Instant, u64) {
    let slack = Duration::from_secs(1);
    if reported.0 > known.0 + slack {
        reported
    } else if reported.0 + slack < known.0 {
        if reported.1 < known.1 {
            known
        } else {
            reported
        }
    } else {
        (reported.0.max(known.0), reported.1.max(known.1))
    }
}

/// The longest rate-limit reset hookrace believes: AccessLink's long window is 24 hours.
pub(crate) const MAX_RESET_S: u64 = 24 * 3600 + 60;

/// The requests kept in reserve in a window of `limit`: the policy's reserve, but never more
/// than a twentieth of the limit, so an odd small limit (`RateLimit-Limit: 2, 2`) does not hold
/// every request back for a window the usage is nowhere near (Polar's smallest real limit, 500
/// per 15 minutes, keeps the full reserve of 5).
pub fn reserve_for(reserve: u64, limit: u64) -> u64 {
    reserve.min(limit / 20)
}

/// `"12, 40"` → (12, 40); spaces optional.
pub fn parse_pair(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split(',').map(|p| p.trim().parse::<u64>());
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) => Some((a, b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bulk lane stops at its part of a window (a tenth kept for the others, and the
    /// reserve), and spreads its daily part evenly with an hour's worth ahead.
    #[test]
    fn the_bulk_lane_leaves_a_share_and_spreads_over_the_day() {
        // Limits 100 / 10,000: parts 90 − 5 = 85 and 9,000 − 5 = 8,995.
        let limit = (100, 10_000);
        let fresh = (900, 86_400);
        assert_eq!(bulk_wait((10, 10), limit, fresh, 5), None);
        assert_eq!(
            bulk_wait((85, 85), limit, (300, 86_000), 5),
            Some((Duration::from_secs(300), BulkHold::Share(Window::Short)))
        );
        assert_eq!(
            bulk_wait((1, 8_995), limit, (300, 7_200), 5),
            Some((Duration::from_secs(7_200), BulkHold::Share(Window::Daily)))
        );
        // At the start of the day an hour's worth (~375) may go at once; more is paced.
        assert_eq!(bulk_wait((50, 370), limit, fresh, 5), None);
        let (wait, why) = bulk_wait((50, 475), limit, fresh, 5).unwrap();
        assert_eq!(why, BulkHold::Paced);
        let per_s = 8_995.0 / 86_400.0;
        assert!((wait.as_secs_f64() - (475.0 - 3_600.0 * per_s) / per_s).abs() < 1.0);
        // Half a day in, half the daily part (plus the hour) has been earned.
        assert_eq!(bulk_wait((50, 4_800), limit, (900, 43_200), 5), None);
    }
}

//! The dashboard's browser sessions: opened with `?token=`, the admin listener hands the browser
//! a random session value in a cookie instead of the token itself, so a cookie that leaks (a
//! shared profile, a proxy log, a stolen disk) neither names the token nor outlives the daemon.
//!
//! Sessions live in memory only (a restart signs every browser out: it opens the page with the
//! token again), are bounded in number (the oldest goes first) and expire.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngExt;
use subtle::ConstantTimeEq;

/// How long a dashboard session lasts after it was opened.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The most sessions kept at once: opening one more forgets the oldest.
pub const MAX_SESSIONS: usize = 64;

/// The open sessions: their values and when each ends.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<Vec<([u8; 32], Instant)>>);

impl Sessions {
    /// A new session's value, as the cookie carries it (64 hex digits).
    pub fn open(&self) -> String {
        let value: [u8; 32] = rand::rng().random();
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        open.retain(|(_, ends)| *ends > now);
        if open.len() >= MAX_SESSIONS {
            open.remove(0); // the oldest: they are kept in the order they were opened
        }
        open.push((value, now + LIFETIME));
        hex::encode(value)
    }

    /// Whether `cookie` is the value of a session still open. Every open session is compared in
    /// constant time, so the answer's timing says nothing about how close a guess came.
    pub fn admits(&self, cookie: &str) -> bool {
        let Ok(given) = hex::decode(cookie.trim()) else {
            return false;
        };
        let now = Instant::now();
        let open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        open.iter().fold(false, |found, (value, ends)| {
            found | (bool::from(value.as_slice().ct_eq(&given)) && *ends > now)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_admits_its_own_value_only_and_the_oldest_goes_first() {
        let sessions = Sessions::default();
        let first = sessions.open();
        assert_eq!(first.len(), 64);
        assert!(sessions.admits(&first));
        assert!(!sessions.admits("00"));
        assert!(!sessions.admits("not hex"));
        assert!(!sessions.admits(&"0".repeat(64)));
        for _ in 0..MAX_SESSIONS {
            sessions.open();
        }
        assert!(!sessions.admits(&first), "the oldest was forgotten");
    }
}

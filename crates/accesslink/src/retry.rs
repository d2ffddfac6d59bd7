//! One retry policy for everything hookrace tries again: the AccessLink client's own request
//! retries, the fetcher's jobs and the notify senders' events. Given what an attempt came to and
//! the attempts so far, [`RetryPolicy::decide`] says `Done`, `Retry(after)` or `GiveUp(why)`. It is
//! pure (the jitter draw is an argument), so the table tests below pin every case; the callers only
//! draw the jitter, record the decision and wait.

use std::time::Duration;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// It worked.
    Done,
    /// It failed in a way that may pass (a timeout, a 5xx, a 429); `wait`: the other side said how
    /// long to wait (a rate limit's reset), which beats the backoff.
    Transient {
        reason: String,
        wait: Option<Duration>,
    },
    /// It failed in a way that will not pass by trying again (a 404, a refused token, a 410).
    Permanent { reason: String },
}

/// When a run of failures ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// After this many attempts in all.
    Attempts(u32),
    /// When the next try would come this long after the first failure.
    Elapsed(Duration),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Done,
    /// Try again after this long (this is attempt number `attempt`, from 1).
    Retry {
        after: Duration,
        attempt: u32,
    },
    GiveUp(String),
}

/// Exponential backoff with full jitter under a cap, and a limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    pub limit: Limit,
}

impl RetryPolicy {
    /// The decision after an attempt that came to `attempt`, when `failed_before` attempts had
    /// failed already and the first failure was `failing_for` ago (zero for none); `unit` is a
    /// uniform draw in [0, 1] for the jitter.
    pub fn decide(
        &self,
        attempt: Attempt,
        failed_before: u32,
        failing_for: Duration,
        unit: f64,
    ) -> Decision {
        let (reason, wait) = match attempt {
            Attempt::Done => return Decision::Done,
            Attempt::Permanent { reason } => return Decision::GiveUp(reason),
            Attempt::Transient { reason, wait } => (reason, wait),
        };
        let failures = failed_before.saturating_add(1);
        let after = wait.unwrap_or_else(|| jittered(unit, self.base, self.cap, failures));
        match self.limit {
            Limit::Attempts(max) if failures >= max => {
                Decision::GiveUp(format!("{reason} (after {failures} attempts)"))
            }
            Limit::Elapsed(limit) if failing_for + after > limit => Decision::GiveUp(format!(
                "{reason} (given up after {failures} attempts over {})",
                humantime::format_duration(limit)
            )),
            _ => Decision::Retry {
                after,
                attempt: failures,
            },
        }
    }

    /// [`RetryPolicy::decide`] with a fresh jitter draw.
    pub fn decide_now(
        &self,
        attempt: Attempt,
        failed_before: u32,
        failing_for: Duration,
    ) -> Decision {
        use rand::RngExt;
        self.decide(
            attempt,
            failed_before,
            failing_for,
            rand::rng().random_range(0.0..=1.0),
        )
    }

    /// The wait before retry `attempt` (1, 2, …) with a fresh jitter draw, whatever the limit.
    pub fn backoff(&self, attempt: u32) -> Duration {
        use rand::RngExt;
        jittered(
            rand::rng().random_range(0.0..=1.0),
            self.base,
            self.cap,
            attempt,
        )
    }
}

/// The wait before retry `attempt` (1, 2, …) for a draw `unit` in [0, 1]: uniform in
/// [0, min(cap, base·2^(attempt−1))], so that clients failing together do not retry together.
fn jittered(unit: f64, base: Duration, cap: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(cap);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn transient(wait: Option<Duration>) -> Attempt {
        Attempt::Transient {
            reason: "503".into(),
            wait,
        }
    }

    #[test]
    fn decisions_follow_the_outcome_the_attempts_and_the_limit() {
        let by_count = RetryPolicy {
            base: S(2),
            cap: S(600),
            limit: Limit::Attempts(8),
        };
        let by_time = RetryPolicy {
            base: S(1),
            cap: S(3600),
            limit: Limit::Elapsed(S(86_400)),
        };
        let gave_up = |d: &Decision| matches!(d, Decision::GiveUp(_));
        // (policy, attempt, failed before, failing for, draw) → decision
        let table: Vec<(RetryPolicy, Attempt, u32, Duration, f64, Decision)> = vec![
            (by_count, Attempt::Done, 5, S(100), 0.5, Decision::Done),
            // The first failure waits up to base (full jitter: the draw picks where).
            (
                by_count,
                transient(None),
                0,
                S(0),
                1.0,
                Decision::Retry {
                    after: S(2),
                    attempt: 1,
                },
            ),
            (
                by_count,
                transient(None),
                0,
                S(0),
                0.0,
                Decision::Retry {
                    after: S(0),
                    attempt: 1,
                },
            ),
            // Doubling: the third failure's ceiling is 8 s.
            (
                by_count,
                transient(None),
                2,
                S(9),
                0.5,
                Decision::Retry {
                    after: S(4),
                    attempt: 3,
                },
            ),
            // Under the cap, however many failures.
            (
                by_count,
                transient(None),
                6,
                S(0),
                1.0,
                Decision::Retry {
                    after: S(128),
                    attempt: 7,
                },
            ),
            // The other side's wait beats the backoff.
            (
                by_count,
                transient(Some(S(42))),
                0,
                S(0),
                1.0,
                Decision::Retry {
                    after: S(42),
                    attempt: 1,
                },
            ),
            // Elapsed limit: still inside a day.
            (
                by_time,
                transient(None),
                3,
                S(3600),
                1.0,
                Decision::Retry {
                    after: S(8),
                    attempt: 4,
                },
            ),
        ];
        for (policy, attempt, before, failing, unit, want) in table {
            assert_eq!(
                policy.decide(attempt.clone(), before, failing, unit),
                want,
                "{attempt:?} {before}"
            );
        }
        // Limits and permanent failures give up, saying why.
        assert!(gave_up(&by_count.decide(transient(None), 7, S(0), 0.5)));
        match by_count.decide(transient(None), 7, S(0), 0.5) {
            Decision::GiveUp(why) => assert_eq!(why, "503 (after 8 attempts)"),
            other => panic!("{other:?}"),
        }
        assert!(gave_up(&by_time.decide(transient(None), 3, S(86_399), 1.0)));
        assert_eq!(
            by_time.decide(
                Attempt::Permanent {
                    reason: "410".into()
                },
                0,
                S(0),
                0.5
            ),
            Decision::GiveUp("410".into())
        );
    }

    #[test]
    fn backoff_is_full_jitter_under_a_growing_cap() {
        let base = Duration::from_millis(200);
        let cap = Duration::from_secs(10);
        assert_eq!(jittered(1.0, base, cap, 1), base);
        assert_eq!(jittered(1.0, base, cap, 3), base * 4);
        assert_eq!(jittered(0.5, base, cap, 3), base * 2);
        assert_eq!(jittered(1.0, base, cap, 40), cap);
        let p = RetryPolicy {
            base,
            cap,
            limit: Limit::Attempts(3),
        };
        assert!(p.backoff(40) <= cap);
    }
}

//! Polar's contract as rules: each a scenario run on the simulator and a verdict from what its
//! log shows.

use std::time::Duration;

use serde_json::json;

use super::sim_client::{Seen, SimClient, statuses};
use super::{Fixture, Grade, MAX_FETCHES_OF_GONE, Outcome, SLOW_ANSWER_MS, Verdict};
use crate::sim::Logged;

pub(super) fn verdict(
    rule: &'static str,
    title: &'static str,
    outcome: Outcome,
    observed: String,
    fix: &str,
) -> Verdict {
    Verdict {
        rule,
        title,
        required: true,
        outcome,
        // The only reason a rule is not judged.
        observed: if outcome == Outcome::NotJudged {
            format!("not judged: the receiver never fetched any data (see `fetch`); {observed}")
        } else {
            observed
        },
        fix: if matches!(outcome, Outcome::Pass | Outcome::NotJudged) {
            String::new()
        } else {
            fix.to_string()
        },
    }
}

pub(super) fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = crate::units::floor_usize(((sorted.len() as f64 - 1.0) * p).round());
    sorted.get(i).copied()
}

/// Runs every rule against the receiver at `url`, in order. A receiver that does not answer the
/// PING cannot be registered, so nothing after that rule can run.
pub(super) async fn grade(
    sim: &SimClient,
    fixture: &Fixture,
    url: &str,
    wait: Duration,
    judged: &mut (dyn FnMut(&Verdict) + Send),
) -> anyhow::Result<Grade> {
    let (alice, bob) = (fixture.users[0].0, fixture.users[1].0);
    let mut grade = Grade::new(url, crate::accesslink::dialect::Dialect::Polar, &sim.base);
    let mut add = |grade: &mut Grade, verdicts: Vec<Verdict>| grade.add(verdicts, judged);
    let (ping, registered) = ping(sim, url, wait).await?;
    add(&mut grade, vec![ping]);
    if !registered {
        return Ok(grade);
    }
    let (signed, p50, p95, fetches) = signed_and_fetched(sim, alice, bob, wait).await?;
    add(&mut grade, signed);
    (grade.answer_p50_ms, grade.answer_p95_ms) = (p50, p95);
    // What a receiver does with data can only be seen when it fetches: one that never does
    // fails `fetch`, and the rules that judge its fetching are not judged (not failed for it).
    let watch = Fetching(fetches);
    add(&mut grade, vec![forged(sim, alice, wait, watch).await?]);
    add(&mut grade, vec![duplicate(sim, alice, wait, watch).await?]);
    add(&mut grade, unknowns(sim, alice, wait).await?);
    add(&mut grade, vec![burst(sim, bob, wait).await?]);
    add(&mut grade, vec![gone(sim, alice, wait, watch).await?]);
    add(&mut grade, vec![zoneless(sim, alice, wait, watch).await?]);
    Ok(grade)
}

/// Whether the receiver fetched anything when it was sent signed deliveries.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fetching(pub(super) bool);

impl Fetching {
    /// `judged`, or not judged when the receiver never fetches.
    pub(super) fn or_not_judged(self, judged: Outcome) -> Outcome {
        if self.0 { judged } else { Outcome::NotJudged }
    }
}

/// 1. The PING: the verdict, and whether the webhook could be registered at all.
async fn ping(sim: &SimClient, url: &str, wait: Duration) -> anyhow::Result<(Verdict, bool)> {
    let before = sim.last_seq().await?;
    let registered = sim.register(url).await?;
    tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
    let after_ping = sim.log_after(before).await?;
    let fetched_after_ping = after_ping
        .iter()
        .filter(|e| matches!(e.what, Logged::Request { .. }))
        .count();
    let ping_title = "PING answered 200 without a signature check, and not taken as data";
    match registered {
        Err(why) => {
            let failed = verdict(
                "ping",
                ping_title,
                Outcome::Fail,
                format!("the webhook could not be registered: {why}"),
                "Answer a POST whose Polar-Webhook-Event header is PING with 200 before anything \
                 else: Polar registers the webhook only if its PING is answered 200.",
            );
            Ok((failed, false))
        }
        Ok(()) => Ok((
            verdict(
                "ping",
                ping_title,
                if fetched_after_ping == 0 {
                    Outcome::Pass
                } else {
                    Outcome::Fail
                },
                format!(
                    "PING answered 200; {fetched_after_ping} request(s) to AccessLink followed it"
                ),
                "A PING carries no data: answer 200 and do nothing else.",
            ),
            true,
        )),
    }
}

/// 2 and 3. Signed deliveries for two users: answered 200 quickly, fetched with the right
/// token. Also the answer times' p50 and p95 (ms).
pub(super) async fn signed_and_fetched(
    sim: &SimClient,
    alice: u64,
    bob: u64,
    wait: Duration,
) -> anyhow::Result<(Vec<Verdict>, Option<u64>, Option<u64>, bool)> {
    let a = sim.scenario("EXERCISE", alice, 3, json!({}), wait).await?;
    let b = sim.scenario("EXERCISE", bob, 2, json!({}), wait).await?;
    let mut times: Vec<u64> = a
        .deliveries
        .iter()
        .chain(&b.deliveries)
        .filter_map(|d| d.1)
        .collect();
    times.sort_unstable();
    let (p50, p95) = (percentile(&times, 0.5), percentile(&times, 0.95));
    let total = a.deliveries.len() + b.deliveries.len();
    let ok = a.answered_ok() + b.answered_ok();
    let timing = format!(
        "answer p50 {} ms, p95 {} ms",
        p50.map_or("–".into(), |v| v.to_string()),
        p95.map_or("–".into(), |v| v.to_string())
    );
    let answered = verdict(
        "signed-delivery",
        "a signed delivery answered 200 quickly",
        if ok < total || total == 0 {
            Outcome::Fail
        } else if p95.unwrap_or(0) > SLOW_ANSWER_MS {
            Outcome::Warn
        } else {
            Outcome::Pass
        },
        format!(
            "{ok} of {total} answered 2xx ({}); {timing}",
            statuses(&[a.deliveries.clone(), b.deliveries.clone()].concat())
        ),
        "Verify the signature, keep the notification (durably), answer 200 at once and fetch \
         afterwards: Polar gives up on a slow answer and does not retry.",
    );
    let fetched = fetch_verdict(&a, &b, wait);
    let fetches = !a.fetches.is_empty() || !b.fetches.is_empty();
    Ok((vec![answered, fetched], p50, p95, fetches))
}

/// 3. Each item of `a` and `b` fetched with its own user's token.
fn fetch_verdict(a: &Seen, b: &Seen, wait: Duration) -> Verdict {
    let mut right = 0;
    let mut wrong = Vec::new();
    let mut missing = 0;
    for seen in [a, b] {
        for (path, user) in &seen.made {
            let mine: Vec<_> = seen.fetches.iter().filter(|f| &f.0 == path).collect();
            if mine.is_empty() {
                missing += 1;
            } else if mine.iter().any(|f| f.1 == Some(*user) && f.2 == 200) {
                right += 1;
            } else {
                wrong.push(format!(
                    "{path} with {}",
                    mine[0]
                        .1
                        .map_or("an unknown token".to_string(), |u| format!(
                            "user {u}'s token"
                        ))
                ));
            }
        }
    }
    let made = a.made.len() + b.made.len();
    verdict(
        "fetch",
        "the data fetched from `url` with the right user's token",
        if right == made {
            Outcome::Pass
        } else {
            Outcome::Fail
        },
        format!(
            "{right} of {made} fetched with their user's token within {}; {missing} never \
             fetched{}",
            humantime::format_duration(wait),
            if wrong.is_empty() {
                String::new()
            } else {
                format!("; wrong: {}", wrong.join(", "))
            }
        ),
        "GET the delivery's `url` with the access token of the delivery's `user_id` (keep a \
         token per user); the notification carries no data itself.",
    )
}

/// 4. A forged delivery.
async fn forged(
    sim: &SimClient,
    alice: u64,
    wait: Duration,
    watch: Fetching,
) -> anyhow::Result<Verdict> {
    let forged = sim
        .scenario("EXERCISE", alice, 1, json!({"bad_signature": true}), wait)
        .await?;
    let status = forged.deliveries.first().and_then(|d| d.0);
    let acted = forged.fetches.len();
    Ok(verdict(
        "forged-delivery",
        "a delivery with a wrong signature not acted on (4xx recommended)",
        match (acted, status) {
            (0, Some(s)) if (400..500).contains(&s) => Outcome::Pass,
            (0, _) => watch.or_not_judged(Outcome::Warn),
            _ => Outcome::Fail,
        },
        format!(
            "answered {}; {acted} fetch(es) of its data",
            status.map_or("nothing".into(), |s| s.to_string())
        ),
        "Compute HMAC-SHA256 of the raw body with the webhook's secret and compare it (in \
         constant time) with Polar-Webhook-Signature; on a mismatch answer 401 and do nothing.",
    ))
}

/// What a rule is called, what it asks, and how to fix a failure of it.
pub(super) struct Words {
    pub rule: &'static str,
    pub title: &'static str,
    pub fix: &'static str,
}

/// 5. A duplicate delivery.
async fn duplicate(
    sim: &SimClient,
    alice: u64,
    wait: Duration,
    watch: Fetching,
) -> anyhow::Result<Verdict> {
    let words = Words {
        rule: "duplicate",
        title: "a duplicate delivery answered 200 and fetched at most once",
        fix: "Answer a repeated delivery 200 (it is not an error) and skip what you already \
              have: key each notification by (event, user_id, entity_id or date).",
    };
    repeated(sim, alice, wait, watch, &words, Outcome::Warn).await
}

/// A delivery sent twice: both copies answered 2xx and the data fetched once; `twice` is the
/// verdict when it was fetched more often.
pub(super) async fn repeated(
    sim: &SimClient,
    user: u64,
    wait: Duration,
    watch: Fetching,
    words: &Words,
    twice: Outcome,
) -> anyhow::Result<Verdict> {
    let dup = sim
        .scenario("EXERCISE", user, 1, json!({"duplicate": true}), wait)
        .await?;
    let path = dup.made.first().map(|m| m.0.clone()).unwrap_or_default();
    let fetched = dup.fetched(&path);
    Ok(verdict(
        words.rule,
        words.title,
        if dup.answered_ok() < 2 {
            Outcome::Fail
        } else if fetched == 1 {
            Outcome::Pass
        } else if fetched == 0 {
            watch.or_not_judged(Outcome::Fail)
        } else {
            twice
        },
        format!(
            "{} of 2 copies answered 2xx ({}); the data fetched {fetched} time(s)",
            dup.answered_ok(),
            dup.statuses()
        ),
        words.fix,
    ))
}

/// 6. An unknown event type and an unknown user.
async fn unknowns(sim: &SimClient, alice: u64, wait: Duration) -> anyhow::Result<Vec<Verdict>> {
    let fix = "Polar adds event types and may name a user you no longer have: answer 200 (or a \
               4xx) and ignore what you do not know; never a 5xx, never a hang.";
    let mut verdicts = Vec::new();
    for (rule, title, fault) in [
        (
            "unknown-event",
            "an unknown event type answered without a crash (2xx or 4xx)",
            json!({"unknown_event": true}),
        ),
        (
            "unknown-user",
            "a delivery for an unknown user answered without a crash (2xx or 4xx)",
            json!({"unknown_user": true}),
        ),
    ] {
        let words = Words { rule, title, fix };
        verdicts.push(without_crash(sim, alice, wait, fault, &words).await?);
    }
    Ok(verdicts)
}

/// A delivery carrying `fault` answered without a crash: 2xx or 4xx, never a 5xx or a hang.
pub(super) async fn without_crash(
    sim: &SimClient,
    user: u64,
    wait: Duration,
    fault: serde_json::Value,
    words: &Words,
) -> anyhow::Result<Verdict> {
    let seen = sim.scenario("EXERCISE", user, 1, fault, wait).await?;
    let status = seen.deliveries.first().and_then(|d| d.0);
    Ok(verdict(
        words.rule,
        words.title,
        match status {
            Some(s) if (200..500).contains(&s) => Outcome::Pass,
            _ => Outcome::Fail,
        },
        format!(
            "answered {}",
            status.map_or("nothing (no answer or timed out)".into(), |s| s.to_string())
        ),
        words.fix,
    ))
}

/// 7. A burst.
pub(super) async fn burst(sim: &SimClient, bob: u64, wait: Duration) -> anyhow::Result<Verdict> {
    let burst = sim.scenario("EXERCISE", bob, 50, json!({}), wait).await?;
    let mut burst_times: Vec<u64> = burst.deliveries.iter().filter_map(|d| d.1).collect();
    burst_times.sort_unstable();
    Ok(verdict(
        "burst",
        "a burst of 50 deliveries all answered within the timeout",
        if burst.answered_ok() == 50 {
            Outcome::Pass
        } else {
            Outcome::Fail
        },
        format!(
            "{} of 50 answered 2xx; slowest {} ms",
            burst.answered_ok(),
            burst_times.last().map_or("–".into(), |v| v.to_string())
        ),
        "Answer each delivery independently and at once (queue the fetches): deliveries arrive \
         together when many users sync at the same time.",
    ))
}

/// 8. Data gone before the fetch.
async fn gone(
    sim: &SimClient,
    alice: u64,
    wait: Duration,
    watch: Fetching,
) -> anyhow::Result<Verdict> {
    let gone = sim
        .scenario("EXERCISE", alice, 1, json!({"gone": true}), wait * 3)
        .await?;
    let path = gone.made.first().map(|m| m.0.clone()).unwrap_or_default();
    let tries = gone.fetched(&path);
    Ok(verdict(
        "gone",
        "data gone by the fetch (404/204) does not make the receiver retry for ever",
        if tries > MAX_FETCHES_OF_GONE {
            Outcome::Fail
        } else {
            watch.or_not_judged(Outcome::Pass)
        },
        format!(
            "fetched {tries} time(s) in {} (answered 404)",
            humantime::format_duration(wait * 3)
        ),
        "A 404 or 204 on the data means it is gone (deleted, or a newer version replaced it): \
         give up on it; retry only a 429 or a 5xx, a few times, with growing pauses.",
    ))
}

/// 9. A zone-less timestamp.
async fn zoneless(
    sim: &SimClient,
    alice: u64,
    wait: Duration,
    watch: Fetching,
) -> anyhow::Result<Verdict> {
    let zoneless = sim
        .scenario(
            "EXERCISE",
            alice,
            1,
            json!({"zoneless_timestamp": true}),
            wait,
        )
        .await?;
    let status = zoneless.deliveries.first().and_then(|d| d.0);
    let path = zoneless
        .made
        .first()
        .map(|m| m.0.clone())
        .unwrap_or_default();
    Ok(verdict(
        "zoneless-timestamp",
        "a `timestamp` without a time zone accepted",
        match (status, zoneless.fetched(&path)) {
            (Some(200), 1..) => Outcome::Pass,
            (Some(200), 0) => watch.or_not_judged(Outcome::Fail),
            _ => Outcome::Fail,
        },
        format!(
            "answered {}; data fetched {} time(s)",
            status.map_or("nothing".into(), |s| s.to_string()),
            zoneless.fetched(&path)
        ),
        "Polar's examples carry both `…Z` and zone-less timestamps: parse tolerantly (or not at \
         all: the timestamp is informative).",
    ))
}

//! The Standard Webhooks rules: what a receiver of that dialect must do, each a scenario on a
//! simulator that signs its deliveries that way (`sim --dialect standard-webhooks`). The events
//! carry Polar's payload in hookrace's notify envelope (`accesslink::dialect`), so whether a
//! receiver acted on one shows as it does for Polar's: it fetched `data.url`.

use std::time::Duration;

use serde_json::{Value, json};

use super::rules::{Fetching, Words, burst, repeated, signed_and_fetched, verdict, without_crash};
use super::sim_client::SimClient;
use super::{Fixture, Grade, Outcome, Verdict};
use crate::accesslink::dialect::{Dialect, TOLERANCE_S};
use crate::sim::{LARGE_PADDING, SKEW_S};

/// Runs every Standard Webhooks rule against the receiver at `url`, in order.
pub(super) async fn grade(
    sim: &SimClient,
    fixture: &Fixture,
    url: &str,
    wait: Duration,
    judged: &mut (dyn FnMut(&Verdict) + Send),
) -> anyhow::Result<Grade> {
    let (alice, bob) = (fixture.users[0].0, fixture.users[1].0);
    let mut grade = Grade::new(url, Dialect::StandardWebhooks, &sim.base);
    let mut add = |grade: &mut Grade, verdicts: Vec<Verdict>| grade.add(verdicts, judged);
    // Standard Webhooks has no PING: registering takes the URL as it is.
    if let Err(why) = sim.register(url).await? {
        anyhow::bail!("registering {url} as the simulator's webhook: {why}");
    }
    let (mut signed, p50, p95, fetches) = signed_and_fetched(sim, alice, bob, wait).await?;
    if !fetches {
        not_judged_without_fetches(&mut signed);
    }
    in_this_dialect(&mut signed);
    add(&mut grade, signed);
    (grade.answer_p50_ms, grade.answer_p95_ms) = (p50, p95);
    let watch = Fetching(fetches);
    for refusal in REFUSED {
        add(&mut grade, vec![refused(sim, alice, wait, &refusal).await?]);
    }
    add(&mut grade, vec![rotated(sim, alice, wait, watch).await?]);
    add(
        &mut grade,
        vec![same_id_twice(sim, alice, wait, watch).await?],
    );
    add(&mut grade, vec![unknown_type(sim, alice, wait).await?]);
    add(&mut grade, vec![large(sim, alice, wait, watch).await?]);
    add(&mut grade, vec![burst(sim, bob, wait).await?]);
    Ok(grade)
}

/// The shared `signed-delivery` rule in this dialect's words (it accepts any 2xx; a sender of
/// this dialect retries what is not answered in time).
fn in_this_dialect(signed: &mut [Verdict]) {
    for v in signed.iter_mut().filter(|v| v.rule == "signed-delivery") {
        v.title = "a signed event answered 2xx quickly";
        if !v.fix.is_empty() {
            v.fix =
                "Verify the signature over the raw body, keep the event durably, answer 2xx at \
                     once and act on it afterwards: a sender retries an event answered late or not \
                     at all, and a slow receiver falls behind a burst."
                    .into();
        }
    }
}

/// An app that receives hookrace's own notify events (fat: the data is in them) has nothing to
/// fetch: for a receiver that fetched nothing, `fetch` is not judged rather than failed, and the
/// rules that watch what it acted on are judged by its answers alone where they can be.
fn not_judged_without_fetches(signed: &mut [Verdict]) {
    for v in signed.iter_mut().filter(|v| v.rule == "fetch") {
        v.outcome = Outcome::NotJudged;
        v.observed = format!(
            "not judged: the receiver fetched nothing (an app of hookrace's notify events need \
             not); {}",
            v.observed
        );
        v.fix.clear();
    }
}

/// A delivery the receiver must refuse (4xx) and not act on.
struct Refused {
    rule: &'static str,
    title: &'static str,
    fault: &'static str,
    fix: &'static str,
}

const REFUSED: [Refused; 4] = [
    Refused {
        rule: "forged-delivery",
        title: "a delivery signed with another key refused (4xx) and not acted on",
        fault: "bad_signature",
        fix: "Compute v1 = base64(HMAC-SHA256(key, id.timestamp.body)) with the base64-decoded \
              whsec_ key and compare it in constant time with each v1 signature of \
              webhook-signature; none matching: answer 401 and do nothing (a reference library \
              does it: standardwebhooks).",
    },
    Refused {
        rule: "missing-signature",
        title: "a delivery without webhook-signature refused (4xx) and not acted on",
        fault: "missing_signature",
        fix: "Treat a missing webhook-id, webhook-timestamp or webhook-signature header as a \
              failed check: answer 400 or 401 and do nothing.",
    },
    Refused {
        rule: "stale-timestamp",
        title: "a correctly signed delivery whose webhook-timestamp is 10 minutes old refused",
        fault: "stale_timestamp",
        fix: "Refuse a webhook-timestamp more than 5 minutes from your clock (it is signed, so \
              an attacker cannot change it): that is what stops a captured delivery from being \
              replayed later.",
    },
    Refused {
        rule: "future-timestamp",
        title: "a correctly signed delivery whose webhook-timestamp is 10 minutes ahead refused",
        fault: "future_timestamp",
        fix: "Refuse a webhook-timestamp more than 5 minutes ahead of your clock, too: the \
              tolerance works both ways.",
    },
];

/// A rule whose delivery must be refused with a 4xx and not acted on (no fetch of its data).
async fn refused(
    sim: &SimClient,
    user: u64,
    wait: Duration,
    r: &Refused,
) -> anyhow::Result<Verdict> {
    let mut fault = json!({});
    fault[r.fault] = Value::Bool(true);
    let seen = sim.scenario("EXERCISE", user, 1, fault, wait).await?;
    let status = seen.deliveries.first().and_then(|d| d.0);
    let acted = seen.fetches.len();
    let refused = status.is_some_and(|s| (400..500).contains(&s));
    Ok(verdict(
        r.rule,
        r.title,
        if refused && acted == 0 {
            Outcome::Pass
        } else {
            Outcome::Fail
        },
        format!(
            "answered {}; {acted} fetch(es) of its data{}",
            status.map_or("nothing".into(), |s| s.to_string()),
            match r.fault {
                "stale_timestamp" | "future_timestamp" => {
                    format!(" (timestamp {SKEW_S} s off, tolerance {TOLERANCE_S} s)")
                }
                _ => String::new(),
            }
        ),
        r.fix,
    ))
}

/// Key rotation: a retired key's signature before the valid one; the delivery is accepted.
async fn rotated(
    sim: &SimClient,
    user: u64,
    wait: Duration,
    watch: Fetching,
) -> anyhow::Result<Verdict> {
    let words = Words {
        rule: "rotated-signatures",
        title: "a webhook-signature with two signatures, one valid (key rotation), accepted",
        fix: "webhook-signature may hold several space-separated signatures (a sender rotating \
              its key signs with both): accept the delivery when any v1 signature matches.",
    };
    let fault = json!({"rotated_signatures": true});
    accepted(sim, user, wait, watch, fault, &words, "").await
}

/// The same message (the same `webhook-id`) delivered twice: handled once.
async fn same_id_twice(
    sim: &SimClient,
    user: u64,
    wait: Duration,
    watch: Fetching,
) -> anyhow::Result<Verdict> {
    let words = Words {
        rule: "duplicate-id",
        title: "the same webhook-id delivered twice answered 2xx and handled once",
        fix: "A sender retries with the same webhook-id: keep the ids you have handled (for \
              longer than the sender retries) and answer a repeat 200 without acting on it \
              again.",
    };
    repeated(sim, user, wait, watch, &words, Outcome::Fail).await
}

/// An event type the receiver does not know.
async fn unknown_type(sim: &SimClient, user: u64, wait: Duration) -> anyhow::Result<Verdict> {
    let words = Words {
        rule: "unknown-type",
        title: "an event of an unknown type answered without a crash (2xx or 4xx)",
        fix: "Senders add event types: verify the signature, then answer 200 (or a 4xx) for a \
              type you do not handle; never a 5xx (it would be retried), never a hang.",
    };
    let fault = json!({"unknown_event": true});
    without_crash(sim, user, wait, fault, &words).await
}

/// A large event: accepted and acted on.
async fn large(
    sim: &SimClient,
    user: u64,
    wait: Duration,
    watch: Fetching,
) -> anyhow::Result<Verdict> {
    let words = Words {
        rule: "large-payload",
        title: "an event of about 40 KiB accepted",
        fix: "Standard Webhooks events carry their data: accept bodies of at least 64 KiB (and \
              verify the signature over the raw bytes, before parsing).",
    };
    let fault = json!({"large_payload": true});
    let padding = format!("{LARGE_PADDING} bytes of padding: ");
    accepted(sim, user, wait, watch, fault, &words, &padding).await
}

/// A delivery carrying `fault` that must be accepted (2xx) and acted on (its data fetched);
/// `note` starts what was observed.
async fn accepted(
    sim: &SimClient,
    user: u64,
    wait: Duration,
    watch: Fetching,
    fault: Value,
    words: &Words,
    note: &str,
) -> anyhow::Result<Verdict> {
    let seen = sim.scenario("EXERCISE", user, 1, fault, wait).await?;
    let status = seen.deliveries.first().and_then(|d| d.0);
    let path = seen.made.first().map(|m| m.0.clone()).unwrap_or_default();
    let fetched = seen.fetched(&path);
    Ok(verdict(
        words.rule,
        words.title,
        match (status, fetched) {
            (Some(s), 1..) if (200..300).contains(&s) => Outcome::Pass,
            (Some(s), 0) if (200..300).contains(&s) => watch.or_not_judged(Outcome::Fail),
            _ => Outcome::Fail,
        },
        format!(
            "{note}answered {}; data fetched {fetched} time(s)",
            status.map_or("nothing".into(), |s| s.to_string())
        ),
        words.fix,
    ))
}

//! What the simulator's ground truth says about a race: the safety net's catch and cost, the
//! rates it generated, the deliveries it lost, and which entities a later delivery announced.

use super::*;

/// The safety-net section: the misses caught against the simulator's lost deliveries, and the
/// poll's cost against what fixed polling at `--poll-every` would have made over the same time
/// (the simulator replays what it made available when).
pub(super) fn safety_net(
    args: &DemoArgs,
    s: &StatusDoc,
    truth: &crate::sim::Truth,
) -> report::SafetyNet {
    let lost = never_delivered(truth);
    let (every, max) = (args.poll_every.as_secs_f64(), args.max_every.as_secs_f64());
    report::SafetyNet {
        strategy: args.strategy.as_str().into(),
        every_s: every,
        max_every_s: (args.strategy == Strategy::Adaptive).then_some(max),
        lost: lost.len() as u64,
        // The entities only the poll saw: those no delivery announced.
        caught: s.poll.misses_caught,
        catch_delay_ms: s.poll.catch_delay_ms.clone(),
        bound_ms: match args.strategy {
            Strategy::Fixed => every * 1000.0,
            Strategy::Adaptive => (max + every) * 1000.0,
        },
        poll_requests: s.poll.requests,
        cycles: s.poll.cycles,
        listings: endpoint(s, crate::counter::PollEndpoint::AuditList),
        fetched: endpoint(s, crate::counter::PollEndpoint::AuditGet),
        fixed_requests: truth.fixed_poll_requests(
            args.poll_every,
            s.started_at,
            chrono::Utc::now(),
        ),
        deactivated_seen: s.webhook.health.deactivated_seen,
        reactivations: s.webhook.health.reactivations,
        starved: s.poll.starved,
    }
}

/// The poll's requests to `endpoint`.
fn endpoint(s: &StatusDoc, endpoint: crate::counter::PollEndpoint) -> u64 {
    s.poll
        .requests_by_endpoint
        .get(endpoint.name())
        .copied()
        .unwrap_or(0)
}

/// The simulator's entities no delivery reached the receiver for.
fn never_delivered(t: &crate::sim::Truth) -> Vec<&crate::sim::TruthEntity> {
    t.entities
        .iter()
        .filter(|e| !deliveries_of(t, e).any(|d| d.outcome == DeliveryOutcome::Sent))
        .collect()
}

/// New items per user per second, by type, as the simulator made them while it generated.
pub(super) fn generated_rates(
    truth: &crate::sim::Truth,
    args: &DemoArgs,
) -> std::collections::BTreeMap<String, f64> {
    let per = args.duration.as_secs_f64() * f64::from(args.users);
    let mut rates = std::collections::BTreeMap::new();
    for kind in ["EXERCISE", "ACTIVITY_SUMMARY"] {
        rates.insert(kind.to_string(), 0.0);
    }
    for e in &truth.entities {
        *rates.entry(e.kind.clone()).or_insert(0.0) += e.item_times.len() as f64 / per;
    }
    rates
}

/// The deliveries the simulator decided for entity `e` (duplicate copies included), in order.
fn deliveries_of<'a>(
    t: &'a crate::sim::Truth,
    e: &'a crate::sim::TruthEntity,
) -> impl Iterator<Item = &'a crate::sim::TruthDelivery> {
    t.deliveries
        .iter()
        .filter(|d| d.event == e.kind && d.user_id == e.user_id && d.entity_id == e.entity_id)
}

/// The simulator's entities whose first item was not delivered (the delivery was dropped or
/// failed, or no webhook existed yet to send it to) while a later one (an activity update of the
/// same day) reached the receiver.
fn announced_late(t: &crate::sim::Truth) -> Vec<&crate::sim::TruthEntity> {
    t.entities
        .iter()
        .filter(|e| {
            let mut own = deliveries_of(t, e).filter(|d| !d.duplicate);
            let first_lost = own
                .next()
                .is_some_and(|d| d.outcome != DeliveryOutcome::Sent);
            first_lost && own.any(|d| d.outcome == DeliveryOutcome::Sent)
        })
        .collect()
}

/// Summarises the simulator's `/sim/truth` document for the report.
pub(super) fn ground_truth(t: &crate::sim::Truth, store: &crate::store::Store) -> GroundTruth {
    let late = announced_late(t);
    let late_delays = late.iter().filter_map(|e| {
        let key = EntityKey::new(&EventType::parse(&e.kind), UserId(e.user_id), &e.entity_id);
        let entity = store.entity(&key).ok()??;
        Some((entity.webhook_at? - entity.available_at()?).num_milliseconds() as f64)
    });
    GroundTruth {
        entities_announced_late: late.len() as u64,
        announced_late_max_ms: late_delays.reduce(f64::max),
        entities_generated: t.entities.len() as u64,
        deliveries_decided: t
            .deliveries
            .iter()
            .filter(|d| !d.duplicate && d.outcome != DeliveryOutcome::NoWebhook)
            .count() as u64,
        deliveries_dropped: t
            .deliveries
            .iter()
            .filter(|d| d.outcome == DeliveryOutcome::Dropped)
            .count() as u64,
        deliveries_duplicated: t.deliveries.iter().filter(|d| d.duplicate).count() as u64,
        entities_never_delivered: never_delivered(t).len() as u64,
        requests: t.requests.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(outcome: &str, at: &str) -> serde_json::Value {
        serde_json::json!({"event": "ACTIVITY_SUMMARY", "user_id": 1, "entity_id": "2026-12-02",
            "url": "u", "outcome": outcome, "status": null, "duplicate": false,
            "decided_at": at, "sent_at": null})
    }

    fn truth(first: &str) -> crate::sim::Truth {
        serde_json::from_value(serde_json::json!({
            "entities": [{"type": "ACTIVITY_SUMMARY", "user_id": 1, "entity_id": "2026-12-02",
                "item_ids": [1, 2], "available_at": "2026-12-02T10:00:00Z"}],
            "deliveries": [delivery(first, "2026-12-02T10:00:00Z"),
                delivery("sent", "2026-12-02T10:00:35Z")],
            "requests": {}
        }))
        .expect("a ground truth as /sim/truth serves it")
    }

    /// A day whose first item found no webhook (or lost its delivery) and whose update was
    /// delivered was announced late; one whose first delivery arrived was not.
    #[test]
    fn an_entity_announced_only_by_its_update_is_announced_late() {
        assert_eq!(announced_late(&truth("no_webhook")).len(), 1);
        assert_eq!(announced_late(&truth("dropped")).len(), 1);
        assert_eq!(announced_late(&truth("sent")).len(), 0);
    }
}

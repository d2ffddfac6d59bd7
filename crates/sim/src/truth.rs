//! The ground truth: every entity the simulator created and every delivery it decided, as the
//! control API (`GET /sim/truth`) reveals them to tests and the demo.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The ground truth the control API reveals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Truth {
    pub entities: Vec<TruthEntity>,
    pub deliveries: Vec<TruthDelivery>,
    /// Requests served per endpoint name (`notifications`, `create_transaction`, …).
    pub requests: BTreeMap<String, u64>,
}

/// One entity the generator (or an injection) created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TruthEntity {
    /// `EXERCISE`, `ACTIVITY_SUMMARY`, `PHYSICAL_INFORMATION`.
    #[serde(rename = "type")]
    pub kind: String,
    pub user_id: u64,
    /// Hashed exercise id, activity date, or creation time.
    pub entity_id: String,
    /// The transaction item ids that carry it (several for updated activity).
    pub item_ids: Vec<u64>,
    /// When each of those items became available (same order).
    #[serde(default)]
    pub item_times: Vec<DateTime<Utc>>,
    pub available_at: DateTime<Utc>,
    /// Whether it reaches a transactional poll (`GET /v3/notifications` lists it).
    #[serde(default)]
    pub transactional: bool,
}

impl Truth {
    /// The requests a poller in `transactions` mode polling every `every` from `from` to `to`
    /// (a cycle at `from`, as hookrace's fixed poller starts with one) would have made for the
    /// data this simulator made: per cycle one `GET /v3/notifications`, and per user and type
    /// with new items since the previous cycle a transaction (create, list, one get per item,
    /// commit). Counted from the simulator's own record of what became available when, so a
    /// race run with another strategy can say what fixed polling would have spent.
    pub fn fixed_poll_requests(
        &self,
        every: std::time::Duration,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> u64 {
        let step = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        if step <= chrono::Duration::zero() {
            return 0;
        }
        let mut items: Vec<(DateTime<Utc>, u64, &str)> = self
            .entities
            .iter()
            .filter(|e| e.transactional)
            .flat_map(|e| {
                e.item_times
                    .iter()
                    .map(move |t| (*t, e.user_id, e.kind.as_str()))
            })
            .collect();
        items.sort();
        let mut requests = 0;
        let mut next = 0;
        let mut tick = from;
        while tick <= to {
            requests += 1; // notifications
            let mut groups = std::collections::BTreeMap::<(u64, &str), u64>::new();
            while next < items.len() && items[next].0 <= tick {
                *groups.entry((items[next].1, items[next].2)).or_default() += 1;
                next += 1;
            }
            requests += groups.values().map(|n| 3 + n).sum::<u64>();
            tick += step;
        }
        requests
    }
}

/// What became of a delivery the simulator decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOutcome {
    /// Waiting for its delay, or being sent.
    Pending,
    /// The receiver answered 200.
    Sent,
    /// Another status, or no answer.
    Failed,
    /// Dropped by the drop fault: never sent.
    Dropped,
    /// The webhook was inactive: not sent.
    Inactive,
    /// No webhook subscribed to the event existed when the item was made: nothing to send. Kept
    /// so an entity whose first item came before the webhook (and a later update announced it)
    /// shows as announced late, not as a slow network.
    #[serde(rename = "no_webhook")]
    NoWebhook,
}

/// One delivery decided by the simulator, and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TruthDelivery {
    pub event: String,
    pub user_id: u64,
    pub entity_id: String,
    pub url: String,
    pub outcome: DeliveryOutcome,
    pub status: Option<u16>,
    /// A second copy sent because of the duplicate fault.
    pub duplicate: bool,
    pub decided_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

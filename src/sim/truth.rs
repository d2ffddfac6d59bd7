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
    pub available_at: DateTime<Utc>,
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

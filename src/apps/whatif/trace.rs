//! `hookrace whatif --trace FILE`: the same rows as the model, but on recorded traffic instead of
//! a Poisson process. Each entity arrives when its data was made, its webhook when its first
//! delivery arrived (or never); the polling schedules run over the trace's span from its origin
//! exactly as hookrace's poller would, spending what its mode spends: transactions per user and
//! data type (only the types AccessLink offers transactions for), or a list per user (exercises
//! only). What a mode never reads is counted as missed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{self, Arrivals, PollCost, Scenario, WhatIf};
use crate::config::PollMode;
use crate::trace::Trace;

/// What the answer says of the trace it ran on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceFacts {
    /// The file, as named.
    pub name: String,
    pub entities: u64,
    pub users: u64,
    pub span_s: f64,
    /// The poll mode replayed.
    pub mode: PollMode,
    /// The poll interval the recording ran with, when the trace says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_poll_every_s: Option<f64>,
}

/// The data types a poll in `mode` reads (AccessLink's names).
fn read_by(mode: PollMode, kind: &str) -> bool {
    match mode {
        PollMode::Transactions => {
            matches!(
                kind,
                "EXERCISE" | "ACTIVITY_SUMMARY" | "PHYSICAL_INFORMATION"
            )
        }
        PollMode::List => kind == "EXERCISE",
    }
}

/// The trace as the model's arrivals, with the scenario it amounts to (for the closed forms and
/// the title): its users, its items per user per day, its share never delivered, its delays.
pub(crate) fn arrivals(trace: &Trace, mode: PollMode) -> (Scenario, Arrivals) {
    let users = trace.header.users.max(1);
    let mut groups: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut items = Vec::with_capacity(trace.entities.len());
    let mut webhook_at = Vec::with_capacity(trace.entities.len());
    let mut pollable = Vec::with_capacity(trace.entities.len());
    let mut auditable = Vec::with_capacity(trace.entities.len());
    let mut listed_whole = Vec::with_capacity(trace.entities.len());
    // The listings an audit reads: per user, the listable data types they have.
    let mut listed: std::collections::BTreeSet<(&str, &str)> = Default::default();
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for e in &trace.entities {
        let made = trace.offset_s(e.made_at);
        let next = groups.len() as u64;
        let group = *groups.entry((&e.user, &e.kind)).or_insert(next);
        let delivered = e.deliveries.first().map(|d| trace.offset_s(*d));
        if let Some(d) = delivered {
            lo = lo.min(d - made);
            hi = hi.max(d - made);
        }
        items.push((made, group));
        webhook_at.push(delivered);
        pollable.push(read_by(mode, &e.kind));
        let listable = !e.kind.starts_with("SLEEP_WISE");
        auditable.push(listable);
        listed_whole.push(matches!(
            e.kind.as_str(),
            "EXERCISE" | "PHYSICAL_INFORMATION"
        ));
        if listable {
            listed.insert((&e.user, &e.kind));
        }
    }
    let n = items.len() as f64;
    let span = trace.span_s().max(1.0);
    let lost = webhook_at.iter().filter(|w| w.is_none()).count() as f64;
    let scenario = Scenario {
        users,
        items_per_user_day: pollable.iter().filter(|p| **p).count() as f64 / users as f64
            * 86_400.0
            / span,
        drop_rate: if n > 0.0 { lost / n } else { 0.0 },
        webhook_delay_s: if lo.is_finite() {
            (lo.max(0.0), hi.max(0.0))
        } else {
            (0.0, 0.0)
        },
        days: span / 86_400.0,
        seed: 0,
    };
    let cost = match mode {
        PollMode::Transactions => PollCost::Transactions,
        PollMode::List => PollCost::List { users },
    };
    let arrivals = Arrivals {
        items,
        webhook_at,
        pollable,
        auditable,
        listed_whole,
        audit_listings: listed.len() as u64,
        horizon: span,
        cost,
    };
    (scenario, arrivals)
}

/// The rows for `trace`: each interval, the webhooks as recorded, and the adaptive net when asked.
pub fn run(
    trace: &Trace,
    name: &str,
    every: &[Duration],
    mode: PollMode,
    adaptive_max_every: Option<Duration>,
) -> anyhow::Result<WhatIf> {
    let (scenario, a) = arrivals(trace, mode);
    let mut rows: Vec<_> = every
        .iter()
        .map(|e| model::fixed_on(&scenario, &a, *e))
        .collect();
    let mut recorded = model::webhooks_on(&scenario, &a);
    recorded.label = "webhooks (as recorded)".into();
    rows.push(recorded);
    if let Some(max_every) = adaptive_max_every {
        let fastest = every.iter().min().copied().unwrap_or_default();
        anyhow::ensure!(
            max_every >= fastest,
            "--max-every must not be shorter than the fastest --poll-every"
        );
        rows.push(model::adaptive_on(&scenario, &a, fastest, max_every));
    }
    let (short, day) = model::polar_limits(scenario.users);
    Ok(WhatIf {
        trace: Some(TraceFacts {
            name: name.to_string(),
            entities: trace.header.entities,
            users: scenario.users,
            span_s: a.horizon,
            mode,
            recorded_poll_every_s: trace.header.poll_every_s,
        }),
        scenario,
        polar_limit_15m: short,
        polar_limit_day: day,
        rows,
    })
}

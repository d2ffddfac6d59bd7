//! `GET /metrics`: the status counters and latency histograms in Prometheus text exposition,
//! encoded by `prometheus-client`. Values are read from the store on each scrape (a collector),
//! so they survive restarts and agree with `/status`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::observe::status;
use crate::process::Runtime;
use crate::race::SignedHistogram;
use crate::store::{Store, counter};

/// Bucket bounds, in seconds, of the delay histograms (availability → seen).
const DELAY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Bucket bounds, in seconds, of the webhook lead (negative: polling won).
const LEAD_BUCKETS: &[f64] = &[
    -60.0, -10.0, -1.0, 0.0, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Reads everything from the store at scrape time.
#[derive(Debug)]
struct StoreCollector {
    store: Arc<Store>,
    runtime: Arc<std::sync::RwLock<Runtime>>,
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    if let [(l, v)] = values {
        if l.is_empty() {
            // No labels: `name_total 5`, not `name_total{} 5`.
            return ConstCounter::new(*v).encode(m);
        }
    }
    for (l, v) in values {
        ConstCounter::new(*v).encode(m.encode_family(l)?)?;
    }
    Ok(())
}

fn gauge_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    if let [(l, v)] = values {
        if l.is_empty() {
            return ConstGauge::new(*v).encode(m);
        }
    }
    for (l, v) in values {
        ConstGauge::new(*v).encode(m.encode_family(l)?)?;
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, &SignedHistogram)],
    bounds: &[f64],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (l, h) in series {
        let mut buckets = Vec::with_capacity(bounds.len() + 1);
        let mut below = 0;
        for b in bounds {
            let upto = h.count_at_most_ms(b * 1000.0);
            buckets.push((*b, upto.saturating_sub(below)));
            below = upto;
        }
        buckets.push((f64::MAX, h.count().saturating_sub(below)));
        let (sum, count) = (h.sum_ms() / 1000.0, h.count());
        if l.is_empty() {
            m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;
        } else {
            m.encode_family(l)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum, count, &buckets, None,
                )?;
        }
    }
    Ok(())
}

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let runtime = self
            .runtime
            .read()
            .map(|r| r.clone())
            .map_err(|_| std::fmt::Error)?;
        let doc = status::build(&self.store, &runtime).map_err(|e| {
            tracing::error!(error = format_args!("{e:#}"), "building metrics");
            std::fmt::Error
        })?;
        let summary = self.store.summary();
        let c = self.store.counters().map_err(|_| std::fmt::Error)?;
        let get = |n: &str| c.get(n).copied().unwrap_or(0);
        let w = &doc.webhook;

        counter_family(
            &mut enc,
            "hookrace_webhook_requests",
            "HTTP requests received on the webhook path, whatever their outcome.",
            &[(vec![], w.deliveries)],
        )?;
        counter_family(
            &mut enc,
            "hookrace_webhook_deliveries",
            "Webhook requests by outcome: accepted (stored), duplicate, ping, or why they were rejected.",
            &[
                (labels(&[("outcome", "accepted")]), w.accepted),
                (labels(&[("outcome", "duplicate")]), w.duplicates),
                (labels(&[("outcome", "ping")]), w.pings),
                (
                    labels(&[("outcome", "rejected_signature")]),
                    w.rejected.signature,
                ),
                (
                    labels(&[("outcome", "rejected_malformed")]),
                    w.rejected.malformed,
                ),
                (
                    labels(&[("outcome", "rejected_too_large")]),
                    w.rejected.too_large,
                ),
            ],
        )?;
        counter_family(
            &mut enc,
            "hookrace_webhook_fetches",
            "Fetches of webhook data, by final result.",
            &[
                (labels(&[("result", "ok")]), w.fetches.ok),
                (labels(&[("result", "failed")]), w.fetches.failed),
            ],
        )?;
        let fetch_outcomes: Vec<(Labels, u64)> = ["data", "empty", "error", "rate_limited"]
            .iter()
            .map(|o| {
                (
                    labels(&[("outcome", o)]),
                    get(&format!("{}{o}", counter::FETCH_OUTCOME_PREFIX)),
                )
            })
            .collect();
        counter_family(
            &mut enc,
            "hookrace_webhook_fetch_requests",
            "HTTP requests made to fetch webhook data (retries included), by outcome.",
            &fetch_outcomes,
        )?;

        let p = &doc.poll;
        counter_family(
            &mut enc,
            "hookrace_poll_cycles",
            "Poll cycles run.",
            &[(vec![], p.cycles)],
        )?;
        counter_family(
            &mut enc,
            "hookrace_poll_empty_cycles",
            "Poll cycles that found no data.",
            &[(vec![], p.empty_cycles)],
        )?;
        counter_family(
            &mut enc,
            "hookrace_poll_skipped_cycles",
            "Scheduled polls skipped because the previous cycle was still running.",
            &[(vec![], p.skipped)],
        )?;
        let by_endpoint: Vec<(Labels, u64)> = p
            .requests_by_endpoint
            .iter()
            .map(|(e, n)| (labels(&[("endpoint", e)]), *n))
            .collect();
        counter_family(
            &mut enc,
            "hookrace_poll_requests",
            "HTTP requests the poller made, by AccessLink endpoint.",
            &by_endpoint,
        )?;
        let outcomes: Vec<(Labels, u64)> = ["data", "empty", "error", "rate_limited"]
            .iter()
            .map(|o| {
                (
                    labels(&[("outcome", o)]),
                    get(&format!("{}{o}", counter::POLL_OUTCOME_PREFIX)),
                )
            })
            .collect();
        counter_family(
            &mut enc,
            "hookrace_poll_request_outcomes",
            "HTTP requests the poller made, by outcome.",
            &outcomes,
        )?;
        counter_family(
            &mut enc,
            "hookrace_poll_errors",
            "Poll failures (a transaction left uncommitted, a failed request).",
            &[(vec![], p.errors)],
        )?;
        counter_family(
            &mut enc,
            "hookrace_poll_items",
            "Items the poller fetched and stored.",
            &[(vec![], p.items)],
        )?;
        counter_family(
            &mut enc,
            "hookrace_poll_new_entities",
            "Entities the poller saw before any webhook did.",
            &[(vec![], p.new_entities)],
        )?;

        let e = &doc.entities;
        let by_type: Vec<(Labels, f64)> = e
            .by_type
            .iter()
            .map(|(t, n)| (labels(&[("type", t)]), *n as f64))
            .collect();
        gauge_family(
            &mut enc,
            "hookrace_entities",
            "Entities in the store, by type.",
            &by_type,
        )?;
        gauge_family(
            &mut enc,
            "hookrace_entities_first_seen",
            "Entities by the channel that saw them first.",
            &[
                (labels(&[("channel", "webhook")]), e.first_by_webhook as f64),
                (labels(&[("channel", "poll")]), e.first_by_poll as f64),
            ],
        )?;
        gauge_family(
            &mut enc,
            "hookrace_entities_seen_by",
            "Entities by which channels saw them.",
            &[
                (labels(&[("seen", "both")]), e.seen_by_both as f64),
                (labels(&[("seen", "webhook_only")]), e.webhook_only as f64),
                (labels(&[("seen", "poll_only")]), e.poll_only as f64),
            ],
        )?;
        gauge_family(
            &mut enc,
            "hookrace_users",
            "Users whose data hookrace reads, by state.",
            &[
                (
                    labels(&[("state", "connected")]),
                    (doc.users.known - doc.users.disconnected.len() as u64) as f64,
                ),
                (
                    labels(&[("state", "disconnected")]),
                    doc.users.disconnected.len() as f64,
                ),
            ],
        )?;
        histogram(
            &mut enc,
            "hookrace_delay_seconds",
            "Delay from availability at the source to the channel seeing the entity.",
            &[
                (labels(&[("channel", "webhook")]), &summary.webhook_latency),
                (labels(&[("channel", "poll")]), &summary.poll_latency),
            ],
            DELAY_BUCKETS,
        )?;
        histogram(
            &mut enc,
            "hookrace_webhook_lead_seconds",
            "How much earlier the webhook saw an entity both channels saw (negative: polling won).",
            &[(vec![], &summary.webhook_lead)],
            LEAD_BUCKETS,
        )?;
        gauge_family(
            &mut enc,
            "hookrace_uptime_seconds",
            "Seconds since this process started.",
            &[(vec![], doc.uptime_seconds)],
        )?;
        Ok(())
    }
}

/// The exposition text for the current state of the store.
pub fn render(
    store: Arc<Store>,
    runtime: Arc<std::sync::RwLock<Runtime>>,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StoreCollector { store, runtime }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

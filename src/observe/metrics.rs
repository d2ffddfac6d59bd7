//! `GET /metrics`: the status counters and latency histograms in Prometheus text exposition,
//! encoded by `prometheus-client`. Values are read from the store on each scrape (a collector),
//! so they survive restarts and agree with `/status`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::observe::status;

use crate::counter::{self, CounterName};
use crate::race::SignedHistogram;

/// Bucket bounds, in seconds, of the delay histograms (availability → seen).
const DELAY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Bucket bounds, in seconds, of the webhook lead (negative: polling won).
const LEAD_BUCKETS: &[f64] = &[
    -60.0, -10.0, -1.0, 0.0, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Reads everything from the store at scrape time.
struct StoreCollector {
    view: super::View,
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

/// One metric family: its name, its help and its samples (one per label set).
struct Family<'a> {
    name: &'static str,
    help: &'static str,
    samples: Samples<'a>,
}

enum Samples<'a> {
    Counter(Vec<(Labels, u64)>),
    Gauge(Vec<(Labels, f64)>),
    /// Seconds, from a millisecond histogram, with these bucket bounds.
    Histogram(Vec<(Labels, &'a SignedHistogram)>, &'static [f64]),
}

fn counter(name: &'static str, help: &'static str, samples: Vec<(Labels, u64)>) -> Family<'static> {
    Family {
        name,
        help,
        samples: Samples::Counter(samples),
    }
}

fn gauge(name: &'static str, help: &'static str, samples: Vec<(Labels, f64)>) -> Family<'static> {
    Family {
        name,
        help,
        samples: Samples::Gauge(samples),
    }
}

/// One sample per rate-limit window (`window="short"|"long"`), when the figure is known.
fn rate_windows(
    doc: &status::StatusDoc,
    figure: impl Fn(&status::RateLimitStatus) -> Option<(f64, f64)>,
) -> Vec<(Labels, f64)> {
    doc.accesslink
        .as_ref()
        .and_then(|a| figure(&a.rate_limit))
        .map(|(short, long)| by("window", &[("short", short), ("long", long)]))
        .unwrap_or_default()
}

/// `(labels, value)` for each of `items`, labelled `label` = its name.
fn each<I, T>(
    items: &[I],
    label: &str,
    name: impl Fn(&I) -> &str,
    value: impl Fn(&I) -> T,
) -> Vec<(Labels, T)> {
    items
        .iter()
        .map(|i| (labels(&[(label, name(i))]), value(i)))
        .collect()
}

/// `(labels, value)` for each notify sink.
fn notify<T>(
    doc: &status::StatusDoc,
    value: impl Fn(&status::NotifyStatus) -> T,
) -> Vec<(Labels, T)> {
    each(&doc.notify, "sink", |n| &n.name, value)
}

/// `(labels, value)` for each listener.
fn listeners<T>(
    doc: &status::StatusDoc,
    value: impl Fn(&status::ListenerStatus) -> T,
) -> Vec<(Labels, T)> {
    each(&doc.listeners, "listener", |l| &l.name, value)
}

fn by<T: Copy>(label: &str, values: &[(&str, T)]) -> Vec<(Labels, T)> {
    values
        .iter()
        .map(|(v, n)| (labels(&[(label, v)]), *n))
        .collect()
}

/// Every metric hookrace exposes, from one status document (so `/metrics` agrees with
/// `/status`), the raw counters it does not show, and the entity summary; in exposition order.
fn families<'a>(
    doc: &status::StatusDoc,
    get: &dyn Fn(&str) -> u64,
    summary: &'a crate::race::Summary,
    sink_latency: &'a [(Labels, SignedHistogram)],
    store_healthy: bool,
) -> Vec<Family<'a>> {
    [
        webhook_traffic(doc, get),
        poll_traffic(doc, get),
        entity_figures(doc, summary),
        load_figures(doc),
        notify_figures(doc, sink_latency),
        watch_and_audit(doc, summary),
        process_figures(doc, store_healthy),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Requests by each AccessLink outcome (`data`, `empty`, `error`, `rate_limited`) of one
/// counter family.
fn outcomes(
    get: &dyn Fn(&str) -> u64,
    family: fn(counter::Outcome) -> counter::Counter,
) -> Vec<(Labels, u64)> {
    counter::Outcome::ALL
        .into_iter()
        .map(|o| (labels(&[("outcome", o.name())]), get(&family(o).name())))
        .collect()
}

/// What reached the webhook path and the fetches it caused.
fn webhook_traffic<'a>(doc: &status::StatusDoc, get: &dyn Fn(&str) -> u64) -> Vec<Family<'a>> {
    let w = &doc.webhook;
    vec![
        counter(
            "hookrace_webhook_requests",
            "HTTP requests received on the webhook path, whatever their outcome.",
            vec![(vec![], w.deliveries)],
        ),
        counter(
            "hookrace_webhook_deliveries",
            "Webhook requests by outcome: accepted (stored), duplicate, ping, or why they were rejected.",
            by(
                "outcome",
                &[
                    ("accepted", w.accepted),
                    ("duplicate", w.duplicates),
                    ("ping", w.pings),
                    ("rejected_signature", w.rejected.signature),
                    ("rejected_malformed", w.rejected.malformed),
                    ("rejected_too_large", w.rejected.too_large),
                ],
            ),
        ),
        counter(
            "hookrace_webhook_fetches",
            "Fetches of webhook data, by final result.",
            by(
                "result",
                &[("ok", w.fetches.ok), ("failed", w.fetches.failed)],
            ),
        ),
        counter(
            "hookrace_webhook_fetch_requests",
            "HTTP requests made to fetch webhook data (retries included), by outcome.",
            outcomes(get, counter::Counter::FetchOutcome),
        ),
    ]
}

/// What the poller did and spent.
fn poll_traffic<'a>(doc: &status::StatusDoc, get: &dyn Fn(&str) -> u64) -> Vec<Family<'a>> {
    let p = &doc.poll;
    vec![
        counter(
            "hookrace_poll_cycles",
            "Poll cycles run.",
            vec![(vec![], p.cycles)],
        ),
        counter(
            "hookrace_poll_empty_cycles",
            "Poll cycles that found no data.",
            vec![(vec![], p.empty_cycles)],
        ),
        counter(
            "hookrace_poll_skipped_cycles",
            "Scheduled polls skipped because the previous cycle was still running.",
            vec![(vec![], p.skipped)],
        ),
        counter(
            "hookrace_poll_requests",
            "HTTP requests the poller made, by AccessLink endpoint.",
            p.requests_by_endpoint
                .iter()
                .map(|(e, n)| (labels(&[("endpoint", e)]), *n))
                .collect(),
        ),
        counter(
            "hookrace_poll_request_outcomes",
            "HTTP requests the poller made, by outcome.",
            outcomes(get, counter::Counter::PollOutcome),
        ),
        counter(
            "hookrace_poll_errors",
            "Poll failures (a transaction left uncommitted, a failed request).",
            vec![(vec![], p.errors)],
        ),
        counter(
            "hookrace_poll_items",
            "Items the poller fetched and stored.",
            vec![(vec![], p.items)],
        ),
        counter(
            "hookrace_poll_new_entities",
            "Entities the poller saw before any webhook did.",
            vec![(vec![], p.new_entities)],
        ),
    ]
}

/// The race itself: entities, who saw them first and how late, and the users.
fn entity_figures<'a>(
    doc: &status::StatusDoc,
    summary: &'a crate::race::Summary,
) -> Vec<Family<'a>> {
    let e = &doc.entities;
    let connected = doc.users.known - doc.users.disconnected.len() as u64;
    vec![
        gauge(
            "hookrace_entities",
            "Entities in the store, by type.",
            e.by_type
                .iter()
                .map(|(t, n)| (labels(&[("type", t)]), *n as f64))
                .collect(),
        ),
        gauge(
            "hookrace_entities_first_seen",
            "Entities by the channel that saw them first.",
            by(
                "channel",
                &[
                    ("webhook", e.first_by_webhook as f64),
                    ("poll", e.first_by_poll as f64),
                ],
            ),
        ),
        gauge(
            "hookrace_entities_seen_by",
            "Entities by which channels saw them.",
            by(
                "seen",
                &[
                    ("both", e.seen_by_both as f64),
                    ("webhook_only", e.webhook_only as f64),
                    ("poll_only", e.poll_only as f64),
                ],
            ),
        ),
        gauge(
            "hookrace_users",
            "Users whose data hookrace reads, by state.",
            by(
                "state",
                &[
                    ("connected", connected as f64),
                    ("disconnected", doc.users.disconnected.len() as f64),
                ],
            ),
        ),
        Family {
            name: "hookrace_delay_seconds",
            help: "Delay from availability at the source to the channel seeing the entity.",
            samples: Samples::Histogram(
                vec![
                    (labels(&[("channel", "webhook")]), &summary.webhook_latency),
                    (labels(&[("channel", "poll")]), &summary.poll_latency),
                ],
                DELAY_BUCKETS,
            ),
        },
        Family {
            name: "hookrace_webhook_lead_seconds",
            help: "How much earlier the webhook saw an entity both channels saw (negative: polling won).",
            samples: Samples::Histogram(vec![(vec![], &summary.webhook_lead)], LEAD_BUCKETS),
        },
    ]
}

/// Load: the fetch backlog, the listeners, AccessLink's rate-limit windows.
fn load_figures<'a>(doc: &status::StatusDoc) -> Vec<Family<'a>> {
    let w = &doc.webhook;
    vec![
        gauge(
            "hookrace_fetch_backlog_jobs",
            "Webhook fetches still to do (due now or retrying later), all of them.",
            vec![(vec![], w.fetch_backlog.jobs as f64)],
        ),
        gauge(
            "hookrace_fetch_backlog_drain_seconds",
            "How long the fetch backlog would take to drain at AccessLink's rate limit as last reported.",
            w.fetch_backlog
                .drain_seconds
                .map(|s| vec![(vec![], s)])
                .unwrap_or_default(),
        ),
        gauge(
            "hookrace_fetch_backlog_oldest_due_seconds",
            "How long the webhook fetch due first has been due (0 when none is).",
            vec![(vec![], w.fetch_backlog.oldest_due_seconds)],
        ),
        gauge(
            "hookrace_listener_connections",
            "Open connections on each listener.",
            listeners(doc, |l| l.open_connections as f64),
        ),
        gauge(
            "hookrace_listener_max_connections",
            "The connection cap of each listener.",
            listeners(doc, |l| l.max_connections as f64),
        ),
        gauge(
            "hookrace_listener_full",
            "1 while a listener is at its connection cap (new connections wait: load, not a fault).",
            listeners(doc, |l| f64::from(u8::from(l.full_since.is_some()))),
        ),
        counter(
            "hookrace_listener_full_episodes",
            "Times a listener reached its connection cap.",
            listeners(doc, |l| l.times_full),
        ),
        gauge(
            "hookrace_accesslink_rate_limit_usage",
            "Requests this client made in each AccessLink rate-limit window, as last reported.",
            rate_windows(doc, |r| r.usage.map(|w| (w.short as f64, w.long as f64))),
        ),
        gauge(
            "hookrace_accesslink_rate_limit",
            "The client's limit in each AccessLink rate-limit window, as last reported.",
            rate_windows(doc, |r| r.limit.map(|w| (w.short as f64, w.long as f64))),
        ),
        gauge(
            "hookrace_accesslink_rate_limit_waiting",
            "1 while requests to AccessLink wait for a rate-limit window to reset.",
            doc.accesslink
                .as_ref()
                .map(|a| vec![(vec![], f64::from(u8::from(a.rate_limit.waiting)))])
                .unwrap_or_default(),
        ),
        counter(
            "hookrace_accesslink_429_answers",
            "Answers 429 Too Many Requests from AccessLink since the start, whichever part of hookrace asked.",
            doc.accesslink
                .as_ref()
                .map(|a| vec![(vec![], a.rate_limit.answered_429)])
                .unwrap_or_default(),
        ),
        gauge(
            "hookrace_accesslink_rate_limit_wait_seconds",
            "Seconds requests to AccessLink still wait for a rate-limit window (0 when they go out).",
            doc.accesslink
                .as_ref()
                .map(|a| vec![(vec![], a.rate_limit.waiting_seconds)])
                .unwrap_or_default(),
        ),
    ]
}

/// The second hop: each notify sink (`sink_latency`: each sink's end-to-end histogram).
fn notify_figures<'a>(
    doc: &status::StatusDoc,
    sink_latency: &'a [(Labels, SignedHistogram)],
) -> Vec<Family<'a>> {
    vec![
        counter(
            "hookrace_notify_sent",
            "Events a notify sink took (2xx, or exit 0), by sink.",
            notify(doc, |n| n.sent),
        ),
        gauge(
            "hookrace_notify_pending",
            "Events waiting to be sent to a notify sink, retrying ones included.",
            notify(doc, |n| n.pending as f64),
        ),
        gauge(
            "hookrace_notify_retrying",
            "Pending events whose last attempt failed, by sink.",
            notify(doc, |n| n.retrying as f64),
        ),
        gauge(
            "hookrace_notify_failed",
            "Events parked as failed (until POST /notify/retry), by sink.",
            notify(doc, |n| n.failed as f64),
        ),
        gauge(
            "hookrace_notify_oldest_pending_seconds",
            "Age of the oldest event waiting for a sink (0 when none waits).",
            notify(doc, |n| n.oldest_pending_s.unwrap_or(0.0)),
        ),
        gauge(
            "hookrace_notify_gone",
            "1 when the sink answered 410 Gone and is sent nothing more.",
            notify(doc, |n| f64::from(u8::from(n.gone.is_some()))),
        ),
        Family {
            name: "hookrace_notify_end_to_end_seconds",
            help: "From availability at Polar to the sink taking the event, by sink.",
            samples: Samples::Histogram(
                sink_latency.iter().map(|(l, h)| (l.clone(), h)).collect(),
                DELAY_BUCKETS,
            ),
        },
    ]
}

/// The webhook watch, the adaptive poll (the safety net) and the process.
fn watch_and_audit<'a>(
    doc: &status::StatusDoc,
    summary: &'a crate::race::Summary,
) -> Vec<Family<'a>> {
    let (w, p) = (&doc.webhook, &doc.poll);
    vec![
        gauge(
            "hookrace_webhook_active",
            "1 when the webhook watch last found the webhook active at AccessLink, 0 when not (absent before a check).",
            w.health
                .active
                .map(|a| vec![(vec![], f64::from(u8::from(a)))])
                .unwrap_or_default(),
        ),
        counter(
            "hookrace_webhook_deactivated_seen",
            "Webhook checks that found it inactive, missing or pointing elsewhere.",
            vec![(vec![], w.health.deactivated_seen)],
        ),
        counter(
            "hookrace_webhook_reactivations",
            "Times hookrace reactivated the webhook.",
            vec![(vec![], w.health.reactivations)],
        ),
        gauge(
            "hookrace_poll_interval_seconds",
            "The poll interval in force (the adaptive auditor changes it).",
            p.interval_ms
                .map(|ms| vec![(vec![], ms as f64 / 1000.0)])
                .unwrap_or_default(),
        ),
        counter(
            "hookrace_poll_misses_caught",
            "Entities the poll found that webhooks never announced.",
            vec![(vec![], p.misses_caught)],
        ),
        counter(
            "hookrace_poll_starved",
            "Auditor cycles put off to leave the rate-limit budget to webhook fetches.",
            vec![(vec![], p.starved)],
        ),
        Family {
            name: "hookrace_poll_catch_delay_seconds",
            help: "Availability to poll sighting, for entities webhooks never announced.",
            samples: Samples::Histogram(vec![(vec![], &summary.catch_delay)], DELAY_BUCKETS),
        },
    ]
}

/// The process: which build runs, since when (Prometheus's conventional names), and whether
/// its store commits.
fn process_figures<'a>(doc: &status::StatusDoc, store_healthy: bool) -> Vec<Family<'a>> {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    vec![
        gauge(
            "hookrace_build_info",
            "1, labelled with the version of hookrace that runs and how it was built.",
            vec![(
                labels(&[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("profile", profile),
                    ("target_arch", std::env::consts::ARCH),
                    ("target_os", std::env::consts::OS),
                ]),
                1.0,
            )],
        ),
        gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            vec![(vec![], doc.started_at.timestamp_millis() as f64 / 1000.0)],
        ),
        gauge(
            "hookrace_store_healthy",
            "1 while the store commits; 0 once a commit failed (e.g. a full disk) until a restart.",
            vec![(vec![], f64::from(u8::from(store_healthy)))],
        ),
        gauge(
            "hookrace_uptime_seconds",
            "Seconds since this process started.",
            vec![(vec![], doc.uptime_seconds)],
        ),
    ]
}

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCollector").finish_non_exhaustive()
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let doc = self.view.status().map_err(|e| {
            tracing::error!(error = format_args!("{e:#}"), "building metrics");
            std::fmt::Error
        })?;
        let store = &self.view.store;
        let c = store.counters().map_err(|_| std::fmt::Error)?;
        let get = |n: &str| c.get(n).copied().unwrap_or(0);
        let summary = self.view.tally.summary();
        let outbox = &self.view.queues.outbox;
        let sink_latency: Vec<(Labels, SignedHistogram)> = doc
            .notify
            .iter()
            .map(|n| {
                let h = outbox.latency_histogram(&n.name);
                (labels(&[("sink", &n.name)]), h)
            })
            .collect();
        let healthy = store.problem().is_none();
        for f in families(&doc, &get, &summary, &sink_latency, healthy) {
            match &f.samples {
                Samples::Counter(v) => counter_family(&mut enc, f.name, f.help, v)?,
                Samples::Gauge(v) => gauge_family(&mut enc, f.name, f.help, v)?,
                Samples::Histogram(series, bounds) => {
                    histogram(&mut enc, f.name, f.help, series, bounds)?
                }
            }
        }
        Ok(())
    }
}

/// What the admin listener knows beyond the store and the process facts: the dashboard's load.
#[derive(Debug, Clone, Copy, Default)]
pub struct DashboardLoad {
    /// Event streams open now.
    pub streams: usize,
    /// Snapshots built so far (one per change, shared by every stream).
    pub snapshots: u64,
}

#[derive(Debug)]
struct DashboardCollector(DashboardLoad);

impl Collector for DashboardCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge_family(
            &mut enc,
            "hookrace_dashboard_streams",
            "Dashboard event streams open now.",
            &[(vec![], self.0.streams as f64)],
        )?;
        counter_family(
            &mut enc,
            "hookrace_dashboard_snapshots",
            "Dashboard snapshots built (one per change, shared by every open stream).",
            &[(vec![], self.0.snapshots)],
        )
    }
}

/// The exposition text for the current state of the store and the process.
pub fn render(view: super::View, dashboard: DashboardLoad) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StoreCollector { view }));
    registry.register_collector(Box::new(DashboardCollector(dashboard)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

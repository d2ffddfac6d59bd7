//! hookrace receives Polar AccessLink webhooks and, beside them, polls AccessLink; it stores what
//! both channels see, once, and measures for every new piece of data which channel saw it first,
//! how late each was and how many requests each spent.
//!
//! # Layout
//! - [`config`]: the TOML configuration, validated all at once before anything binds.
//! - [`accesslink`]: Polar's API as both sides see it: delivery payloads and their signatures.
//! - [`store`]: the sled store (entities, raw deliveries, counters) with group-committed flushes.
//! - [`race`]: the measurement model: entities, first channel, latency statistics. No I/O.
//! - [`webhook`]: the public delivery route: size, PING, signature, shape, durable record, 200.
//! - [`admin`]: the private routes: `/healthz`, `/status`, `/entities`.
//! - [`status`]: the status document, built from the store.
//! - [`daemon`]: wiring and orderly shutdown for `hookrace run`.
//! - [`cli`], [`telemetry`]: command line and logging.
//!
//! Data flows one way: a listener validates a request, the store records it durably, the status
//! and report read the store. Servers take bound listeners and a cancellation token, so the tests
//! drive the real thing on `127.0.0.1:0`.

pub mod accesslink;
pub mod admin;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod demo;
pub mod fetcher;
pub mod manage;
pub mod metrics;
pub mod oauth;
pub mod poller;
pub mod race;
pub mod report;
pub mod sim;
pub mod status;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod webhook;

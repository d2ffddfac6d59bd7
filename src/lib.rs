//! hookrace receives Polar AccessLink webhooks and, beside them, polls AccessLink; it stores what
//! both channels see, once, and measures for every new piece of data which channel saw it first,
//! how late each was and how many requests each spent.
//!
//! # Layout
//! A workspace whose crates are the architecture: this application crate stands on
//! `hookrace-accesslink` (Polar's API, the shared types, the client), `hookrace-race` (the
//! measurement model) and `hookrace-sim` (the simulator, which knows nothing of the application);
//! `tests/suite/arrows.rs` checks those arrows. Inside this crate, folders by role; imports run one way,
//! downwards (`docs/architecture.md` has the diagram).
//! - [`cli`]: the command line; nothing below it imports it (commands become plain arguments).
//! - [`apps`]: the applications: `daemon` (`run`: wiring and shutdown), `demo`, `report`, `whatif`.
//! - [`channels`]: the two ways data arrives: the webhook route, its fetcher, the poller.
//! - [`notify`]: the callback's second hop: events to your app (Standard Webhooks, a command, ntfy).
//! - [`observe`]: what an operator sees: admin routes, the status document, metrics, the probes,
//!   dashboard.
//! - [`operations`]: OAuth onboarding, webhook and user management, systemd.
//! - [`store`]: sled records, de-duplication, cross-channel linking, the group commit; what
//!   owners keep in it beside the records, as values it does not read.
//! - [`trace`]: recorded traffic as a shareable file (the format, its checks, export from a
//!   store), read by `whatif --trace`, `replay` and the simulator's replay.
//! - [`credentials`]: the users' tokens and a saved webhook secret, kept in the store.
//! - [`counter`]: the name of every count hookrace keeps (the store keeps them by name).
//! - [`race`]: the measurement model: entities, first channel, latency statistics. No I/O
//!   (its own crate, re-exported).
//! - [`process`]: facts only the running process knows (start time, schedule, live tasks).
//! - [`http`]: building HTTP clients with the project's policy; the admin client.
//! - [`server`]: serving a listener with a header timeout, an idle timeout and a connection cap.
//! - [`tasks`]: the one place the core spawns a task (clippy refuses `tokio::spawn` elsewhere).
//! - [`accesslink`]: Polar's API as a client sees it: payloads, signatures, the HTTP client (its
//!   own crate, re-exported), with what that client shares: [`retry`] (backoff schedules) and
//!   [`units`] (saturating conversions).
//! - [`config`]: the TOML configuration, validated all at once; imports nothing of the app.
//! - [`telemetry`]: logging (plain lines when not on a terminal).
//! - [`sim`]: the AccessLink simulator, beside it all; its own crate, which depends only on
//!   `hookrace-accesslink`.
//!
//! Data flows one way: a listener validates a request, the store records it durably, the status
//! and report read the store. Servers take bound listeners and a cancellation token, so the tests
//! drive the real thing on `127.0.0.1:0`.

pub use accesslink;
pub mod apps;
pub mod channels;
pub mod cli;
pub mod config;
pub mod counter;
pub mod credentials;
pub mod http;
pub mod notify;
pub mod observe;
pub mod operations;
pub mod process;
pub use accesslink::retry;
pub use race;
pub mod server;
pub use sim;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod trace;
pub use accesslink::units;

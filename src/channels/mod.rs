//! The two channels that bring data into the store: the public [`webhook`] route (Polar calls us),
//! the [`fetcher`] that reads each delivery's data (its jobs in the [`fetch_queue`]), and the [`poller`] (we call Polar), run by the
//! one [`poll_loop`] on a fixed interval, a cron schedule or the adaptive pace ([`auditor`], whose
//! cycles read the listings that carry the webhooks' own ids: [`audit`]), and
//! the [`watch`] that checks the webhook is still active. They share AccessLink's rate limit,
//! whose spent window survives a restart ([`rate_block`]).
//!
//! They import `store`, `accesslink`, `config` and `process` (to publish the poller's schedule),
//! never the observers, the operations or the applications.

pub mod audit;
pub mod auditor;
pub mod fetch_queue;
pub mod fetcher;
pub mod open_transactions;
pub mod poll_loop;
pub mod poller;
pub mod rate_block;
pub mod watch;
pub mod webhook;

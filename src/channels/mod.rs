//! The two channels that bring data into the store: the public [`webhook`] route (Polar calls us),
//! the [`fetcher`] that reads each delivery's data, and the [`poller`] (we call Polar).
//!
//! They import `store`, `accesslink`, `config` and `process` (to publish the poller's schedule),
//! never the observers, the operations or the applications.

pub mod fetcher;
pub mod poller;
pub mod webhook;

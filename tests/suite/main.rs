//! hookrace's behaviour suites, as a user relies on them: the daemon, the simulator and the binary
//! driven over HTTP on loopback. One test binary for the crate (each file a module), so the suites
//! link once instead of once each.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::disallowed_methods
)] // A test unwraps: a failure is its verdict; it owns the tasks it spawns.

mod common;

mod arrows;
mod channels;
mod cli;
mod crash;
mod dashboard;
mod dialects;
mod docs;
mod durability;
mod faults;
mod fidelity;
mod full_disk;
mod hostile;
mod lesson;
mod logging;
mod notify;
mod operations;
mod properties;
mod race;
mod safety_net;
mod simulator;
mod traffic;
mod webhook;
mod whatif;
mod workbench;

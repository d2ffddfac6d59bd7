//! Operations around the channels: [`oauth`] onboarding on the public listener, the [`manage`]
//! commands for the client's webhook and its users (and the admin routes they use while the
//! daemon runs), [`backup`] and restore of the store, and [`systemd`] integration.
//!
//! They import `store`, `accesslink`, `config` and `process`; never `cli` (the command line turns
//! its commands into the plain arguments these functions take), the observers or the applications.

pub mod admin_routes;
pub mod backup;
pub mod manage;
pub mod oauth;
pub mod systemd;

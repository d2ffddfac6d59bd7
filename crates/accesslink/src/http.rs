//! The project's HTTP client policy, in one place so every request hookrace sends follows it: a
//! timeout on the whole request and a shorter one on connecting, no redirects followed (a
//! redirect would carry credentials, codes or tokens to a host nobody checked), and a
//! `hookrace/<version>` user agent. The AccessLink client builds on it; the application re-exports
//! it (`hookrace::http`) beside its admin client.

use std::time::Duration;

use anyhow::Context;

/// How long connecting may take, whatever the request's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A `reqwest` client builder, with the process's TLS provider (rustls on *ring*) installed
/// first: reqwest is built without one of its own (see `Cargo.toml`), so every client in the
/// process, the simulator's and the tests' included, starts here.
pub fn builder() -> reqwest::ClientBuilder {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // An error only says another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    // A pooled connection idle for 5 s is dropped: the local servers (the simulator) close an
    // idle one after 10 s, and a request must never be sent on one being closed.
    reqwest::Client::builder().pool_idle_timeout(std::time::Duration::from_secs(5))
}

/// A client with reqwest's defaults (redirects followed, no timeout): for talking to a server
/// one started oneself, as the tests, benches and command-line helpers do.
pub fn plain_client() -> reqwest::Client {
    builder()
        .build()
        // Only TLS setup can fail here, and the ring provider is installed just above.
        .expect("building a default HTTP client")
}

/// A client with the project's policy and `timeout` for each request.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hookrace/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building an HTTP client")
}

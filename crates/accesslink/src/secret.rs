//! [`Secret`]: a credential (client secret, webhook signature key, access token, admin token)
//! that never prints itself. It lives with AccessLink's types because the client, the signature and
//! the simulator all carry one; the configuration re-exports it.

use std::fmt;

use serde::Deserialize;

/// A secret string (client secret, webhook signature key, access token, admin token).
///
/// Its `Debug` and `Display` print a mask, so it can sit in structs that are logged.
#[derive(Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself: call only where it is used (signing, an Authorization header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

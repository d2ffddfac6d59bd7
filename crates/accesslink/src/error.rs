//! What an AccessLink request came to when it did not simply succeed: the outcome counted per
//! attempt, the error a caller acts on, and AccessLink's error bodies (in both shapes seen) and
//! waits said as people say them.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

/// What one HTTP attempt came to, for the request counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx with a body.
    Data,
    /// 204 or another answer meaning "nothing here".
    Empty,
    /// 429.
    RateLimited,
    /// Anything else: 4xx, 5xx, timeout, connection failure.
    Error,
}

impl Outcome {
    /// Every outcome, in the order the metrics list them.
    pub const ALL: [Outcome; 4] = [
        Outcome::Data,
        Outcome::Empty,
        Outcome::Error,
        Outcome::RateLimited,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Data => "data",
            Outcome::Empty => "empty",
            Outcome::RateLimited => "rate_limited",
            Outcome::Error => "error",
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("refusing to request {url}: it is not under the AccessLink base URL {base}")]
    ForeignUrl { url: String, base: String },
    #[error("{method} {url}: 401 Unauthorized (the token or client credentials are not valid)")]
    Unauthorized { method: Method, url: String },
    #[error("{method} {url}: 403 Forbidden: {message}")]
    Forbidden {
        method: Method,
        url: String,
        message: String,
    },
    #[error("{method} {url}: 429 rate limited; the window resets in {reset:?}")]
    RateLimited {
        method: Method,
        url: String,
        reset: Duration,
    },
    #[error("{method} {url}: HTTP {status}: {message}")]
    Status {
        method: Method,
        url: String,
        status: u16,
        message: String,
    },
    #[error("{method} {url}: {source}")]
    Transport {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url}: the answer is not the JSON expected: {message}")]
    Decode {
        method: Method,
        url: String,
        message: String,
    },
    #[error("client credentials are not configured (accesslink.client_secret)")]
    NoClientSecret,
    #[error("{method} {url}: not sent: hookrace is shutting down")]
    ShuttingDown { method: Method, url: String },
    #[error("{method} {url}: not sent: {}", limit_spent(*window, *reset))]
    LimitSpent {
        method: Method,
        url: String,
        window: Window,
        reset: Duration,
    },
}

/// What holds requests back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// The short (15-minute) window is used up to the reserve.
    Short,
    /// The long (24-hour) window is used up to the reserve.
    Daily,
    /// AccessLink answered 429.
    TooManyRequests,
}

/// "Polar's daily limit is spent; it resets in 3 h 12 min".
fn limit_spent(window: Window, reset: Duration) -> String {
    let what = match window {
        Window::Short => "Polar's 15-minute request limit is spent",
        Window::Daily => "Polar's daily request limit is spent",
        Window::TooManyRequests => "Polar answered 429 Too Many Requests",
    };
    format!("{what}; it resets in {}", human_duration(reset))
}

/// A wait as people say it: "3 h 12 min", "4 min 10 s", "12 s".
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Unauthorized { .. } => Some(401),
            ApiError::Forbidden { .. } => Some(403),
            ApiError::RateLimited { .. } => Some(429),
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The message of an AccessLink error body, in either documented shape.
pub fn error_message(body: &[u8]) -> String {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            return text.trim().chars().take(200).collect();
        }
    };
    let obj = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
    let message = obj.get("message").and_then(Value::as_str);
    let kind = obj
        .get("errorType")
        .or_else(|| obj.get("error_type"))
        .and_then(Value::as_str);
    match (kind, message, v.get("error").and_then(Value::as_str)) {
        (Some(k), Some(m), _) => format!("{k}: {m}"),
        (None, Some(m), _) => m.to_string(),
        (Some(k), None, _) => k.to_string(),
        (None, None, Some(e)) => e.to_string(),
        _ => v.to_string().chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_error_shapes() {
        let documented = br#"{"timestamp":"t","status":404,"errorType":"NotFound","message":"no such","corrId":"c"}"#;
        assert_eq!(error_message(documented), "NotFound: no such");
        let seen = br#"{"error":{"timestamp":"t","status":400,"error_type":"WebhookPingFailedException","message":"Ping failed","corr_id":"c"}}"#;
        assert_eq!(
            error_message(seen),
            "WebhookPingFailedException: Ping failed"
        );
        assert_eq!(
            error_message(br#"{"error":"invalid_grant"}"#),
            "invalid_grant"
        );
        assert_eq!(error_message(b"plain text"), "plain text");
    }

    #[test]
    fn waits_read_as_people_say_them() {
        assert_eq!(
            human_duration(Duration::from_secs(3 * 3600 + 12 * 60 + 5)),
            "3 h 12 min"
        );
        assert_eq!(human_duration(Duration::from_secs(250)), "4 min 10 s");
        assert_eq!(human_duration(Duration::from_millis(11_900)), "11 s");
        let e = ApiError::LimitSpent {
            method: Method::DELETE,
            url: "https://www.polaraccesslink.com/v3/users/1".into(),
            window: Window::Daily,
            reset: Duration::from_secs(3 * 3600 + 12 * 60),
        };
        assert_eq!(
            e.to_string(),
            "DELETE https://www.polaraccesslink.com/v3/users/1: not sent: Polar's daily request limit is spent; it resets in 3 h 12 min"
        );
    }
}

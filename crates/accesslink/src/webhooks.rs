//! Managing the client's one webhook (client credentials): create, list, update, delete,
//! activate, deactivate. Polar's error bodies become messages a user can act on.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::{ApiError, Auth, Client, Outcome};
use super::identity::EventType;
use crate::Secret;

/// A webhook as AccessLink lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub events: Vec<String>,
    pub url: String,
    #[serde(default)]
    pub active: Option<bool>,
}

/// The answer to a create: the webhook and its signature key, shown only this once.
#[derive(Debug, Clone)]
pub struct Created {
    pub webhook: Webhook,
    pub secret: Secret,
}

/// Webhook management failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "a webhook already exists for this client (AccessLink allows one): see it with `hookrace webhook list`, change it with `hookrace webhook update`, or delete it first"
    )]
    AlreadyExists,
    #[error(
        "AccessLink could not PING {url} and refused the webhook ({message}); the url must answer a POST with 200 before the webhook can be created"
    )]
    PingFailed { url: String, message: String },
    #[error("no webhook with id {0} exists for this client")]
    NotFound(String),
    #[error(
        "AccessLink refused the event list ({message}); a deployment that predates PHYSICAL_INFORMATION answers 400 when it is asked for: leave it out (the default subscribes to the six documented events) or name only documented events with --events"
    )]
    EventRefused { message: String },
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("AccessLink answered something unexpected: {0}")]
    Unexpected(String),
}

fn ignore(_: Outcome) {}

fn names_an_event(message: &str) -> bool {
    message.to_ascii_lowercase().contains("event")
        || EventType::KNOWN
            .iter()
            .any(|k| message.contains(k.as_str()))
}

fn data(v: Value) -> Result<Value, WebhookError> {
    v.get("data")
        .cloned()
        .ok_or_else(|| WebhookError::Unexpected(format!("no `data` in {v}")))
}

fn ping_error(e: ApiError, url: &str) -> WebhookError {
    match e {
        ApiError::Status {
            status: 400,
            message,
            ..
        } if message.contains("Ping") || message.contains("PING") => WebhookError::PingFailed {
            url: url.to_string(),
            message,
        },
        // A 400 that names an event type (or the word "event"): the subscription was refused.
        ApiError::Status {
            status: 400,
            message,
            ..
        } if names_an_event(&message) => WebhookError::EventRefused { message },
        ApiError::Status { status: 409, .. } => WebhookError::AlreadyExists,
        e => WebhookError::Api(e),
    }
}

/// `POST /v3/webhooks`: AccessLink PINGs `url` before it answers.
pub async fn create(
    client: &Client,
    url: &str,
    events: &[String],
) -> Result<Created, WebhookError> {
    let body = json!({ "events": events, "url": url });
    let answer = client
        .send(
            Method::POST,
            &client.url("/v3/webhooks"),
            Auth::Basic,
            Some(&body),
            &ignore,
        )
        .await
        .map_err(|e| ping_error(e, url))?;
    let v = data(answer.json(&Method::POST, "/v3/webhooks")?)?;
    let secret = v
        .get("signature_secret_key")
        .and_then(Value::as_str)
        .ok_or_else(|| WebhookError::Unexpected("no signature_secret_key in the answer".into()))?;
    let webhook: Webhook = serde_json::from_value(v.clone())
        .map_err(|e| WebhookError::Unexpected(format!("{e}: {v}")))?;
    Ok(Created {
        webhook,
        secret: Secret::new(secret),
    })
}

/// The webhooks in an answer's `data`: an array (GET, and PATCH in Polar's answers) or a single
/// object (PATCH in an older published spec); both are read.
pub fn webhooks_in(answer: Value) -> Result<Vec<Webhook>, WebhookError> {
    let one = |i: Value| {
        serde_json::from_value(i.clone()).map_err(|e| WebhookError::Unexpected(format!("{e}: {i}")))
    };
    match data(answer)? {
        Value::Array(items) => items.into_iter().map(one).collect(),
        Value::Null => Ok(Vec::new()),
        object @ Value::Object(_) => Ok(vec![one(object)?]),
        other => Err(WebhookError::Unexpected(other.to_string())),
    }
}

/// `GET /v3/webhooks`.
pub async fn list(client: &Client) -> Result<Vec<Webhook>, WebhookError> {
    let v = client
        .get_json(&client.url("/v3/webhooks"), Auth::Basic, &ignore)
        .await?;
    match v {
        Some(v) => webhooks_in(v),
        None => Ok(Vec::new()),
    }
}

/// `PATCH /v3/webhooks/{id}` with new events and/or url (a new url is PINGed).
pub async fn update(
    client: &Client,
    id: &str,
    url: Option<&str>,
    events: Option<&[String]>,
) -> Result<Webhook, WebhookError> {
    let mut body = json!({});
    if let Some(u) = url {
        body["url"] = json!(u);
    }
    if let Some(e) = events {
        body["events"] = json!(e);
    }
    let path = client.url_of(&["webhooks", id]);
    let answer = client
        .send(Method::PATCH, &path, Auth::Basic, Some(&body), &ignore)
        .await
        .map_err(|e| match e {
            ApiError::Status { status: 404, .. } => WebhookError::NotFound(id.to_string()),
            e => ping_error(e, url.unwrap_or("")),
        })?;
    let v: Value = answer.json(&Method::PATCH, &path)?;
    webhooks_in(v.clone())?
        .into_iter()
        .next()
        .ok_or_else(|| WebhookError::Unexpected(format!("no webhook in the answer: {v}")))
}

/// `DELETE /v3/webhooks/{id}`.
pub async fn delete(client: &Client, id: &str) -> Result<(), WebhookError> {
    let path = client.url_of(&["webhooks", id]);
    client
        .send(Method::DELETE, &path, Auth::Basic, None, &ignore)
        .await
        .map_err(|e| match e {
            ApiError::Status { status: 404, .. } => WebhookError::NotFound(id.to_string()),
            e => WebhookError::Api(e),
        })?;
    Ok(())
}

/// `POST /v3/webhooks/activate` (PINGs the url) or `/deactivate`; `false` when no webhook exists.
pub async fn set_active(client: &Client, active: bool) -> Result<bool, WebhookError> {
    let path = client.url(if active {
        "/v3/webhooks/activate"
    } else {
        "/v3/webhooks/deactivate"
    });
    let answer = client
        .send(Method::POST, &path, Auth::Basic, None, &ignore)
        .await
        .map_err(|e| ping_error(e, "the webhook's url"))?;
    Ok(answer.status != reqwest::StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_answer_is_read_as_an_array_or_an_object() {
        for name in [
            "webhook_patch.json",
            "webhook_patch_object.json",
            "webhook_list.json",
        ] {
            let hooks =
                webhooks_in(crate::fixture_json(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(hooks.len(), 1, "{name}");
            assert_eq!(hooks[0].id, "abdf33", "{name}");
            assert_eq!(hooks[0].events, ["EXERCISE", "SLEEP"], "{name}");
        }
        assert!(
            webhooks_in(serde_json::json!({"data": []}))
                .unwrap()
                .is_empty()
        );
        assert!(webhooks_in(serde_json::json!({"data": 3})).is_err());
    }

    #[test]
    fn a_refused_event_and_a_failed_ping_are_told_apart() {
        let status = |message: &str| ApiError::Status {
            method: Method::POST,
            url: "https://www.polaraccesslink.com/v3/webhooks".into(),
            status: 400,
            message: message.into(),
        };
        let refused = ping_error(
            status("BadRequest: Unknown event type PHYSICAL_INFORMATION"),
            "u",
        );
        assert!(
            matches!(refused, WebhookError::EventRefused { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("leave it out"));
        let ping = ping_error(
            status(
                "WebhookPingFailedException: Ping failed to URL https://x Response code was [400]",
            ),
            "https://x",
        );
        assert!(matches!(ping, WebhookError::PingFailed { .. }), "{ping}");
    }
}

//! The admin routes the management commands use while a daemon holds the store open: `GET /users`,
//! `DELETE /users/{id}` (de-registers at AccessLink), `PUT /webhook/secret` and
//! `POST /notify/retry` (re-queues parked notify events), `GET /backup` (the store, streamed:
//! [`super::backup`]). The daemon hands
//! them to the admin listener, which puts them behind its token.

use std::sync::Arc;

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::manage::{self, UserView};
use crate::accesslink::client::{ApiError, Client};
use crate::accesslink::identity::UserId;
use crate::config::Secret;
use crate::notify::Notifier;
use crate::store::Store;

/// The management routes over `store`, de-registering users through `client`. With
/// `configured_secret`, the webhook secret comes from the configuration or the environment, which a
/// saved secret would not override: `PUT /webhook/secret` then answers 409 instead of saving a key
/// that would never be used.
pub fn routes(
    store: Arc<Store>,
    notifier: Arc<Notifier>,
    client: Arc<Client>,
    configured_secret: bool,
    watch_now: Arc<tokio::sync::Notify>,
) -> BoxedFilter<(Response,)> {
    let with_store = {
        let store = store.clone();
        warp::any().map(move || store.clone())
    };
    let users = warp::path!("users")
        .and(warp::get())
        .and(with_store.clone())
        .map(|store: Arc<Store>| users(&store));
    let remove_user = warp::path!("users" / u64)
        .and(warp::delete())
        .and(with_store.clone())
        .and(warp::any().map(move || client.clone()))
        .then(
            |id: u64, store: Arc<Store>, client: Arc<Client>| async move {
                remove_user(&store, &client, UserId(id)).await
            },
        );
    let webhook_secret = warp::path!("webhook" / "secret")
        .and(warp::put())
        .and(warp::body::content_length_limit(1024))
        .and(warp::body::bytes())
        .and(with_store.clone())
        .then(move |body: bytes::Bytes, store: Arc<Store>| {
            let watch_now = watch_now.clone();
            async move { put_webhook_secret(&store, &body, configured_secret, &watch_now).await }
        });
    let backup = warp::path!("backup")
        .and(warp::get())
        .and(with_store.clone())
        .then(super::backup::stream);
    let notify_retry = warp::path!("notify" / "retry")
        .and(warp::post())
        .and(warp::query::<RetryQuery>())
        .and(warp::any().map(move || notifier.clone()))
        .then(|q: RetryQuery, notifier: Arc<Notifier>| async move {
            notify_retry(&notifier, q.sink).await
        });
    // A management route asked with the wrong method is told the right one (and `Allow`).
    let wrong_method = warp::path::full().and_then(|path: warp::path::FullPath| async move {
        match right_method(path.as_str()) {
            Some((allow, hint)) => Ok(warp::reply::with_header(
                error(StatusCode::METHOD_NOT_ALLOWED, hint),
                warp::http::header::ALLOW,
                allow,
            )
            .into_response()),
            None => Err(warp::reject::not_found()),
        }
    });
    users
        .or(remove_user)
        .unify()
        .or(webhook_secret)
        .unify()
        .or(notify_retry)
        .unify()
        .or(backup)
        .unify()
        .or(wrong_method)
        .unify()
        .boxed()
}

/// `DELETE /users/{id}`: de-registers the user at AccessLink and forgets it. Someone waits on
/// the answer: a spent rate limit fails at once (503).
async fn remove_user(store: &Store, client: &Client, user: UserId) -> Response {
    match manage::remove_user(store, &client.interactive(), user).await {
        Ok(true) => warp::reply::with_status("", StatusCode::NO_CONTENT).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "no such user"),
        Err(e) if is_limit_spent(&e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
        Err(e) => error(StatusCode::BAD_GATEWAY, &format!("{e:#}")),
    }
}

/// `PUT /webhook/secret`: saves the webhook's signature secret (the body), unless the
/// configuration sets one, which takes precedence (409); the webhook watch then looks at once.
async fn put_webhook_secret(
    store: &Store,
    body: &[u8],
    configured_secret: bool,
    watch_now: &tokio::sync::Notify,
) -> Response {
    if configured_secret {
        return error(
            StatusCode::CONFLICT,
            "the webhook secret is set in the configuration (accesslink.webhook_secret or \
             HOOKRACE_WEBHOOK_SECRET), which takes precedence: put the new secret there and \
             restart, or remove it there to use the saved one",
        );
    }
    let secret = String::from_utf8_lossy(body).trim().to_string();
    if secret.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be the signature secret",
        );
    }
    match crate::credentials::set_webhook_secret(store, &Secret::new(secret)).await {
        Ok(()) => {
            tracing::info!("a new webhook signature secret was saved");
            // A webhook was just created: the watch looks at once, so /status does not say
            // "no webhook" until its next check.
            watch_now.notify_one();
            warp::reply::with_status("", StatusCode::NO_CONTENT).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    }
}

/// `POST /notify/retry[?sink=NAME]`: queues the parked notify events again.
async fn notify_retry(notifier: &Notifier, sink: Option<String>) -> Response {
    match notifier.requeue(sink).await {
        Ok(n) => {
            tracing::info!(events = n, "parked notify events queued again");
            warp::reply::json(&serde_json::json!({ "requeued": n })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    }
}

/// The method a management route takes and what to say to a request with another one.
fn right_method(path: &str) -> Option<(&'static str, &'static str)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["webhook", "secret"] => Some((
            "PUT",
            "use PUT /webhook/secret with the new signature secret as the body (a secret is never \
             read back)",
        )),
        ["users"] => Some(("GET", "use GET /users to list the users")),
        ["backup"] => Some(("GET", "use GET /backup to stream a backup of the store")),
        ["users", id] if id.parse::<u64>().is_ok() => Some((
            "DELETE",
            "use DELETE /users/{id} to de-register a user (GET /users lists them)",
        )),
        ["notify", "retry"] => Some((
            "POST",
            "use POST /notify/retry[?sink=NAME] to queue parked notify events again",
        )),
        _ => None,
    }
}

/// `POST /notify/retry?sink=NAME`: one sink's parked events, or every sink's.
#[derive(serde::Deserialize)]
struct RetryQuery {
    sink: Option<String>,
}

fn users(store: &Store) -> Response {
    match crate::credentials::all_users(store) {
        Ok(list) => {
            let views: Vec<UserView> = list.into_iter().map(UserView::from).collect();
            warp::reply::json(&views).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    }
}

/// A JSON error body, as the rest of the admin listener answers.
fn error(status: StatusCode, message: &str) -> Response {
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({ "error": message })),
        status,
    )
    .into_response()
}

/// Whether `e` is the client refusing to wait for a spent rate-limit window.
fn is_limit_spent(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref(), Some(ApiError::LimitSpent { .. }))
}

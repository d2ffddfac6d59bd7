//! The private admin listener: the dashboard (`/`, `/events`), `/healthz`, `/status`,
//! `/metrics`, `/entities`, and for the
//! management commands `GET /users`, `DELETE /users/{id}` and `PUT /webhook/secret`.
//!
//! It binds to loopback by default and, when `[admin].token` is set, every route requires
//! `Authorization: Bearer <token>` (compared in constant time). Everything it shows comes from the
//! store, plus the few facts only the running process knows ([`status::Runtime`]).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, RwLock};

use subtle::ConstantTimeEq;
use warp::Filter;
use warp::http::{StatusCode, header};
use warp::reply::{Reply, Response};

use crate::config::Secret;
use crate::status::{self, Runtime};
use crate::store::Store;

/// Background tasks report here whether they are alive; `/healthz` fails when one is not.
#[derive(Debug, Default)]
pub struct Liveness {
    tasks: Mutex<BTreeMap<String, bool>>,
}

impl Liveness {
    /// Marks a task alive (on start) or dead (when it stops unexpectedly).
    pub fn set(&self, task: &str, alive: bool) {
        if let Ok(mut t) = self.tasks.lock() {
            t.insert(task.to_string(), alive);
        }
    }

    /// Names of the tasks that are not alive.
    pub fn dead(&self) -> Vec<String> {
        match self.tasks.lock() {
            Ok(t) => t
                .iter()
                .filter(|(_, alive)| !**alive)
                .map(|(n, _)| n.clone())
                .collect(),
            Err(_) => vec!["liveness registry".into()],
        }
    }
}

/// What the admin routes need.
pub struct AdminState {
    pub store: Arc<Store>,
    pub runtime: Arc<RwLock<Runtime>>,
    pub liveness: Arc<Liveness>,
    pub token: Option<Secret>,
    /// For de-registering users at AccessLink.
    pub client: Arc<crate::accesslink::client::Client>,
    /// Cancelled at shutdown: ends the dashboard's event streams, which would outlive the drain.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// All admin routes, behind the optional token.
pub fn routes(
    state: Arc<AdminState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<AdminState>| healthz(&s));
    let status = warp::path!("status")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<AdminState>| status(&s));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<AdminState>| metrics(&s));
    let users = warp::path!("users")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<AdminState>| users(&s));
    let remove_user = warp::path!("users" / u64)
        .and(warp::delete())
        .and(with_state.clone())
        .then(|id: u64, s: Arc<AdminState>| async move {
            match crate::manage::remove_user(&s.store, &s.client, id).await {
                Ok(true) => warp::reply::with_status("", StatusCode::NO_CONTENT).into_response(),
                Ok(false) => error(StatusCode::NOT_FOUND, "no such user"),
                Err(e) => error(StatusCode::BAD_GATEWAY, &format!("{e:#}")),
            }
        });
    let webhook_secret = warp::path!("webhook" / "secret")
        .and(warp::put())
        .and(warp::body::content_length_limit(1024))
        .and(warp::body::bytes())
        .and(with_state.clone())
        .map(|body: bytes::Bytes, s: Arc<AdminState>| {
            let secret = String::from_utf8_lossy(&body).trim().to_string();
            if secret.is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the body must be the signature secret",
                );
            }
            match s.store.set_webhook_secret(&Secret::new(secret)) {
                Ok(()) => {
                    tracing::info!("a new webhook signature secret was saved");
                    warp::reply::with_status("", StatusCode::NO_CONTENT).into_response()
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
            }
        });
    let dashboard = warp::path::end()
        .and(warp::get())
        .map(|| warp::reply::html(crate::dashboard::PAGE).into_response());
    let events = warp::path!("events")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<AdminState>| {
            warp::sse::reply(warp::sse::keep_alive().stream(crate::dashboard::events(s)))
                .into_response()
        });
    let entities = warp::path!("entities")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state.clone())
        .map(|q: HashMap<String, String>, s: Arc<AdminState>| entities(&s, &q));
    // The token comes in the Authorization header, or (for the dashboard in a browser, whose
    // EventSource cannot set headers) as `?token=`.
    let authorized = warp::header::optional::<String>(header::AUTHORIZATION.as_str())
        .and(
            warp::query::<HashMap<String, String>>()
                .or(warp::any().map(HashMap::new))
                .unify(),
        )
        .and(with_state)
        .and_then(
            |auth: Option<String>, q: HashMap<String, String>, s: Arc<AdminState>| async move {
                let from_query = q.get("token").map(|t| format!("Bearer {t}"));
                match authorize(s.token.as_ref(), auth.as_deref().or(from_query.as_deref())) {
                    Ok(()) => Ok(()),
                    Err(()) => Err(warp::reject::custom(Unauthorized)),
                }
            },
        )
        .untuple_one();
    authorized
        .and(
            healthz
                .or(status)
                .unify()
                .or(entities)
                .unify()
                .or(metrics)
                .unify()
                .or(users)
                .unify()
                .or(remove_user)
                .unify()
                .or(webhook_secret)
                .unify()
                .or(dashboard)
                .unify()
                .or(events)
                .unify(),
        )
        .recover(|r: warp::Rejection| async move { Ok::<_, Infallible>(rejection(r)) })
        .unify()
}

#[derive(Debug)]
struct Unauthorized;
impl warp::reject::Reject for Unauthorized {}

fn authorize(token: Option<&Secret>, header: Option<&str>) -> Result<(), ()> {
    let Some(token) = token else { return Ok(()) };
    let given = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        Ok(())
    } else {
        Err(())
    }
}

fn rejection(r: warp::Rejection) -> Response {
    if r.find::<Unauthorized>().is_some() {
        return warp::reply::with_header(
            error(StatusCode::UNAUTHORIZED, "a valid bearer token is required"),
            header::WWW_AUTHENTICATE,
            "Bearer",
        )
        .into_response();
    }
    if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    if r.find::<warp::reject::InvalidQuery>().is_some() {
        return error(StatusCode::BAD_REQUEST, "the query string is not valid");
    }
    error(
        StatusCode::NOT_FOUND,
        "no such route: try /, /healthz, /status, /metrics or /entities",
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({ "error": message })),
        status,
    )
    .into_response()
}

fn healthz(s: &AdminState) -> Response {
    let dead = s.liveness.dead();
    if !s.store.is_healthy() {
        return warp::reply::with_status("store unavailable\n", StatusCode::SERVICE_UNAVAILABLE)
            .into_response();
    }
    if !dead.is_empty() {
        return warp::reply::with_status(
            format!("stopped: {}\n", dead.join(", ")),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .into_response();
    }
    warp::reply::with_status("ok\n", StatusCode::OK).into_response()
}

fn status(s: &AdminState) -> Response {
    let runtime = match s.runtime.read() {
        Ok(r) => r.clone(),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "runtime state poisoned"),
    };
    match status::build(&s.store, &runtime) {
        Ok(doc) => warp::reply::json(&doc).into_response(),
        Err(e) => {
            tracing::error!(error = format_args!("{e:#}"), "building /status");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("could not build the status: {e:#}"),
            )
        }
    }
}

fn metrics(s: &AdminState) -> Response {
    match crate::metrics::render(s.store.clone(), s.runtime.clone()) {
        Ok(text) => warp::reply::with_header(
            text,
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the metrics (see the log)",
        ),
    }
}

fn users(s: &AdminState) -> Response {
    match s.store.users() {
        Ok(list) => {
            let views: Vec<crate::manage::UserView> = list
                .into_iter()
                .map(|u| crate::manage::UserView {
                    user_id: u.user_id,
                    added_at: u.added_at,
                    disconnected_at: u.disconnected_at,
                    disconnect_reason: u.disconnect_reason,
                })
                .collect();
            warp::reply::json(&views).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    }
}

fn entities(s: &AdminState, q: &HashMap<String, String>) -> Response {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=10_000).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "`limit` must be an integer from 1 to 10000",
            );
        }
    };
    let kind = q.get("type").map(String::as_str);
    match s.store.newest_entities(limit, kind) {
        Ok(list) => {
            let views: Vec<_> = list.iter().map(|e| e.view()).collect();
            warp::reply::json(&views).into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("could not read entities: {e:#}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check() {
        let t = Secret::new("0123456789abcdef");
        assert!(authorize(None, None).is_ok());
        assert!(authorize(Some(&t), Some("Bearer 0123456789abcdef")).is_ok());
        assert!(authorize(Some(&t), Some("Bearer 0123456789abcdeX")).is_err());
        assert!(authorize(Some(&t), Some("0123456789abcdef")).is_err());
        assert!(authorize(Some(&t), None).is_err());
    }
}

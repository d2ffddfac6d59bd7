//! The orchestrator's probes on the admin listener, answered without the admin token (they say
//! nothing but whether the daemon is well, and a prober holds no secrets):
//!
//! - `GET /livez`: the process serves. It fails only when a restart would cure it: a background
//!   task died, or the store reports a fault it cannot recover from. On failure: restart.
//! - `GET /readyz`: the daemon can do its job now: the store is open and healthy and at least
//!   one channel can bring data (the webhook is not known to be inactive or missing, or the
//!   poller runs with a connected user and a rate-limit window that is not spent for the day).
//!   On failure: do not restart (a restart does not reconnect a user or reactivate a webhook);
//!   alert, and keep the instance out of rotation until it is ready again.
//!
//! `/healthz` (behind the token) stays what systemd's watchdog and the docs already use.

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::admin::AdminState;

/// What `/readyz` found, check by check (the body of its answer).
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// The store is open and reports no fault.
    pub store: Check,
    /// The webhook channel: Polar's webhook was not found inactive, missing or elsewhere.
    pub webhook: Check,
    /// The poll channel: the poller runs, a user is connected, the daily window is not spent.
    pub poll: Check,
}

/// One check: whether it holds, and why not.
#[derive(Debug, Serialize)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Check {
    fn from(problem: Option<String>) -> Check {
        Check {
            ok: problem.is_none(),
            problem,
        }
    }
}

/// `GET /livez`: 200 `ok`, or 503 naming what a restart would cure.
pub fn livez(s: &AdminState) -> Response {
    let dead = s.liveness.dead();
    let problem = match s.view.store.problem() {
        Some(p) => Some(format!("store unhealthy: {p}")),
        None if !dead.is_empty() => Some(format!("stopped: {}", dead.join(", "))),
        None => None,
    };
    match problem {
        None => warp::reply::with_status("ok\n", StatusCode::OK).into_response(),
        Some(p) => warp::reply::with_status(format!("{p}\n"), StatusCode::SERVICE_UNAVAILABLE)
            .into_response(),
    }
}

/// `GET /readyz`: 200 with the checks when ready, 503 with them when not.
pub fn readyz(s: &AdminState) -> Response {
    let r = readiness(s);
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&r), status).into_response()
}

/// The checks behind `/readyz`.
pub fn readiness(s: &AdminState) -> Readiness {
    let store = Check::from(s.view.store.problem().map(|p| format!("unhealthy: {p}")));
    let runtime = s.view.runtime();
    let webhook = Check::from(match runtime.webhook_health.active {
        Some(false) => Some(format!(
            "Polar's webhook is {}",
            runtime
                .webhook_health
                .state
                .as_deref()
                .unwrap_or("inactive")
        )),
        _ => None,
    });
    let poll = Check::from(poll_problem(s, runtime.poll_enabled));
    Readiness {
        ready: store.ok && (webhook.ok || poll.ok),
        store,
        webhook,
        poll,
    }
}

/// Why the poll channel cannot bring data now, if it cannot.
fn poll_problem(s: &AdminState, enabled: bool) -> Option<String> {
    if !enabled {
        return Some("polling is off".into());
    }
    if s.liveness.dead().iter().any(|t| t == "poller") {
        return Some("the poller stopped".into());
    }
    match crate::credentials::all_users(&s.view.store) {
        Ok(users) if users.iter().all(|u| u.disconnected_at.is_some()) => {
            return Some("no connected user".into());
        }
        Ok(_) => {}
        Err(e) => return Some(format!("the users cannot be read: {e:#}")),
    }
    let rate = s.view.client.as_ref().map(|c| c.rate_state());
    let waiting = rate.map(|r| super::status::RateLimitStatus::from_client(&r));
    match waiting {
        Some(w) if w.waiting && w.waiting_for.as_deref() == Some("daily") => Some(format!(
            "the daily rate limit is spent until {}",
            w.waiting_until.map(|t| t.to_rfc3339()).unwrap_or_default()
        )),
        _ => None,
    }
}

//! The control API (`/sim/...`): add users, inject an entity at a known time, read the ground
//! truth, change the faults. Not part of AccessLink; tests, the demo and students drive it.

use serde_json::{Value, json};
use warp::http::{Method, StatusCode};

use super::access::{Caller, refused};
use super::model::Kind;
use super::*;
use accesslink::identity::EventType;

impl Sim {
    /// Routes a control request to its handler, as far as its caller may go (`access.rs`).
    pub(super) async fn control(&self, req: &SimRequest, rest: &str) -> SimResponse {
        if let Some(refused) = cross_site(req) {
            return refused;
        }
        let who = self.caller(&req.headers);
        let m = &req.method;
        let segs: Vec<&str> = rest.split('/').collect();
        // Open to everyone: the class's pages, and the scoreboard (without credentials).
        match segs.as_slice() {
            ["class"] if *m == Method::GET => return super::class::class_page(),
            ["class.json"] if *m == Method::GET => return self.control_class(who),
            _ => {}
        }
        if who == Caller::Nobody {
            return refused(who, &format!("{m} /sim/{rest}"));
        }
        // A student's own: their triggers, resends, log, users and next webhook secret.
        let scope = who.scope();
        match segs.as_slice() {
            ["users"] if *m == Method::GET => return self.control_users(scope),
            ["webhook-secret"] if *m == Method::POST => {
                return self.control_webhook_secret(&req.body, scope);
            }
            ["trigger"] if *m == Method::POST => {
                return self.control_trigger(&req.body, scope).await;
            }
            ["resend"] if *m == Method::POST => return self.control_resend(&req.body, scope).await,
            ["log"] if *m == Method::GET => return self.control_log(&req.query, scope),
            ["watch"] if *m == Method::GET => return super::workbench::watch_page(),
            _ => {}
        }
        if who != Caller::Teacher {
            return refused(who, &format!("{m} /sim/{rest}"));
        }
        match segs.as_slice() {
            ["users"] if *m == Method::POST => self.control_add_user(&req.body),
            // Consents refused: data and registration answer 403. Not found: registration 204.
            ["users", id, "consents"] if *m == Method::PUT => {
                self.control_user_flag(id, &req.body, "granted", |u, v| u.consents = v)
            }
            ["users", id, "found"] if *m == Method::PUT => {
                self.control_user_flag(id, &req.body, "found", |u, v| u.found = v)
            }
            ["users", id, "revoke"] if *m == Method::POST => self.control_revoke(id),
            ["inject"] if *m == Method::POST => self.control_inject(&req.body),
            ["faults"] if *m == Method::GET => self.control_faults(None),
            ["faults"] if *m == Method::PUT => self.control_put_faults(&req.body),
            ["truth"] if *m == Method::GET => self.control_truth(),
            _ => SimResponse::text(
                StatusCode::NOT_FOUND,
                "no such control route: see docs/simulator.md\n",
            ),
        }
    }

    /// `POST /sim/users` (`{"registered": false}` for a Polar user who has not yet consented).
    fn control_add_user(&self, body: &[u8]) -> SimResponse {
        let body: Value = serde_json::from_slice(body).unwrap_or(json!({}));
        let registered = body
            .get("registered")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(t) = &token {
            if t.len() < 8 || self.lock().tokens.contains_key(t) {
                return SimResponse::text(
                    StatusCode::BAD_REQUEST,
                    "access_token must be at least 8 characters and not another user's\n",
                );
            }
        }
        let (id, token) = self.add_user_with(registered, token);
        SimResponse::json(
            StatusCode::CREATED,
            json!({"user_id": id, "access_token": token, "registered": registered}),
        )
    }

    /// `POST /sim/webhook-secret` with `{"secret": "…"[, "student": N]}`: the next webhook the
    /// client creates gets this `signature_secret_key`, so a receiver can have it before its first
    /// delivery.
    fn control_webhook_secret(&self, body: &[u8], scope: Option<usize>) -> SimResponse {
        let body = serde_json::from_slice::<Value>(body).unwrap_or_default();
        let secret = body
            .get("secret")
            .and_then(Value::as_str)
            .map(str::to_string);
        // A student's client in class mode (`"student": N`), else the simulator's own; a
        // student's credentials name their own.
        let named = body
            .get("student")
            .and_then(Value::as_u64)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let client = match (scope, named) {
            (Some(own), Some(n)) if n != own => {
                return refused(Caller::Student(own), "another student's webhook secret");
            }
            (Some(own), _) => own,
            (None, n) => n.unwrap_or(0),
        };
        if client >= self.lock().clients.len() {
            return SimResponse::text(StatusCode::NOT_FOUND, format!("no student {client}\n"));
        }
        let standard = self.dialect() == accesslink::dialect::Dialect::StandardWebhooks;
        if standard
            && secret
                .as_deref()
                .is_some_and(|s| !accesslink::dialect::is_secret(s))
        {
            return SimResponse::text(
                StatusCode::BAD_REQUEST,
                "this simulator speaks Standard Webhooks: the secret must be whsec_ and base64\n",
            );
        }
        match secret {
            Some(s) if s.len() >= 16 && s.chars().all(|c| c.is_ascii_graphic()) => {
                self.lock().clients[client].next_webhook_secret = Some(s.clone());
                SimResponse::json(StatusCode::OK, json!({"next_webhook_secret": s}))
            }
            _ => SimResponse::text(
                StatusCode::BAD_REQUEST,
                "send {\"secret\": \"…\"}: at least 16 printable characters, no spaces\n",
            ),
        }
    }

    /// `GET /sim/users`.
    fn control_users(&self, scope: Option<usize>) -> SimResponse {
        let s = self.lock();
        let list: Vec<Value> = s
            .users
            .values()
            .filter(|u| scope.is_none_or(|c| u.client == c))
            .map(|u| json!({"user_id": u.id, "access_token": u.token, "registered": u.registered, "consents": u.consents, "revoked": u.revoked}))
            .collect();
        SimResponse::json(StatusCode::OK, Value::Array(list))
    }

    /// `PUT /sim/users/{id}/{flag}` with `{"<key>": true|false}`: sets one of a user's flags.
    fn control_user_flag(
        &self,
        id: &str,
        body: &[u8],
        key: &str,
        set: impl FnOnce(&mut super::model::User, bool),
    ) -> SimResponse {
        let value = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get(key).and_then(Value::as_bool));
        let mut s = self.lock();
        match (
            id.parse::<u64>().ok().and_then(|i| s.users.get_mut(&i)),
            value,
        ) {
            (Some(u), Some(v)) => {
                set(u, v);
                SimResponse::empty(StatusCode::NO_CONTENT)
            }
            (None, _) => SimResponse::text(StatusCode::NOT_FOUND, "no such user\n"),
            (_, None) => SimResponse::text(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"{key}\": true|false}}\n"),
            ),
        }
    }

    /// `POST /sim/users/{id}/revoke`: the user's token answers 401 from now on.
    fn control_revoke(&self, id: &str) -> SimResponse {
        let mut s = self.lock();
        match id.parse::<u64>().ok().and_then(|i| s.users.get_mut(&i)) {
            Some(u) => {
                u.revoked = true;
                SimResponse::empty(StatusCode::NO_CONTENT)
            }
            None => SimResponse::text(StatusCode::NOT_FOUND, "no such user\n"),
        }
    }

    /// `POST /sim/inject` with `{"user_id": …, "type": "EXERCISE"}`: new data now.
    fn control_inject(&self, body: &[u8]) -> SimResponse {
        let body: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return SimResponse::text(
                    StatusCode::BAD_REQUEST,
                    format!("body is not JSON: {e}\n"),
                );
            }
        };
        let name = body
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("EXERCISE");
        let wanted = EventType::parse(name);
        let Some(kind) = Kind::ALL.into_iter().find(|k| k.event_type() == wanted) else {
            return SimResponse::text(StatusCode::BAD_REQUEST, format!("cannot inject {name}\n"));
        };
        let Some(uid) = body.get("user_id").and_then(Value::as_u64) else {
            return SimResponse::text(StatusCode::BAD_REQUEST, "user_id is required\n");
        };
        match self.generate(uid, kind) {
            Some(e) => SimResponse::json(
                StatusCode::CREATED,
                serde_json::to_value(e).unwrap_or(Value::Null),
            ),
            None => SimResponse::text(StatusCode::NOT_FOUND, "no such registered user\n"),
        }
    }

    /// `PUT /sim/faults`: the fields given replace those in force; every other field keeps its
    /// value (each is optional, as docs/simulator.md says).
    fn control_put_faults(&self, body: &[u8]) -> SimResponse {
        let bad = |e: String| {
            SimResponse::text(StatusCode::BAD_REQUEST, format!("faults not valid: {e}\n"))
        };
        let patch: serde_json::Map<String, Value> = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => return bad(format!("{e} (send a JSON object of the fields to change)")),
        };
        let merged = {
            let s = self.lock();
            let mut current = serde_json::to_value(&s.settings.faults).unwrap_or(json!({}));
            for (k, v) in patch {
                current[k] = v;
            }
            current
        };
        match serde_json::from_value::<Faults>(merged) {
            Ok(f) => self.control_faults(Some(f)),
            Err(e) => bad(e.to_string()),
        }
    }

    /// `GET /sim/faults`, or `PUT` (with `Some`): the faults in force.
    fn control_faults(&self, new: Option<Faults>) -> SimResponse {
        let mut s = self.lock();
        if let Some(mut f) = new {
            if let Some(secs) = f.outage_for.take() {
                let length = std::time::Duration::try_from_secs_f64(secs.max(0.0))
                    .ok()
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .unwrap_or(chrono::Duration::MAX);
                f.outage_until = Some(chrono::Utc::now() + length);
                tracing::info!(seconds = secs, "simulator: receiver outage starts");
            }
            s.settings.faults = f;
        }
        SimResponse::json(
            StatusCode::OK,
            serde_json::to_value(&s.settings.faults).unwrap_or(Value::Null),
        )
    }

    /// `GET /sim/truth`: every entity and delivery, the webhook and the client id.
    fn control_truth(&self) -> SimResponse {
        let s = self.lock();
        let hook = s.clients[0].hook.as_ref().map(Hook::json);
        let mut v = serde_json::to_value(&s.truth).unwrap_or(Value::Null);
        v["webhook"] = hook.unwrap_or(Value::Null);
        v["client_id"] = json!(s.settings.client_id);
        v["dialect"] = json!(s.settings.dialect);
        SimResponse::json(StatusCode::OK, v)
    }
}

/// Changes some of a running simulator's faults over its control API (`GET` then `PUT
/// /sim/faults`), leaving the others as they are; returns the faults now in force.
pub async fn patch_faults(
    http: &reqwest::Client,
    base_url: &str,
    patch: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{base_url}/sim/faults");
    let mut faults: serde_json::Value = http.get(&url).send().await?.json().await?;
    if let Some(fields) = patch.as_object() {
        for (k, v) in fields {
            faults[k] = v.clone();
        }
    }
    let res = http.put(&url).json(&faults).send().await?;
    let status = res.status();
    anyhow::ensure!(
        status.is_success(),
        "changing the simulator's faults at {url}: {status}: {}",
        res.text().await.unwrap_or_default()
    );
    Ok(res.json().await?)
}

/// A change a page of another site could ask for, refused: a control request that is not a
/// read and names another origin (403), or carries a body type a page may send across sites
/// without asking first (`text/plain`, a form: 415). Before, a `text/plain` POST with a foreign
/// `Origin` was accepted, so any page a student opened could drive the class's simulator.
fn cross_site(req: &SimRequest) -> Option<SimResponse> {
    if req.method == Method::GET || req.method == Method::HEAD {
        return None;
    }
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = header("origin") {
        let site = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if site.is_none() || site != header("host") {
            return Some(SimResponse::error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "a control request from a page of another site",
            ));
        }
    }
    let simple = header("content-type").is_some_and(|t| {
        let t = t
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ]
        .contains(&t.as_str())
    });
    simple.then(|| {
        SimResponse::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "control requests take application/json",
        )
    })
}

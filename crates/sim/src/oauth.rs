//! OAuth 2.0 as Polar's authorization server does it: the authorize page (auto-consent, with the
//! simulator's `user_id` and `deny` extensions) and the token endpoint (single-use 10-minute codes;
//! a reused code revokes the token it issued).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use warp::http::StatusCode;

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Code {
    pub(super) user_id: u64,
    pub(super) redirect_uri: Option<String>,
    pub(super) issued: Instant,
    pub(super) used: bool,
    /// The token issued with it, revoked if the code is used again.
    pub(super) token: Option<String>,
}

impl Sim {
    pub(super) fn authorize(&self, req: &SimRequest) -> SimResponse {
        let q: HashMap<String, String> = serde_urlencoded::from_str(&req.query).unwrap_or_default();
        let mut s = self.lock();
        if q.get("response_type").map(String::as_str) != Some("code") {
            return SimResponse::text(StatusCode::BAD_REQUEST, "response_type must be code\n");
        }
        let Some(client) = q.get("client_id").and_then(|id| s.client_with(id, None)) else {
            return SimResponse::text(StatusCode::BAD_REQUEST, "unknown client_id\n");
        };
        let Some(target) = q
            .get("redirect_uri")
            .cloned()
            .or_else(|| s.settings.default_redirect_uri.clone())
        else {
            return SimResponse::text(
                StatusCode::BAD_REQUEST,
                "no redirect_uri given and none registered for the client\n",
            );
        };
        let state = q.get("state").cloned();
        let sep = if target.contains('?') { '&' } else { '?' };
        let state_part = state
            .map(|st| format!("&state={}", urlencode(&st)))
            .unwrap_or_default();
        // The simulator's consent page answers at once: `deny=1` says no, otherwise yes.
        if q.get("deny").is_some_and(|v| v == "1" || v == "true") {
            return SimResponse::redirect(format!("{target}{sep}error=access_denied{state_part}"));
        }
        // `user_id` connects an existing simulator user; otherwise a new Polar user consents.
        let uid = match q.get("user_id").and_then(|v| v.parse::<u64>().ok()) {
            Some(uid) if s.users.contains_key(&uid) => uid,
            Some(_) => return SimResponse::text(StatusCode::BAD_REQUEST, "unknown user_id\n"),
            None => s.new_user_of(false, client).0,
        };
        let code = s.random_token(16);
        s.codes.insert(
            code.clone(),
            Code {
                user_id: uid,
                redirect_uri: q.get("redirect_uri").cloned(),
                issued: Instant::now(),
                used: false,
                token: None,
            },
        );
        SimResponse::redirect(format!("{target}{sep}code={code}{state_part}"))
    }

    pub(super) fn token(&self, req: &SimRequest) -> SimResponse {
        let mut s = self.lock();
        match basic_credentials(&req.headers) {
            Some((id, secret)) if s.client_with(&id, Some(&secret)).is_some() => {}
            _ => {
                // Polar's token endpoint documents only 200 and 400.
                return SimResponse::json(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_client"}),
                );
            }
        }
        let form: HashMap<String, String> =
            serde_urlencoded::from_bytes(&req.body).unwrap_or_default();
        let invalid_grant =
            || SimResponse::json(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
        if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
            return SimResponse::json(
                StatusCode::BAD_REQUEST,
                json!({"error": "unsupported_grant_type"}),
            );
        }
        let Some(code_str) = form.get("code") else {
            return invalid_grant();
        };
        let Some(code) = s.codes.get(code_str).cloned() else {
            return invalid_grant();
        };
        if code.used {
            // Reuse: refused, and the token issued with the code is revoked.
            if let Some(t) = &code.token {
                s.tokens.remove(t);
            }
            return invalid_grant();
        }
        let code_ttl = Duration::from_secs(s.settings.faults.code_ttl_s);
        if code.issued.elapsed() > code_ttl
            || form.get("redirect_uri") != code.redirect_uri.as_ref()
        {
            return invalid_grant();
        }
        let token = s.random_token(24);
        s.tokens.insert(token.clone(), code.user_id);
        if let Some(u) = s.users.get_mut(&code.user_id) {
            u.token = token.clone();
            u.revoked = false;
        }
        if let Some(c) = s.codes.get_mut(code_str) {
            c.used = true;
            c.token = Some(token.clone());
        }
        SimResponse::json(
            StatusCode::OK,
            json!({"access_token": token, "token_type": "bearer", "expires_in": 31_535_999, "x_user_id": code.user_id}),
        )
    }
}

pub(super) fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

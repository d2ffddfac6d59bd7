//! Users: tokens, registration (`POST /v3/users`), de-registration and the ownership check that
//! every `/v3/users/{id}/…` route makes.

use chrono::Utc;
use rand::RngExt;
use serde_json::Value;
use warp::http::StatusCode;

use super::model::User;
use super::*;
use accesslink::dialect::Dialect;

impl State {
    /// A credential (a client secret, a token, an OAuth code) of `len` characters. Drawn from
    /// the seeded generator, as the data is, so a seed replays a run exactly; in a class,
    /// from the operating system's randomness instead (still consuming the seeded draws, so the
    /// data stays the seed's): a seed anyone can pass is no secret, and before, a student who
    /// ran `hookrace sim --class 24` at home read every classmate's credentials in their own
    /// class file.
    pub(super) fn random_token(&mut self, len: usize) -> String {
        const A: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let seeded: String = (0..len)
            .map(|_| A[self.rng.random_range(0..A.len())] as char)
            .collect();
        if self.settings.class == 0 {
            return seeded;
        }
        let mut os = rand::rng();
        (0..len)
            .map(|_| A[os.random_range(0..A.len())] as char)
            .collect()
    }

    /// A webhook's signature secret, unguessable in a class as [`State::random_token`] says.
    /// In the Standard Webhooks dialect it is a `whsec_` secret.
    pub(super) fn webhook_secret(&mut self) -> String {
        fn make(rng: &mut impl rand::Rng, dialect: Dialect) -> String {
            match dialect {
                Dialect::StandardWebhooks => accesslink::dialect::new_secret(rng.random()),
                Dialect::Polar => super::webhooks::uuid_like(rng),
            }
        }
        let dialect = self.settings.dialect;
        let seeded = make(&mut self.rng, dialect);
        if self.settings.class == 0 {
            return seeded;
        }
        make(&mut rand::rng(), dialect)
    }

    pub(super) fn new_user(&mut self, registered: bool) -> (u64, String) {
        self.new_user_of(registered, 0)
    }

    /// A new user of client `client`.
    pub(super) fn new_user_of(&mut self, registered: bool, client: usize) -> (u64, String) {
        let id = self.next_user_id;
        self.next_user_id += 1;
        let token = self.random_token(24);
        self.tokens.insert(token.clone(), id);
        self.users.insert(
            id,
            User {
                id,
                token: token.clone(),
                registered,
                member_id: format!("sim-member-{id}"),
                registration_date: Utc::now(),
                consents: true,
                found: true,
                revoked: false,
                client,
            },
        );
        (id, token)
    }

    pub(super) fn registered_users(&self) -> u64 {
        self.users.values().filter(|u| u.registered).count() as u64
    }

    /// `Some(403)` when `uid` (the token's user) is not the user in the path.
    pub(super) fn own(&self, uid: u64, path_id: &str) -> Option<SimResponse> {
        (path_id.parse::<u64>().ok() != Some(uid)).then(|| {
            SimResponse::error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "the token does not belong to this user",
            )
        })
    }

    pub(super) fn register(&mut self, uid: u64, body: &[u8]) -> SimResponse {
        let member = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("member-id").and_then(Value::as_str).map(String::from));
        let Some(member) = member.filter(|m| !m.is_empty()) else {
            return SimResponse::error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "body must be {\"member-id\": \"…\"}",
            );
        };
        if !self.users[&uid].found {
            // Polar's newest spec: 204 "user not found", which is not a registration.
            return SimResponse::empty(StatusCode::NO_CONTENT);
        }
        if self.users[&uid].registered {
            return SimResponse::error(StatusCode::CONFLICT, "Conflict", "user already registered");
        }
        if !self.users[&uid].consents {
            return SimResponse::error(
                StatusCode::FORBIDDEN,
                "ConsentMissing",
                "the user has not accepted the mandatory consents",
            );
        }
        if self
            .users
            .values()
            .any(|u| u.id != uid && u.registered && u.member_id == member)
        {
            return SimResponse::error(
                StatusCode::CONFLICT,
                "Conflict",
                "member-id already in use",
            );
        }
        let u = self
            .users
            .get_mut(&uid)
            .expect("bearer() checked the user exists");
        u.registered = true;
        u.member_id = member;
        u.registration_date = Utc::now();
        u.json().into_ok()
    }

    pub(super) fn deregister(&mut self, uid: u64) -> SimResponse {
        if let Some(u) = self.users.get_mut(&uid) {
            u.registered = false;
            u.revoked = true;
        }
        SimResponse::empty(StatusCode::NO_CONTENT)
    }
}

//! Who may use a control route (`/sim/...`). Without a class the simulator is one person's, on
//! loopback: everyone is its teacher, as docs/simulator.md says. In class mode
//! (`hookrace sim --class N`) the class-wide controls (faults, injections, other students' users,
//! triggers for others, every credential) need the teacher's token; a student's own client
//! credentials reach only that student's client, users, webhook secret, triggers and log; without
//! either, only the public pages (the scoreboard, and the watch page's shell) answer.
//!
//! Credentials come as HTTP Basic (`teacher:TOKEN`, or `student-03:SECRET`), which a browser can
//! send to the live pages, or the token as `Authorization: Bearer TOKEN` for scripts.

use subtle::ConstantTimeEq;
use warp::http::{HeaderMap, StatusCode};

use super::routes::basic_credentials;
use super::*;

/// The user name a teacher gives with the token as password.
pub const TEACHER: &str = "teacher";

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Everything (and anyone, without a class).
    Teacher,
    /// Only this student's client (its index among the clients).
    Student(usize),
    /// The public pages only.
    Nobody,
}

impl Caller {
    /// The client a caller is confined to; `None` for the teacher (every client).
    pub fn scope(self) -> Option<usize> {
        match self {
            Caller::Student(c) => Some(c),
            Caller::Teacher | Caller::Nobody => None,
        }
    }
}

impl Sim {
    /// The teacher's token (class mode only).
    pub fn teacher_token(&self) -> Option<&str> {
        self.teacher_token.as_deref()
    }

    /// Who the request's credentials name.
    pub fn caller(&self, headers: &HeaderMap) -> Caller {
        let Some(teacher) = self.teacher_token.as_deref() else {
            return Caller::Teacher;
        };
        let is_teacher = |token: &str| bool::from(token.as_bytes().ct_eq(teacher.as_bytes()));
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            return if is_teacher(token.trim()) {
                Caller::Teacher
            } else {
                Caller::Nobody
            };
        }
        match basic_credentials(headers) {
            Some((user, token)) if user == TEACHER && is_teacher(&token) => Caller::Teacher,
            Some((id, secret)) => match self.lock().client_with(&id, Some(&secret)) {
                // The simulator's own client has well-known default credentials: no student.
                Some(c) if c > 0 => Caller::Student(c),
                _ => Caller::Nobody,
            },
            None => Caller::Nobody,
        }
    }
}

/// The answer to a caller who may not use a route: 401 (with the Basic challenge a browser
/// answers) to nobody, 403 to a student.
pub fn refused(caller: Caller, what: &str) -> SimResponse {
    match caller {
        Caller::Student(_) => SimResponse::error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("{what}: a student's credentials reach only their own client"),
        ),
        _ => super::routes::unauthorized(&format!(
            "{what}: this class's simulator needs the teacher's token (user `teacher`) or your \
             client's credentials (HTTP Basic)"
        )),
    }
}

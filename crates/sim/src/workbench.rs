//! The receiver workbench's side of the simulator: a log of what it did to the receiver (every
//! delivery and PING, with the answer and how long it took) and of what the receiver then asked
//! of it (every request carrying a user's token, with whose token and how long after the
//! delivery that announced the URL), and `POST /sim/trigger`, which makes data now, optionally
//! with a one-shot fault on its delivery. `hookrace sim log`, the simulator's live page
//! (`/sim/watch`) and `hookrace check-receiver` read the log. None of it is part of AccessLink.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use warp::http::StatusCode;

use super::model::Kind;
use super::webhooks::Hook;
use super::*;
use accesslink::identity::EventType;

/// How many entries the log keeps (older ones are dropped; a follower that falls this far behind
/// is told how many it missed).
const KEEP: usize = 10_000;

/// How many delivered paths the log remembers the user of (a fetch of an older one is
/// attributed by its token alone): before, every path a long class delivered stayed.
const ANNOUNCED_KEPT: usize = 20_000;

/// One thing the log records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Logged {
    /// A webhook delivery and the receiver's answer (`status` none: no answer or not sent).
    Delivery {
        event: String,
        /// The `user_id` of the payload.
        user_id: u64,
        /// The data's URL (the payload's `url`).
        url: String,
        /// Where it was sent.
        receiver: String,
        /// The one-shot fault it carried (`drop`, `duplicate`, `bad_signature`, …), if any.
        fault: Option<String>,
        /// Whether it was sent at all (a dropped delivery is logged, not sent).
        sent: bool,
        status: Option<u16>,
        ms: Option<u64>,
        /// What was sent, as an inspector shows it: the headers and the body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<Inspected>,
        /// What the receiver answered: its headers and the first KiB of its body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<Inspected>,
    },
    /// A PING (webhook creation, activation, `sim trigger ping`) and the answer.
    Ping {
        receiver: String,
        status: Option<u16>,
        ms: Option<u64>,
    },
    /// A request made with a user's bearer token: the receiver fetching data.
    Request {
        method: String,
        /// Path and query.
        path: String,
        /// The user the token belongs to; none for a token the simulator does not know.
        token_user: Option<u64>,
        status: u16,
        /// The user the last delivery of this URL was for, when one announced it.
        announced_for: Option<u64>,
        /// Milliseconds since that delivery was sent.
        after_delivery_ms: Option<i64>,
    },
}

/// One side of an HTTP exchange as the log keeps it: the headers, and the body's first
/// [`INSPECTED_BODY_MAX`] bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Inspected {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// How much of a body the log keeps.
pub const INSPECTED_BODY_MAX: usize = 1024;

/// `text` cut to at most [`INSPECTED_BODY_MAX`] bytes, on a character boundary.
pub(super) fn inspected_body(text: &str) -> String {
    let mut end = text.len().min(INSPECTED_BODY_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl Sent {
    /// The request as the log shows it.
    pub fn inspected(&self) -> Inspected {
        let mut headers = vec![("Content-Type".into(), "application/json".into())];
        headers.extend(self.headers.iter().cloned());
        Inspected {
            headers,
            body: inspected_body(&self.body),
        }
    }
}

/// A delivery as it was sent: where, its headers' values and its body, byte for byte.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The API client whose webhook it went to.
    pub client: usize,
    pub receiver: String,
    pub event: String,
    pub body: String,
    /// The dialect's headers (Polar's event and signature, or Standard Webhooks' three).
    pub headers: Vec<(String, String)>,
    /// When it was first sent (a resend keeps it: it is the same bytes).
    pub at: DateTime<Utc>,
    /// Sent without a fault: a genuine delivery, the kind an attacker would capture and replay.
    pub genuine: bool,
    pub user_id: u64,
    pub url: String,
}

/// How many sent deliveries are kept for `sim resend`.
pub const SENT_KEPT: usize = 1000;

/// A log entry: a sequence number (for followers), when, and what.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// The API client it concerns: 0 the simulator's own, 1… a student's (class mode).
    #[serde(default)]
    pub client: usize,
    #[serde(flatten)]
    pub what: Logged,
}

impl LogEntry {
    /// One line for people: `12:00:03 EXERCISE user 10001 → 200 in 14 ms`, or
    /// `12:00:03   · fetched /v3/exercises/aQlC83 with user 10001's token → 200, 38 ms after
    /// the delivery`.
    pub fn line(&self) -> String {
        // In a class, each line names its student (the teacher sees every student's).
        let at = match self.client {
            0 => self.at.format("%H:%M:%S").to_string(),
            c => format!("{} student-{c:02}", self.at.format("%H:%M:%S")),
        };
        let answer = |status: &Option<u16>, ms: &Option<u64>| match (status, ms) {
            (Some(s), Some(ms)) => format!("{s} in {ms} ms"),
            (Some(s), None) => s.to_string(),
            (None, Some(ms)) => format!("no answer ({ms} ms)"),
            (None, None) => "no answer".to_string(),
        };
        match &self.what {
            Logged::Delivery {
                event,
                user_id,
                url,
                fault,
                sent,
                status,
                ms,
                ..
            } => {
                let fault = fault
                    .as_ref()
                    .map(|f| format!(" [{f}]"))
                    .unwrap_or_default();
                if *sent {
                    format!(
                        "{at} {event} user {user_id} → {}{fault} · {}",
                        answer(status, ms),
                        path_of(url)
                    )
                } else {
                    format!("{at} {event} user {user_id} → not sent{fault}")
                }
            }
            Logged::Ping {
                receiver,
                status,
                ms,
            } => format!("{at} PING {receiver} → {}", answer(status, ms)),
            Logged::Request {
                method,
                path,
                token_user,
                status,
                announced_for,
                after_delivery_ms,
            } => {
                let verb = if method == "GET" { "fetched" } else { method };
                let whose = match (token_user, announced_for) {
                    (None, _) => "an unknown token".to_string(),
                    (Some(t), Some(a)) if t != a => {
                        format!("user {t}'s token (WRONG: the delivery was for user {a})")
                    }
                    (Some(t), _) => format!("user {t}'s token"),
                };
                let when = after_delivery_ms
                    .map(|ms| format!(", {ms} ms after the delivery"))
                    .unwrap_or_else(|| ", no delivery announced it".to_string());
                format!("{at}   · {verb} {path} with {whose} → {status}{when}")
            }
        }
    }
}

/// The path (and query) of `url`, or `url` itself when it does not parse.
pub fn path_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => url.to_string(),
    }
}

/// The log: the newest entries, a broadcast of each new one, and which user each data URL was
/// last delivered for.
pub(super) struct WorkLog {
    next_seq: u64,
    entries: VecDeque<LogEntry>,
    /// The newest deliveries as sent, byte for byte, by their entry's seq (`sim resend`).
    sent: VecDeque<(u64, Sent)>,
    announced: HashMap<String, (u64, DateTime<Utc>)>,
    /// The announced paths, oldest first, so at most [`ANNOUNCED_KEPT`] are remembered.
    announced_order: VecDeque<String>,
    tx: broadcast::Sender<LogEntry>,
    /// Each client's scoreboard figures, counted as entries are recorded.
    tallies: HashMap<usize, super::class::Tally>,
}

impl Default for WorkLog {
    fn default() -> Self {
        WorkLog {
            next_seq: 1,
            entries: VecDeque::new(),
            sent: VecDeque::new(),
            announced: HashMap::new(),
            announced_order: VecDeque::new(),
            tx: broadcast::channel(1024).0,
            tallies: HashMap::new(),
        }
    }
}

impl WorkLog {
    /// Logs a delivery that was sent, and keeps what was sent for a resend.
    pub(super) fn record_sent(&mut self, client: usize, what: Logged, sent: Sent) -> u64 {
        let seq = self.record(client, what);
        if self.sent.len() == SENT_KEPT {
            self.sent.pop_front();
        }
        self.sent.push_back((seq, sent));
        seq
    }

    /// The delivery logged as `seq`, as it was sent, while it is among the newest kept.
    /// The oldest genuine delivery kept of `client` (`sim trigger --replay-old`), with its seq.
    pub(super) fn oldest_genuine(&self, client: Option<usize>) -> Option<(u64, Sent)> {
        self.sent
            .iter()
            .find(|(_, s)| s.genuine && client.is_none_or(|c| s.client == c))
            .cloned()
    }

    pub(super) fn sent(&self, seq: u64) -> Option<Sent> {
        self.sent
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, sent)| sent.clone())
    }

    pub(super) fn record(&mut self, client: usize, what: Logged) -> u64 {
        let now = Utc::now();
        let entry = LogEntry {
            seq: self.next_seq,
            at: now,
            client,
            what,
        };
        self.next_seq += 1;
        self.tallies.entry(client).or_default().see(&entry.what);
        if self.entries.len() == KEEP {
            self.entries.pop_front();
        }
        self.entries.push_back(entry.clone());
        // No follower is no error.
        let _ = self.tx.send(entry);
        self.next_seq - 1
    }

    /// A client's scoreboard figures, once anything of theirs was logged.
    pub(super) fn tally(&self, client: usize) -> Option<&super::class::Tally> {
        self.tallies.get(&client)
    }

    /// Notes that a delivery of `url` for `user` is being sent now (before the receiver can
    /// answer, or fetch while it answers).
    pub(super) fn announce(&mut self, url: &str, user: u64) {
        let path = path_of(url);
        if self
            .announced
            .insert(path.clone(), (user, Utc::now()))
            .is_none()
        {
            self.announced_order.push_back(path);
            if self.announced_order.len() > ANNOUNCED_KEPT {
                if let Some(old) = self.announced_order.pop_front() {
                    self.announced.remove(&old);
                }
            }
        }
    }

    /// The user the last delivery of `path` was for, and when it was sent.
    pub(super) fn announced(&self, path: &str) -> Option<(u64, DateTime<Utc>)> {
        self.announced.get(path).copied()
    }

    /// The entries after `seq`, of one client's only when `scope` names it (chosen before
    /// they are copied: a student's read copies their own entries, not the class's).
    pub(super) fn after(&self, seq: u64, scope: Option<usize>) -> Vec<LogEntry> {
        // Entries are in seq order: skip the older ones without looking at each.
        let first = self.entries.partition_point(|e| e.seq <= seq);
        self.entries
            .range(first..)
            .filter(|e| scope.is_none_or(|c| e.client == c))
            .cloned()
            .collect()
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<LogEntry> {
        self.tx.subscribe()
    }
}

/// A one-shot fault on the deliveries of one trigger, and the payload changes the receiver
/// grader uses to probe a receiver.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OneShot {
    /// Not sent at all.
    pub drop: bool,
    /// Sent twice.
    pub duplicate: bool,
    /// Sent after this many milliseconds (instead of the configured delay).
    pub delay_ms: Option<u64>,
    /// Signed with a wrong secret.
    pub bad_signature: bool,
    /// The payload's `event` is one AccessLink does not have.
    pub unknown_event: bool,
    /// The payload's `user_id` is a user the client does not know.
    pub unknown_user: bool,
    /// The payload's `timestamp` has no zone (`2026-12-02T10:00:00.123`).
    pub zoneless_timestamp: bool,
    /// The data is gone by the time the receiver fetches it (404).
    pub gone: bool,
    /// No signature header at all (either dialect).
    pub missing_signature: bool,
    /// Standard Webhooks: signed, but `webhook-timestamp` is [`SKEW_S`] old (a replay).
    pub stale_timestamp: bool,
    /// Standard Webhooks: signed, but `webhook-timestamp` is [`SKEW_S`] ahead.
    pub future_timestamp: bool,
    /// Standard Webhooks: `webhook-signature` holds a signature by a retired key before the
    /// valid one (key rotation).
    pub rotated_signatures: bool,
    /// The payload carries [`LARGE_PADDING`] bytes more (a `padding` field).
    pub large_payload: bool,
}

/// How far a stale or future `webhook-timestamp` is from now: twice the usual tolerance.
pub const SKEW_S: i64 = 2 * accesslink::dialect::TOLERANCE_S;
/// The extra bytes of a large payload: well inside a 64 KiB body limit, far beyond a thin one.
pub const LARGE_PADDING: usize = 40 * 1024;

impl OneShot {
    /// The fault's name for the log (`drop`, `duplicate+bad_signature`, …), none when clean.
    pub fn label(&self) -> Option<String> {
        let mut names = Vec::new();
        for (on, name) in [
            (self.drop, "drop"),
            (self.duplicate, "duplicate"),
            (self.delay_ms.is_some(), "delay"),
            (self.bad_signature, "bad_signature"),
            (self.unknown_event, "unknown_event"),
            (self.unknown_user, "unknown_user"),
            (self.zoneless_timestamp, "zoneless_timestamp"),
            (self.gone, "gone"),
            (self.missing_signature, "missing_signature"),
            (self.stale_timestamp, "stale_timestamp"),
            (self.future_timestamp, "future_timestamp"),
            (self.rotated_signatures, "rotated_signatures"),
            (self.large_payload, "large_payload"),
        ] {
            if on {
                names.push(name);
            }
        }
        (!names.is_empty()).then(|| names.join("+"))
    }
}

/// `POST /sim/trigger`'s body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trigger {
    /// An event name (`EXERCISE`, `SLEEP`, …, `SleepWise` for both SleepWise kinds) or `PING`.
    event: String,
    user_id: Option<u64>,
    /// A student's number (class mode).
    student: Option<usize>,
    /// Every student (class mode), or the simulator's own client without a class.
    #[serde(default)]
    everyone: bool,
    #[serde(default = "one")]
    count: u32,
    #[serde(default)]
    fault: OneShot,
    /// Fields of the item made, instead of the seed's (`sim trigger --data`).
    #[serde(default)]
    data: Option<serde_json::Map<String, Value>>,
}

fn one() -> u32 {
    1
}

/// The most a trigger makes at once.
const MAX_COUNT: u32 = 500;

/// The kinds an event name triggers (`SleepWise` is both SleepWise kinds).
fn kinds_of(event: &str) -> Option<Vec<Kind>> {
    if event.eq_ignore_ascii_case("sleepwise") || event.eq_ignore_ascii_case("sleep_wise") {
        return Some(vec![
            Kind::SleepWiseAlertness,
            Kind::SleepWiseCircadianBedtime,
        ]);
    }
    let wanted = EventType::parse(&event.to_ascii_uppercase());
    [
        Kind::Exercise,
        Kind::Activity,
        Kind::PhysicalInformation,
        Kind::Sleep,
        Kind::ContinuousHeartRate,
        Kind::SleepWiseAlertness,
        Kind::SleepWiseCircadianBedtime,
    ]
    .into_iter()
    .find(|k| k.event_type() == wanted)
    .map(|k| vec![k])
}

impl Sim {
    /// `POST /sim/trigger`: makes `count` new items of `event` now and lets the simulator deliver
    /// them with `fault`, or sends a PING. For whom: `user_id`, else the first user of `student`
    /// (class mode), else of every student with an active webhook (`everyone`), else of the
    /// simulator's own client. 409 when no active webhook would deliver them.
    pub(super) async fn control_trigger(&self, body: &[u8], scope: Option<usize>) -> SimResponse {
        let (t, kinds) = match self.read_trigger(body, scope) {
            Ok(read) => read,
            Err(r) => return r,
        };
        let ping = kinds.is_empty();
        let targets = match self.targets(&t) {
            Ok(targets) => targets,
            Err(r) => return r,
        };
        let mut made = Vec::new();
        let mut delivered_to = Vec::new();
        let mut skipped = Vec::new();
        // PINGs to many students go together, each with the client's own timeout: one after
        // another, a class of silent receivers outlasted the caller's patience.
        let mut pings = Vec::new();
        for (client, users) in targets {
            let hook = self.lock().clients[client].hook.clone();
            let problem = delivery_problem(hook.as_ref(), &kinds, &t.event);
            let client_id = self.lock().clients[client].id.clone();
            if let Some(why) = problem {
                if !t.everyone {
                    return SimResponse::text(StatusCode::CONFLICT, format!("{why}\n"));
                }
                skipped.push(json!({"client_id": client_id, "why": why}));
                continue;
            }
            let Some(h) = hook else { continue };
            if ping {
                pings.push(async move {
                    let answer = self.ping(&h.url, &h.secret, client).await;
                    json!({"client_id": client_id, "webhook": h.url,
                        "answered": answer.is_ok(), "problem": answer.err()})
                });
                continue;
            }
            delivered_to.push(json!({"client_id": client_id, "webhook": h.url}));
            for user in users {
                if let Err(r) = self.make_items(user, &kinds, &t, &client_id, &mut made) {
                    return r;
                }
            }
        }
        if ping {
            let pinged = futures_util::future::join_all(pings).await;
            return SimResponse::json(
                StatusCode::OK,
                json!({"event": "PING", "pinged": pinged, "skipped": skipped}),
            );
        }
        SimResponse::json(
            StatusCode::CREATED,
            json!({"made": made, "delivered_to": delivered_to, "skipped": skipped,
                   "fault": t.fault.label()}),
        )
    }

    /// Makes the trigger's items for `user`, noting each in `made`; 404 when the user is
    /// not registered.
    fn make_items(
        &self,
        user: u64,
        kinds: &[Kind],
        t: &Trigger,
        client_id: &str,
        made: &mut Vec<Value>,
    ) -> Result<(), SimResponse> {
        for _ in 0..t.count {
            for kind in kinds {
                match self.generate_custom(user, *kind, &t.fault, t.data.as_ref()) {
                    Err(why) => {
                        return Err(SimResponse::text(
                            StatusCode::BAD_REQUEST,
                            format!("{why}\n"),
                        ));
                    }
                    Ok(Some((entity, url))) => made.push(json!({
                        "type": entity.kind, "user_id": entity.user_id,
                        "entity_id": entity.entity_id, "url": url,
                        "client_id": client_id,
                    })),
                    Ok(None) => {
                        return Err(SimResponse::text(
                            StatusCode::NOT_FOUND,
                            format!("no registered user {user}\n"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The trigger in `body`, confined to `scope`'s client, and the kinds it makes (none: a
    /// PING); a 400 (or the confinement's 403) says what is wrong with it.
    fn read_trigger(
        &self,
        body: &[u8],
        scope: Option<usize>,
    ) -> Result<(Trigger, Vec<Kind>), SimResponse> {
        let bad = |m: String| SimResponse::text(StatusCode::BAD_REQUEST, format!("{m}\n"));
        let mut t: Trigger =
            serde_json::from_slice(body).map_err(|e| bad(format!("not a trigger: {e}")))?;
        if let Some(own) = scope {
            self.confine(&mut t, own)?;
        }
        let ping = t.event.eq_ignore_ascii_case("ping");
        let kinds = match (ping, kinds_of(&t.event)) {
            (true, _) => Vec::new(),
            (false, Some(k)) => k,
            (false, None) => {
                return Err(bad(format!(
                    "unknown event {:?}: EXERCISE, SLEEP, ACTIVITY_SUMMARY, \
                     CONTINUOUS_HEART_RATE, SleepWise, PHYSICAL_INFORMATION or PING",
                    t.event
                )));
            }
        };
        if t.data.is_some() && (ping || kinds.len() != 1) {
            return Err(bad(format!(
                "--data sets the fields of one kind of item: not of {}",
                t.event
            )));
        }
        if t.count == 0 || t.count > MAX_COUNT {
            return Err(bad(format!("count must be 1 to {MAX_COUNT}")));
        }
        Ok((t, kinds))
    }

    /// Keeps a student's trigger to their own client: no `everyone`, no other student, none of
    /// another client's users; without a target, their own first user.
    fn confine(&self, t: &mut Trigger, own: usize) -> Result<(), SimResponse> {
        let who = super::access::Caller::Student(own);
        if t.everyone || t.student.is_some_and(|n| n != own) {
            return Err(super::access::refused(who, "a trigger for other students"));
        }
        if let Some(user) = t.user_id {
            let theirs = self
                .lock()
                .users
                .get(&user)
                .is_some_and(|u| u.client == own);
            if !theirs {
                return Err(super::access::refused(who, &format!("user {user}")));
            }
        } else {
            t.student = Some(own);
        }
        Ok(())
    }

    /// The clients a trigger is for, each with the users to make data for: the user named; a
    /// student's every user (a receiver must fetch each with its own user's token, so a
    /// trigger for a student exercises both); without a class, the simulator's first user.
    fn targets(&self, t: &Trigger) -> Result<Vec<(usize, Vec<u64>)>, SimResponse> {
        let s = self.lock();
        let users_of = |client: usize| -> Vec<u64> {
            s.users
                .values()
                .filter(|u| u.client == client && u.registered && !u.revoked)
                .map(|u| u.id)
                .collect()
        };
        let students = s.clients.len() - 1;
        let not_found = |m: String| SimResponse::text(StatusCode::NOT_FOUND, format!("{m}\n"));
        if let Some(user) = t.user_id {
            return match s.users.get(&user) {
                Some(u) => Ok(vec![(u.client, vec![user])]),
                None => Err(not_found(format!("no user {user}"))),
            };
        }
        if t.everyone {
            if students == 0 {
                return Ok(users_of(0)
                    .into_iter()
                    .take(1)
                    .map(|u| (0, vec![u]))
                    .collect());
            }
            return Ok((1..=students)
                .map(|c| (c, users_of(c)))
                .filter(|(_, users)| !users.is_empty())
                .collect());
        }
        let client = match t.student {
            Some(n) if (1..=students).contains(&n) => n,
            Some(n) => {
                return Err(not_found(format!(
                    "no student {n}: this simulator has {students} (hookrace sim --class N)"
                )));
            }
            None => 0,
        };
        let mut users = users_of(client);
        if client == 0 {
            users.truncate(1);
        }
        if users.is_empty() {
            return Err(SimResponse::text(
                StatusCode::BAD_REQUEST,
                "the simulator has no registered user for that client: add one\n",
            ));
        }
        Ok(vec![(client, users)])
    }

    /// `GET /sim/log[?after=SEQ]`: the log's entries after `SEQ` (all that are kept by default).
    pub(super) fn control_log(&self, query: &str, scope: Option<usize>) -> SimResponse {
        let after = serde_urlencoded::from_str::<HashMap<String, String>>(query)
            .ok()
            .and_then(|q| q.get("after").and_then(|a| a.parse().ok()))
            .unwrap_or(0);
        let entries = self.lock().log.after(after, scope);
        SimResponse::json(
            StatusCode::OK,
            serde_json::to_value(entries).unwrap_or(Value::Null),
        )
    }

    /// The log's entries after `seq` and a receiver of every later one (taken under one lock,
    /// so none is missed or repeated).
    pub fn follow_log(&self, seq: u64) -> (Vec<LogEntry>, broadcast::Receiver<LogEntry>) {
        let s = self.lock();
        (s.log.after(seq, None), s.log.subscribe())
    }

    /// Records a request made with a bearer token (the receiver fetching data), attributed to the
    /// delivery that announced its URL (sent before, or being answered).
    pub(super) fn log_request(&self, req: &SimRequest, status: StatusCode) {
        let Some(token) = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return;
        };
        let path = if req.query.is_empty() {
            req.path.clone()
        } else {
            format!("{}?{}", req.path, req.query)
        };
        let mut s = self.lock();
        let token_user = s.tokens.get(token).copied();
        let announced = s.log.announced(&path);
        // Only what someone can act on: a known user's token, or a URL a delivery announced
        // (a receiver fetching it with the wrong token). Anything else (random tokens on random
        // paths) would only fill the log.
        if token_user.is_none() && announced.is_none() {
            return;
        }
        let path = cut(path, LOGGED_PATH_MAX);
        // Attributed by the token it carries: in a class, a request with a token nobody has is
        // nobody's (attributed by the path, anyone could raise another student's "wrong token"
        // count by fetching the URL announced to them).
        let class = s.clients.len() > 1;
        let client = match (token_user, announced) {
            (Some(u), _) => s.client_of(u),
            (None, _) if class => return,
            (None, a) => a.map_or(0, |(u, _)| s.client_of(u)),
        };
        s.log.record(
            client,
            Logged::Request {
                method: req.method.to_string(),
                path,
                token_user,
                status: status.as_u16(),
                announced_for: announced.map(|a| a.0),
                after_delivery_ms: announced.map(|a| (Utc::now() - a.1).num_milliseconds()),
            },
        );
    }
}

/// The longest path (with its query) a log entry keeps: 1,000 requests with a 60 KB query each
/// added 57 MB to the log before.
pub const LOGGED_PATH_MAX: usize = 256;

/// `s` cut to at most `max` bytes (on a character boundary), with `…` when cut.
fn cut(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

/// The delivery delay of a one-shot fault, or the configured range's draw.
pub(super) fn delay_of(fault: &OneShot, drawn: Duration) -> Duration {
    fault.delay_ms.map(Duration::from_millis).unwrap_or(drawn)
}

/// `GET /sim/watch`: the log as a live page (server-sent events from `/sim/log/events`), one line
/// per delivery and request, a failed answer or a wrong token in red.
pub(super) fn watch_page() -> SimResponse {
    super::routes::page(WATCH_PAGE)
}

const WATCH_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hookrace sim: what your receiver did</title>
<style>
body { font: 15px/1.5 ui-monospace, monospace; margin: 1.5em; background: #fafafa; }
h1 { font: 600 20px system-ui, sans-serif; }
#log div { white-space: pre-wrap; border-bottom: 1px solid #eee; }
.bad { color: #b00020; font-weight: 600; } .ok { color: #1b5e20; } .info { color: #555; }
</style></head><body>
<h1>Deliveries to your receiver, and what it fetched</h1>
<p class="info" id="state">connecting…</p>
<div id="log"></div>
<script>
const log = document.getElementById("log"), state = document.getElementById("state");
const es = new EventSource("/sim/log/events");
es.onopen = () => { state.textContent = "live"; };
es.onerror = () => { state.textContent = "reconnecting…"; };
es.onmessage = (m) => {
  const e = JSON.parse(m.data), div = document.createElement("div");
  div.textContent = e.line;
  const bad = (e.kind === "delivery" && e.sent && e.status !== 200) ||
    (e.kind === "ping" && e.status !== 200) ||
    (e.kind === "request" && (e.status >= 400 || e.token_user === null ||
      (e.announced_for !== null && e.token_user !== e.announced_for)));
  div.className = bad ? "bad" : "ok";
  log.prepend(div);
};
</script></body></html>
"#;

/// `GET /sim/log/events`: the log as server-sent events, each `data` an entry with its `line`;
/// the entries after `Last-Event-ID` (or `?after=`, or all that are kept) first, then every new
/// one. The stream ends when the simulator shuts down.
pub(super) fn log_events(
    sim: std::sync::Arc<Sim>,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl warp::Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    use futures_util::StreamExt;
    use warp::Filter;
    use warp::reply::Reply;
    warp::path!("sim" / "log" / "events")
        .and(warp::get())
        .and(warp::header::optional::<u64>("last-event-id"))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::headers_cloned())
        .map(
            move |last: Option<u64>, query: HashMap<String, String>, headers| {
                let who = sim.caller(&headers);
                if who == super::access::Caller::Nobody {
                    return super::routes::to_http(super::access::refused(who, "the log"));
                }
                let scope = who.scope();
                let after = last
                    .or_else(|| query.get("after").and_then(|a| a.parse().ok()))
                    .unwrap_or(0);
                let (mut backlog, rx) = sim.follow_log(after);
                backlog.retain(|e| scope.is_none_or(|c| e.client == c));
                let live = futures_util::stream::unfold(rx, move |mut rx| async move {
                    loop {
                        match rx.recv().await {
                            Ok(entry) if scope.is_some_and(|c| entry.client != c) => continue,
                            Ok(entry) => return Some((entry, rx)),
                            // A follower that fell behind skips what it missed.
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                });
                let events = futures_util::stream::iter(backlog)
                    .chain(live)
                    .map(|entry| {
                        let mut v = serde_json::to_value(&entry).unwrap_or(Value::Null);
                        v["line"] = Value::String(entry.line());
                        Ok::<_, std::convert::Infallible>(
                            warp::sse::Event::default()
                                .id(entry.seq.to_string())
                                .data(v.to_string()),
                        )
                    })
                    .take_until(shutdown.clone().cancelled_owned());
                warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response()
            },
        )
}

/// Why a client's webhook would not deliver `event` (of `kinds`): none registered, inactive, or
/// not subscribed to one of them.
fn delivery_problem(hook: Option<&Hook>, kinds: &[Kind], event: &str) -> Option<String> {
    match hook {
        None => Some(format!(
            "no webhook to deliver {} to: register one first (POST /v3/webhooks with the \
             client's credentials; see docs/simulator.md)",
            event
        )),
        Some(h) if !h.active => Some(format!(
            "the webhook at {} is inactive: activate it (POST /v3/webhooks/activate)",
            h.url
        )),
        Some(h) => kinds
            .iter()
            .find(|k| !h.events.iter().any(|e| *e == k.event_type().as_str()))
            .map(|k| {
                format!(
                    "the webhook at {} is not subscribed to {}: add it (PATCH \
                     /v3/webhooks/{{id}})",
                    h.url,
                    k.event_type().as_str()
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inspected_body_keeps_its_first_kib_on_a_character_boundary() {
        assert_eq!(inspected_body("short"), "short");
        let long = "é".repeat(INSPECTED_BODY_MAX);
        let kept = inspected_body(&long);
        assert!(kept.len() <= INSPECTED_BODY_MAX && kept.len() >= INSPECTED_BODY_MAX - 1);
        assert!(kept.chars().all(|c| c == 'é'));
    }
}

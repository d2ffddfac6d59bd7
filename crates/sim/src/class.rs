//! A class on one simulator (`hookrace sim --class N`): each student is an API client of their
//! own (`student-01`, … with a secret, two users and one webhook, so Polar's one-webhook-per-client
//! rule holds per student), and the teacher projects a scoreboard (`/sim/class`, live through
//! `/sim/class/events`) computed from the workbench's log: per student, webhook registered and
//! active, PING passed, deliveries answered and how fast, data fetched with the right token,
//! forged delivery refused, duplicates handled.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use warp::http::StatusCode;

use super::workbench::{Logged, path_of};
use super::*;

/// One student's row of the scoreboard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StudentScore {
    pub student: usize,
    pub client_id: String,
    /// The webhook's url, when one is registered.
    pub webhook: Option<String>,
    pub active: bool,
    /// The last PING to the student's receiver was answered 200.
    pub ping_passed: bool,
    /// Deliveries sent (forgeries aside), and answered 2xx.
    pub deliveries: u64,
    pub answered: u64,
    pub median_ms: Option<u64>,
    /// Clean deliveries answered 2xx (their data to fetch), fetched with the delivery's user's
    /// token, and requests made with another user's token or an unknown one.
    pub to_fetch: u64,
    pub fetched_right: u64,
    pub wrong_token: u64,
    /// None until a forged delivery was sent; then whether every one was refused (4xx, no fetch).
    pub forged_refused: Option<bool>,
    /// None until a duplicate was sent; then whether every pair was answered 2xx and fetched at
    /// most once.
    pub duplicates_handled: Option<bool>,
}

/// A client as the scoreboard sees it: its index, its id, and its webhook's url and whether it
/// is active.
pub(super) type Scored = (usize, String, Option<(String, bool)>);

/// How many answer times the median is taken over: the newest, so a student who fixes a slow
/// receiver sees it.
const TIMES_KEPT: usize = 200;

/// How many item paths a student's tally remembers one by one (to see a fetch or a duplicate of
/// each); older ones are settled into its totals, so a long class holds bounded memory.
const PATHS_KEPT: usize = 512;

/// One student's scoreboard figures, kept up to date as the log records each entry (the
/// scoreboard is read from these, never rebuilt from the log: before, every stream copied the
/// whole log under the simulator's lock, and a log that dropped its oldest entries dropped them
/// from the scores too).
#[derive(Debug, Default)]
pub(super) struct Tally {
    ping_passed: bool,
    deliveries: u64,
    answered: u64,
    /// Answer times of the newest deliveries that count (not the forgeries).
    times: VecDeque<u64>,
    to_fetch: u64,
    fetched_right: u64,
    wrong_token: u64,
    /// What each remembered item path saw, and the paths in the order first seen.
    paths: HashMap<String, PathSeen>,
    order: VecDeque<String>,
    /// The verdicts of the forgeries and duplicates whose paths were settled.
    forged_settled: Option<bool>,
    duplicates_settled: Option<bool>,
}

/// What one item path saw.
#[derive(Debug, Default)]
struct PathSeen {
    /// Delivered cleanly (answered 2xx): its data should be fetched.
    clean: bool,
    /// Fetched with the token of the user the delivery announced, answered 200.
    right: bool,
    fetches: u32,
    /// A forged delivery of it: whether it was refused with a 4xx.
    forged: Option<bool>,
    /// A duplicated delivery of it: how many copies were answered 2xx.
    duplicated: Option<u32>,
}

impl PathSeen {
    fn forgery_refused(&self) -> Option<bool> {
        self.forged.map(|refused| refused && self.fetches == 0)
    }

    fn duplicate_handled(&self) -> Option<bool> {
        self.duplicated.map(|ok| ok == 2 && self.fetches <= 1)
    }
}

/// Both verdicts hold (`None`: nothing to judge yet).
fn both(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a && b),
        (a, b) => a.or(b),
    }
}

impl Tally {
    /// Counts one log entry of this student's.
    pub(super) fn see(&mut self, what: &Logged) {
        match what {
            Logged::Ping { status, .. } => self.ping_passed = *status == Some(200),
            Logged::Delivery {
                url,
                fault,
                sent: true,
                status,
                ms,
                ..
            } => self.delivery(url, fault.as_deref().unwrap_or(""), *status, *ms),
            Logged::Request {
                path,
                token_user,
                announced_for,
                status,
                ..
            } => {
                let right = matches!((token_user, announced_for), (Some(t), Some(a)) if t == a)
                    && *status == 200;
                let wrong = match (token_user, announced_for) {
                    (None, _) => true,
                    (Some(t), Some(a)) => t != a,
                    _ => false,
                };
                self.wrong_token += u64::from(wrong);
                let seen = self.path(path);
                seen.fetches += 1;
                let newly_right = right && !seen.right;
                seen.right |= right;
                let clean = seen.clean;
                self.fetched_right += u64::from(newly_right && clean);
            }
            _ => {}
        }
    }

    /// A delivery sent to the student's receiver.
    fn delivery(&mut self, url: &str, fault: &str, status: Option<u16>, ms: Option<u64>) {
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let seen = self.path(&path_of(url));
        // A forgery is to be refused: it counts in its own column only.
        if fault.contains("bad_signature") {
            seen.forged = Some(status.is_some_and(|s| (400..500).contains(&s)));
            return;
        }
        if fault.contains("duplicate") {
            *seen.duplicated.get_or_insert(0) += u32::from(ok);
        }
        let newly_clean = ok && (fault.is_empty() || fault.contains("duplicate")) && !seen.clean;
        seen.clean |= newly_clean;
        let right = seen.right;
        self.to_fetch += u64::from(newly_clean);
        self.fetched_right += u64::from(newly_clean && right);
        self.deliveries += 1;
        self.answered += u64::from(ok);
        if let Some(ms) = ms {
            if self.times.len() == TIMES_KEPT {
                self.times.pop_front();
            }
            self.times.push_back(ms);
        }
    }

    /// What `path` saw so far, remembered from now on (settling the oldest beyond the bound).
    fn path(&mut self, path: &str) -> &mut PathSeen {
        if !self.paths.contains_key(path) {
            if self.order.len() == PATHS_KEPT {
                if let Some(old) = self.order.pop_front().and_then(|p| self.paths.remove(&p)) {
                    self.forged_settled = both(self.forged_settled, old.forgery_refused());
                    self.duplicates_settled =
                        both(self.duplicates_settled, old.duplicate_handled());
                }
            }
            self.order.push_back(path.to_string());
        }
        self.paths.entry(path.to_string()).or_default()
    }

    /// The student's row.
    pub(super) fn score(&self, (student, client_id, hook): &Scored) -> StudentScore {
        let mut times: Vec<u64> = self.times.iter().copied().collect();
        times.sort_unstable();
        let (forged, duplicates) = self.paths.values().fold(
            (self.forged_settled, self.duplicates_settled),
            |(f, d), p| (both(f, p.forgery_refused()), both(d, p.duplicate_handled())),
        );
        StudentScore {
            student: *student,
            client_id: client_id.clone(),
            webhook: hook.as_ref().map(|h| public_url(&h.0)),
            active: hook.as_ref().is_some_and(|h| h.1),
            ping_passed: self.ping_passed,
            deliveries: self.deliveries,
            answered: self.answered,
            median_ms: times.get(times.len() / 2).copied(),
            to_fetch: self.to_fetch,
            fetched_right: self.fetched_right,
            wrong_token: self.wrong_token,
            forged_refused: forged,
            duplicates_handled: duplicates,
        }
    }
}

/// A receiver's URL as the public scoreboard shows it: its scheme, host, port and path, never
/// credentials in it or a query (where a token could sit).
fn public_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

impl Sim {
    /// The scoreboard: one row per student (the simulator's own client when there is no class).
    pub fn scoreboard(&self) -> Vec<StudentScore> {
        let s = self.lock();
        let first = usize::from(s.clients.len() > 1);
        let clients: Vec<_> = s
            .clients
            .iter()
            .enumerate()
            .skip(first)
            .map(|(i, c)| {
                (
                    i,
                    c.id.clone(),
                    c.hook.as_ref().map(|h| (h.url.clone(), h.active)),
                )
            })
            .collect();
        let none = Tally::default();
        clients
            .iter()
            .map(|c| s.log.tally(c.0).unwrap_or(&none).score(c))
            .collect()
    }

    /// The class's credentials: per student, client id and secret, and each user's token.
    pub fn class_credentials(&self) -> Vec<Value> {
        let s = self.lock();
        s.clients
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, c)| {
                let users: Vec<Value> = s
                    .users
                    .values()
                    .filter(|u| u.client == i)
                    .map(|u| json!({"user_id": u.id, "access_token": u.token}))
                    .collect();
                json!({"student": i, "client_id": c.id, "client_secret": c.secret, "users": users})
            })
            .collect()
    }

    /// `GET /sim/class.json`: the scoreboard for anyone; the credentials for the teacher (all)
    /// or a student (their own), none without either.
    pub(super) fn control_class(&self, who: super::access::Caller) -> SimResponse {
        use super::access::Caller;
        let credentials: Vec<Value> = match who {
            Caller::Nobody => Vec::new(),
            Caller::Teacher => self.class_credentials(),
            Caller::Student(c) => self
                .class_credentials()
                .into_iter()
                .filter(|v| v["student"].as_u64() == Some(c as u64))
                .collect(),
        };
        SimResponse::json(
            StatusCode::OK,
            json!({"students": self.scoreboard(), "credentials": credentials}),
        )
    }
}

/// The credentials as a table to hand out (one line per user).
pub fn credentials_table(credentials: &[Value], base_url: &str) -> String {
    let mut out = format!(
        "AccessLink simulator for the class: {base_url}\n\
         student  client id    client secret             user   access token\n"
    );
    for c in credentials {
        for u in c["users"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "{:>7}  {:<11}  {:<24}  {:<5}  {}\n",
                c["student"].as_u64().unwrap_or_default(),
                c["client_id"].as_str().unwrap_or("?"),
                c["client_secret"].as_str().unwrap_or("?"),
                u["user_id"].as_u64().unwrap_or_default(),
                u["access_token"].as_str().unwrap_or("?"),
            ));
        }
    }
    out
}

/// The most scoreboard streams open at once: each holds a connection, and a class projects one
/// or a few (40 streams each rebuilding the board under the simulator's lock took 39% CPU and
/// made control requests wait two seconds).
pub const BOARD_STREAMS_MAX: usize = 64;

/// The scoreboard, made once per change for every stream, and how many streams are open.
pub(super) struct Board {
    latest: tokio::sync::watch::Receiver<Arc<str>>,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Board {
    /// Starts the one task that remakes the board after each change to the log (changes within
    /// a quarter of a second are made once), until `shutdown`.
    fn start(sim: Arc<Sim>, shutdown: tokio_util::sync::CancellationToken) -> Board {
        let json = |sim: &Sim| -> Arc<str> {
            serde_json::to_string(&sim.scoreboard())
                .unwrap_or_default()
                .into()
        };
        let (tx, latest) = tokio::sync::watch::channel(json(&sim));
        let (_, mut changes) = sim.follow_log(u64::MAX);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    change = changes.recv() => {
                        if matches!(change, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                while changes.try_recv().is_ok() {}
                tx.send_replace(json(&sim));
            }
        });
        Board {
            latest,
            open: Arc::default(),
        }
    }
}

/// Counts an open stream until it is dropped.
struct Open(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `GET /sim/class/events`: the scoreboard as server-sent events, now and after every change to
/// the log, from the one board all streams share; 503 beyond [`BOARD_STREAMS_MAX`] streams. Ends
/// when the simulator stops.
pub(super) fn class_events(
    sim: Arc<Sim>,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl warp::Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    use futures_util::StreamExt;
    use std::sync::atomic::Ordering;
    use warp::Filter;
    use warp::reply::Reply;
    warp::path!("sim" / "class" / "events")
        .and(warp::get())
        .map(move || {
            let board = sim
                .board
                .get_or_init(|| Board::start(sim.clone(), shutdown.clone()));
            if board.open.fetch_add(1, Ordering::SeqCst) >= BOARD_STREAMS_MAX {
                board.open.fetch_sub(1, Ordering::SeqCst);
                let why = format!("{BOARD_STREAMS_MAX} scoreboards are open: close one\n");
                let mut refused = SimResponse::text(StatusCode::SERVICE_UNAVAILABLE, why);
                refused.headers.push(("Connection".into(), "close".into()));
                return super::routes::to_http(refused);
            }
            let open = Open(board.open.clone());
            let mut latest = board.latest.clone();
            latest.mark_changed();
            let updates =
                futures_util::stream::unfold((latest, open), |(mut rx, open)| async move {
                    rx.changed().await.ok()?;
                    let board = rx.borrow_and_update().clone();
                    Some((board, (rx, open)))
                });
            let events = updates
                .map(|board| {
                    Ok::<_, std::convert::Infallible>(warp::sse::Event::default().data(&*board))
                })
                .take_until(shutdown.clone().cancelled_owned());
            warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response()
        })
}

/// `GET /sim/class`: the scoreboard page to project.
pub(super) fn class_page() -> SimResponse {
    super::routes::page(CLASS_PAGE)
}

const CLASS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hookrace: the class's receivers</title>
<style>
body { font: 26px/1.4 system-ui, sans-serif; margin: 1em 1.5em; background: #fff; color: #111; }
h1 { font-size: 34px; margin: 0 0 .3em; } #state { color: #666; font-size: 20px; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: .35em .5em; border-bottom: 2px solid #ddd; text-align: center; }
th { font-size: 20px; color: #444; } td:first-child, th:first-child { text-align: left; white-space: nowrap; }
.yes { background: #c8e6c9; } .no { background: #ffcdd2; } .na { color: #999; }
small { font-size: 18px; color: #555; }
</style></head><body>
<h1>Webhook receivers: the class</h1>
<p id="state">connecting…</p>
<table><thead><tr><th>student</th><th>webhook</th><th>PING</th><th>deliveries answered</th>
<th>fetched, right token</th><th>forged refused</th><th>duplicates handled</th></tr></thead>
<tbody id="rows"></tbody></table>
<script>
const rows = document.getElementById("rows"), state = document.getElementById("state");
const snapshot = new URLSearchParams(location.search).has("snapshot");
function cell(ok, text) {
  const td = document.createElement("td");
  td.className = ok === null ? "na" : (ok ? "yes" : "no");
  td.textContent = text;
  return td;
}
function draw(board) {
  rows.replaceChildren();
  for (const s of board) {
    const tr = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = s.client_id;
    tr.append(name,
      cell(s.webhook === null ? false : s.active, s.webhook === null ? "none" : (s.active ? "active" : "inactive")),
      cell(s.webhook === null ? null : s.ping_passed, s.webhook === null ? "–" : (s.ping_passed ? "✓" : "✗")),
      cell(s.deliveries === 0 ? null : s.answered === s.deliveries,
        s.deliveries === 0 ? "–" : `${s.answered}/${s.deliveries}` + (s.median_ms === null ? "" : ` · ${s.median_ms} ms`)),
      cell(s.to_fetch === 0 ? null : (s.fetched_right === s.to_fetch && s.wrong_token === 0),
        s.to_fetch === 0 ? "–" : `${s.fetched_right}/${s.to_fetch}` + (s.wrong_token ? ` · ${s.wrong_token} wrong` : "")),
      cell(s.forged_refused, s.forged_refused === null ? "–" : (s.forged_refused ? "✓" : "✗")),
      cell(s.duplicates_handled, s.duplicates_handled === null ? "–" : (s.duplicates_handled ? "✓" : "✗")));
    tr.dataset.student = s.student;
    rows.append(tr);
  }
}
const es = new EventSource("/sim/class/events");
es.onopen = () => { state.textContent = "live"; };
es.onerror = () => { state.textContent = "reconnecting…"; };
es.onmessage = (m) => {
  draw(JSON.parse(m.data));
  state.textContent = snapshot ? "snapshot" : "live · " + new Date().toLocaleTimeString();
  if (snapshot) es.close();
};
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(path: &str, fault: Option<&str>, status: u16) -> Logged {
        Logged::Delivery {
            event: "EXERCISE".into(),
            user_id: 1,
            url: format!("http://127.0.0.1:1{path}"),
            receiver: "http://127.0.0.1:2/hook".into(),
            fault: fault.map(String::from),
            sent: true,
            status: Some(status),
            ms: Some(3),
            request: None,
            answer: None,
        }
    }

    fn fetch(path: &str, token_user: u64) -> Logged {
        Logged::Request {
            method: "GET".into(),
            path: path.into(),
            token_user: Some(token_user),
            status: 200,
            announced_for: Some(1),
            after_delivery_ms: Some(5),
        }
    }

    /// A long class: more items than a tally remembers one by one. The totals still count every
    /// one, and the verdicts of settled items stay (a forgery refused early, a duplicate fetched
    /// twice later).
    #[test]
    fn a_tally_counts_a_long_class_in_bounded_memory() {
        let mut tally = Tally::default();
        tally.see(&delivery(
            "/v3/exercises/forged",
            Some("bad_signature"),
            401,
        ));
        let items = PATHS_KEPT * 3 / 2;
        for i in 0..items {
            let path = format!("/v3/exercises/e{i}");
            tally.see(&delivery(&path, None, 200));
            tally.see(&fetch(&path, if i % 10 == 0 { 2 } else { 1 }));
        }
        let dup = "/v3/exercises/dup";
        for _ in 0..2 {
            tally.see(&delivery(dup, Some("duplicate"), 200));
            tally.see(&fetch(dup, 1));
        }
        let score = tally.score(&(1, "student-01".into(), None));
        assert_eq!(score.deliveries, items as u64 + 2);
        assert_eq!(score.to_fetch, items as u64 + 1);
        assert_eq!(score.fetched_right, (items - items.div_ceil(10)) as u64 + 1);
        assert_eq!(score.wrong_token, items.div_ceil(10) as u64);
        assert_eq!(
            score.forged_refused,
            Some(true),
            "settled long ago, still counted"
        );
        assert_eq!(score.duplicates_handled, Some(false), "fetched twice");
        assert!(tally.paths.len() <= PATHS_KEPT && tally.order.len() <= PATHS_KEPT);
        assert_eq!(score.median_ms, Some(3));
    }
}

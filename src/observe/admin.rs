//! The private admin listener: the dashboard (`/`, `/events`), `/healthz`, `/status`,
//! `/metrics`, `/entities`, the token-free probes `/livez` and `/readyz` ([`super::probes`]), plus whatever routes the daemon hands it from `operations` (the
//! management commands' `GET /users`, `DELETE /users/{id}` and `PUT /webhook/secret`).
//!
//! It binds to loopback by default and, when `[admin].token` is set, every route requires
//! `Authorization: Bearer <token>` (compared in constant time). Everything it shows comes from the
//! [`View`]: the store, plus the few facts only the running process knows.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use warp::Filter;
use warp::http::{StatusCode, header};
use warp::reply::{Reply, Response};

use super::View;
use crate::config::Secret;
use crate::process::Liveness;

/// What the admin routes need.
pub struct AdminState {
    pub view: View,
    pub liveness: Arc<Liveness>,
    pub token: Option<Secret>,
    /// On a loopback listener, the `Host` values a request may carry (`127.0.0.1:9090`,
    /// `localhost:9090`, …): any other name is a web page that rebound its DNS name to loopback.
    /// `None` when a token is required (beyond loopback it must be), which protects instead.
    pub allowed_hosts: Option<Vec<String>>,
    /// Cancelled at shutdown: ends the dashboard's event streams, which would outlive the drain.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The dashboard's shared snapshots and its stream cap.
    pub snapshots: Arc<super::dashboard::Snapshots>,
    /// The browsers let in by the dashboard's cookie (a session value, never the token).
    pub sessions: super::session::Sessions,
}

/// Routes another module adds to the admin listener (behind the same token).
pub type ExtraRoutes = warp::filters::BoxedFilter<(Response,)>;

/// All admin routes, behind the optional token: the observers' and `extra`.
pub fn routes(
    state: Arc<AdminState>,
    extra: ExtraRoutes,
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
    // Opened with `?token=`: the token moves into a cookie and the browser comes back without
    // it, so it stays out of the address bar, the history and any Referer.
    let dashboard = warp::path::end()
        .and(warp::get())
        .and(
            warp::query::<HashMap<String, String>>()
                .or(warp::any().map(HashMap::new))
                .unify(),
        )
        .and(warp::header::headers_cloned())
        .and(with_state.clone())
        .map(
            |q: HashMap<String, String>, h: warp::http::HeaderMap, s: Arc<AdminState>| {
                dashboard(&q, behind_https(&h), &s)
            },
        );
    let events = warp::path!("events")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<AdminState>| dashboard_events(&s));
    let entities = warp::path!("entities")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state.clone())
        .map(|q: HashMap<String, String>, s: Arc<AdminState>| entities(&s, &q));
    let livez = warp::path!("livez")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<AdminState>| super::probes::livez(&s));
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<AdminState>| super::probes::readyz(&s));
    let authorized = authorized(with_state);
    // The probes first, without the token: a prober holds no secret, and they tell nothing else.
    let probes = livez.or(readyz).unify();
    probes
        .or(authorized.and(
            healthz
                .or(status)
                .unify()
                .or(entities)
                .unify()
                .or(metrics)
                .unify()
                .or(extra)
                .unify()
                .or(dashboard)
                .unify()
                .or(events)
                .unify(),
        ))
        .unify()
        .recover(|r: warp::Rejection| async move { Ok::<_, Infallible>(rejection(r)) })
        .unify()
        .map(with_security_headers)
}

/// The dashboard page. Opened with `?token=` (the one place a token in the URL is taken), it
/// answers a redirect instead that sets a session cookie (a random value, not the token) and
/// sends the browser back without the token, so the token stays out of the address bar, the
/// history, any Referer and the cookie jar. The cookie is `Secure` when the request came
/// through HTTPS (a proxy's `X-Forwarded-Proto` or `Forwarded` says so).
fn dashboard(q: &HashMap<String, String>, https: bool, s: &AdminState) -> Response {
    if q.get("token").is_none() || s.token.is_none() {
        return warp::reply::html(super::dashboard::PAGE).into_response();
    }
    // `admit` has checked the token already: only a valid one gets here.
    let rest: Vec<(&String, &String)> = q.iter().filter(|(k, _)| *k != "token").collect();
    let location = match serde_urlencoded::to_string(&rest) {
        Ok(query) if !query.is_empty() => format!("./?{query}"),
        _ => "./".to_string(),
    };
    let secure = if https { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        s.sessions.open(),
        super::session::LIFETIME.as_secs()
    );
    let mut r = warp::reply::with_status("", StatusCode::SEE_OTHER).into_response();
    if let (Ok(location), Ok(cookie)) = (
        warp::http::HeaderValue::from_str(&location),
        warp::http::HeaderValue::from_str(&cookie),
    ) {
        r.headers_mut().insert(header::LOCATION, location);
        r.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    r
}

/// Whether a request reached the listener through HTTPS, as the reverse proxy in front says.
fn behind_https(h: &warp::http::HeaderMap) -> bool {
    let says = |name: &str, https: &dyn Fn(&str) -> bool| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| https(&v.to_ascii_lowercase()))
    };
    says("x-forwarded-proto", &|v| v.trim() == "https")
        || says("forwarded", &|v| {
            v.split([';', ',']).any(|p| p.trim() == "proto=https")
        })
}

/// The dashboard's server-sent events; 503 with `Retry-After` when all its streams are open.
fn dashboard_events(s: &AdminState) -> Response {
    match s.snapshots.stream() {
        Some(events) => warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response(),
        None => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "{} dashboard streams are open already: close one (the page retries by itself)",
                    super::dashboard::MAX_STREAMS
                ),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                warp::http::HeaderValue::from_static("5"),
            );
            // A refused stream gives its connection back: held open, refused pages took the
            // slots the probes need (64 of them and /healthz did not answer in 2 s).
            r.headers_mut().insert(
                header::CONNECTION,
                warp::http::HeaderValue::from_static("close"),
            );
            r
        }
    }
}

/// What a request brings to be let in: its token wherever it came, `Host`, `Origin`, method.
struct Presented {
    auth: Option<String>,
    query: HashMap<String, String>,
    path: String,
    cookie: Option<String>,
    host: Option<String>,
    origin: Option<String>,
    method: warp::http::Method,
}

/// The filter every admin route sits behind: the allowed hosts and origins, then the token. The
/// token comes in the Authorization header, or (opening the dashboard in a browser) as `?token=`
/// on `/` only, which sets the session cookie that lets the browser in afterwards.
fn authorized(
    with_state: impl Filter<Extract = (Arc<AdminState>,), Error = Infallible>
    + Clone
    + Send
    + Sync
    + 'static,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    warp::header::optional::<String>(header::AUTHORIZATION.as_str())
        .and(
            warp::query::<HashMap<String, String>>()
                .or(warp::any().map(HashMap::new))
                .unify(),
        )
        .and(warp::path::full())
        .and(warp::cookie::optional::<String>(SESSION_COOKIE))
        .and(warp::header::optional::<String>(header::HOST.as_str()))
        .and(warp::header::optional::<String>(header::ORIGIN.as_str()))
        .and(warp::method())
        .and(with_state)
        .and_then(
            |auth: Option<String>,
             query: HashMap<String, String>,
             path: warp::path::FullPath,
             cookie: Option<String>,
             host: Option<String>,
             origin: Option<String>,
             method: warp::http::Method,
             s: Arc<AdminState>| async move {
                let presented = Presented {
                    auth,
                    query,
                    path: path.as_str().to_string(),
                    cookie,
                    host,
                    origin,
                    method,
                };
                admit(&s, presented)
            },
        )
        .untuple_one()
}

/// Whether a request may in, or the rejection it gets.
fn admit(s: &AdminState, p: Presented) -> Result<(), warp::Rejection> {
    if let Some(allowed) = &s.allowed_hosts {
        if !p.host.as_ref().is_some_and(|h| allowed.contains(h)) {
            return Err(warp::reject::custom(WrongHost));
        }
        // A change asked by a page of another origin (a browser adds `Origin`).
        let reads = p.method == warp::http::Method::GET || p.method == warp::http::Method::HEAD;
        let same_origin = p.origin.as_ref().is_none_or(|o| {
            o.strip_prefix("http://")
                .is_some_and(|h| allowed.iter().any(|a| a == h))
        });
        if !reads && !same_origin {
            return Err(warp::reject::custom(WrongHost));
        }
    }
    // A change asked by a page of another site: a browser sends the admin cookie along with a
    // cross-site POST, so the token alone does not tell it from the operator's own page (before,
    // `POST /notify/retry` from `Origin: http://evil.example` with the cookie got 200). A
    // browser names the page's origin; it must be this listener's own host.
    let changes = !(p.method == warp::http::Method::GET || p.method == warp::http::Method::HEAD);
    if changes {
        if let Some(origin) = &p.origin {
            let site = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            if site.is_none() || site != p.host.as_deref() {
                return Err(warp::reject::custom(WrongHost));
            }
        }
    }
    if p.auth.is_none()
        && p.cookie
            .as_deref()
            .is_some_and(|c| s.token.is_some() && s.sessions.admits(c))
    {
        return Ok(());
    }
    // `?token=` serves only the first redirect of the dashboard (which turns it into a session):
    // anywhere else a token in the URL would sit in logs and histories, so it lets nothing in.
    // A `+` of a base64 token pasted into a URL arrives as a space; a token has none (the
    // configuration refuses one), so it was a `+`.
    let from_query = (p.path == "/")
        .then(|| p.query.get("token"))
        .flatten()
        .map(|t| format!("Bearer {}", t.replace(' ', "+")));
    let given = p.auth.or(from_query);
    authorize(s.token.as_ref(), given.as_deref()).map_err(|()| warp::reject::custom(Unauthorized))
}

/// The cookie that carries a dashboard session ([`super::session`]).
const SESSION_COOKIE: &str = "hookrace_session";

/// The Content-Security-Policy of every admin answer: nothing but the dashboard's own inline
/// script and style (by hash), its event stream, and never inside a frame.
fn content_security_policy() -> &'static str {
    static POLICY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let page = super::dashboard::PAGE;
        let inline = |open: &str, close: &str| {
            let start = page.find(open).map(|i| i + open.len()).unwrap_or(0);
            let end = page[start..].find(close).map_or(start, |i| start + i);
            let digest = sha2::Sha256::digest(&page.as_bytes()[start..end]);
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            inline("<script>", "</script>"),
            inline("<style>", "</style>")
        )
    })
}

/// Adds the headers every admin answer carries: a strict CSP, no sniffing, no framing, no
/// referrer, and no caching (status documents and tokens must not linger in caches).
fn with_security_headers(mut r: Response) -> Response {
    use warp::http::HeaderValue;
    let h = r.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(content_security_policy()) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Debug)]
struct Unauthorized;
impl warp::reject::Reject for Unauthorized {}

/// A request for another host name (DNS rebinding) or a change from another origin.
#[derive(Debug)]
struct WrongHost;
impl warp::reject::Reject for WrongHost {}

/// The `Host` values a loopback listener at `addr` answers to; `None` beyond loopback.
pub fn loopback_hosts(addr: std::net::SocketAddr) -> Option<Vec<String>> {
    if !addr.ip().is_loopback() {
        return None;
    }
    let port = addr.port();
    let mut hosts = vec![
        addr.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ];
    if port == 80 {
        // Clients leave the default port out of `Host`.
        hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
    }
    Some(hosts)
}

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
    if r.find::<WrongHost>().is_some() {
        return error(
            StatusCode::FORBIDDEN,
            "this admin listener answers only to its own address (Host) and, for changes, to its \
             own origin",
        );
    }
    if r.find::<Unauthorized>().is_some() {
        return warp::reply::with_header(
            error(StatusCode::UNAUTHORIZED, "a valid bearer token is required"),
            header::WWW_AUTHENTICATE,
            "Bearer",
        )
        .into_response();
    }
    if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "this route does not take that method: reads are GET; the management routes are \
             PUT /webhook/secret, DELETE /users/{id} and POST /notify/retry",
        );
    }
    if r.find::<warp::reject::InvalidQuery>().is_some() {
        return error(StatusCode::BAD_REQUEST, "the query string is not valid");
    }
    error(
        StatusCode::NOT_FOUND,
        "no such route: the admin listener serves GET /, /healthz, /livez, /readyz, /status, \
         /metrics, /entities, /events, /users and /backup; PUT /webhook/secret, DELETE /users/{id} and POST /notify/retry",
    )
}

/// A JSON error body `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: &str) -> Response {
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({ "error": message })),
        status,
    )
    .into_response()
}

/// `/healthz` (behind the token, as it always was): the same verdict as `/livez`.
fn healthz(s: &AdminState) -> Response {
    super::probes::livez(s)
}

fn status(s: &AdminState) -> Response {
    match s.view.status() {
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
    let dashboard = super::metrics::DashboardLoad {
        streams: s.snapshots.open_streams(),
        snapshots: s.snapshots.built(),
    };
    match super::metrics::render(s.view.clone(), dashboard) {
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
    match s.view.store.newest_entities(limit, kind) {
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

//! A minimal AccessLink webhook receiver, for students (`docs/simulator.md`): read it in a
//! minute, run it with `cargo run --release --example receiver`, then create the webhook.
//!
//! - It listens on 127.0.0.1:8000 (or the address given as the first argument) at `/acl_webhook`.
//! - A `PING` (sent when the webhook is created, activated or moved) is answered 200 unchecked: it
//!   is signed with the new secret, which you only learn from the create's answer.
//! - Every other delivery must carry `Polar-Webhook-Signature`: the hex HMAC-SHA256 of the raw
//!   body, keyed with the bytes of the `signature_secret_key` string. The secret is read from the
//!   file `webhook_secret.txt` at each delivery (save it there after the create); a bad signature
//!   is answered 401, a delivery before the file exists 503 (Polar would not retry it: a real
//!   receiver keeps its secret before it creates the webhook).
//! - A real receiver would now store the delivery durably and fetch `url` with the user's token;
//!   this one prints it (hookrace itself is the full recipe).

use bytes::Bytes;
use hookrace::accesslink::signature;
use warp::Filter;
use warp::http::{HeaderMap, StatusCode};

const SECRET_FILE: &str = "webhook_secret.txt";

fn receive(headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("Polar-Webhook-Event") == Some("PING") {
        println!("PING: answered 200");
        return StatusCode::OK;
    }
    let Ok(secret) = std::fs::read_to_string(SECRET_FILE) else {
        println!("no {SECRET_FILE} yet: answered 503");
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let signed = header("Polar-Webhook-Signature");
    if let Err(e) = signature::verify(secret.trim(), &body, signed) {
        println!("refused (401): {}", e.reason());
        return StatusCode::UNAUTHORIZED;
    }
    println!("verified: {}", String::from_utf8_lossy(&body));
    StatusCode::OK
}

#[tokio::main]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".to_string());
    let addr: std::net::SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("receiver: {listen:?} is not an address like 127.0.0.1:8000: {e}");
            std::process::exit(64);
        }
    };
    let route = warp::path!("acl_webhook")
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(warp::body::content_length_limit(64 * 1024))
        .and(warp::body::bytes())
        .map(|headers, body| warp::reply::with_status("", receive(headers, body)));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("receiver: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("receiver listening on http://{addr}/acl_webhook");
    warp::serve(route).incoming(listener).run().await;
}

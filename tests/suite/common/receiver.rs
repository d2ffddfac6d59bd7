//! A webhook receiver for simulator tests: records every request and answers a settable status.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use warp::Filter;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: Option<String>,
    pub signature: Option<String>,
    pub body: String,
}

pub struct Receiver {
    pub url: String,
    status: Arc<AtomicU16>,
    rx: Mutex<mpsc::UnboundedReceiver<Received>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let status = Arc::new(AtomicU16::new(200));
        let (tx, rx) = mpsc::unbounded_channel();
        let st = status.clone();
        let route = warp::post()
            .and(warp::path("hook"))
            .and(warp::header::optional::<String>("polar-webhook-event"))
            .and(warp::header::optional::<String>("polar-webhook-signature"))
            .and(warp::body::bytes())
            .map(move |event, signature, body: bytes::Bytes| {
                let _ = tx.send(Received {
                    event,
                    signature,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let code = warp::http::StatusCode::from_u16(st.load(Ordering::SeqCst)).unwrap();
                warp::reply::with_status("", code)
            });
        tokio::spawn(hookrace::server::serve_local(
            listener,
            "test",
            1024,
            route,
            std::future::pending(),
        ));
        Receiver {
            url,
            status,
            rx: Mutex::new(rx),
        }
    }

    /// The status the receiver answers from now on.
    pub fn answer(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// The next request (fails the test after 10 s).
    pub async fn next(&self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.rx.lock().await.recv())
            .await
            .expect("a request reached the receiver within 10 s")
            .expect("receiver open")
    }

    /// Requests received so far and not yet taken.
    pub async fn drain(&self) -> Vec<Received> {
        let mut out = Vec::new();
        let mut rx = self.rx.lock().await;
        while let Ok(r) = rx.try_recv() {
            out.push(r);
        }
        out
    }
}

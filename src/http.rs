//! The one place the application builds HTTP clients (the simulator, which stands beside it,
//! builds its own), so every request hookrace sends follows the same policy: a
//! timeout on the whole request and a shorter one on connecting, no redirects followed (a
//! redirect would carry credentials, codes or tokens to a host nobody checked), and a
//! `hookrace/<version>` user agent. Also the admin client the command line uses to reach a running
//! daemon.

use std::time::Duration;

use anyhow::Context;

use crate::config::Secret;

pub use accesslink::http::{builder, client, plain_client};

pub use crate::config::redacted;

/// The running daemon's admin listener, as the command line reaches it.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
}

impl Admin {
    /// The admin listener at `listen` (`host:port`), with its bearer token when one is set.
    pub fn new(listen: &str, token: Option<Secret>) -> anyhow::Result<Admin> {
        Ok(Admin {
            http: client(Duration::from_secs(30))?,
            base: format!("http://{listen}"),
            token,
        })
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `method path` (with `body` as its text) and returns the answer, whatever its
    /// status; `what` says what was being done, for the error when nobody answered.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let url = self.url(path);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.with_context(|| {
            format!(
                "{what}: the daemon's admin listener ({url}) did not answer (is hookrace \
                     running? while it holds the store, commands go through it)"
            )
        })
    }

    /// [`Admin::send`], failing unless the answer is a success.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let res = self.send(method, path, body, what).await?;
        if !res.status().is_success() {
            let status = res.status();
            let body = res.text().await.unwrap_or_default();
            anyhow::bail!("{what}: the daemon answered {status}: {}", body.trim());
        }
        Ok(res)
    }
}

/// The body of `res`, read up to `max` bytes: a server that sends more (an endless answer, or
/// something that is not the server it was taken for) is an error naming the cap, not memory
/// filled until the process dies.
pub async fn read_capped(
    res: reqwest::Response,
    max: usize,
    what: &str,
) -> anyhow::Result<bytes::Bytes> {
    use futures_util::StreamExt;
    let url = res.url().clone();
    if res.content_length().is_some_and(|n| n > max as u64) {
        anyhow::bail!(
            "{what}: {url} says its answer is over {max} bytes, more than hookrace reads"
        );
    }
    let mut body = res.bytes_stream();
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("{what}: reading the answer of {url}"))?;
        if out.len() + chunk.len() > max {
            anyhow::bail!("{what}: {url} sent more than {max} bytes, more than hookrace reads");
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod redaction_tests {
    #[test]
    fn credentials_in_a_url_are_never_shown() {
        assert_eq!(
            super::redacted("https://app:hunter2@example.org/hook?key=s3cret&auth=x#frag"),
            "https://***@example.org/hook?key=***&auth=***"
        );
        assert_eq!(
            super::redacted("https://ntfy.sh/my-topic"),
            "https://ntfy.sh/my-topic"
        );
        assert_eq!(super::redacted("not a url"), "(a URL that does not parse)");
    }
}

//! The webhook watch: every `[webhook] check_every`, one `GET /v3/webhooks` checks that the
//! client's webhook exists, is active and points at the public URL. Polar deactivates a webhook
//! after days of failed deliveries, and nothing else would tell: deliveries simply stop. With
//! `[webhook] reactivate = true` an inactive webhook is reactivated (`POST /v3/webhooks/activate`;
//! Polar PINGs it first). What the watch finds goes to `process::Runtime::webhook_health`, which
//! `/status`, `/metrics` and the dashboard show and the adaptive auditor reads (it polls fast while
//! the webhook is not healthy).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::accesslink::client::Client;
use crate::accesslink::webhooks;
use crate::process::Runtime;

pub struct WebhookWatch {
    pub client: Arc<Client>,
    pub runtime: Arc<RwLock<Runtime>>,
    /// Where the webhook must point, when known.
    pub public_url: Option<String>,
    pub reactivate: bool,
    pub every: Duration,
    /// The poller whose alarm is rung when the webhook turns unhealthy (the adaptive auditor then
    /// polls at once).
    pub poller: Option<Arc<crate::channels::poller::Poller>>,
    /// Rung for a check now (a webhook was just created), not at the next `every`.
    pub now: Arc<tokio::sync::Notify>,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Healthy,
    /// Exists but inactive.
    Inactive,
    /// Exists, but posts somewhere else.
    ElsewhereUrl(String),
    Missing,
    /// The check itself failed (AccessLink unreachable, credentials refused…).
    Unknown(String),
}

impl WebhookWatch {
    /// Checks now, then every `every`, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            self.check().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
                _ = self.now.notified() => {}
            }
        }
    }

    /// One check (and a reactivation when it is called for); returns what it found.
    pub async fn check(&self) -> Finding {
        let found = self.look().await;
        let (reactivated, failed) = match found == Finding::Inactive && self.reactivate {
            true => self.try_reactivate().await,
            false => (false, None),
        };
        let problem = self.problem(&found, reactivated, failed.as_deref());
        let unhealthy = matches!(
            found,
            Finding::Inactive | Finding::ElsewhereUrl(_) | Finding::Missing
        );
        let newly_unhealthy = self.record(&found, reactivated, problem, unhealthy);
        if newly_unhealthy {
            if let Some(poller) = &self.poller {
                poller.alarm.notify_one();
            }
        }
        found
    }

    /// What AccessLink says of the client's webhook.
    async fn look(&self) -> Finding {
        match webhooks::list(&self.client).await {
            Err(e) => Finding::Unknown(format!("listing the webhooks: {e}")),
            Ok(hooks) => match hooks.first() {
                None => Finding::Missing,
                Some(h) if h.active == Some(false) => Finding::Inactive,
                Some(h) => match &self.public_url {
                    Some(url) if h.url != *url => Finding::ElsewhereUrl(h.url.clone()),
                    _ => Finding::Healthy,
                },
            },
        }
    }

    /// Reactivates the inactive webhook: whether it worked, and why not.
    async fn try_reactivate(&self) -> (bool, Option<String>) {
        match webhooks::set_active(&self.client, true).await {
            Ok(_) => {
                tracing::warn!(
                    "the webhook was inactive at AccessLink (Polar deactivates one after failed deliveries): reactivated it"
                );
                (true, None)
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "the webhook is inactive at AccessLink and reactivating it failed; trying again at the next check"
                );
                (false, Some(e.to_string()))
            }
        }
    }

    /// What an operator is told of `found`, if anything is wrong.
    fn problem(&self, found: &Finding, reactivated: bool, failed: Option<&str>) -> Option<String> {
        match found {
            Finding::Healthy => None,
            Finding::Inactive if reactivated => {
                Some("found inactive; reactivated (Polar PINGed it)".to_string())
            }
            Finding::Inactive => Some(match failed {
                Some(e) => format!("inactive at AccessLink; reactivating it failed: {e}"),
                None => "inactive at AccessLink: no deliveries arrive (set [webhook] reactivate = true, or run `hookrace webhook activate`)".to_string(),
            }),
            Finding::ElsewhereUrl(url) => Some(format!(
                "it posts to {url}, not to {}",
                self.public_url.as_deref().unwrap_or("-")
            )),
            Finding::Missing => Some(
                "no webhook exists for this client: create one with `hookrace webhook create`"
                    .to_string(),
            ),
            Finding::Unknown(why) => Some(why.clone()),
        }
    }

    /// Writes the check into the webhook's health (`/status`), logging a change; returns
    /// whether the webhook has just become unhealthy.
    fn record(
        &self,
        found: &Finding,
        reactivated: bool,
        problem: Option<String>,
        unhealthy: bool,
    ) -> bool {
        let Ok(mut rt) = self.runtime.write() else {
            return false;
        };
        let h = &mut rt.webhook_health;
        let was = h.active;
        h.checked_at = Some(Utc::now());
        h.state = Some(
            match found {
                Finding::Healthy => "healthy",
                Finding::Inactive if reactivated => "reactivated",
                Finding::Inactive => "inactive",
                Finding::ElsewhereUrl(_) => "points_elsewhere",
                Finding::Missing => "missing",
                Finding::Unknown(_) => "unknown",
            }
            .to_string(),
        );
        h.active = match found {
            Finding::Healthy => Some(true),
            Finding::Inactive => Some(reactivated),
            Finding::Unknown(_) => h.active,
            _ => Some(false),
        };
        if unhealthy {
            h.deactivated_seen += 1;
        }
        h.reactivations += u64::from(reactivated);
        if problem.is_some() {
            h.last_problem = problem.clone();
        }
        if was != h.active && !reactivated {
            if let Some(p) = &problem {
                tracing::warn!(problem = %p, "the webhook is not healthy");
            } else if was.is_some() {
                tracing::info!("the webhook is healthy again");
            }
        }
        unhealthy && was != Some(false)
    }
}

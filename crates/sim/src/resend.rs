//! `POST /sim/resend`: a delivery sent again to the same receiver, byte for byte (`sim resend
//! SEQ`), or the oldest genuine one kept (`sim trigger --replay-old`): the replay an attacker who
//! captured it could make.

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;

use super::workbench::{Logged, SENT_KEPT};
use super::*;

impl Sim {
    /// `POST /sim/resend` with `{"seq": N}`: sends the delivery logged as `N` again to the same
    /// receiver, byte for byte (same body, same signature: a replay), and logs it as a new
    /// delivery marked `resend of #N`. 404 when `N` is not among the newest [`SENT_KEPT`] sent.
    pub(super) async fn control_resend(&self, body: &[u8], scope: Option<usize>) -> SimResponse {
        let (seq, oldest) = match self.resend_target(body, scope) {
            Ok(target) => target,
            Err(refused) => return refused,
        };
        // Another student's delivery is as unknown to a student as one never sent.
        let sent = self
            .lock()
            .log
            .sent(seq)
            .filter(|s| scope.is_none_or(|c| s.client == c));
        let Some(sent) = sent else {
            let why = format!(
                "no sent delivery #{seq} among the newest {SENT_KEPT}: `hookrace sim log` lists them\n"
            );
            return SimResponse::text(StatusCode::NOT_FOUND, why);
        };
        let age_s = (Utc::now() - sent.at).num_seconds();
        let (status, ms, answer) = self.send_as(&self.http, &sent).await;
        let logged = Logged::Delivery {
            event: sent.event.clone(),
            user_id: sent.user_id,
            url: sent.url.clone(),
            receiver: sent.receiver.clone(),
            fault: Some(if oldest {
                format!("replay of #{seq}, {age_s} s old")
            } else {
                format!("resend of #{seq}")
            }),
            sent: true,
            status,
            ms: Some(ms),
            request: Some(sent.inspected()),
            answer,
        };
        let (receiver, client) = (sent.receiver.clone(), sent.client);
        let new_seq = self.lock().log.record_sent(client, logged, sent);
        SimResponse::json(
            StatusCode::OK,
            json!({"resent": seq, "seq": new_seq, "receiver": receiver, "status": status, "ms": ms,
                "age_s": age_s}),
        )
    }

    /// Which delivery a resend asks for, by its seq, and whether it is the oldest genuine one;
    /// else the answer that says why not.
    fn resend_target(&self, body: &[u8], scope: Option<usize>) -> Result<(u64, bool), SimResponse> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Resend {
            seq: Option<u64>,
            /// The oldest genuine delivery kept (`sim trigger --replay-old`).
            #[serde(default)]
            oldest: bool,
        }
        match serde_json::from_slice::<Resend>(body) {
            Ok(Resend { seq: Some(seq), .. }) => Ok((seq, false)),
            Ok(Resend { oldest: true, .. }) => match self.lock().log.oldest_genuine(scope) {
                Some((seq, _)) => Ok((seq, true)),
                None => Err(SimResponse::text(
                    StatusCode::NOT_FOUND,
                    "no genuine delivery has been sent yet: trigger one first\n",
                )),
            },
            Ok(_) => Err(SimResponse::text(
                StatusCode::BAD_REQUEST,
                "not a resend: {\"seq\": N} or {\"oldest\": true}\n",
            )),
            Err(e) => Err(SimResponse::text(
                StatusCode::BAD_REQUEST,
                format!("not a resend ({{\"seq\": N}} or {{\"oldest\": true}}): {e}\n"),
            )),
        }
    }
}

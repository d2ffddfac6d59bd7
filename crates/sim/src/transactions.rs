//! Pull notifications and the three transaction kinds: create (`204` while one is open, as at
//! Polar: the open one is reachable only through its `resource-uri`), list, get an item, commit
//! (deletes what it listed); an uncommitted transaction expires after the TTL (the simulator's
//! choice: Polar does not say), and its items are offered again.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use warp::http::StatusCode;

use super::model::{Item, Kind};
use super::*;

#[derive(Debug, Clone)]
pub(super) struct Transaction {
    pub(super) id: u64,
    pub(super) user_id: u64,
    pub(super) kind: Kind,
    pub(super) items: Vec<u64>,
    pub(super) created: Instant,
}

impl State {
    /// Items of `uid`/`kind` not yet committed.
    pub(super) fn pending(&self, uid: u64, kind: Kind) -> impl Iterator<Item = &Item> {
        self.items
            .values()
            .filter(move |i| i.user_id == uid && i.kind == kind && !i.committed)
    }

    pub(super) fn notifications(&self, base: &str, client: usize) -> SimResponse {
        let base = &self.links_base(base);
        let mut list = Vec::new();
        // A user who disconnected is not announced: their data stays listed, their token fails.
        for u in self
            .users
            .values()
            .filter(|u| u.registered && u.client == client)
        {
            for kind in Kind::TRANSACTIONAL {
                if self.pending(u.id, kind).next().is_some() {
                    list.push(json!({
                        "user-id": u.id,
                        "data-type": kind.event_type().as_str(),
                        "url": format!("{base}/v3/users/{}/{}-transactions", u.id, kind.segment()),
                    }));
                }
            }
        }
        if list.is_empty() {
            SimResponse::empty(StatusCode::NO_CONTENT)
        } else {
            json!({ "available-user-data": list }).into_ok()
        }
    }

    pub(super) fn tx_uri(base: &str, t: &Transaction) -> String {
        format!(
            "{base}/v3/users/{}/{}-transactions/{}",
            t.user_id,
            t.kind.segment(),
            t.id
        )
    }

    /// The base written into the links a client follows (notification, transaction and item
    /// urls, webhook payload urls): `base`, or its host replaced by the `links_host` fault.
    pub(super) fn links_base(&self, base: &str) -> String {
        let Some(host) = &self.settings.faults.links_host else {
            return base.to_string();
        };
        let Ok(mut u) = reqwest::Url::parse(base) else {
            return base.to_string();
        };
        match u.set_host(Some(host)) {
            Ok(()) => u.as_str().trim_end_matches('/').to_string(),
            Err(_) => base.to_string(),
        }
    }

    pub(super) fn ttl(&self) -> Duration {
        Duration::from_secs(self.settings.faults.transaction_ttl_s.max(1))
    }

    pub(super) fn create_transaction(&mut self, uid: u64, kind: Kind, base: &str) -> SimResponse {
        let ttl = self.ttl();
        self.transactions.retain(|_, t| t.created.elapsed() < ttl);
        // An open transaction blocks new ones: Polar answers 204, as if nothing were new.
        if self
            .transactions
            .values()
            .any(|t| t.user_id == uid && t.kind == kind)
        {
            return SimResponse::empty(StatusCode::NO_CONTENT);
        }
        let base = &self.links_base(base);
        let items: Vec<u64> = self.pending(uid, kind).take(50).map(|i| i.id).collect();
        if items.is_empty() {
            return SimResponse::empty(StatusCode::NO_CONTENT);
        }
        let id = self.next_tx_id;
        self.next_tx_id += 1;
        let t = Transaction {
            id,
            user_id: uid,
            kind,
            items,
            created: Instant::now(),
        };
        let uri = Self::tx_uri(base, &t);
        self.transactions.insert(id, t);
        SimResponse::json(
            StatusCode::CREATED,
            json!({"transaction-id": id, "resource-uri": uri}),
        )
    }

    pub(super) fn live_transaction(&self, uid: u64, seg: &str, tid: &str) -> Option<Transaction> {
        let kind = Kind::from_segment(seg.trim_end_matches("-transactions"))?;
        let t = self.transactions.get(&tid.parse::<u64>().ok()?)?;
        (t.user_id == uid && t.kind == kind && t.created.elapsed() < self.ttl()).then(|| t.clone())
    }

    pub(super) fn transaction(
        &mut self,
        uid: u64,
        seg: &str,
        tid: &str,
        commit: bool,
        base: &str,
    ) -> SimResponse {
        let Some(t) = self.live_transaction(uid, seg, tid) else {
            return Self::no_transaction(seg, commit);
        };
        let base = &self.links_base(base);
        if commit {
            for id in &t.items {
                if let Some(i) = self.items.get_mut(id) {
                    i.committed = true;
                }
            }
            self.transactions.remove(&t.id);
            return SimResponse::empty(StatusCode::OK);
        }
        let urls: Vec<String> = t
            .items
            .iter()
            .map(|id| format!("{}/{}/{id}", Self::tx_uri(base, &t), t.kind.item_segment()))
            .collect();
        json!({ t.kind.list_key(): urls }).into_ok()
    }

    /// The item `iid` of the user's open transaction `tid`, if both exist (ids as in the path).
    pub(super) fn transaction_item(&self, uid: u64, tid: &str, iid: &str) -> Option<(u64, &Item)> {
        let (tid, iid) = (tid.parse::<u64>().ok()?, iid.parse::<u64>().ok()?);
        let t = self.transactions.get(&tid)?;
        let open = t.user_id == uid && t.items.contains(&iid) && t.created.elapsed() < self.ttl();
        open.then(|| self.items.get(&iid).map(|i| (tid, i)))
            .flatten()
    }

    pub(super) fn item(&self, uid: u64, tid: &str, item: &str, base: &str) -> SimResponse {
        let found = self
            .transaction_item(uid, tid, item)
            .map(|(tid, i)| self.zoned_start(i.transactional_json(base, tid)));
        match found {
            Some(v) => v.into_ok(),
            // Polar documents 200, 204 and 403 for item calls: no 404.
            None => SimResponse::empty(StatusCode::NO_CONTENT),
        }
    }

    /// A list or commit of a transaction that is not open (committed, expired, unknown), as
    /// Polar documents it: 404 only where a 404 is documented (listing activity and physical
    /// information, committing exercises), 204 elsewhere.
    fn no_transaction(seg: &str, commit: bool) -> SimResponse {
        let kind = Kind::from_segment(seg.trim_end_matches("-transactions"));
        let documented_404 = match (kind, commit) {
            (Some(Kind::Exercise), commit) => commit,
            (Some(_), commit) => !commit,
            (None, _) => true,
        };
        if documented_404 {
            SimResponse::error(StatusCode::NOT_FOUND, "NotFound", "no such transaction")
        } else {
            SimResponse::empty(StatusCode::NO_CONTENT)
        }
    }
}

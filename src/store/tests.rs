//! The store's write path at the record level: what one delivery writes, what a duplicate does to
//! a fetch that never happened, pending fetches across a restart, and counters across a clean and
//! an unclean close.

use chrono::Utc;

use super::*;
use crate::accesslink::identity::{EventType, UserId};
use crate::accesslink::payload::{self, Parsed};
use crate::race::visible;

fn delivery(id: &str) -> (Delivery, Vec<u8>) {
    let body = format!(
        r#"{{"event":"EXERCISE","user_id":7,"entity_id":"{id}","timestamp":"2026-11-28T10:00:00Z","url":"https://www.polaraccesslink.com/v3/exercises/{id}"}}"#
    );
    match payload::parse(body.as_bytes()) {
        Ok(Parsed::Delivery(d)) => (d, body.into_bytes()),
        other => panic!("not a delivery: {other:?}"),
    }
}

/// sled itself on a store just closed: sled releases its lock when its flusher thread ends, a
/// moment after the last handle is dropped, so a lock error is tried again (for up to 5 s).
fn open_raw(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("could not acquire lock"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("opening {}: {e}", path.display()),
        }
    }
}

/// Opens a store that was just closed in this process.
fn reopen(path: &std::path::Path) -> Store {
    Store::open_waiting(path, std::time::Duration::from_secs(5), DEFAULT_CACHE_BYTES).unwrap()
}

/// A key as the store holds it.
fn k(key: &str) -> EntityKey {
    EntityKey::stored(key)
}

fn queued(store: &Store) -> Vec<String> {
    store
        .queued_fetches()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.to_string())
        .collect()
}

#[test]
fn one_delivery_writes_its_entity_raw_body_and_fetch_job_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (d, body) = delivery("a1");
    let r = store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    let (outcome, job) = (r.outcome, r.fetch_pending);
    assert_eq!((outcome, job), (Recorded::Accepted, true));
    assert!(store.entity(&k("EXERCISE/7/a1")).unwrap().is_some());
    assert_eq!(store.deliveries().unwrap().len(), 1);
    assert_eq!(queued(&store), ["EXERCISE/7/a1"]);
    assert_eq!(store.counter(counter::Counter::WebhookAccepted), 1);

    // A duplicate while the job is pending adds no second job: still the one.
    let r = store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    let (outcome, pending) = (r.outcome, r.fetch_pending);
    assert_eq!((outcome, pending), (Recorded::Duplicate, true));
    assert_eq!(queued(&store).len(), 1);
    assert_eq!(
        store.deliveries().unwrap().len(),
        1,
        "a duplicate's body is not kept"
    );
}

#[tokio::test]
async fn a_duplicate_waits_for_a_commit_only_while_its_record_is_not_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (d, body) = delivery("f1");
    let first = store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    assert!(!first.already_durable, "a first delivery always waits");
    // A copy that arrives before the first one's commit has finished must wait too.
    let early = store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    assert!(!early.already_durable);
    store.durable().await.unwrap();
    let late = store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    assert_eq!(late.outcome, Recorded::Duplicate);
    assert!(
        late.already_durable,
        "the record is on disk; only the count changed"
    );
    // A duplicate that queues a fetch again has something new to make durable.
    let (d2, body2) = delivery("f2");
    store
        .record_delivery(&d2, &body2, Utc::now(), false)
        .unwrap();
    store.durable().await.unwrap();
    let requeued = store
        .record_delivery(&d2, &body2, Utc::now(), true)
        .unwrap();
    assert!(requeued.fetch_pending);
    assert!(!requeued.already_durable);
}

#[test]
fn a_duplicate_queues_the_fetch_that_was_never_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (d, body) = delivery("b2");
    // Recorded without a job (as a daemon without a fetcher would, or an older version that
    // queued after the flush and lost the job with the connection).
    let r = store.record_delivery(&d, &body, Utc::now(), false).unwrap();
    let job = r.fetch_pending;
    assert!(!job);
    assert!(queued(&store).is_empty());
    // Polar sends it again: the data was never fetched, so the fetch is queued now.
    let r = store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    let (outcome, job) = (r.outcome, r.fetch_pending);
    assert_eq!((outcome, job), (Recorded::Duplicate, true));
    assert_eq!(queued(&store), ["EXERCISE/7/b2"]);
    // Once its data is stored, another duplicate queues nothing.
    let (key, _) = store.next_fetch().unwrap().unwrap();
    let id = crate::accesslink::data::identify(
        &EventType::Exercise,
        UserId(7),
        &serde_json::json!({}),
        None,
    );
    store
        .record_fetched(&key, &id, &serde_json::json!({}))
        .unwrap();
    assert!(store.next_fetch().unwrap().is_none());
    let r = store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    let job = r.fetch_pending;
    assert!(!job);
    assert!(queued(&store).is_empty());
}

#[test]
fn a_retry_replaces_the_job_instead_of_adding_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (d, body) = delivery("c3");
    store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    let (key, mut job) = store.next_fetch().unwrap().unwrap();
    job.attempts += 1;
    job.next_at = Utc::now() + chrono::Duration::seconds(60);
    store.reschedule_fetch(&key, &job).unwrap();
    let all = store.queued_fetches().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1.attempts, 1);
}

#[test]
fn pending_fetches_survive_a_restart_in_their_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for id in ["e1", "e2"] {
            let (d, body) = delivery(id);
            store.record_delivery(&d, &body, Utc::now(), true).unwrap();
        }
        store.fetch_failed(&k("EXERCISE/7/e2"), "404").unwrap();
    }
    let store = reopen(dir.path());
    assert!(
        store.fetch_queue_is_empty(),
        "loaded by the fetcher, not by open"
    );
    assert_eq!(store.load_pending().unwrap().fetches, 1);
    assert_eq!(queued(&store), ["EXERCISE/7/e1"]);
    let raw = store.deliveries().unwrap();
    assert_eq!(raw.len(), 2, "each record keeps its first body");
    assert!(raw[0].body.contains("\"entity_id\":\"e1\""));
}

#[test]
fn counters_survive_a_clean_close_and_are_recounted_after_an_unclean_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for id in ["d1", "d2", "d3"] {
            let (d, body) = delivery(id);
            store.record_delivery(&d, &body, Utc::now(), true).unwrap();
        }
        let (d, body) = delivery("d1");
        store.record_delivery(&d, &body, Utc::now(), true).unwrap();
        store.incr(counter::Counter::WebhookPings, 2);
        store.close().unwrap(); // closed cleanly: the counters are written as they are
    }
    {
        let store = reopen(dir.path());
        assert_eq!(store.counter(counter::Counter::WebhookAccepted), 3);
        assert_eq!(store.counter(counter::Counter::WebhookDuplicates), 1);
        assert_eq!(store.counter(counter::Counter::WebhookPings), 2);
    }
    {
        // What a killed process leaves: the "open" mark still set, and a count that lags the
        // records (the crash came between a write and the commit that would have saved it).
        let db = open_raw(dir.path());
        db.open_tree("meta")
            .unwrap()
            .insert(META_OPEN, &[1u8])
            .unwrap();
        db.open_tree("counters")
            .unwrap()
            .insert(
                &*counter::Counter::WebhookAccepted.name(),
                &2u64.to_be_bytes(),
            )
            .unwrap();
        // ... and a saved summary that lags the records too.
        let stale = serde_json::to_vec(&SavedSummary::from(&Summary::default())).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(META_SUMMARY, stale)
            .unwrap();
        db.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.counter(counter::Counter::WebhookAccepted), 3);
    assert_eq!(store.counter(counter::Counter::WebhookDuplicates), 1);
    assert_eq!(store.counter(counter::Counter::WebhookPings), 2);
    // The summary saved at the clean close is not trusted after a crash: it is recounted.
    assert_eq!(store.summary().total, 3);
}

#[test]
fn the_store_is_private_to_its_owner_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // Created as a permissive umask would, then opened.
    std::fs::create_dir_all(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::open(&path).unwrap();
    store
        .put_user(UserId(7), &crate::config::Secret::new("a-token"))
        .expect("writing a token");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o700, "the store directory");
    for entry in std::fs::read_dir(&path).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            assert_eq!(
                mode(&entry.path()) & 0o077,
                0,
                "{} is readable by others",
                entry.path().display()
            );
        }
    }
}

fn recounted(store: &Store) -> Summary {
    let mut s = Summary::default();
    store.for_each_entity(|e| s.add(&e)).unwrap();
    s
}

#[test]
fn the_live_summary_follows_every_write_and_survives_a_clean_close() {
    use crate::accesslink::data::Identity;
    let dir = tempfile::tempdir().unwrap();
    let base = Utc::now();
    {
        let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        // Deliveries and duplicates from four threads at once, on overlapping entities.
        std::thread::scope(|scope| {
            for t in 0..4i64 {
                let store = store.clone();
                scope.spawn(move || {
                    for i in 0..50i64 {
                        let (d, body) = delivery(&format!("e{}", (i * 7 + t) % 60));
                        let at = base + chrono::Duration::milliseconds(i * 10 + t);
                        store.record_delivery(&d, &body, at, true).unwrap();
                    }
                });
            }
        });
        // The poller sees some of them (under their fingerprint), and some nobody else saw.
        for i in 0..80i64 {
            let id = Identity {
                kind: EventType::Exercise,
                entity_id: format!("p{i}"),
                fingerprint: Some(format!("fp{i}")),
                available_at: Some(base - chrono::Duration::seconds(i)),
            };
            let at = base + chrono::Duration::seconds(30 + i);
            store
                .record_poll(UserId(7), &id, &serde_json::json!({}), at)
                .unwrap();
        }
        // Fetched webhook data carries the same fingerprints: the records merge.
        for i in 0..40i64 {
            let id = Identity {
                kind: EventType::Exercise,
                entity_id: format!("e{i}"),
                fingerprint: Some(format!("fp{i}")),
                available_at: Some(base - chrono::Duration::seconds(i)),
            };
            store
                .record_fetched(&k(&format!("EXERCISE/7/e{i}")), &id, &serde_json::json!({}))
                .unwrap();
        }
        let live = store.summary();
        assert_eq!(visible(&live), visible(&recounted(&store)));
        assert_eq!(
            (live.total, live.seen_by_both),
            (100, 40),
            "60 + 80 - 40 merged"
        );
        Store::close_shared(store).unwrap(); // closed cleanly: the summary is saved
    }
    let store = reopen(dir.path());
    assert!(!store.unclean);
    assert_eq!(visible(&store.summary()), visible(&recounted(&store)));
    let (d, body) = delivery("after");
    store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    assert_eq!(store.summary().total, 101);
}

#[test]
fn a_store_another_process_holds_is_told_apart_from_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    match Store::open(dir.path()) {
        Err(OpenError::InUse { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected InUse, got {other:?}"),
    }
    // A path that cannot be a store is an error of its own, not "in use".
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(Store::open(&file), Err(OpenError::Other(_))));
}

#[test]
fn merges_racing_deliveries_lose_no_delivery_and_leave_one_record_per_entity() {
    use crate::accesslink::data::Identity;
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    let base = Utc::now();
    const N: i64 = 40;
    const COPIES: i64 = 5;
    let identity = |id: String, i: i64| Identity {
        kind: EventType::Exercise,
        entity_id: id,
        fingerprint: Some(format!("fp{i}")),
        available_at: Some(base - chrono::Duration::seconds(i)),
    };
    std::thread::scope(|scope| {
        // Deliveries (each entity several times) while...
        let s = store.clone();
        scope.spawn(move || {
            for copy in 0..COPIES {
                for i in 0..N {
                    let (d, body) = delivery(&format!("m{i}"));
                    let at = base + chrono::Duration::milliseconds(copy * 100 + i);
                    s.record_delivery(&d, &body, at, true).unwrap();
                }
            }
        });
        // ... the poller stores the same exercises under their transactional ids, and ...
        let s = store.clone();
        scope.spawn(move || {
            for i in 0..N {
                let at = base + chrono::Duration::seconds(30 + i);
                s.record_poll(
                    UserId(7),
                    &identity(format!("t{i}"), i),
                    &serde_json::json!({}),
                    at,
                )
                .unwrap();
            }
        });
        // ... the fetcher links the delivered ones to them: the records merge under traffic.
        let s = store.clone();
        scope.spawn(move || {
            for i in 0..N {
                let key = k(&format!("EXERCISE/7/m{i}"));
                // The delivery may not be recorded yet: then there is nothing to link.
                if s.entity(&key).unwrap().is_some() {
                    s.record_fetched(&key, &identity(format!("m{i}"), i), &serde_json::json!({}))
                        .unwrap();
                }
            }
        });
    });
    // Link whatever the fetcher thread came too early for.
    for i in 0..N {
        let key = k(&format!("EXERCISE/7/m{i}"));
        let id = identity(format!("m{i}"), i);
        store
            .record_fetched(&key, &id, &serde_json::json!({}))
            .unwrap();
    }
    let mut records = 0;
    let mut deliveries = 0;
    store
        .for_each_entity(|e| {
            records += 1;
            deliveries += i64::from(e.webhook_deliveries);
            assert!(e.webhook_at.is_some() && e.poll_at.is_some(), "{e:?}");
        })
        .unwrap();
    assert_eq!(records, N, "one record per exercise");
    assert_eq!(deliveries, N * COPIES, "every delivery counted once");
    assert_eq!(
        store.deliveries().unwrap().len() as i64,
        N,
        "one raw body each"
    );
    assert_eq!(store.counter(counter::Counter::WebhookAccepted) as i64, N);
    assert_eq!(visible(&store.summary()), visible(&recounted(&store)));
}

fn routes(store: &Store) {
    store.set_notice_routes(vec![
        NoticeRoute {
            sink: "app".into(),
            events: None,
        },
        NoticeRoute {
            sink: "phone".into(),
            events: Some(vec![EventType::Sleep]),
        },
    ]);
}

fn exercise_identity(id: &str) -> crate::accesslink::data::Identity {
    crate::accesslink::data::Identity {
        kind: EventType::Exercise,
        entity_id: id.into(),
        available_at: Some(Utc::now()),
        fingerprint: Some("EXERCISE|7|fp".into()),
    }
}

#[test]
fn an_entity_gets_one_event_whichever_channels_store_its_data_and_it_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        routes(&store);
        // The poll stores it first (under its own id), the webhook's delivery and fetch follow:
        // the two records are merged; one event, for the sink that wants exercises only.
        let data = serde_json::json!({"id": "p1"});
        store
            .record_poll(UserId(7), &exercise_identity("p1"), &data, Utc::now())
            .unwrap();
        assert_eq!(store.pending_notices("app").len(), 1);
        assert!(store.pending_notices("phone").is_empty());
        let (d, body) = delivery("w1");
        store.record_delivery(&d, &body, Utc::now(), true).unwrap();
        store
            .record_fetched(&k("EXERCISE/7/w1"), &exercise_identity("w1"), &data)
            .unwrap();
        // The poll again, and a duplicate delivery: nothing new.
        store
            .record_poll(UserId(7), &exercise_identity("p1"), &data, Utc::now())
            .unwrap();
        store.record_delivery(&d, &body, Utc::now(), true).unwrap();
        let due = store.next_notice("app").unwrap().expect("one event due");
        assert_eq!(due.key, "EXERCISE/7/w1", "the event moved with the merge");
        assert_eq!(store.pending_notices("app").len(), 1);
        // Not sent before a commit covers it.
        assert!(!store.notice_durable(due.notice.seq));
        store.flush().unwrap();
        assert!(store.notice_durable(due.notice.seq));
    }
    // After a restart (the sender never ran): still exactly one event pending.
    let store = reopen(dir.path());
    routes(&store);
    assert_eq!(store.load_pending().unwrap().notices, 1);
    let due = store.next_notice("app").unwrap().unwrap();
    store.notice_sent(&due.key, "app", Utc::now()).unwrap();
    assert!(store.next_notice("app").unwrap().is_none());
    let c = store.sink_counts("app");
    assert_eq!((c.sent, c.pending, c.failed), (1, 0, 0));
    assert_eq!(c.latency.count, 1);
}

#[test]
fn a_failed_fetch_makes_an_event_without_data_and_a_users_events_go_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    routes(&store);
    let (d1, b1) = delivery("a");
    let (d2, b2) = delivery("b");
    store.record_delivery(&d1, &b1, Utc::now(), true).unwrap();
    store.record_delivery(&d2, &b2, Utc::now(), true).unwrap();
    assert!(store.next_notice("app").unwrap().is_none(), "no data yet");
    store.fetch_failed(&k("EXERCISE/7/a"), "404").unwrap();
    store
        .record_fetched(
            &k("EXERCISE/7/b"),
            &exercise_identity("b"),
            &serde_json::json!({}),
        )
        .unwrap();
    // The first event fails for now: the user's second waits behind it, even once due.
    let first = store.next_notice("app").unwrap().unwrap();
    assert_eq!(first.key, "EXERCISE/7/a");
    assert_eq!(first.entity.fetch_state(), FetchState::Failed("404".into()));
    let later = Utc::now() + chrono::Duration::seconds(60);
    store.notice_retry(&first.key, "app", later, "500").unwrap();
    let next = store.next_notice("app").unwrap().unwrap();
    assert_eq!(next.key, "EXERCISE/7/a");
    // Stored to the microsecond.
    assert_eq!(next.next_at.timestamp_micros(), later.timestamp_micros());
    assert_eq!(store.sink_counts("app").retrying, 1);
    // Parked, it lets the next one go; a re-queue brings it back.
    store.notice_failed(&first.key, "app", "gave up").unwrap();
    assert_eq!(
        store.next_notice("app").unwrap().unwrap().key,
        "EXERCISE/7/b"
    );
    assert_eq!(store.requeue_failed_notices(None).unwrap(), 1);
    assert_eq!(
        store.next_notice("app").unwrap().unwrap().key,
        "EXERCISE/7/a"
    );
}

/// A fetch backlog of any size holds a bounded number of jobs in memory (the earliest due);
/// the rest stay in their records and come back, in order, once those are done. Before the fix
/// every job was held (28,304 of them in a 60-minute soak over the rate limit).
#[test]
fn a_fetch_backlog_beyond_the_cap_waits_in_the_records_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.fetch_queue = fetch_queue::FetchQueue::with_cap(3);
    let ids = ["a1", "a2", "a3", "a4", "a5", "a6", "a7"];
    for id in ids {
        let (d, body) = delivery(id);
        store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    }
    let backlog = store.fetch_backlog();
    assert_eq!((backlog.jobs, backlog.more_in_records), (3, true));
    // Done one by one (as the fetcher would, giving up here): every job comes, none twice.
    let mut done = Vec::new();
    while let Some((key, _)) = store.next_fetch().unwrap() {
        assert!(!done.contains(&key), "{key} twice");
        store.fetch_failed(&key, "test").unwrap();
        done.push(key);
        assert!(store.fetch_backlog().jobs <= 3);
    }
    done.sort();
    let all: Vec<EntityKey> = ids.iter().map(|i| k(&format!("EXERCISE/7/{i}"))).collect();
    assert_eq!(done, all);
    assert!(store.fetch_queue_is_empty());
}

//! The store's write path at the record level: what one delivery writes, what a duplicate does to
//! a fetch that never happened, pending fetches across a restart, what a commit hands the
//! consumers, and counters across a clean and an unclean close. (The consumers' queues are tested
//! where they live: `channels/fetch_queue.rs`, `notify/outbox.rs`.)
#![allow(clippy::disallowed_methods)] // A test owns the tasks it spawns.

use chrono::Utc;

use super::*;
use crate::accesslink::identity::{EventType, UserId};
use crate::accesslink::payload::{self, Parsed};
use crate::race::visible;

/// A delivery of exercise `id` of user 7, and its body.
pub(crate) fn delivery(id: &str) -> (Delivery, Vec<u8>) {
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
pub(crate) fn reopen(path: &std::path::Path) -> Store {
    Store::open_waiting(path, std::time::Duration::from_secs(5), DEFAULT_CACHE_BYTES).unwrap()
}

/// A key as the store holds it.
pub(crate) fn k(key: &str) -> EntityKey {
    EntityKey::stored(key)
}

/// The records holding a fetch job, as a scan finds them.
fn queued(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    store
        .scan_work(|w| {
            if w.fetch.is_some() {
                out.push(w.key.to_string());
            }
        })
        .unwrap();
    out
}

/// What the commits made durable so far, as a consumer was handed it.
fn handed(follower: &mut Follower) -> Vec<Change> {
    let mut out = Vec::new();
    while let Some(c) = follower.try_next() {
        out.extend(c.changes.iter().cloned());
    }
    out
}

#[test]
fn one_delivery_writes_its_entity_raw_body_and_fetch_job_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (d, body) = delivery("a1");
    let r = store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    let (outcome, job) = (r.outcome, r.fetch_queued.is_some());
    assert_eq!((outcome, job), (Recorded::Accepted, true));
    assert!(store.entity(&k("EXERCISE/7/a1")).unwrap().is_some());
    assert_eq!(store.deliveries().unwrap().len(), 1);
    assert_eq!(queued(&store), ["EXERCISE/7/a1"]);
    assert_eq!(store.counter(RecordCount::FirstDeliveries), 1);

    // A duplicate while the job is pending adds no second job: still the one.
    let r = store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    let (outcome, queued_again) = (r.outcome, r.fetch_queued.is_some());
    assert_eq!((outcome, queued_again), (Recorded::Duplicate, false));
    assert_eq!(queued(&store).len(), 1);
    assert_eq!(
        store.deliveries().unwrap().len(),
        1,
        "a duplicate's body is not kept"
    );
}

/// A trace needs every delivery's time: the first sets the sighting, each later one (a
/// duplicate, an update) is kept beside it, at most `LATER_DELIVERIES_KEPT`, counted all.
#[test]
fn later_deliveries_keep_their_arrival_times() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (d, body) = delivery("t1");
    // Records keep microseconds.
    let t0 = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    for s in 0..40 {
        store.record_delivery(&d, &body, at(s), true).unwrap();
    }
    let e = store.entity(&k("EXERCISE/7/t1")).unwrap().unwrap();
    assert_eq!(e.webhook_at, Some(at(0)));
    assert_eq!(e.webhook_deliveries, 40);
    let kept: Vec<_> = (1..=crate::race::LATER_DELIVERIES_KEPT as i64)
        .map(at)
        .collect();
    assert_eq!(e.later_deliveries_at, kept);
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
    assert!(requeued.fetch_queued.is_some());
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
    assert!(r.fetch_queued.is_none());
    assert!(queued(&store).is_empty());
    // Polar sends it again: the data was never fetched, so the fetch is queued now.
    let r = store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    let (outcome, job) = (r.outcome, r.fetch_queued.is_some());
    assert_eq!((outcome, job), (Recorded::Duplicate, true));
    assert_eq!(queued(&store), ["EXERCISE/7/b2"]);
    // Once its data is stored, another duplicate queues nothing.
    let key = k("EXERCISE/7/b2");
    let id = crate::accesslink::data::identify(
        &EventType::Exercise,
        UserId(7),
        &serde_json::json!({}),
        None,
    );
    store
        .record_fetched(&key, &id, &serde_json::json!({}))
        .unwrap();
    assert!(store.fetch_job(&key).unwrap().is_none());
    let r = store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    assert!(r.fetch_queued.is_none());
    assert!(queued(&store).is_empty());
}

#[test]
fn a_retry_replaces_the_job_instead_of_adding_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (d, body) = delivery("c3");
    store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    let (key, mut job) = store.fetch_job(&k("EXERCISE/7/c3")).unwrap().unwrap();
    job.attempts += 1;
    job.next_at = Utc::now() + chrono::Duration::seconds(60);
    store.reschedule_fetch(&key, &job).unwrap();
    assert_eq!(queued(&store).len(), 1);
    assert_eq!(store.fetch_job(&key).unwrap().unwrap().1.attempts, 1);
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
        store
            .fetch_failed(&k("EXERCISE/7/e2"), &EventType::Exercise, "404")
            .unwrap();
    }
    let store = reopen(dir.path());
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
        store.incr(crate::counter::Counter::WebhookPings, 2);
        store.close().unwrap(); // closed cleanly: the counters are written as they are
    }
    {
        let store = reopen(dir.path());
        assert_eq!(store.counter(RecordCount::FirstDeliveries), 3);
        assert_eq!(store.counter(RecordCount::Duplicates), 1);
        assert_eq!(store.counter(crate::counter::Counter::WebhookPings), 2);
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
            .insert(&*RecordCount::FirstDeliveries.name(), &2u64.to_be_bytes())
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
    assert_eq!(store.counter(RecordCount::FirstDeliveries), 3);
    assert_eq!(store.counter(RecordCount::Duplicates), 1);
    assert_eq!(store.counter(crate::counter::Counter::WebhookPings), 2);
    // The summary saved at the clean close is not trusted after a crash: it is recounted.
    assert_eq!(store.follow_tally().unwrap().summary().total, 3);
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
    let kept = store.kept::<String>("users").unwrap();
    kept.put("7", &"a-token".to_string())
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
fn the_tally_counts_every_committed_write_and_survives_a_clean_close() {
    use crate::accesslink::data::Identity;
    let dir = tempfile::tempdir().unwrap();
    let base = Utc::now();
    {
        let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        let tally = store.follow_tally().unwrap();
        let writing = std::sync::atomic::AtomicBool::new(true);
        // Deliveries and duplicates from four threads at once, on overlapping entities, while
        // a fifth commits over and over (commits publish concurrently with the writes).
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while writing.load(std::sync::atomic::Ordering::Acquire) {
                    store.flush().unwrap();
                }
            });
            let writers: Vec<_> = (0..4i64)
                .map(|t| {
                    let store = store.clone();
                    scope.spawn(move || {
                        for i in 0..50i64 {
                            let (d, body) = delivery(&format!("e{}", (i * 7 + t) % 60));
                            let at = base + chrono::Duration::milliseconds(i * 10 + t);
                            store.record_delivery(&d, &body, at, true).unwrap();
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            writing.store(false, std::sync::atomic::Ordering::Release);
        });
        store.flush().unwrap();
        assert_eq!(tally.summary().total, 60);
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
        // Written, not yet committed: the tally counts what a crash would keep.
        assert_eq!(tally.summary().total, 60);
        store.flush().unwrap();
        let live = tally.summary();
        assert_eq!(visible(&live), visible(&recounted(&store)));
        assert_eq!(
            (live.total, live.seen_by_both),
            (100, 40),
            "60 + 80 - 40 merged"
        );
        store.close().unwrap(); // closed cleanly: the summary is saved
    }
    let store = reopen(dir.path());
    assert!(!store.unclean);
    let tally = store.follow_tally().unwrap();
    assert_eq!(visible(&tally.summary()), visible(&recounted(&store)));
    let (d, body) = delivery("after");
    store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    store.flush().unwrap();
    assert_eq!(tally.summary().total, 101);
}

#[test]
fn a_summary_is_saved_only_while_it_describes_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let saved = |store: &Store| store.saved_summary().unwrap().map(|s| s.total);
    {
        let store = reopen(dir.path());
        let tally = store.follow_tally().unwrap();
        let (d, body) = delivery("a");
        store.record_delivery(&d, &body, Utc::now(), true).unwrap();
        store.close().unwrap();
        assert_eq!(tally.summary().total, 1, "the close's commit fed the tally");
    }
    {
        // A command that only reads, and counts nothing: the saved summary still holds.
        let store = reopen(dir.path());
        assert_eq!(saved(&store), Some(1));
        store.close().unwrap();
    }
    {
        // A command that writes an entity with no tally following: the saved summary no
        // longer describes the records, and a tally can no longer start from it.
        let store = reopen(dir.path());
        let (d, body) = delivery("b");
        store.record_delivery(&d, &body, Utc::now(), true).unwrap();
        let refused = store.follow_tally().unwrap_err();
        assert!(
            format!("{refused}").contains("before the race's tally"),
            "{refused}"
        );
        store.close().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(saved(&store), None, "removed at the close");
    assert!(!store.unclean);
    // So this open recounted: both entities are there.
    assert_eq!(store.follow_tally().unwrap().summary().total, 2);
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
    let tally = store.follow_tally().unwrap();
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
    // The whole backlog's count followed every job through the races and merges: none is left.
    assert_eq!(store.counter(RecordCount::FetchesPending), 0);
    assert_eq!(
        store.deliveries().unwrap().len() as i64,
        N,
        "one raw body each"
    );
    assert_eq!(store.counter(RecordCount::FirstDeliveries) as i64, N);
    store.flush().unwrap();
    assert_eq!(visible(&tally.summary()), visible(&recounted(&store)));
}

/// Two sinks: `app` wants every event, `phone` only sleep.
pub(crate) fn routes(store: &Store) {
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

pub(crate) fn exercise_identity(id: &str) -> crate::accesslink::data::Identity {
    crate::accesslink::data::Identity {
        kind: EventType::Exercise,
        entity_id: id.into(),
        available_at: Some(Utc::now()),
        fingerprint: Some("EXERCISE|7|fp".into()),
    }
}

/// The consumers' queues are fed by the commits: a write's work is handed over only once a
/// commit has made it durable, a write that changes no work hands nothing, and the record's
/// state after the write is what arrives.
#[tokio::test]
async fn a_commit_hands_the_consumers_only_the_work_it_made_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    routes(&store);
    let mut follower = store.follow();
    let (d, body) = delivery("h1");
    store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    assert!(
        handed(&mut follower).is_empty(),
        "nothing before the commit"
    );
    store.durable().await.unwrap();
    let got = handed(&mut follower);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].key, "EXERCISE/7/h1");
    assert!(got[0].fetch.is_some() && got[0].notice.is_none());
    // A duplicate changes no work.
    store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    store.durable().await.unwrap();
    assert!(handed(&mut follower).is_empty());
    // The fetch stores the data: the job ends and the event is made, in one write.
    store
        .record_fetched(
            &k("EXERCISE/7/h1"),
            &exercise_identity("h1"),
            &serde_json::json!({}),
        )
        .unwrap();
    store.flush().unwrap();
    let got = handed(&mut follower);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].fetch.is_none());
    let sinks: Vec<&str> = got[0]
        .notice
        .iter()
        .flat_map(|n| &n.sinks)
        .map(|s| s.sink.as_str())
        .collect();
    assert_eq!(sinks, ["app"], "only the sink that wants exercises");
    // Sent: the work is done, and nothing more is handed.
    store
        .notice_sent(&k("EXERCISE/7/h1"), "app", Utc::now())
        .unwrap();
    store.flush().unwrap();
    assert!(handed(&mut follower).is_empty());
}

/// The committer is the caller's to run: taken once, it serves every waiter (concurrent callers
/// share its commits) and ends with the close, its last request, while another handle is still
/// held (before, a close with a second handle failed, and the daemon polled the handle count
/// until it dropped); after the close that handle can neither write nor commit. A store whose
/// committer nobody took commits each call itself.
#[tokio::test]
async fn the_committer_is_owned_and_ends_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    // Without a committer, `durable` commits by itself.
    let (d, body) = delivery("c0");
    store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    store.durable().await.unwrap();
    let committer = tokio::spawn(store.committer().expect("the committer").run());
    assert!(store.committer().is_none(), "there is one committer");
    let mut waiting = Vec::new();
    for i in 1..=20 {
        let (d, body) = delivery(&format!("c{i}"));
        store.record_delivery(&d, &body, Utc::now(), true).unwrap();
        let s = store.clone();
        waiting.push(tokio::spawn(async move { s.durable().await }));
    }
    for w in waiting {
        w.await.unwrap().unwrap();
    }
    assert!(!committer.is_finished(), "it runs while the store is open");
    let late = store.clone();
    store.close().unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), committer)
        .await
        .expect("the committer ends when the store is closed")
        .unwrap();
    let (d, body) = delivery("late");
    let refused = late
        .record_delivery(&d, &body, Utc::now(), true)
        .unwrap_err();
    assert!(refused.to_string().contains("closed"), "{refused:#}");
    assert!(late.durable().await.is_err(), "no commit after the close");
    late.close().unwrap(); // a second close does nothing
    drop((store, late));
    let store = reopen(dir.path());
    assert!(!store.found_unclean());
    assert_eq!(store.deliveries().unwrap().len(), 21);
}

/// A store restored from a backup of an open one holds its records and continues its sequence:
/// a record made after the restore sorts after every restored one.
#[test]
fn a_restored_store_holds_the_records_and_continues_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("a")).unwrap();
    for id in ["a1", "a2"] {
        let (d, body) = delivery(id);
        store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    }
    store.flush().unwrap();
    let mut copy = Vec::new();
    let sent = backup::write(&store, &mut copy).unwrap();
    let last = store.db.generate_id().unwrap();
    let into = dir.path().join("b");
    let got = backup::restore(&mut copy.as_slice(), &into).unwrap();
    assert_eq!((got.trees, got.keys), (sent.trees, sent.keys));
    let restored = reopen(&into);
    assert_eq!(restored.deliveries().unwrap().len(), 2);
    assert!(restored.db.generate_id().unwrap() > last);
    // Cut anywhere, it is refused.
    let cut = &copy[..copy.len() - 1];
    assert!(backup::check(&mut &cut[..]).is_err());
}

/// The store counts the records holding a fetch job, the whole backlog however much of it the
/// fetcher's queue keeps in memory (before, `/status` showed at most the 10,000 in memory while
/// 51,291 waited): raised by a first delivery, kept by a duplicate, lowered by a fetch that
/// brought the data or gave up, and recounted from the records after an unclean stop.
#[test]
fn the_whole_fetch_backlog_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let pending = |s: &Store| s.counter(RecordCount::FetchesPending);
    let store = Store::open(dir.path()).unwrap();
    for id in ["p1", "p2", "p3"] {
        let (d, body) = delivery(id);
        store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    }
    assert_eq!(pending(&store), 3);
    let (d, body) = delivery("p1");
    store.record_delivery(&d, &body, Utc::now(), true).unwrap();
    assert_eq!(pending(&store), 3, "a duplicate adds no job");
    let id = exercise_identity("p1");
    store
        .record_fetched(&k("EXERCISE/7/p1"), &id, &serde_json::json!({}))
        .unwrap();
    assert_eq!(pending(&store), 2);
    store
        .fetch_failed(&k("EXERCISE/7/p2"), &EventType::Exercise, "404")
        .unwrap();
    assert_eq!(pending(&store), 1);
    store.flush().unwrap();
    // An unclean stop: the count on disk is not trusted, the records are.
    store.counters.set(&RecordCount::FetchesPending.name(), 99);
    drop(store);
    let store = reopen(dir.path());
    assert!(store.found_unclean());
    assert_eq!(pending(&store), 1);
}

//! The generator: new exercises and activity updates per user at exponential intervals, made
//! from the seed alone, recorded in the ground truth and announced as deliveries.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::RngExt;

use super::model::{Activity, Exercise, Item, ItemData, Kind, Physical, hashed_id};
use super::*;
use rand_distr::{Distribution, Exp};
use tokio_util::sync::CancellationToken;

impl Sim {
    /// Creates a new item of `kind` for `user` now, announces it, returns its truth entry.
    pub fn generate(&self, user_id: u64, kind: Kind) -> Option<TruthEntity> {
        self.generate_with(user_id, kind, &OneShot::default())
            .map(|(entity, _)| entity)
    }

    /// Like [`Sim::generate`], the item's deliveries carrying `fault`; also returns the data's
    /// URL as the delivery names it.
    pub fn generate_with(
        &self,
        user_id: u64,
        kind: Kind,
        fault: &OneShot,
    ) -> Option<(TruthEntity, String)> {
        self.generate_custom(user_id, kind, fault, None)
            .ok()
            .flatten()
    }

    /// Like [`Sim::generate_with`], the item's fields set from `fields` when given (`Err`: they
    /// cannot be, and nothing was made); `Ok(None)` when the user is not registered.
    pub fn generate_custom(
        &self,
        user_id: u64,
        kind: Kind,
        fault: &OneShot,
        fields: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Option<(TruthEntity, String)>, String> {
        let (entity, url, job) = {
            let mut s = self.lock();
            if !s
                .users
                .get(&user_id)
                .is_some_and(|u| u.registered && !u.revoked)
            {
                return Ok(None);
            }
            let item = match fields {
                Some(f) => s.new_custom_item(user_id, kind, f)?,
                None => s.new_item(user_id, kind, &self.base),
            };
            let index = s.record_entity(&item);
            let url = item.data_url(&s.links_base(&self.base));
            let mut job = s.announce(&item, &self.base, fault);
            if fault.gone {
                // The data is deleted before anyone can fetch it.
                s.items.remove(&item.id);
            }
            // Polar computes SleepWise™ once five nights of sleep are known.
            if kind == Kind::Sleep && s.night_count(user_id) >= 5 {
                for derived in [Kind::SleepWiseAlertness, Kind::SleepWiseCircadianBedtime] {
                    let item = s.new_item(user_id, derived, &self.base);
                    s.record_entity(&item);
                    job.extend(s.announce(&item, &self.base, &OneShot::default()));
                }
            }
            // Just recorded: a class drops only entities a tenth of its bound older.
            let entity = s.truth_entity(index).cloned();
            (entity, url, job)
        };
        for j in job {
            let _ = self.deliveries.send(j);
        }
        let entity = entity.ok_or_else(|| "the item's ground truth was dropped".to_string())?;
        Ok(Some((entity, url)))
    }
}

impl State {
    /// Makes a new item with plausible random content.
    pub(super) fn new_item(&mut self, uid: u64, kind: Kind, _base: &str) -> Item {
        let item = self.drawn_item(uid, kind);
        self.keep_item(&item);
        item
    }

    /// Keeps `item` to serve; in a class, drops the oldest beyond [`super::state::CLASS_KEPT`].
    fn keep_item(&mut self, item: &Item) {
        self.items.insert(item.id, item.clone());
        while self.settings.class > 0 && self.items.len() > super::state::CLASS_KEPT {
            self.items.pop_first();
        }
        // The start seconds taken matter only among the exercises still served.
        if self.settings.class > 0 && self.exercise_starts.len() > 2 * super::state::CLASS_KEPT {
            self.exercise_starts = self
                .items
                .values()
                .filter_map(|i| match &i.data {
                    ItemData::Exercise(e) => Some((i.user_id, e.start_time)),
                    _ => None,
                })
                .collect();
        }
    }

    /// The ground truth's entity at `position` (as [`State::record_entity`] returned it), unless
    /// a class dropped it.
    pub(super) fn truth_entity(&self, position: usize) -> Option<&TruthEntity> {
        let index = position.checked_sub(self.truth_dropped.0)?;
        self.truth.entities.get(index)
    }

    /// Makes a new item whose `fields` are the caller's (`sim trigger --data`); nothing is
    /// kept when they cannot be set.
    pub(super) fn new_custom_item(
        &mut self,
        uid: u64,
        kind: Kind,
        fields: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Item, String> {
        let mut item = self.drawn_item(uid, kind);
        super::custom::apply(kind, &mut item.data, fields)?;
        self.keep_item(&item);
        Ok(item)
    }

    /// A new item drawn from the seed, not yet kept.
    fn drawn_item(&mut self, uid: u64, kind: Kind) -> Item {
        let id = self.next_item_id;
        self.next_item_id += self.rng.random_range(1..40);
        let now = Utc::now();
        // Each user lives in one time zone, chosen from their id.
        let offset = [-300, 0, 60, 120, 180, 330][(uid % 6) as usize];
        let local_now = now.naive_utc() + chrono::Duration::minutes(offset as i64);
        let data = match kind {
            Kind::Exercise => self.new_exercise(uid, id, local_now, offset),
            Kind::Activity => self.new_activity(uid, local_now, now),
            Kind::PhysicalInformation => ItemData::Physical(Physical {
                weight: 60.0 + self.rng.random_range(0.0..30.0f64).round(),
                resting_heart_rate: self.rng.random_range(45..70),
            }),
            Kind::Sleep => {
                let device_id = device_id(uid);
                let rng = &mut self.rng;
                let mut draw = |lo: u32, hi: u32| rng.random_range(lo..hi);
                ItemData::Sleep(super::daily::new_night(
                    local_now.with_nanosecond_zero(),
                    offset,
                    device_id,
                    &mut draw,
                ))
            }
            Kind::SleepWiseAlertness | Kind::SleepWiseCircadianBedtime => {
                // Derived from the newest night (a night now when the user has none).
                let night = self.newest_night(uid).unwrap_or_else(|| {
                    let rng = &mut self.rng;
                    let mut draw = |lo: u32, hi: u32| rng.random_range(lo..hi);
                    let device_id = device_id(uid);
                    super::daily::new_night(
                        local_now.with_nanosecond_zero(),
                        offset,
                        device_id,
                        &mut draw,
                    )
                });
                ItemData::SleepWise(night)
            }
            Kind::ContinuousHeartRate => {
                let rng = &mut self.rng;
                let mut draw = |lo: u32, hi: u32| rng.random_range(lo..hi);
                ItemData::HeartRate(super::daily::new_heart_rate_day(
                    local_now.with_nanosecond_zero(),
                    &mut draw,
                ))
            }
        };
        Item {
            id,
            user_id: uid,
            kind,
            available_at: now,
            committed: false,
            data,
        }
    }

    /// A new exercise of user `uid`: a random sport and length, ending minutes ago.
    fn new_exercise(
        &mut self,
        uid: u64,
        id: u64,
        local_now: chrono::NaiveDateTime,
        offset: i32,
    ) -> ItemData {
        let duration_ms: u64 = self.rng.random_range(15 * 60_000..2 * 3_600_000);
        let duration_s = u32::try_from(duration_ms / 1000).unwrap_or(u32::MAX);
        let sports = [
            "RUNNING",
            "CYCLING",
            "WALKING",
            "SWIMMING",
            "STRENGTH_TRAINING",
        ];
        let sport = sports[self.rng.random_range(0..sports.len())].to_string();
        let start = local_now
            - chrono::Duration::seconds(duration_s as i64 + self.rng.random_range(60..900));
        let mut start = start.with_nanosecond_zero();
        // A second exercise of one user never starts in the same second (as on a real
        // device): an earlier second instead. Drawn the same for the same seed.
        while !self.exercise_starts.insert((uid, start)) {
            start -= chrono::Duration::seconds(1);
        }
        ItemData::Exercise(Exercise {
            hashed_id: hashed_id(self.settings.seed, id),
            device: "Polar Vantage V3".into(),
            device_id: device_id(uid),
            start_time: start,
            utc_offset_minutes: offset,
            duration_ms,
            distance_m: if sport == "STRENGTH_TRAINING" {
                0.0
            } else {
                f64::from(duration_s) * 3.0
            },
            sport,
            calories: duration_s / 6,
            hr_avg: self.rng.random_range(110..160),
            hr_max: self.rng.random_range(160..195),
        })
    }

    /// Today's activity of user `uid`, a new version of it when the day has one already (it keeps
    /// the day's creation time).
    fn new_activity(
        &mut self,
        uid: u64,
        local_now: chrono::NaiveDateTime,
        now: chrono::DateTime<Utc>,
    ) -> ItemData {
        let date = local_now.date().format("%Y-%m-%d").to_string();
        let created = self
            .entity_index
            .get(&(Kind::Activity, uid, date.clone()))
            .and_then(|&i| self.truth_entity(i))
            .map(|e| e.available_at)
            .unwrap_or(now);
        let steps = self.rng.random_range(500..4000);
        ItemData::Activity(Activity {
            date,
            created,
            calories: 1800 + steps / 20,
            active_calories: steps / 20,
            duration_s: 86_400,
            active_steps: steps,
        })
    }

    /// Adds the item to the ground truth (a new entity, or a new version of a day's activity).
    pub(super) fn record_entity(&mut self, item: &Item) -> usize {
        let key = (item.kind, item.user_id, item.source_id());
        let dropped = self.truth_dropped.0;
        if let Some(&i) = self.entity_index.get(&key) {
            if let Some(e) = self.truth.entities.get_mut(i - dropped) {
                e.item_ids.push(item.id);
                e.item_times.push(item.available_at);
            }
            return i;
        }
        if self.settings.class > 0 && self.truth.entities.len() >= super::state::CLASS_KEPT {
            // The oldest tenth at once: the index forgets them in one pass.
            let drop = super::state::CLASS_KEPT / 10;
            self.truth.entities.drain(..drop);
            self.truth_dropped.0 += drop;
            let first_kept = self.truth_dropped.0;
            self.entity_index.retain(|_, i| *i >= first_kept);
        }
        self.truth.entities.push(TruthEntity {
            kind: item.kind.event_type().to_string(),
            user_id: item.user_id,
            entity_id: item.source_id(),
            item_ids: vec![item.id],
            item_times: vec![item.available_at],
            available_at: item.available_at,
            transactional: Kind::TRANSACTIONAL.contains(&item.kind),
        });
        let i = self.truth_dropped.0 + self.truth.entities.len() - 1;
        self.entity_index.insert(key, i);
        i
    }
}

pub(super) trait ZeroNanos {
    fn with_nanosecond_zero(self) -> Self;
}
impl ZeroNanos for chrono::NaiveDateTime {
    fn with_nanosecond_zero(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}

/// Makes a recording's items again at their times (see [`Replayed`]); the replay's clock
/// holds while the generator is paused. A kind the simulator derives by itself (SleepWise, from
/// the nights) is left to it.
async fn replay(sim: Arc<Sim>, items: Vec<super::settings::Replayed>, shutdown: CancellationToken) {
    let mut start = tokio::time::Instant::now();
    for item in items {
        let Some(kind) = Kind::ALL.into_iter().find(|k| k.event_type() == item.kind) else {
            continue;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(start + item.after) => {}
            }
            if !sim.generator_paused() {
                break;
            }
            // Paused: the recording waits, its spacing kept.
            start += Duration::from_millis(100);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut users = sim.active_user_ids();
        users.sort_unstable();
        let Some(uid) = users.get(item.user % users.len().max(1)).copied() else {
            continue;
        };
        let fault = OneShot {
            drop: !item.delivered,
            delay_ms: item
                .delay
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ..OneShot::default()
        };
        sim.generate_with(uid, kind, &fault);
    }
}

/// Creates exercises and activity updates per user at exponential intervals (seeded), or a
/// recording's items at their times.
pub(super) async fn run(sim: Arc<Sim>, shutdown: CancellationToken) {
    let settings = sim.settings();
    if !settings.replay.is_empty() {
        return replay(sim.clone(), settings.replay.clone(), shutdown).await;
    }
    let streams: Vec<(Kind, Duration)> = [
        (Kind::Exercise, settings.exercise_every),
        (Kind::Activity, settings.activity_every),
        (Kind::Sleep, settings.sleep_every),
        (Kind::ContinuousHeartRate, settings.heart_rate_every),
    ]
    .into_iter()
    .filter_map(|(k, d)| d.filter(|d| !d.is_zero()).map(|d| (k, d)))
    .collect();
    if streams.is_empty() {
        return;
    }
    let mut due: std::collections::BTreeMap<(u64, Kind), tokio::time::Instant> =
        std::collections::BTreeMap::new();
    let draw = |sim: &Sim, mean: Duration| {
        let exp = Exp::new(1.0 / mean.as_secs_f64()).expect("a positive mean gives a valid rate");
        Duration::from_secs_f64(sim.with_rng(|r| exp.sample(r)))
    };
    loop {
        let now = tokio::time::Instant::now();
        for uid in sim.active_user_ids() {
            for (kind, mean) in &streams {
                due.entry((uid, *kind))
                    .or_insert_with(|| now + draw(&sim, *mean));
            }
        }
        let next = due.iter().min_by_key(|(_, t)| **t).map(|(k, t)| (*k, *t));
        let wake = next.map(|(_, t)| t);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sim.users_changed.notified() => continue,
            _ = async { match wake { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
        }
        if let Some(((uid, kind), at)) = next {
            if sim.generator_paused() {
                // Keep the schedule moving without making anything.
            } else if sim.generate(uid, kind).is_none() {
                due.remove(&(uid, kind));
                continue;
            }
            let mean = streams.iter().find(|(k, _)| *k == kind).map(|(_, m)| *m);
            if let Some(mean) = mean {
                // From the planned time, not from now: the schedule depends on the seed alone.
                due.insert((uid, kind), at + draw(&sim, mean));
            }
        }
    }
}

/// A user's watch: eight hex digits from a multiplicative hash of the user id (its low 32 bits).
fn device_id(uid: u64) -> String {
    format!("{:08X}", uid.wrapping_mul(2_654_435_761) & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_users_exercises_never_start_in_the_same_second() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let settings = SimSettings {
            users: 1,
            ..SimSettings::default()
        };
        let sim = Sim::new(settings, "http://127.0.0.1:9".into(), tx).unwrap();
        let uid = sim.active_user_ids()[0];
        // Far more exercises than start seconds would stay apart by chance in their ~2 h window.
        for _ in 0..3000 {
            sim.generate(uid, Kind::Exercise)
                .expect("a registered user");
        }
        let starts: std::collections::HashSet<_> = sim
            .lock()
            .items
            .values()
            .filter_map(|i| match &i.data {
                ItemData::Exercise(e) => Some(e.start_time),
                _ => None,
            })
            .collect();
        assert_eq!(
            starts.len(),
            3000,
            "every exercise starts in its own second"
        );
    }

    /// A class that triggers without end keeps a bounded simulator: the newest items, ground
    /// truth and deliveries only (before, a class of 40 triggered every 6 s grew by 2.4 MB a
    /// minute); a day's activity updated after its entity was dropped is recorded anew.
    #[test]
    fn a_class_keeps_its_newest_data_only() {
        use super::super::state::CLASS_KEPT;
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let settings = SimSettings {
            users: 0,
            class: 2,
            ..SimSettings::default()
        };
        let sim = Sim::new(settings, "http://127.0.0.1:9".into(), tx).unwrap();
        let user = sim.class_credentials()[0]["users"][0]["user_id"]
            .as_u64()
            .unwrap();
        for n in 0..CLASS_KEPT * 2 + 10 {
            let kind = if n % 50 == 0 {
                Kind::Activity
            } else {
                Kind::Exercise
            };
            let made = sim.generate(user, kind).expect("a registered user");
            assert_eq!(made.user_id, user);
        }
        let s = sim.lock();
        assert!(s.items.len() <= CLASS_KEPT, "{} items", s.items.len());
        assert!(s.truth.entities.len() <= CLASS_KEPT);
        assert!(s.truth.deliveries.len() <= 2 * CLASS_KEPT);
        assert!(s.entity_index.len() <= CLASS_KEPT);
        assert!(
            s.entity_index
                .values()
                .all(|i| s.truth_entity(*i).is_some())
        );
    }
}

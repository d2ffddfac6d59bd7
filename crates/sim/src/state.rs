//! The simulator's shared state ([`State`], behind one mutex) and the handle to it ([`Sim`]).
//! Each endpoint family adds its own `impl` blocks in its own file; the route table is in
//! `routes.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{Notify, mpsc};

use super::model::{Item, Kind, User};
use super::*;

/// How many users each student of a class gets.
pub const USERS_PER_STUDENT: u32 = 2;

pub(super) struct State {
    pub(super) settings: SimSettings,
    pub(super) rng: ChaCha8Rng,
    pub(super) next_user_id: u64,
    pub(super) next_item_id: u64,
    pub(super) next_tx_id: u64,
    pub(super) users: BTreeMap<u64, User>,
    pub(super) tokens: HashMap<String, u64>,
    pub(super) codes: HashMap<String, Code>,
    pub(super) items: BTreeMap<u64, Item>,
    /// Position of each entity in the ground truth (counting the ones a class dropped, see
    /// [`CLASS_KEPT`]), by (type, user, entity id).
    pub(super) entity_index: HashMap<(Kind, u64, String), usize>,
    /// How many of the oldest truth entities and deliveries a class dropped.
    pub(super) truth_dropped: (usize, usize),
    /// Each user's exercise start times (local, whole seconds): one device cannot start two
    /// exercises in one second, which receivers (hookrace's fingerprint) rely on.
    pub(super) exercise_starts: std::collections::HashSet<(u64, chrono::NaiveDateTime)>,
    pub(super) transactions: HashMap<u64, Transaction>,
    /// The API clients: the simulator's own (index 0, `settings.client_id`) and, in class mode,
    /// one per student (1..=N), each with its own webhook and users.
    pub(super) clients: Vec<ClientAccount>,
    pub(super) short: Window,
    pub(super) long: Window,
    pub(super) truth: Truth,
    /// What the simulator did to the receiver and what the receiver asked back (the workbench).
    pub(super) log: super::workbench::WorkLog,
}

/// An API client: its credentials, its one webhook, and the secret its next webhook gets.
#[derive(Debug, Clone)]
pub(super) struct ClientAccount {
    pub(super) id: String,
    pub(super) secret: String,
    pub(super) hook: Option<Hook>,
    /// The secret the next webhook created gets (`POST /sim/webhook-secret`), else a random one.
    pub(super) next_webhook_secret: Option<String>,
}

impl State {
    /// The client named `id` (and `secret`, when given).
    pub(super) fn client_with(&self, id: &str, secret: Option<&str>) -> Option<usize> {
        self.clients
            .iter()
            .position(|c| c.id == id && secret.is_none_or(|s| s == c.secret))
    }

    /// The client a user belongs to (the simulator's own for an unknown user).
    pub(super) fn client_of(&self, user: u64) -> usize {
        self.users.get(&user).map_or(0, |u| u.client)
    }
}

/// In a class, the most items the simulator keeps (it drops the oldest: a student's receiver
/// fetches within seconds), and the most ground-truth entities; twice that many deliveries. A
/// class that triggers everyone every few seconds made data without end before (a class of 40
/// every 6 s: 800 items a minute, all kept), while a demo or a soak keeps everything, as Polar
/// keeps 30 days.
pub(super) const CLASS_KEPT: usize = 5_000;

/// The simulator: shared state plus what is needed to send deliveries and PINGs.
pub struct Sim {
    pub(super) state: Mutex<State>,
    /// `http://host:port` of this simulator; every URL it hands out starts with it.
    pub base: String,
    pub(super) http: reqwest::Client,
    pub(super) deliveries: mpsc::UnboundedSender<DeliveryJob>,
    /// Woken when users are added, so the generator schedules them.
    pub users_changed: Notify,
    /// Class mode: the teacher's token for the class-wide controls (from the operating system's
    /// randomness, never the seed: a seed is no secret).
    pub(super) teacher_token: Option<String>,
    /// The class's scoreboard, shared by its streams (started with the first).
    pub(super) board: std::sync::OnceLock<super::class::Board>,
}

impl Sim {
    /// A simulator reachable at `base`; `deliveries` receives the jobs the sender task runs.
    pub fn new(
        settings: SimSettings,
        base: String,
        deliveries: mpsc::UnboundedSender<DeliveryJob>,
    ) -> anyhow::Result<Arc<Sim>> {
        // The simulator stands beside the application and builds its own client (as Polar
        // would): a timeout, and no redirects followed (a receiver's redirect is a failed
        // delivery, not a new address). reqwest is built without a TLS provider (Cargo.toml):
        // install rustls's ring one unless the process has one already (an error says so).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("hookrace-sim (AccessLink simulator)")
            .build()?;
        let rng = ChaCha8Rng::seed_from_u64(settings.seed);
        let n = settings.users;
        let settings_class = settings.class;
        let sim = Arc::new(Sim {
            state: Mutex::new(State {
                settings,
                rng,
                next_user_id: 10_001,
                next_item_id: 1_000_001,
                next_tx_id: 500,
                users: BTreeMap::new(),
                tokens: HashMap::new(),
                codes: HashMap::new(),
                items: BTreeMap::new(),
                entity_index: HashMap::new(),
                truth_dropped: (0, 0),
                exercise_starts: Default::default(),
                transactions: HashMap::new(),
                clients: Vec::new(),
                short: Window::default(),
                long: Window::default(),
                truth: Truth::default(),
                log: Default::default(),
            }),
            base,
            http,
            deliveries,
            users_changed: Notify::new(),
            board: std::sync::OnceLock::new(),
            teacher_token: (settings_class > 0).then(|| {
                use rand::RngExt;
                let bytes: [u8; 16] = rand::rng().random();
                hex::encode(bytes)
            }),
        });
        {
            let mut s = sim.lock();
            let own = ClientAccount {
                id: s.settings.client_id.clone(),
                secret: s.settings.client_secret.clone(),
                hook: None,
                next_webhook_secret: None,
            };
            s.clients.push(own);
            for student in 1..=s.settings.class {
                let secret = s.random_token(20);
                s.clients.push(ClientAccount {
                    id: format!("student-{student:02}"),
                    secret,
                    hook: None,
                    next_webhook_secret: None,
                });
                for _ in 0..USERS_PER_STUDENT {
                    s.new_user_of(true, student as usize);
                }
            }
        }
        for _ in 0..n {
            sim.add_user(true);
        }
        Ok(sim)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a simulator bug; keep serving with the state as is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a user with a token; registered when `registered`.
    pub fn add_user(&self, registered: bool) -> (u64, String) {
        self.add_user_with(registered, None)
    }

    /// Like [`Sim::add_user`] with the access token given (when it is not taken already).
    pub fn add_user_with(&self, registered: bool, token: Option<String>) -> (u64, String) {
        let out = {
            let mut s = self.lock();
            let (id, random) = s.new_user(registered);
            match token {
                Some(t) if !t.is_empty() && !s.tokens.contains_key(&t) => {
                    s.tokens.remove(&random);
                    s.tokens.insert(t.clone(), id);
                    if let Some(u) = s.users.get_mut(&id) {
                        u.token = t.clone();
                    }
                    (id, t)
                }
                _ => (id, random),
            }
        };
        self.users_changed.notify_one();
        out
    }

    /// The current access token of a user.
    pub fn token_of(&self, user_id: u64) -> Option<String> {
        self.lock().users.get(&user_id).map(|u| u.token.clone())
    }

    /// Registered, not revoked users of the simulator's own client (not a class's students').
    pub fn own_user_ids(&self) -> Vec<u64> {
        let s = self.lock();
        s.users
            .values()
            .filter(|u| u.registered && !u.revoked && u.client == 0)
            .map(|u| u.id)
            .collect()
    }

    /// Registered, not revoked users.
    pub fn active_user_ids(&self) -> Vec<u64> {
        let s = self.lock();
        s.users
            .values()
            .filter(|u| u.registered && !u.revoked)
            .map(|u| u.id)
            .collect()
    }

    /// The generator's randomness (seeded): a value from `f`.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
        f(&mut self.lock().rng)
    }

    pub fn settings(&self) -> SimSettings {
        self.lock().settings.clone()
    }

    /// How its webhook deliveries are signed.
    pub fn dialect(&self) -> accesslink::dialect::Dialect {
        self.lock().settings.dialect
    }

    pub fn truth(&self) -> Truth {
        self.lock().truth.clone()
    }

    /// Whether the generator is paused (fault `generator_paused`).
    pub fn generator_paused(&self) -> bool {
        self.lock().settings.faults.generator_paused
    }
}

//! Every count hookrace keeps, by name: what the channels, the notify senders and the poller
//! count, and what `/status` and `/metrics` read. The store keeps the counts (in memory, written
//! with each commit) by these names without knowing what they count ([`CounterName`]); the four
//! that describe its records are the store's own ([`RecordCount`]), and their variants here take
//! its names.

pub use crate::accesslink::error::Outcome;
pub use crate::store::{CounterName, RecordCount};

/// A counter. Its name on disk, and in the counters `/status` and `/metrics` read, is
/// [`CounterName::name`]; the three families carry the part that varies (an outcome, an
/// endpoint). A notify sink's attempts, named by the configuration, are the notify sender's own
/// count ([`crate::notify::SinkAttempts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    WebhookDeliveries,
    WebhookAccepted,
    WebhookDuplicates,
    WebhookPings,
    WebhookRejectedSignature,
    WebhookRejectedMalformed,
    WebhookRejectedTooLarge,
    WebhookFetchesOk,
    WebhookFetchesFailed,
    /// Records holding a fetch job now (the store raises and lowers it).
    WebhookFetchesPending,
    WebhookFetchRequests,
    PollStarved,
    PollSkipped,
    PollCycles,
    PollEmptyCycles,
    PollErrors,
    PollRateLimited,
    PollItems,
    PollNewEntities,
    /// A poll request's outcome (`poll.outcome.empty`, …).
    PollOutcome(Outcome),
    /// A fetch request's outcome (`webhook.fetch_outcome.data`, …).
    FetchOutcome(Outcome),
    /// Poll requests to one endpoint (`poll.requests.notifications`, …).
    PollRequests(PollEndpoint),
}

impl CounterName for Counter {
    fn name(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Counter::WebhookDeliveries => "webhook.deliveries".into(),
            Counter::WebhookAccepted => RecordCount::FirstDeliveries.name(),
            Counter::WebhookDuplicates => RecordCount::Duplicates.name(),
            Counter::WebhookPings => "webhook.pings".into(),
            Counter::WebhookRejectedSignature => "webhook.rejected.signature".into(),
            Counter::WebhookRejectedMalformed => "webhook.rejected.malformed".into(),
            Counter::WebhookRejectedTooLarge => "webhook.rejected.too_large".into(),
            Counter::WebhookFetchesOk => RecordCount::Fetched.name(),
            Counter::WebhookFetchesFailed => RecordCount::FetchFailed.name(),
            Counter::WebhookFetchesPending => RecordCount::FetchesPending.name(),
            Counter::WebhookFetchRequests => "webhook.fetch_requests".into(),
            Counter::PollStarved => "poll.starved".into(),
            Counter::PollSkipped => "poll.skipped".into(),
            Counter::PollCycles => "poll.cycles".into(),
            Counter::PollEmptyCycles => "poll.empty_cycles".into(),
            Counter::PollErrors => "poll.errors".into(),
            Counter::PollRateLimited => "poll.rate_limited".into(),
            Counter::PollItems => "poll.items".into(),
            Counter::PollNewEntities => "poll.new_entities".into(),
            Counter::PollOutcome(o) => format!("poll.outcome.{}", o.name()).into(),
            Counter::FetchOutcome(o) => format!("webhook.fetch_outcome.{}", o.name()).into(),
            Counter::PollRequests(e) => format!("poll.requests.{}", e.name()).into(),
        }
    }
}

/// The AccessLink endpoints the poller counts its requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollEndpoint {
    Notifications,
    CreateTransaction,
    ListTransaction,
    GetItem,
    Commit,
    ListExercises,
    GetExercise,
    /// The safety net's listings (`channels::audit`).
    AuditList,
    /// The safety net fetching what no webhook announced.
    AuditGet,
}

impl PollEndpoint {
    /// Every endpoint, in the order the status document lists them.
    pub const ALL: [PollEndpoint; 9] = [
        PollEndpoint::Notifications,
        PollEndpoint::CreateTransaction,
        PollEndpoint::ListTransaction,
        PollEndpoint::GetItem,
        PollEndpoint::Commit,
        PollEndpoint::ListExercises,
        PollEndpoint::GetExercise,
        PollEndpoint::AuditList,
        PollEndpoint::AuditGet,
    ];

    /// Its name in the counters, `/status` and `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            PollEndpoint::Notifications => "notifications",
            PollEndpoint::CreateTransaction => "create_transaction",
            PollEndpoint::ListTransaction => "list_transaction",
            PollEndpoint::GetItem => "get_item",
            PollEndpoint::Commit => "commit",
            PollEndpoint::ListExercises => "list_exercises",
            PollEndpoint::GetExercise => "get_exercise",
            PollEndpoint::AuditList => "audit_list",
            PollEndpoint::AuditGet => "audit_get",
        }
    }
}

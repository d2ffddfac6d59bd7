//! The one poll loop: it owns shutdown, the cycles (one at a time, each awaited), the skipped
//! ticks and the schedule facts `/status` shows (`poll.next_cycle_at`). Only when the next cycle
//! is due varies, by [`Schedule`]: a fixed interval (the first cycle at once, as a poller does on
//! start-up), a cron expression through tokio-cron-scheduler, or the adaptive auditor's pace
//! (see `auditor.rs`).
//!
//! A tick that comes while a cycle runs is skipped (counted in `poll.skipped`): cycles never
//! overlap. Shutdown stops the wait at once; a running cycle ends at the client's next wait
//! (the client is cancelled by shutdown too) or is stopped by the daemon's grace bound.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::channels::auditor::Auditor;
use crate::channels::poller::Poller;
use crate::config::{PollSchedule, PollStrategy};
use crate::counter::Counter;

/// When the next cycle is due.
enum Schedule {
    /// Every `every`, from the start of the previous cycle.
    Every {
        every: Duration,
        next: tokio::time::Instant,
    },
    /// At the times of a cron expression: the scheduler sends a tick on `ticks` at each.
    Cron {
        scheduler: tokio_cron_scheduler::JobScheduler,
        job: uuid::Uuid,
        ticks: mpsc::UnboundedReceiver<()>,
    },
    /// The adaptive auditor's pace.
    Adaptive(Box<Auditor>),
}

impl Schedule {
    async fn new(
        poller: &Poller,
        strategy: &PollStrategy,
        schedule: &PollSchedule,
    ) -> anyhow::Result<Schedule> {
        Ok(match (strategy, schedule) {
            (PollStrategy::Adaptive { max_every }, PollSchedule::Every(every)) => {
                Schedule::Adaptive(Box::new(Auditor::new(poller, *every, *max_every)))
            }
            (_, PollSchedule::Every(every)) => Schedule::Every {
                every: *every,
                next: tokio::time::Instant::now(),
            },
            (_, PollSchedule::Cron(expr)) => cron(expr).await?,
        })
    }

    /// When the next cycle is due, as `/status` shows it.
    async fn next_at(&mut self) -> Option<DateTime<Utc>> {
        let from_instant = |at: tokio::time::Instant| {
            let wait = at.saturating_duration_since(tokio::time::Instant::now());
            Some(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default())
        };
        match self {
            Schedule::Every { next, .. } => from_instant(*next),
            Schedule::Cron { scheduler, job, .. } => {
                scheduler.next_tick_for_job(*job).await.ok().flatten()
            }
            Schedule::Adaptive(auditor) => from_instant(auditor.next_at()),
        }
    }

    /// Returns when the next cycle is due.
    async fn due(&mut self, poller: &Poller) {
        match self {
            Schedule::Every { next, .. } => tokio::time::sleep_until(*next).await,
            Schedule::Cron { ticks, .. } => {
                if ticks.recv().await.is_none() {
                    // The scheduler is gone (it stops only at shutdown): wait for that.
                    std::future::pending::<()>().await;
                }
            }
            Schedule::Adaptive(auditor) => auditor.due(poller).await,
        }
    }

    /// After a cycle that started at `started`: the ticks it overran (skipped), and what the
    /// auditor reads from its report.
    fn after(
        &mut self,
        poller: &Poller,
        started: tokio::time::Instant,
        report: &crate::channels::poller::CycleReport,
    ) -> u64 {
        match self {
            Schedule::Every { every, next } => {
                *next = started + *every;
                let mut skipped = 0;
                let now = tokio::time::Instant::now();
                while *next <= now {
                    *next += *every;
                    skipped += 1;
                }
                skipped
            }
            Schedule::Cron { ticks, .. } => {
                let mut skipped = 0;
                while ticks.try_recv().is_ok() {
                    skipped += 1;
                }
                skipped
            }
            Schedule::Adaptive(auditor) => {
                auditor.after(poller, report);
                0
            }
        }
    }

    async fn stop(self) {
        if let Schedule::Cron { mut scheduler, .. } = self {
            let _ = scheduler.shutdown().await;
        }
    }
}

/// A cron schedule: tokio-cron-scheduler sends a tick at each time of `expr`.
async fn cron(expr: &str) -> anyhow::Result<Schedule> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let scheduler = JobScheduler::new()
        .await
        .map_err(|e| anyhow::anyhow!("starting the poll scheduler: {e}"))?;
    let (tx, ticks) = mpsc::unbounded_channel();
    let job = Job::new_async(expr, move |_, _| {
        let tx = tx.clone();
        Box::pin(async move {
            // The loop has ended (shutdown): nothing to tick.
            let _ = tx.send(());
        })
    })
    .map_err(|e| anyhow::anyhow!("the poll schedule {expr:?}: {e}"))?;
    let job = scheduler
        .add(job)
        .await
        .map_err(|e| anyhow::anyhow!("scheduling the poller: {e}"))?;
    scheduler
        .start()
        .await
        .map_err(|e| anyhow::anyhow!("starting the poll scheduler: {e}"))?;
    Ok(Schedule::Cron {
        scheduler,
        job,
        ticks,
    })
}

/// Polls on `schedule` (shaped by `strategy`) until `shutdown`.
pub async fn run(
    poller: Arc<Poller>,
    strategy: PollStrategy,
    schedule: PollSchedule,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut schedule = Schedule::new(&poller, &strategy, &schedule).await?;
    let mut overrun_logged = false;
    while !shutdown.is_cancelled() {
        let next = schedule.next_at().await;
        if let Ok(mut rt) = poller.runtime.write() {
            rt.next_cycle_at = next;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            () = schedule.due(&poller) => {}
        }
        let started = tokio::time::Instant::now();
        let report = match schedule {
            Schedule::Adaptive(_) => poller.audit().await,
            _ => poller.cycle().await,
        };
        let skipped = schedule.after(&poller, started, &report);
        if skipped > 0 {
            poller.store.incr(Counter::PollSkipped, skipped);
            if !overrun_logged {
                tracing::info!(
                    skipped,
                    "a poll cycle outlasted its interval: the ticks it overran are skipped"
                );
                overrun_logged = true;
            }
        }
    }
    schedule.stop().await;
    Ok(())
}

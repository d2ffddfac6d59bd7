//! The one place hookrace's core spawns a task: `clippy.toml` refuses `tokio::spawn` everywhere
//! else (`clippy::disallowed_methods`), so no task is started without an owner. [`spawn`]'s
//! handle is `#[must_use]`: its owner awaits it, aborts it, or holds it as an
//! [`AbortOnDropHandle`] that ends the task with the owner; none is detached, and a shutdown can
//! account for everything that runs. Blocking work goes to a `TaskTracker`'s `spawn_blocking`,
//! which the shutdown waits for.

use std::future::Future;

use tokio::task::JoinHandle;
pub use tokio_util::task::AbortOnDropHandle;

/// Spawns `task`, named `name` in the trace log; the handle is its owner's to await or abort.
#[must_use = "a task's owner awaits or aborts it: hookrace detaches none"]
pub fn spawn<F>(name: &'static str, task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tracing::trace!(task = name, "task spawned");
    #[allow(clippy::disallowed_methods)] // The one place: see the module's doc.
    tokio::spawn(task)
}

/// Spawns `task` for an owner that keeps no handle to await: it ends when the returned guard is
/// dropped (or by itself before).
#[must_use = "dropping the guard ends the task at once"]
pub fn spawn_owned<F>(name: &'static str, task: F) -> AbortOnDropHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    AbortOnDropHandle::new(spawn(name, task))
}

//! The store's errors where a caller acts on the kind: a store another process holds (the command
//! line then asks the running daemon instead), and a failed group commit (shared by every caller
//! the commit answers). Everything else is an `anyhow` chain saying what was being done.

use std::path::PathBuf;
use std::sync::Arc;

/// Why [`Store::open`](super::Store::open) failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process (normally the daemon) has the store open: sled locks it exclusively.
    #[error("the store at {} is in use by another process (is `hookrace run` running?)", path.display())]
    InUse { path: PathBuf },
    /// A command that only reads found no store: nothing is created for it.
    #[error("there is no store at {} (nothing has run with this configuration yet: `hookrace run` creates it; a demo keeps one only with --store DIR)", path.display())]
    Missing { path: PathBuf },
    /// The store belongs to another user (the service's dynamic user).
    #[error("permission denied on the store at {} (it belongs to the service: run the command with sudo)", path.display())]
    Denied { path: PathBuf },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl OpenError {
    /// Tells sled's "could not acquire lock" and a permission refused (anywhere on the way:
    /// creating, restricting or opening) apart from every other failure to open. sled 0.34
    /// reports the lock only as an `io::Error` of kind `Other` with that message
    /// (`Config::try_lock`).
    pub(super) fn classify(path: &std::path::Path, e: anyhow::Error) -> OpenError {
        let denied = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
        });
        if denied {
            return OpenError::Denied {
                path: path.to_path_buf(),
            };
        }
        let locked = e.downcast_ref::<sled::Error>().is_some_and(|s| {
            matches!(s, sled::Error::Io(io) if {
                // sled wraps flock's own error in its message: only "would block" means another
                // process holds the lock; anything else (a permission, a file system) is an error.
                let m = io.to_string();
                m.starts_with("could not acquire lock") && m.contains("WouldBlock")
            })
        });
        if locked {
            OpenError::InUse {
                path: path.to_path_buf(),
            }
        } else {
            OpenError::Other(e)
        }
    }
}

/// A group commit that failed: every caller it would have answered gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("committing the store: {0:#}")]
pub struct CommitError(pub(super) Arc<anyhow::Error>);

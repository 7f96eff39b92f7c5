//! The node's error type. After any of these the node has not started, or
//! the one operation named has failed; nothing already queued is affected.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The queue database could not be opened or compacted at start
    /// (another process holds it, or the file is damaged or unreadable);
    /// the node did not start, and the file is as it was.
    #[error("cannot open the queue database {path}: {error}")]
    QueueOpen { path: PathBuf, error: redb::Error },
    /// The queue database could not be read or written.
    #[error("queue database: {0}")]
    Store(redb::Error),
    /// A queue record could not be encoded or decoded.
    #[error("queue record: {0}")]
    Record(postcard::Error),
    /// A group commit failed; none of its writes took effect. Shared by
    /// every writer in the group, so the cause is shared too.
    #[error("queue commit failed: {0}")]
    Commit(std::sync::Arc<Error>),
    /// A task doing a blocking write panicked or was cancelled; its write
    /// may or may not have taken effect, nothing else is affected.
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The queue database was closed after a failed commit and cannot be
    /// opened again yet (the disk still full); tried again shortly.
    #[error("queue database unavailable until it can be opened again")]
    QueueUnavailable,
    /// The queue's writer thread is gone (the node is shutting down).
    #[error("queue writer stopped")]
    QueueClosed,
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: SocketAddr, error: std::io::Error },
    /// The mesh could not start (certificates, gossip port); the node did not start.
    #[error("mesh: {0}")]
    Mesh(#[from] magicmx_gossip::Error),
    /// The DNS resolver could not be set up (the system's resolver
    /// configuration); the node did not start.
    #[error("DNS resolver: {0}")]
    Dns(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("TLS certificate or key {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Store(e)
    }
}
impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        Error::Record(e)
    }
}
/// redb's specific errors all become [`Error::Store`].
macro_rules! store_error_from {
    ($($redb:ident),*) => {$(
        impl From<redb::$redb> for Error {
            fn from(e: redb::$redb) -> Self {
                Error::Store(e.into())
            }
        }
    )*};
}
store_error_from!(DatabaseError, TransactionError, TableError, StorageError, CommitError);

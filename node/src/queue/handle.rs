//! The queue database's handle, and its replacement after a failed commit.
//! redb latches an I/O error met in a commit (a full disk): every later
//! operation on that handle fails with `PreviousIo`, even once there is
//! room again. Whoever sees a commit fail reports it here; if the handle is
//! latched, it is closed and the file opened again (redb repairs what the
//! failed commit left marked). The swap happens under the write lock, and
//! every user holds the read lock for as long as its transaction lives, so
//! each sees the old handle or the new one, never a closed one. Nothing
//! committed is lost; what failed to commit was never acknowledged.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::{Database, StorageError, TransactionError};

use crate::error::{Error, Result};

/// redb's page cache: envelopes are small and bodies are elsewhere (redb's
/// default is 1 GiB).
pub(super) const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// While the file cannot be opened again (the disk still full), another try
/// at most this often.
const RETRY_OPEN_EVERY: Duration = Duration::from_secs(1);

/// The database, reopened when a commit has latched an error.
pub(super) struct Handle {
    slot: RwLock<Slot>,
    path: PathBuf,
    /// Times the database was opened again after a failed commit.
    reopened: AtomicU64,
}

struct Slot {
    /// `None` between closing a latched handle and opening the file again.
    db: Option<Database>,
    /// Bumped by every replacement, so that two who saw the same failure
    /// reopen once.
    generation: u64,
    /// The last failed try at opening the file again.
    last_try: Option<Instant>,
}

/// The database, read-locked: it is not replaced while this is held. Keep
/// it for as long as a transaction begun on it lives.
pub(super) struct Guard<'a>(RwLockReadGuard<'a, Slot>);

impl Deref for Guard<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        self.0.db.as_ref().expect("a guard is only made over an open database")
    }
}

impl Guard<'_> {
    /// Which handle this is, for [`Handle::failed`].
    pub(super) fn generation(&self) -> u64 {
        self.0.generation
    }
}

/// Opens (or creates) the queue database file.
pub(super) fn open_file(path: &Path) -> Result<Database> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| Error::QueueOpen { path: path.to_path_buf(), error: e.into() })
}

impl Handle {
    pub(super) fn new(db: Database, path: PathBuf) -> Handle {
        let slot = Slot { db: Some(db), generation: 0, last_try: None };
        Handle { slot: RwLock::new(slot), path, reopened: AtomicU64::new(0) }
    }

    /// The database at `now`. If an earlier reopening failed, the file is
    /// opened again first (at most every [`RETRY_OPEN_EVERY`]).
    pub(super) fn get(&self, now: Instant) -> Result<Guard<'_>> {
        let slot = self.slot.read().unwrap();
        if slot.db.is_some() {
            return Ok(Guard(slot));
        }
        let generation = slot.generation;
        drop(slot);
        self.reopen(generation, now);
        let slot = self.slot.read().unwrap();
        match slot.db.is_some() {
            true => Ok(Guard(slot)),
            false => Err(Error::QueueUnavailable),
        }
    }

    /// A commit on handle `generation` failed. If that handle has latched
    /// the error, it is replaced. Call without holding a [`Guard`].
    pub(super) fn failed(&self, generation: u64, now: Instant) {
        {
            let slot = self.slot.read().unwrap();
            let Some(db) = slot.db.as_ref().filter(|_| slot.generation == generation) else { return };
            // No one else holds a write transaction while we hold the read
            // lock and the caller's has ended; a latched handle refuses a new one.
            match db.begin_write() {
                Ok(txn) => {
                    let _ = txn.abort();
                    return;
                }
                Err(TransactionError::Storage(StorageError::PreviousIo | StorageError::Io(_))) => {}
                Err(error) => {
                    tracing::warn!(%error, "queue database: cannot tell whether a failed commit latched");
                }
            }
        }
        self.reopen(generation, now);
    }

    /// Closes handle `generation` (if still in use) and opens the file again.
    fn reopen(&self, generation: u64, now: Instant) {
        let mut slot = self.slot.write().unwrap();
        if slot.generation != generation {
            return;
        }
        if slot.db.is_none()
            && slot.last_try.is_some_and(|t| now.saturating_duration_since(t) < RETRY_OPEN_EVERY)
        {
            return;
        }
        if slot.db.take().is_some() {
            tracing::warn!(path = %self.path.display(), "queue database: a commit failed and latched its error; opening the file again");
        }
        slot.generation += 1;
        match open_file(&self.path) {
            Ok(db) => {
                slot.db = Some(db);
                slot.last_try = None;
                self.reopened.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %self.path.display(), "queue database opened again; the queue goes on");
            }
            Err(error) => {
                slot.last_try = Some(now);
                tracing::error!(%error, "queue database cannot be opened again yet; retrying");
            }
        }
    }

    /// Runs `f` on the database with no one else using it (to compact it).
    pub(super) fn exclusive<T>(&self, f: impl FnOnce(&mut Database) -> T) -> Option<T> {
        let mut slot = self.slot.write().unwrap();
        slot.db.as_mut().map(f)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Times the database was opened again after a failed commit.
    pub(super) fn reopened(&self) -> u64 {
        self.reopened.load(Ordering::Relaxed)
    }
}

//! The redb store behind the queue. One writer thread takes requests from
//! every session and commits them in groups: each commit is durable
//! (fsync'd) before any of its requesters hears back, so a session says 250
//! only for a message that is on disk, and concurrent sessions share fsyncs.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::envelope::{Envelope, QueueId};
use crate::error::{Error, Result};

/// Envelopes by queue id (postcard-encoded).
const ENVELOPES: TableDefinition<u64, &[u8]> = TableDefinition::new("envelopes");
/// Message content by queue id, `Received:` header included.
const CONTENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("contents");

/// Requests beyond this many wait for the next group.
const MAX_GROUP: usize = 512;

enum Write {
    Insert { id: QueueId, envelope: Vec<u8>, content: Vec<u8> },
    Update { id: QueueId, envelope: Vec<u8> },
    Remove { id: QueueId },
}

struct Request {
    write: Write,
    done: oneshot::Sender<Result<()>>,
}

/// A handle on the queue; cheap to clone. When the last handle is dropped the
/// writer finishes what it was given and the database is closed.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    writer: Option<mpsc::UnboundedSender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
    next_id: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Queue {
    /// Opens (or creates) the queue database at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<Queue> {
        let db = Database::create(path)
            .map_err(|e| Error::QueueOpen { path: path.to_path_buf(), reason: e.to_string() })?;
        let db = Arc::new(db);
        let txn = db.begin_write()?;
        txn.open_table(ENVELOPES)?;
        txn.open_table(CONTENTS)?;
        txn.commit()?;
        let last = {
            let txn = db.begin_read()?;
            let table = txn.open_table(ENVELOPES)?;
            let last = table.last()?.map(|(k, _)| k.value()).unwrap_or(0);
            last
        };
        // Ids never repeat, even after the queue empties: they start above
        // both the last one stored and the current time in microseconds.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64;
        let next_id = AtomicU64::new(last.max(now) + 1);
        let (writer, requests) = mpsc::unbounded_channel();
        let writer_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || run_writer(writer_db, requests))
            .map_err(|error| Error::Io { path: path.to_path_buf(), error })?;
        let inner = Inner { db, writer: Some(writer), thread: Some(thread), next_id };
        Ok(Queue { inner: Arc::new(inner) })
    }

    pub(super) fn db(&self) -> &Database {
        &self.inner.db
    }

    /// A fresh queue id.
    pub fn next_id(&self) -> QueueId {
        QueueId(self.inner.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Stores a message durably; returns once the commit is on disk.
    pub async fn insert(&self, id: QueueId, envelope: &Envelope, content: Vec<u8>) -> Result<()> {
        let envelope = postcard::to_stdvec(envelope)?;
        self.submit(Write::Insert { id, envelope, content }).await
    }

    /// Replaces a message's envelope (recipient states) durably.
    pub async fn update(&self, id: QueueId, envelope: &Envelope) -> Result<()> {
        let envelope = postcard::to_stdvec(envelope)?;
        self.submit(Write::Update { id, envelope }).await
    }

    /// Removes a message durably.
    pub async fn remove(&self, id: QueueId) -> Result<()> {
        self.submit(Write::Remove { id }).await
    }

    async fn submit(&self, write: Write) -> Result<()> {
        let (done, result) = oneshot::channel();
        let writer = self.inner.writer.as_ref().ok_or(Error::QueueClosed)?;
        writer.send(Request { write, done }).map_err(|_| Error::QueueClosed)?;
        result.await.map_err(|_| Error::QueueClosed)?
    }

    /// Every queued message's id and envelope, oldest first.
    pub fn list(&self) -> Result<Vec<(QueueId, Envelope)>> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(ENVELOPES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((QueueId(k.value()), postcard::from_bytes(v.value())?));
        }
        Ok(out)
    }

    pub fn envelope(&self, id: QueueId) -> Result<Option<Envelope>> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(ENVELOPES)?;
        let value = table.get(id.0)?;
        Ok(match value {
            Some(v) => Some(postcard::from_bytes(v.value())?),
            None => None,
        })
    }

    pub fn content(&self, id: QueueId) -> Result<Option<Vec<u8>>> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(CONTENTS)?;
        let value = table.get(id.0)?;
        Ok(value.map(|v| v.value().to_vec()))
    }
}

/// The writer thread: gathers every waiting request into one transaction.
fn run_writer(db: Arc<Database>, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = requests.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let result = commit(&db, &group);
        for request in group.drain(..) {
            let outcome = result.as_ref().map_err(|e| Error::Commit(e.to_string()));
            let _ = request.done.send(outcome.copied());
        }
    }
}

fn commit(db: &Database, group: &[Request]) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate).map_err(|e| Error::Store(redb::Error::from(e)))?;
    {
        let mut envelopes = txn.open_table(ENVELOPES)?;
        let mut contents = txn.open_table(CONTENTS)?;
        for request in group {
            match &request.write {
                Write::Insert { id, envelope, content } => {
                    envelopes.insert(id.0, envelope.as_slice())?;
                    contents.insert(id.0, content.as_slice())?;
                }
                Write::Update { id, envelope } => {
                    envelopes.insert(id.0, envelope.as_slice())?;
                }
                Write::Remove { id } => {
                    envelopes.remove(id.0)?;
                    contents.remove(id.0)?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

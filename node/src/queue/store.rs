//! The redb store behind the queue: envelopes, the headers this node adds
//! to each message, the bodies of messages that came in one piece (64 KiB
//! at most: most mail), and notes on unanswered messages; larger bodies
//! live in the spool beside it (`spool.rs`). One writer thread takes requests from
//! every session and commits them in groups: each commit is durable
//! (fsync'd, after the spool directory's own fsync) before any of its
//! requesters hears back, so a session says 250 only for a message that is
//! on disk, and concurrent sessions share fsyncs. Beside each new message it
//! notes the message as unanswered until the session reports its 250
//! written (see `crate::resend`). A failed commit is reported to the
//! database's handle, which replaces itself if redb latched the error
//! (`handle.rs`): a full disk stops the queue only while it is full.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use tokio::sync::{mpsc, oneshot};

use super::body::{Arrival, Body};
use super::envelope::{Envelope, QueueId};
use super::handle::{self, Guard, Handle};
use super::spool::Spool;
use crate::error::{Error, Result};

/// Envelopes by queue id (postcard-encoded).
const ENVELOPES: TableDefinition<u64, &[u8]> = TableDefinition::new("envelopes");
/// What the queue knows of each body: the headers this node puts in front
/// of it (postcard-encoded [`Arrival`]).
const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
/// The bodies kept here rather than in a spool file: those that came in one
/// piece. They share the group commit's fsync with everything else.
const INLINE: TableDefinition<u64, &[u8]> = TableDefinition::new("inline bodies");
/// Whole message contents by queue id, as releases before the spool kept
/// them: moved into the spool when the queue is opened.
const CONTENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("contents");

/// Messages whose 250 is not known to have been written, by queue id: the
/// postcard-encoded [`Unanswered`] record.
const UNANSWERED: TableDefinition<u64, &[u8]> = TableDefinition::new("unanswered");

/// Requests beyond this many wait for the next group.
const MAX_GROUP: usize = 512;

/// Once the queue has drained, a database file larger than this is
/// compacted: a backlog's high-water mark is given back.
const COMPACT_ABOVE: u64 = 8 * 1024 * 1024;

/// A message committed before its 250 was known to be written: the client
/// may send it again. `fingerprint` is its [`crate::resend`] fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unanswered {
    pub fingerprint: [u8; 32],
    /// Unix seconds.
    pub arrived: u64,
}

enum Write {
    /// A message whose body is either here (`inline`) or in the spool, fsync'd.
    Insert {
        id: QueueId,
        envelope: Vec<u8>,
        body: Vec<u8>,
        inline: Option<Arc<Vec<u8>>>,
        unanswered: Option<Vec<u8>>,
    },
    Update {
        id: QueueId,
        envelope: Vec<u8>,
    },
    Remove {
        id: QueueId,
    },
    /// The 250 for the message was written (or it expired): forget its
    /// [`Unanswered`] record. Nobody waits for this one.
    Answered {
        id: QueueId,
    },
}

struct Request {
    write: Write,
    done: Option<oneshot::Sender<Result<()>>>,
}

/// A handle on the queue; cheap to clone. When the last handle is dropped the
/// writer finishes what it was given and the database is closed.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared by every reader and the writer; taken whole only to compact
    /// or to replace it after a failed commit (`handle.rs`).
    db: Arc<Handle>,
    spool: Spool,
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
    /// Opens (or creates) the queue in `data_dir` (`queue.redb` and
    /// `spool/`) and starts its writer. What a crash left half done is
    /// tidied: bodies without an envelope are removed, and the database is
    /// compacted, giving back the space of a backlog that has drained.
    pub fn open(data_dir: &Path) -> Result<Queue> {
        let path = data_dir.join("queue.redb");
        let spool_dir = data_dir.join("spool");
        let spool = Spool::open(&spool_dir).map_err(|error| Error::Io { path: spool_dir.clone(), error })?;
        let mut db = handle::open_file(&path)?;
        let txn = db.begin_write()?;
        txn.open_table(ENVELOPES)?;
        txn.open_table(BODIES)?;
        txn.open_table(INLINE)?;
        txn.open_table(CONTENTS)?;
        txn.open_table(UNANSWERED)?;
        txn.commit()?;
        move_contents_to_spool(&db, &spool)?;
        remove_orphans(&db, &spool)?;
        db.compact().map_err(|e| Error::QueueOpen { path: path.to_path_buf(), error: e.into() })?;
        let last = {
            let txn = db.begin_read()?;
            let table = txn.open_table(ENVELOPES)?;
            let last = table.last()?.map(|(k, _)| k.value()).unwrap_or(0);
            last
        };
        let db = Arc::new(Handle::new(db, path.clone()));
        // Ids never repeat, even after the queue empties: they start above
        // both the last one stored and the current time in microseconds.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64;
        let next_id = AtomicU64::new(last.max(now) + 1);
        let (writer, requests) = mpsc::unbounded_channel();
        let (writer_db, writer_spool) = (db.clone(), spool.clone());
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || run_writer(writer_db, writer_spool, requests))
            .map_err(|error| Error::Io { path: path.to_path_buf(), error })?;
        let inner = Inner { db, spool, writer: Some(writer), thread: Some(thread), next_id };
        Ok(Queue { inner: Arc::new(inner) })
    }

    /// The database, for as long as the guard is held (keep it while a
    /// transaction begun on it lives).
    pub(super) fn db(&self) -> Result<Guard<'_>> {
        self.inner.db.get(Instant::now())
    }

    /// One write transaction outside the group commit (rare writes: the
    /// penalties, the trust list), committed; a failed commit is reported
    /// so that a latched handle is replaced.
    pub(super) fn write_now<T>(&self, write: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let db = self.db()?;
        let generation = db.generation();
        let result = db.begin_write().map_err(Error::from).and_then(|txn| {
            let out = write(&txn)?;
            txn.commit()?;
            Ok(out)
        });
        drop(db);
        if result.is_err() {
            self.inner.db.failed(generation, Instant::now());
        }
        result
    }

    /// Times the database was opened again after a failed commit.
    pub fn reopened(&self) -> u64 {
        self.inner.db.reopened()
    }

    /// A fresh queue id.
    pub fn next_id(&self) -> QueueId {
        QueueId(self.inner.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Where bodies are written.
    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    /// Stores a message durably; returns once the commit is on disk. Its
    /// body is `inline`, or in the spool already (finished, that is
    /// fsync'd). With `unanswered`, the message is also noted as unanswered
    /// until [`Queue::answered`].
    pub async fn insert(
        &self,
        id: QueueId,
        envelope: &Envelope,
        body: &Arrival,
        inline: Option<Arc<Vec<u8>>>,
        unanswered: Option<Unanswered>,
    ) -> Result<()> {
        let envelope = postcard::to_stdvec(envelope)?;
        let body = postcard::to_stdvec(body)?;
        let unanswered = unanswered.map(|u| postcard::to_stdvec(&u)).transpose()?;
        self.submit(Write::Insert { id, envelope, body, inline, unanswered }).await
    }

    /// Forgets that a message is unanswered. Does not wait: the write joins
    /// the next commit, and if a crash loses it the message is merely
    /// remembered as unanswered a while longer.
    pub fn answered(&self, id: QueueId) {
        if let Some(writer) = self.inner.writer.as_ref() {
            let _ = writer.send(Request { write: Write::Answered { id }, done: None });
        }
    }

    /// Every message noted as unanswered.
    pub fn unanswered(&self) -> Result<Vec<(QueueId, Unanswered)>> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(UNANSWERED)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((QueueId(k.value()), postcard::from_bytes(v.value())?));
        }
        Ok(out)
    }

    /// Replaces a message's envelope (recipient states) durably; a message no
    /// longer queued is left out.
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
        writer.send(Request { write, done: Some(done) }).map_err(|_| Error::QueueClosed)?;
        result.await.map_err(|_| Error::QueueClosed)?
    }

    /// Every queued message's id and envelope, oldest first.
    pub fn list(&self) -> Result<Vec<(QueueId, Envelope)>> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(ENVELOPES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((QueueId(k.value()), postcard::from_bytes(v.value())?));
        }
        Ok(out)
    }

    pub fn envelope(&self, id: QueueId) -> Result<Option<Envelope>> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(ENVELOPES)?;
        let value = table.get(id.0)?;
        Ok(match value {
            Some(v) => Some(postcard::from_bytes(v.value())?),
            None => None,
        })
    }

    /// A queued message's content, to be read at delivery.
    pub fn body(&self, id: QueueId) -> Result<Option<Body>> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let Some(value) = txn.open_table(BODIES)?.get(id.0)? else { return Ok(None) };
        let info: Arrival = postcard::from_bytes(value.value())?;
        if let Some(inline) = txn.open_table(INLINE)?.get(id.0)? {
            return Ok(Some(Body::at_hand(info, Arc::new(inline.value().to_vec()))));
        }
        let path = self.inner.spool.path(id);
        let spooled = std::fs::metadata(&path).map_err(|error| Error::Io { path: path.clone(), error })?;
        Ok(Some(Body::spooled(info, path, spooled.len())))
    }

    /// Compacts the database file if the queue has drained and the file is
    /// large (blocking: call from a blocking task). True if it did.
    pub fn compact_if_drained(&self) -> Result<bool> {
        let path = self.inner.db.path();
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        if size <= COMPACT_ABOVE || self.db()?.begin_read()?.open_table(ENVELOPES)?.len()? > 0 {
            return Ok(false);
        }
        let Some(compacted) = self.inner.db.exclusive(|db| db.compact()) else { return Ok(false) };
        match compacted {
            Ok(_) => {
                let after = std::fs::metadata(path).map_or(0, |m| m.len());
                tracing::info!(before = size, after, "queue drained: database compacted");
                Ok(true)
            }
            // A transaction under way: next time.
            Err(redb::CompactionError::TransactionInProgress) => Ok(false),
            Err(e) => Err(Error::Store(e.into())),
        }
    }
}

/// The writer thread: gathers every waiting request into one transaction.
fn run_writer(db: Arc<Handle>, spool: Spool, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = requests.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let result = commit_group(&db, &spool, &group).map_err(std::sync::Arc::new);
        // Spooled bodies go once their envelopes are gone for good.
        if let Ok(spooled) = &result {
            for &id in spooled {
                spool.remove(id);
            }
        }
        for request in group.drain(..) {
            if let Some(done) = request.done {
                let outcome = result.as_ref().map(|_| ()).map_err(|e| Error::Commit(e.clone()));
                let _ = done.send(outcome);
            }
        }
    }
}

/// Commits the group on the current handle; a failure is reported, so that
/// a handle that latched it is replaced before the next group.
fn commit_group(handle: &Handle, spool: &Spool, group: &[Request]) -> Result<Vec<QueueId>> {
    let db = handle.get(Instant::now())?;
    let generation = db.generation();
    let result = commit(&db, spool, group);
    drop(db);
    if result.is_err() {
        handle.failed(generation, Instant::now());
    }
    result
}

/// One transaction for the group: durable (fsync'd) when anybody waits for
/// it, otherwise left for the next durable commit to carry to disk. New
/// spool files' names are made durable first (their contents already are).
/// Returns the removed messages whose bodies are in the spool.
fn commit(db: &Database, spool: &Spool, group: &[Request]) -> Result<Vec<QueueId>> {
    if group.iter().any(|r| matches!(r.write, Write::Insert { inline: None, .. })) {
        spool.sync_dir().map_err(|error| Error::Io { path: spool.dir().to_path_buf(), error })?;
    }
    let mut spooled_removed = vec![];
    let mut txn = db.begin_write()?;
    let durability = match group.iter().any(|r| r.done.is_some()) {
        true => Durability::Immediate,
        false => Durability::None,
    };
    txn.set_durability(durability).map_err(|e| Error::Store(redb::Error::from(e)))?;
    {
        let mut envelopes = txn.open_table(ENVELOPES)?;
        let mut bodies = txn.open_table(BODIES)?;
        let mut inline_bodies = txn.open_table(INLINE)?;
        let mut unanswered_table = txn.open_table(UNANSWERED)?;
        for request in group {
            match &request.write {
                Write::Insert { id, envelope, body, inline, unanswered } => {
                    envelopes.insert(id.0, envelope.as_slice())?;
                    bodies.insert(id.0, body.as_slice())?;
                    if let Some(inline) = inline {
                        inline_bodies.insert(id.0, inline.as_slice())?;
                    }
                    if let Some(unanswered) = unanswered {
                        unanswered_table.insert(id.0, unanswered.as_slice())?;
                    }
                }
                Write::Answered { id } => {
                    unanswered_table.remove(id.0)?;
                }
                // A message dropped (`magicmx queue drop`) while an attempt
                // was under way stays dropped: the attempt's results do not
                // bring its envelope back.
                Write::Update { id, envelope } => {
                    if envelopes.get(id.0)?.is_some() {
                        envelopes.insert(id.0, envelope.as_slice())?;
                    }
                }
                Write::Remove { id } => {
                    envelopes.remove(id.0)?;
                    bodies.remove(id.0)?;
                    if inline_bodies.remove(id.0)?.is_none() {
                        spooled_removed.push(*id);
                    }
                }
            }
        }
    }
    txn.commit()?;
    Ok(spooled_removed)
}

/// Moves whole contents kept in the database by releases before the spool
/// into spool files (their headers included, so nothing is put in front).
fn move_contents_to_spool(db: &Database, spool: &Spool) -> Result<()> {
    let ids: Vec<u64> = {
        let txn = db.begin_read()?;
        let table = txn.open_table(CONTENTS)?;
        let mut ids = vec![];
        for entry in table.iter()? {
            ids.push(entry?.0.value());
        }
        ids
    };
    for id in ids {
        let txn = db.begin_write()?;
        {
            let mut contents = txn.open_table(CONTENTS)?;
            let Some(content) = contents.remove(id)?.map(|v| v.value().to_vec()) else { continue };
            let path = spool.path(QueueId(id));
            let written =
                std::fs::write(&path, &content).and_then(|()| std::fs::File::open(&path)?.sync_all());
            written.map_err(|error| Error::Io { path, error })?;
            let info = Arrival::local(vec![], !content.is_ascii());
            txn.open_table(BODIES)?.insert(id, postcard::to_stdvec(&info)?.as_slice())?;
        }
        spool.sync_dir().map_err(|error| Error::Io { path: spool.dir().to_path_buf(), error })?;
        txn.commit()?;
        tracing::info!(queue_id = %QueueId(id), "message moved from the database to the spool");
    }
    Ok(())
}

/// Removes bodies whose message has no envelope: written for a message that
/// was never answered 250 (or whose removal was cut short by a crash).
fn remove_orphans(db: &Database, spool: &Spool) -> Result<()> {
    let txn = db.begin_read()?;
    let envelopes = txn.open_table(ENVELOPES)?;
    let ids = spool.ids().map_err(|error| Error::Io { path: spool.dir().to_path_buf(), error })?;
    for id in ids {
        if envelopes.get(id.0)?.is_none() {
            tracing::info!(queue_id = %id, "removing the spool file of a message never queued");
            spool.remove(id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{RecipientState, RecipientStatus};

    fn envelope() -> Envelope {
        Envelope {
            sender: None,
            recipients: vec![RecipientState {
                address: magicmx_proto::Address::parse("bob@example.test").unwrap(),
                status: RecipientStatus::Pending { attempts: 0, next_attempt_ms: 0, last_error: None },
            }],
            arrived: 0,
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            block: "127.0.0.0/24".into(),
            helo: "client.test".into(),
            tls: false,
            size: 0,
            dsn_for: None,
            spf: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn once_a_backlog_has_drained_the_database_file_shrinks_back() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let info = Arrival::local(vec![], false);
        let body = Arc::new(vec![b'x'; 60 * 1024]);
        let ids: Vec<QueueId> = (0..300).map(|_| queue.next_id()).collect();
        for &id in &ids {
            queue.insert(id, &envelope(), &info, Some(body.clone()), None).await.unwrap();
        }
        let file = dir.path().join("queue.redb");
        let grown = std::fs::metadata(&file).unwrap().len();
        assert!(grown > 16 * 1024 * 1024, "a backlog of 300 x 60 KiB: {grown}");
        assert!(!queue.compact_if_drained().unwrap(), "not while messages are queued");
        for &id in &ids {
            queue.remove(id).await.unwrap();
        }
        assert!(queue.compact_if_drained().unwrap());
        let drained = std::fs::metadata(&file).unwrap().len();
        assert!(drained < grown / 4, "{grown} -> {drained}");
    }

    #[test]
    fn contents_kept_by_earlier_releases_move_to_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let id = 42u64;
        {
            // A queue as releases before the spool left it: envelope and whole content.
            let db = Database::create(dir.path().join("queue.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(ENVELOPES)
                .unwrap()
                .insert(id, postcard::to_stdvec(&envelope()).unwrap().as_slice())
                .unwrap();
            txn.open_table(CONTENTS)
                .unwrap()
                .insert(id, b"Received: old\r\n\r\nbody\r\n".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let queue = Queue::open(dir.path()).unwrap();
        let body = queue.body(QueueId(id)).unwrap().expect("its body is found");
        let mut content = vec![];
        body.copy_to(&mut content).unwrap();
        assert_eq!(content, b"Received: old\r\n\r\nbody\r\n");
        assert_eq!(queue.list().unwrap().len(), 1, "the message is still queued");
        drop(queue);
        let queue = Queue::open(dir.path()).unwrap();
        assert!(queue.body(QueueId(id)).unwrap().is_some(), "and stays where it went");
    }
}

//! The delivery journal: a line per recipient the next hop took (`QUEUEID
//! INDEX`), appended the moment its 250 arrives, before the queue records the
//! delivery durably a few milliseconds later. If the node dies in between, the
//! next start reads the journal and marks those recipients delivered instead of
//! delivering them again.
//!
//! The journal is written but not fsync'd, as Postfix marks a recipient done:
//! what a process writes survives the process dying (SIGKILL, a panic, the
//! OOM killer), and if the machine itself loses power the worst case is the
//! duplicate the durable queue alone would give. It can never lose mail: it
//! only ever says "delivered" about a recipient whose 250 was received.
//!
//! Files are `delivered-N.log` in the data directory. When one passes
//! [`ROTATE_BYTES`] the journal moves to the next, and an old one is removed
//! once every delivery it recorded is in the queue.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::queue::{Queue, QueueId, RecipientStatus};

/// A journal file's size at which the next one is started.
pub const ROTATE_BYTES: u64 = 1 << 20;

pub(crate) struct Journal {
    dir: PathBuf,
    state: Mutex<State>,
    /// Files left by an earlier run, removed once applied.
    left_over: Vec<PathBuf>,
}

struct State {
    file: Option<File>,
    generation: u64,
    bytes: u64,
    /// Per generation: deliveries written there and not yet in the queue.
    unsettled: BTreeMap<u64, usize>,
}

/// One journaled delivery; drop it once the queue has recorded it durably.
pub(crate) struct Ticket<'a> {
    journal: &'a Journal,
    generation: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.journal.settle(self.generation);
    }
}

impl Journal {
    /// Opens a fresh journal file in `dir`; returns the journal and the
    /// deliveries earlier runs wrote, for [`apply`].
    pub fn open(dir: &Path) -> Result<(Journal, Vec<(QueueId, usize)>)> {
        let io = |error| Error::Io { path: dir.to_path_buf(), error };
        let mut left = Vec::new();
        let mut left_over = Vec::new();
        let mut last = 0;
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let Some(generation) = generation_of(&path) else { continue };
            last = last.max(generation);
            let text =
                std::fs::read_to_string(&path).map_err(|error| Error::Io { path: path.clone(), error })?;
            left.extend(text.split_inclusive('\n').filter_map(parse_line));
            left_over.push(path);
        }
        let generation = last + 1;
        let file = open_file(&file_name(dir, generation))?;
        let state = State { file: Some(file), generation, bytes: 0, unsettled: BTreeMap::new() };
        Ok((Journal { dir: dir.to_path_buf(), state: Mutex::new(state), left_over }, left))
    }

    /// Removes the files of earlier runs: call once [`apply`] has returned.
    pub fn forget_left_over(&self) {
        for path in &self.left_over {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Notes that recipient `index` of message `id` was taken by the next hop.
    pub fn delivered(&self, id: QueueId, index: usize) -> Ticket<'_> {
        let mut state = self.state.lock().unwrap();
        let line = format!("{id} {index}\n");
        if let Some(file) = state.file.as_mut() {
            if let Err(error) = file.write_all(line.as_bytes()) {
                tracing::warn!(%error, "cannot write the delivery journal; a crash now may deliver this message twice");
            }
        }
        state.bytes += line.len() as u64;
        let generation = state.generation;
        *state.unsettled.entry(generation).or_default() += 1;
        if state.bytes >= ROTATE_BYTES {
            self.rotate(&mut state);
        }
        Ticket { journal: self, generation }
    }

    fn rotate(&self, state: &mut State) {
        let old = state.generation;
        state.generation += 1;
        state.bytes = 0;
        state.file = match open_file(&file_name(&self.dir, state.generation)) {
            Ok(file) => Some(file),
            Err(error) => {
                tracing::warn!(%error, "cannot start a new delivery journal file");
                None
            }
        };
        if !state.unsettled.contains_key(&old) {
            let _ = std::fs::remove_file(file_name(&self.dir, old));
        }
    }

    fn settle(&self, generation: u64) {
        let mut state = self.state.lock().unwrap();
        let Some(count) = state.unsettled.get_mut(&generation) else { return };
        *count -= 1;
        if *count == 0 {
            state.unsettled.remove(&generation);
            if generation != state.generation {
                let _ = std::fs::remove_file(file_name(&self.dir, generation));
            }
        }
    }
}

/// Marks delivered, durably, the recipients an earlier run journaled; a
/// message left with nothing to do is removed. Returns how many recipients
/// were marked.
pub(crate) async fn apply(queue: &Queue, left: Vec<(QueueId, usize)>) -> Result<usize> {
    let mut by_message: HashMap<QueueId, Vec<usize>> = HashMap::new();
    for (id, index) in left {
        by_message.entry(id).or_default().push(index);
    }
    let mut marked = 0;
    for (id, indexes) in by_message {
        let Some(mut envelope) = queue.envelope(id)? else { continue };
        let before = marked;
        for index in indexes {
            if let Some(rcpt) = envelope.recipients.get_mut(index) {
                if matches!(rcpt.status, RecipientStatus::Pending { .. }) {
                    rcpt.status = RecipientStatus::Delivered;
                    marked += 1;
                }
            }
        }
        match (marked > before, envelope.is_finished()) {
            (false, _) => {}
            (true, true) => queue.remove(id).await?,
            (true, false) => queue.update(id, &envelope).await?,
        }
    }
    if marked > 0 {
        tracing::info!(recipients = marked, "delivery journal: recipients taken by the next hop just before the node stopped are marked delivered, not sent again");
    }
    Ok(marked)
}

fn file_name(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("delivered-{generation}.log"))
}

fn generation_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("delivered-")?.strip_suffix(".log")?.parse().ok()
}

fn open_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| Error::Io { path: path.to_path_buf(), error })
}

/// `QUEUEID INDEX\n`; anything else is skipped. Each line is written whole,
/// so only the last one can be cut short (a power cut): without its newline
/// it is not believed, lest `… 12` cut to `… 1` name another recipient.
fn parse_line(line: &str) -> Option<(QueueId, usize)> {
    let line = line.strip_suffix('\n')?;
    let (id, index) = line.split_once(' ')?;
    Some((id.parse().ok()?, index.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_run_journals_the_next_run_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, left) = Journal::open(dir.path()).unwrap();
        assert!(left.is_empty());
        std::mem::forget(journal.delivered(QueueId(0xABC), 0));
        std::mem::forget(journal.delivered(QueueId(0xABC), 2));
        drop(journal);
        let (journal, left) = Journal::open(dir.path()).unwrap();
        assert_eq!(left, vec![(QueueId(0xABC), 0), (QueueId(0xABC), 2)]);
        journal.forget_left_over();
        let (_, left) = Journal::open(dir.path()).unwrap();
        assert!(left.is_empty(), "applied files are removed");
    }

    #[test]
    fn a_cut_line_is_skipped() {
        assert_eq!(parse_line("0000000000000ABC 12\n"), Some((QueueId(0xABC), 12)));
        assert_eq!(parse_line("0000000000000ABC 1"), None, "no newline: it may be 12 cut short");
        assert_eq!(parse_line("0000000000000ABC\n"), None);
        assert_eq!(parse_line("\0\0\0\0\n"), None);
    }

    #[test]
    fn an_old_file_goes_once_all_it_recorded_is_settled() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        let first = journal.delivered(QueueId(1), 0);
        let mut later = Vec::new();
        while journal.state.lock().unwrap().generation == 1 {
            later.push(journal.delivered(QueueId(2), 0));
        }
        assert_eq!(files(), 2, "the full file stays while it has unsettled deliveries");
        drop(later);
        assert_eq!(files(), 2);
        drop(first);
        assert_eq!(files(), 1, "then it is removed");
    }
}

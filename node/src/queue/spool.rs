//! Large message bodies (more than one 64 KiB piece), one file per message
//! under `data_dir/spool/`, named by queue id, beside the envelopes in redb
//! (as Postfix keeps a queue file per message). A body is written while DATA
//! is read, fsync'd before its envelope is committed, read back in pieces at
//! delivery, and unlinked when the message leaves the queue, so the space is
//! given back at once. A file without an envelope was never answered 250
//! (or its message had just left): it is removed at start.

use std::io;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use tokio::io::AsyncWriteExt;

use super::envelope::QueueId;

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens (creates) `dir`.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        Ok(Spool { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, id: QueueId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// A new, empty body file for message `id`.
    pub async fn create(&self, id: QueueId) -> io::Result<SpoolFile> {
        let path = self.path(id);
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await?;
        Ok(SpoolFile {
            file: Some(file),
            path,
            id,
            size: 0,
            digest: digest::Context::new(&digest::SHA256),
            kept: false,
        })
    }

    /// Makes the names of the files created so far durable (the directory's
    /// fsync); called before the commit that makes their envelopes durable.
    pub fn sync_dir(&self) -> io::Result<()> {
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Removes message `id`'s body (gone already is fine).
    pub fn remove(&self, id: QueueId) {
        if let Err(error) = std::fs::remove_file(self.path(id)) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(queue_id = %id, %error, "cannot remove a spool file");
            }
        }
    }

    /// The ids of every body file.
    pub fn ids(&self) -> io::Result<Vec<QueueId>> {
        let mut ids = vec![];
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            match name.to_str().and_then(|n| n.parse().ok()) {
                Some(id) => ids.push(id),
                None => {
                    tracing::warn!(file = ?name, dir = %self.dir.display(), "not a spool file; left alone")
                }
            }
        }
        Ok(ids)
    }
}

/// A body being written. Dropped before [`SpoolFile::finish`] (a refused
/// message, a client gone), its file is removed.
pub struct SpoolFile {
    file: Option<tokio::fs::File>,
    path: PathBuf,
    id: QueueId,
    size: u64,
    /// SHA-256 of the content, for recognising a message sent again.
    digest: digest::Context,
    kept: bool,
}

impl SpoolFile {
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// Appends a piece of the content.
    pub async fn append(&mut self, piece: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("spool file already finished"))?;
        file.write_all(piece).await?;
        self.digest.update(piece);
        self.size += piece.len() as u64;
        Ok(())
    }

    /// Octets written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The SHA-256 of what was written.
    pub fn digest(&self) -> [u8; 32] {
        self.digest.clone().finish().as_ref().try_into().expect("SHA-256 is 32 octets")
    }

    /// Makes the content durable (fdatasync); the file is kept from now on.
    pub async fn finish(&mut self) -> io::Result<()> {
        let mut file = self.file.take().ok_or_else(|| io::Error::other("spool file already finished"))?;
        file.flush().await?;
        file.sync_data().await?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_unfinished_is_removed_and_a_finished_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let mut dropped = spool.create(QueueId(1)).await.unwrap();
        dropped.append(b"half a message").await.unwrap();
        drop(dropped);
        assert!(!spool.path(QueueId(1)).exists(), "a refused message leaves nothing");
        let mut kept = spool.create(QueueId(2)).await.unwrap();
        kept.append(b"Subject: x\r\n\r\n").await.unwrap();
        kept.append(b"body\r\n").await.unwrap();
        kept.finish().await.unwrap();
        let digest = kept.digest();
        drop(kept);
        assert_eq!(std::fs::read(spool.path(QueueId(2))).unwrap(), b"Subject: x\r\n\r\nbody\r\n");
        let expected = digest::digest(&digest::SHA256, b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(digest.as_slice(), expected.as_ref());
        assert_eq!(spool.ids().unwrap(), vec![QueueId(2)]);
        spool.remove(QueueId(2));
        spool.remove(QueueId(2));
        assert!(spool.ids().unwrap().is_empty());
    }
}

//! A queued message's content as delivery sees it: the header fields this
//! node put in front (`Received:`, `Authentication-Results:`), then the body
//! as the client sent it — in memory for a small message, or read from its
//! spool file in pieces, so that a large message never is in memory whole.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// The size of the pieces a body is read in.
pub const PIECE: usize = 64 * 1024;

/// What the node learnt of a message as it arrived, beyond its envelope:
/// the header fields it puts in front of the body, whether the body is
/// 8-bit, and how the client came (handed on by XCLIENT or XFORWARD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    /// Header fields this node adds in front of the body, CRLF line ends.
    pub headers: Vec<u8>,
    /// The content has octets above 127 (`BODY=8BITMIME` when sent on).
    pub eight_bit: bool,
    /// The client's forward-confirmed host name, when it had one.
    pub client_name: Option<String>,
    /// The protocol it spoke (`ESMTP`, `ESMTPS` …); empty for a message
    /// this node made itself.
    pub protocol: String,
}

impl Arrival {
    /// For a message this node makes (a DSN) or one from an earlier release.
    pub fn local(headers: Vec<u8>, eight_bit: bool) -> Arrival {
        Arrival { headers, eight_bit, client_name: None, protocol: String::new() }
    }
}

/// A message's content, ready to be read.
#[derive(Debug, Clone)]
pub struct Body {
    pub info: Arrival,
    source: Source,
}

/// Where a body (after the headers this node adds) is kept.
#[derive(Debug, Clone)]
pub enum Source {
    InMemory(Arc<Vec<u8>>),
    Spooled { path: PathBuf, size: u64 },
}

impl Source {
    /// The whole body in memory (blocking for a spooled one), unless it is
    /// larger than `limit` octets.
    pub fn read_at_most(&self, limit: usize) -> io::Result<Option<Arc<Vec<u8>>>> {
        match self {
            Source::InMemory(content) => Ok((content.len() <= limit).then(|| content.clone())),
            Source::Spooled { size, .. } if *size > limit as u64 => Ok(None),
            Source::Spooled { path, .. } => Ok(Some(Arc::new(std::fs::read(path)?))),
        }
    }
}

impl Body {
    pub fn new(info: Arrival, source: Source) -> Body {
        Body { info, source }
    }

    /// A body in memory.
    pub fn at_hand(info: Arrival, content: Arc<Vec<u8>>) -> Body {
        Body { info, source: Source::InMemory(content) }
    }

    /// A body in the spool file at `path`, of `size` octets.
    pub fn spooled(info: Arrival, path: PathBuf, size: u64) -> Body {
        Body { info, source: Source::Spooled { path, size } }
    }

    /// The whole content's size: headers and body.
    pub fn size(&self) -> u64 {
        let body = match &self.source {
            Source::InMemory(content) => content.len() as u64,
            Source::Spooled { size, .. } => *size,
        };
        self.info.headers.len() as u64 + body
    }

    pub fn eight_bit(&self) -> bool {
        self.info.eight_bit
    }

    /// A reader of the content from its start.
    pub async fn pieces(&self) -> io::Result<Pieces> {
        let rest = match &self.source {
            Source::InMemory(content) => Rest::InMemory(Some(content.clone())),
            Source::Spooled { path, .. } => Rest::File(tokio::fs::File::open(path).await?),
        };
        Ok(Pieces { headers: Some(self.info.headers.clone()), rest })
    }

    /// Writes the whole content to `out` (blocking).
    pub fn copy_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.info.headers)?;
        match &self.source {
            Source::InMemory(content) => out.write_all(content)?,
            Source::Spooled { path, .. } => {
                io::copy(&mut std::fs::File::open(path)?, out)?;
            }
        }
        Ok(())
    }

    /// The first `limit` octets of the content (blocking), e.g. for the
    /// header section a DSN returns.
    pub fn head(&self, limit: usize) -> io::Result<Vec<u8>> {
        let mut head = self.info.headers.clone();
        head.truncate(limit);
        let rest = limit - head.len();
        match &self.source {
            Source::InMemory(content) => head.extend_from_slice(&content[..rest.min(content.len())]),
            Source::Spooled { path, .. } => {
                std::fs::File::open(path)?.take(rest as u64).read_to_end(&mut head)?;
            }
        }
        Ok(head)
    }
}

/// The content in pieces: the headers, then the spool file [`PIECE`] by piece.
pub struct Pieces {
    headers: Option<Vec<u8>>,
    rest: Rest,
}

enum Rest {
    InMemory(Option<Arc<Vec<u8>>>),
    File(tokio::fs::File),
}

impl Pieces {
    /// The next piece; `None` at the end.
    pub async fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        if let Some(headers) = self.headers.take().filter(|h| !h.is_empty()) {
            return Ok(Some(headers));
        }
        let file = match &mut self.rest {
            Rest::InMemory(content) => {
                return Ok(content.take().filter(|c| !c.is_empty()).map(|c| c.to_vec()))
            }
            Rest::File(file) => file,
        };
        let mut piece = vec![0; PIECE];
        let mut filled = 0;
        while filled < PIECE {
            match file.read(&mut piece[filled..]).await? {
                0 => break,
                n => filled += n,
            }
        }
        piece.truncate(filled);
        Ok((filled > 0).then_some(piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_reads_back_as_its_headers_then_its_spool_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1");
        let spooled: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(&path, &spooled).unwrap();
        let body = Body::spooled(Arrival::local(b"Received: x\r\n".to_vec(), false), path, 200_000);
        let mut whole = b"Received: x\r\n".to_vec();
        whole.extend_from_slice(&spooled);
        assert_eq!(body.size(), whole.len() as u64);
        let mut pieces = body.pieces().await.unwrap();
        let mut read = vec![];
        while let Some(piece) = pieces.next().await.unwrap() {
            assert!(piece.len() <= PIECE);
            read.extend_from_slice(&piece);
        }
        assert_eq!(read, whole);
        let mut copied = vec![];
        body.copy_to(&mut copied).unwrap();
        assert_eq!(copied, whole);
        assert_eq!(body.head(20).unwrap(), &whole[..20]);
        assert_eq!(body.head(5).unwrap(), b"Recei");
        // The same, with the content at hand.
        let info = Arrival::local(b"Received: x\r\n".to_vec(), false);
        let at_hand = Body::at_hand(info, Arc::new(spooled));
        let mut pieces = at_hand.pieces().await.unwrap();
        let mut read = vec![];
        while let Some(piece) = pieces.next().await.unwrap() {
            read.extend_from_slice(&piece);
        }
        assert_eq!(read, whole);
        assert_eq!(at_hand.head(20).unwrap(), &whole[..20]);
    }
}

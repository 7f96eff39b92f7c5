//! What the disk can be asked to take, checked before a client's bytes are
//! written: a floor of free space under the queue and the spool
//! (`queue.min_free`, `free.rs`), and a bound on the octets of bodies being
//! received and not yet queued, in all and per source block
//! (`in_flight.rs`). Either reached: `452 4.3.1` (the sender keeps its
//! message), a count in `magicmx_refusals_total`, and a log line at most
//! once a minute per cause (`notice.rs`).

mod free;
mod in_flight;
mod notice;

use std::path::PathBuf;

use magicmx_proto::SourceBlock;

pub(crate) use in_flight::Claim;
use in_flight::{Bound, InFlight};
use notice::{Cause, Notices};

use crate::clock::Millis;
use crate::replies::Refusal;
use crate::settings::QueueSettings;

/// A new message is taken only while one more piece of this size fits.
const PIECE: u64 = crate::queue::PIECE as u64;

pub(crate) struct Disk {
    min_free: u64,
    /// The queue's and the spool's directories (one file system or two).
    dirs: Vec<PathBuf>,
    in_flight: InFlight,
    notices: Notices,
}

impl Disk {
    pub(crate) fn new(settings: &QueueSettings, dirs: Vec<PathBuf>) -> Disk {
        Disk {
            min_free: settings.min_free,
            dirs,
            in_flight: InFlight::new(settings.max_in_flight, settings.max_in_flight_per_block),
            notices: Notices::default(),
        }
    }

    /// At MAIL: is there room for a message from `block` (`None`: a
    /// trusted client, held to the total only)?
    pub(crate) fn room_for_message(&self, block: Option<SourceBlock>, now: Millis) -> Result<(), Refusal> {
        self.above_floor(now)?;
        self.in_flight.fits(block, PIECE).map_err(|bound| self.refuse(bound, now))
    }

    /// A new message's claim, empty until its first piece.
    pub(crate) fn claim(&self, block: Option<SourceBlock>) -> Claim {
        self.in_flight.claim(block)
    }

    /// Before `octets` more of a message are written: room on the disk, and
    /// within the bounds (then they are held by `claim`).
    pub(crate) fn room_for_piece(&self, claim: &mut Claim, octets: u64, now: Millis) -> Result<(), Refusal> {
        self.above_floor(now)?;
        claim.grow(octets).map_err(|bound| self.refuse(bound, now))
    }

    /// Octets of bodies being received now.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.total()
    }

    /// The least free space over the queue's and the spool's file systems
    /// (`None` if none could be read).
    pub(crate) fn free(&self) -> Option<u64> {
        self.dirs.iter().filter_map(|dir| free::available(dir).ok()).min()
    }

    fn above_floor(&self, now: Millis) -> Result<(), Refusal> {
        if self.min_free == 0 {
            return Ok(());
        }
        // A file system that cannot be asked is not taken for full.
        let Some(free) = self.free() else { return Ok(()) };
        if free >= self.min_free {
            return Ok(());
        }
        if let Some(refused) = self.notices.note(Cause::Floor, now) {
            tracing::warn!(
                free,
                min_free = self.min_free,
                refused,
                "disk nearly full: mail deferred (452 4.3.1) until space is freed"
            );
        }
        Err(Refusal::DiskFull)
    }

    fn refuse(&self, bound: Bound, now: Millis) -> Refusal {
        let in_flight = self.in_flight.total();
        match bound {
            Bound::Total => {
                if let Some(refused) = self.notices.note(Cause::Total, now) {
                    tracing::warn!(
                        in_flight,
                        refused,
                        "queue.max_in_flight reached: mail deferred (452 4.3.1)"
                    );
                }
                Refusal::InFlight { block: None }
            }
            Bound::Block(block) => {
                if let Some(refused) = self.notices.note(Cause::Block, now) {
                    tracing::warn!(%block, in_flight, refused, "queue.max_in_flight_per_block reached: the block's mail deferred (452 4.3.1)");
                }
                Refusal::InFlight { block: Some(block) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_floor_mail_and_pieces_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let free = free::available(dir.path()).unwrap();
        let settings = QueueSettings { min_free: free.saturating_mul(4), ..QueueSettings::default() };
        let disk = Disk::new(&settings, vec![dir.path().to_path_buf()]);
        assert_eq!(disk.room_for_message(None, 0), Err(Refusal::DiskFull));
        let mut claim = disk.claim(None);
        assert_eq!(disk.room_for_piece(&mut claim, 10, 0), Err(Refusal::DiskFull));
        assert_eq!(disk.in_flight(), 0, "nothing held for a refused piece");
        let roomy = Disk::new(&QueueSettings { min_free: 1, ..settings }, vec![dir.path().to_path_buf()]);
        assert_eq!(roomy.room_for_message(None, 0), Ok(()));
    }

    #[test]
    fn the_bounds_refuse_with_the_block() {
        let settings =
            QueueSettings { min_free: 0, max_in_flight: 4 * PIECE, max_in_flight_per_block: 2 * PIECE };
        let disk = Disk::new(&settings, vec![]);
        let block = SourceBlock::of_default("192.0.2.9".parse().unwrap());
        let mut claim = disk.claim(Some(block));
        disk.room_for_piece(&mut claim, 2 * PIECE, 0).unwrap();
        assert_eq!(disk.room_for_message(Some(block), 0), Err(Refusal::InFlight { block: Some(block) }));
        assert_eq!(disk.room_for_piece(&mut claim, 1, 0), Err(Refusal::InFlight { block: Some(block) }));
        let mut trusted = disk.claim(None);
        disk.room_for_piece(&mut trusted, 2 * PIECE, 0).unwrap();
        assert_eq!(disk.room_for_message(None, 0), Err(Refusal::InFlight { block: None }));
        drop(claim);
        assert_eq!(disk.room_for_message(Some(block), 0), Ok(()));
    }
}

//! The octets of message bodies being received and not yet queued, in all
//! and per source block: what a stranger could make the node write before
//! any verdict. Each message holds a [`Claim`] that grows piece by piece
//! and is given back when dropped (queued, refused, or the client gone).
//! A block has an entry only while one of its messages is being read, so
//! the map is bounded by the sessions in DATA.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use magicmx_proto::SourceBlock;

/// Which bound a piece would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    Total,
    Block(SourceBlock),
}

/// The bounds and what is held against them; clones share them.
#[derive(Clone)]
pub(crate) struct InFlight {
    inner: Arc<Inner>,
}

struct Inner {
    max_total: u64,
    max_block: u64,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: u64,
    blocks: HashMap<SourceBlock, u64>,
}

/// One message's octets in flight. `block` is `None` for a trusted client:
/// counted in the total only.
pub(crate) struct Claim {
    in_flight: InFlight,
    block: Option<SourceBlock>,
    octets: u64,
}

impl InFlight {
    pub(crate) fn new(max_total: u64, max_block: u64) -> InFlight {
        InFlight { inner: Arc::new(Inner { max_total, max_block, held: Mutex::default() }) }
    }

    /// Whether `octets` more from `block` would fit now (nothing is taken).
    pub(crate) fn fits(&self, block: Option<SourceBlock>, octets: u64) -> Result<(), Bound> {
        let held = self.inner.held.lock().unwrap();
        self.check(&held, block, octets)
    }

    /// The block's own bound is named first: it is the block's doing.
    fn check(&self, held: &Held, block: Option<SourceBlock>, octets: u64) -> Result<(), Bound> {
        if let Some(block) = block {
            let of_block = held.blocks.get(&block).copied().unwrap_or(0);
            if of_block.saturating_add(octets) > self.inner.max_block {
                return Err(Bound::Block(block));
            }
        }
        if held.total.saturating_add(octets) > self.inner.max_total {
            return Err(Bound::Total);
        }
        Ok(())
    }

    /// An empty claim for a message from `block`.
    pub(crate) fn claim(&self, block: Option<SourceBlock>) -> Claim {
        Claim { in_flight: self.clone(), block, octets: 0 }
    }

    /// Octets held now, by every message.
    pub(crate) fn total(&self) -> u64 {
        self.inner.held.lock().unwrap().total
    }

    /// Blocks holding octets now.
    #[cfg(test)]
    fn blocks(&self) -> usize {
        self.inner.held.lock().unwrap().blocks.len()
    }
}

impl Claim {
    /// Takes `octets` more, or nothing if that would pass a bound.
    pub(crate) fn grow(&mut self, octets: u64) -> Result<(), Bound> {
        let mut held = self.in_flight.inner.held.lock().unwrap();
        self.in_flight.check(&held, self.block, octets)?;
        held.total += octets;
        if let Some(block) = self.block {
            *held.blocks.entry(block).or_default() += octets;
        }
        self.octets += octets;
        Ok(())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.octets == 0 {
            return;
        }
        let mut held = self.in_flight.inner.held.lock().unwrap();
        held.total -= self.octets;
        if let Some(block) = self.block {
            if let Some(of_block) = held.blocks.get_mut(&block) {
                *of_block -= self.octets;
                if *of_block == 0 {
                    held.blocks.remove(&block);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ip: &str) -> Option<SourceBlock> {
        Some(SourceBlock::of_default(ip.parse().unwrap()))
    }

    #[test]
    fn a_block_gets_its_share_and_all_together_the_total() {
        let in_flight = InFlight::new(250, 100);
        let (a, b) = (block("192.0.2.1"), block("198.51.100.1"));
        let mut a1 = in_flight.claim(a);
        let mut a2 = in_flight.claim(block("192.0.2.200"));
        a1.grow(60).unwrap();
        assert_eq!(a2.grow(50), Err(Bound::Block(a.unwrap())), "one /24: one share");
        a2.grow(40).unwrap();
        assert_eq!(in_flight.fits(a, 1), Err(Bound::Block(a.unwrap())));
        let mut b1 = in_flight.claim(b);
        b1.grow(100).unwrap();
        let mut trusted = in_flight.claim(None);
        trusted.grow(50).unwrap();
        assert_eq!(trusted.grow(1), Err(Bound::Total), "a trusted client counts in the total");
        assert_eq!(in_flight.total(), 250);
        drop(a1);
        assert!(in_flight.fits(a, 60).is_ok(), "given back when dropped");
        drop((a2, b1, trusted));
        assert_eq!((in_flight.total(), in_flight.blocks()), (0, 0), "nothing is remembered");
    }

    #[test]
    fn a_million_blocks_leave_nothing_behind() {
        let in_flight = InFlight::new(u64::MAX, 10);
        for n in 0..1_000_000u32 {
            let ip = std::net::Ipv4Addr::from(n << 8);
            let mut claim = in_flight.claim(Some(SourceBlock::of_default(ip.into())));
            claim.grow(10).unwrap();
        }
        assert_eq!((in_flight.total(), in_flight.blocks()), (0, 0));
    }
}

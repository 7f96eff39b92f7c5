//! Where each block lives: its homes, the members that gather every node's
//! register for it and answer for it. Consistent hashing with virtual
//! nodes: each member stands at [`POINTS`] places on a ring of `u64`, and a
//! block's homes are the first [`HOMES`] distinct members clockwise from the
//! block's own place — the first is its primary, which answers; the next
//! hold the same registers, to answer with it, instead of it when it is
//! gone, and to decide when homes disagree. A member
//! joining or leaving moves only the blocks next to its places, about
//! `1/N` of them.
//!
//! Every node computes the same ring from the same members: the places come
//! from a fixed mix (SplitMix64) of certificate fingerprints and of block
//! networks, not from anything that changes between builds.

use magicmx_proto::wire::WireBlock;

use crate::counts::Fingerprint;

/// Members that hold each block's registers: two to ask, and a third to
/// decide when they disagree (one lying home is outvoted).
pub const HOMES: usize = 3;
/// Places per member on the ring (spreads the load within a few per cent).
const POINTS: u64 = 64;

/// The members placed on the ring.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    /// Places, sorted.
    points: Vec<(u64, Fingerprint)>,
    members: usize,
}

impl Ring {
    pub fn new(members: impl IntoIterator<Item = Fingerprint>) -> Ring {
        let mut points = Vec::new();
        let mut count = 0;
        for member in members {
            count += 1;
            let base = u64::from_le_bytes(member[..8].try_into().expect("8 of 16 bytes"));
            points.extend((0..POINTS).map(|i| (mix(base ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)), member)));
        }
        points.sort_unstable();
        Ring { points, members: count }
    }

    /// Members on the ring.
    pub fn len(&self) -> usize {
        self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    /// The homes of `block`, primary first: [`HOMES`] members, or all there are.
    pub fn homes(&self, block: WireBlock) -> Vec<Fingerprint> {
        let wanted = HOMES.min(self.members);
        let mut homes = Vec::with_capacity(wanted);
        if wanted == 0 {
            return homes;
        }
        let place = mix(block.net ^ (u64::from(block.prefix) << 56));
        let start = self.points.partition_point(|(p, _)| *p < place);
        for i in 0..self.points.len() {
            let member = self.points[(start + i) % self.points.len()].1;
            if !homes.contains(&member) {
                homes.push(member);
                if homes.len() == wanted {
                    break;
                }
            }
        }
        homes
    }
}

/// SplitMix64's finaliser: a fixed, well-spread mix of 64 bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u8) -> Fingerprint {
        let mut fp = [0u8; 16];
        fp[0] = n;
        fp[1] = n.wrapping_mul(31);
        fp
    }

    fn block(n: u64) -> WireBlock {
        WireBlock { net: n << 8, prefix: 24 }
    }

    #[test]
    fn every_block_has_distinct_homes_and_the_same_on_every_node() {
        let ring = Ring::new((0..10).map(member));
        let again = Ring::new((0..10).rev().map(member));
        for n in 0..1_000 {
            let homes = ring.homes(block(n));
            assert_eq!(homes.len(), HOMES);
            assert_ne!(homes[0], homes[1]);
            assert_eq!(homes, again.homes(block(n)), "the order members are listed in does not matter");
        }
        assert_eq!(Ring::new([member(1)]).homes(block(5)), vec![member(1)]);
        assert!(Ring::default().homes(block(5)).is_empty());
    }

    #[test]
    fn blocks_spread_evenly_and_a_new_member_moves_few() {
        let members: Vec<Fingerprint> = (0..100).map(member).collect();
        let ring = Ring::new(members.clone());
        let mut load = std::collections::HashMap::new();
        for n in 0..100_000 {
            *load.entry(ring.homes(block(n))[0]).or_insert(0usize) += 1;
        }
        let most = *load.values().max().unwrap();
        assert!(most < 1_000 * 3, "the busiest primary holds {most} of 100,000 (mean 1,000)");
        let grown = Ring::new(members.into_iter().chain([member(200)]));
        let moved = (0..100_000).filter(|&n| ring.homes(block(n))[0] != grown.homes(block(n))[0]).count();
        assert!(moved < 3_000, "{moved} primaries moved for one member in 101");
    }
}

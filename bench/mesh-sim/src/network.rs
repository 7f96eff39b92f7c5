//! The simulated world's time and wires: an event queue ordered by time
//! (then by the order events were scheduled, so runs repeat exactly), and
//! a network with latency, packet loss (repaired by retransmission, as QUIC
//! does), nodes that are down, a partition, frames kept in order between two
//! nodes (as QUIC streams from one sender task are), and the bytes each node
//! sends and receives.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use rand::rngs::SmallRng;
use rand::RngExt;

/// Events in time order.
pub struct Queue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    seq: u64,
}

struct Scheduled<E> {
    at: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Scheduled<E> {}
impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Scheduled<E> {
    /// Reversed: the heap's top is the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue { heap: BinaryHeap::new(), seq: 0 }
    }
}

impl<E> Queue<E> {
    pub fn at(&mut self, at: u64, event: E) {
        self.seq += 1;
        self.heap.push(Scheduled { at, seq: self.seq, event });
    }

    /// The next event and its time.
    pub fn next(&mut self) -> Option<(u64, E)> {
        self.heap.pop().map(|s| (s.at, s.event))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

pub struct Network {
    pub up: Vec<bool>,
    /// Nodes on different sides of a partition cannot reach each other.
    pub side: Vec<u8>,
    latency: (u64, u64),
    loss: f64,
    overhead: usize,
    /// When the last frame between two nodes arrives (frames stay in order).
    last: HashMap<(u32, u32), u64>,
    pub sent: Vec<u64>,
    pub received: Vec<u64>,
    /// Bytes are counted while this is set (the measured window).
    pub counting: bool,
}

impl Network {
    pub fn new(nodes: usize, latency: (u64, u64), loss: f64, overhead: usize) -> Network {
        Network {
            up: vec![true; nodes],
            side: vec![0; nodes],
            latency,
            loss,
            overhead,
            last: HashMap::new(),
            sent: vec![0; nodes],
            received: vec![0; nodes],
            counting: false,
        }
    }

    pub fn reachable(&self, a: usize, b: usize) -> bool {
        self.up[a] && self.up[b] && self.side[a] == self.side[b]
    }

    /// A frame of `bytes` sent at `now`: when it arrives, or `None` when it
    /// cannot (the receiver is down or on the other side).
    pub fn send(
        &mut self,
        rng: &mut SmallRng,
        now: u64,
        from: usize,
        to: usize,
        bytes: usize,
    ) -> Option<u64> {
        if !self.reachable(from, to) {
            return None;
        }
        // Each loss costs a probe time-out and one more copy on the wire.
        let mut copies = 1u64;
        let mut latency = rng.random_range(self.latency.0..=self.latency.1);
        while self.loss > 0.0 && rng.random_bool(self.loss) {
            copies += 1;
            latency += 3 * self.latency.1;
        }
        if self.counting {
            self.sent[from] += copies * (bytes + self.overhead) as u64;
        }
        let last = self.last.entry((from as u32, to as u32)).or_insert(0);
        let at = (now + latency).max(*last);
        *last = at;
        Some(at)
    }

    /// A frame arrives: counted, unless the receiver went away meanwhile.
    pub fn arrive(&mut self, from: usize, to: usize, bytes: usize) -> bool {
        if !self.reachable(from, to) {
            return false;
        }
        if self.counting {
            self.received[to] += (bytes + self.overhead) as u64;
        }
        true
    }
}

//! The running mesh of one node: membership (SWIM), the shared counts, the
//! rounds that send this node's changes to every live peer (in order, one
//! sender task per peer), and the barrier that waits until every live peer
//! has reported past an instant.
//!
//! A member SWIM names counts only once it has proved its identity: a
//! mutual-TLS handshake at its address showed the certificate it claims.
//! Gossip naming members nobody can reach adds no one to the share or to
//! the addresses the policy service waves through. A member down longer
//! than [`MeshSettings::forget_after`] is forgotten, with its counts and
//! penalties.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use magicmx_proto::wire::{decode, encode, CountEntry, Counts as CountsFrame, Frame, PenaltyEntry};
use magicmx_proto::SourceBlock;
use tokio::sync::{mpsc, Notify};

use crate::counts::{Caps, Fingerprint, Kind, Merged, Periods, Rates};
use crate::identity::NodeId;
use crate::penalties::{PeerBounds, Taken};
use crate::swim::{self, Input};
use crate::tally::{now_ms, Tally};
use crate::transport::{Delivery, Inbound, Transport};
use crate::Error;

/// How a node takes part in the mesh.
#[derive(Debug, Clone)]
pub struct MeshSettings {
    pub name: String,
    pub listen: SocketAddr,
    /// The address peers reach this node at (default: `listen`).
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<SocketAddr>,
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 fingerprints of refused certificates.
    pub revoked: Vec<[u8; 32]>,
    pub interval: Duration,
    pub periods: Periods,
    /// Registers kept at most (all origins); beyond it the weakest go first.
    pub max_tracked: usize,
    /// What one peer may impose as penalties.
    pub peer_bounds: PeerBounds,
    /// A member down this long has left for good: forgotten, with its
    /// counts and penalties.
    pub forget_after: Duration,
}

impl MeshSettings {
    pub fn new(name: &str, listen: SocketAddr, ca_cert: PathBuf, cert: PathBuf, key: PathBuf) -> Self {
        MeshSettings {
            name: name.to_string(),
            listen,
            advertise: None,
            seeds: vec![],
            ca_cert,
            cert,
            key,
            revoked: vec![],
            interval: Duration::from_millis(500),
            periods: Periods::default(),
            max_tracked: 1_000_000,
            peer_bounds: PeerBounds::default(),
            forget_after: Duration::from_secs(3600),
        }
    }
}

/// A peer as this node sees it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub name: String,
    pub addr: SocketAddr,
    pub alive: bool,
    /// Since its last counts frame.
    pub last_heard: Option<Duration>,
}

/// What [`Mesh::wait_round`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Live peers that have reported past the instant waited for.
    pub heard: usize,
    /// Live peers.
    pub expected: usize,
}

impl Round {
    pub fn complete(&self) -> bool {
        self.heard >= self.expected
    }
}

struct Peer {
    id: NodeId,
    alive: bool,
    /// A handshake at its address showed its certificate: it counts.
    verified: bool,
    /// A check of its identity is under way.
    verifying: bool,
    /// Since when it is down.
    down_since: Option<Instant>,
    /// Its rounds, sent in order by a task of its own (while alive and verified).
    outbox: Option<mpsc::Sender<Arc<Vec<u8>>>>,
}

/// Members named by SWIM and not (yet) verified, at most; more are ignored.
const MAX_UNVERIFIED: usize = 1024;

/// When a peer was last heard, and the latest time its frames reported
/// (its clock): everything it did before that has reached this node.
#[derive(Debug, Clone, Copy)]
struct Heard {
    at: Instant,
    through_ms: u64,
}

/// Frames waiting for one peer's sender task; beyond this the peer is too
/// slow to follow, its connection is dropped and the next one starts with
/// the whole state.
const OUTBOX: usize = 64;

/// Bytes of entries per frame of the whole state (well under `MAX_FRAME`).
const STATE_BYTES: usize = 1024 * 1024;

pub(crate) struct Shared {
    pub settings: MeshSettings,
    pub own: NodeId,
    pub transport: Arc<Transport>,
    tally: Arc<Tally>,
    peers: Mutex<HashMap<Fingerprint, Peer>>,
    heard: Mutex<HashMap<Fingerprint, Heard>>,
    heard_changed: Notify,
    round: AtomicU64,
    pub rejected_entries: AtomicU64,
    /// Penalties from peers dropped by [`PeerBounds`].
    pub dropped_penalties: AtomicU64,
}

/// A node's handle on the mesh; cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
    tasks: Arc<Vec<tokio::task::JoinHandle<()>>>,
}

impl Mesh {
    /// Loads the certificates, binds the gossip port, and joins through the
    /// seeds, with a tally of its own.
    pub async fn start(settings: MeshSettings) -> Result<Mesh, Error> {
        let tally = Arc::new(Tally::new(settings.periods, settings.max_tracked));
        Mesh::start_with(settings, tally).await
    }

    /// The same, sharing `tally` (the node's) with the mesh.
    pub async fn start_with(settings: MeshSettings, tally: Arc<Tally>) -> Result<Mesh, Error> {
        let tls = crate::tls::load(
            &settings.ca_cert,
            &settings.cert,
            &settings.key,
            settings.revoked.clone(),
            (settings.interval * 20).max(Duration::from_secs(5)),
        )?;
        let fingerprint = tls.fingerprint;
        // Transactions are ordered by (time, origin fingerprint, id) on every
        // node alike: this node's own registers carry its real fingerprint.
        tally.set_own(fingerprint);
        let (inbox, inbound) = mpsc::channel(4096);
        let transport =
            Transport::bind(settings.listen, tls, inbox).map_err(|e| Error::Bind(settings.listen, e))?;
        let advertise = settings.advertise.unwrap_or_else(|| transport.local_addr());
        let own = NodeId { name: settings.name.clone(), addr: advertise, fingerprint, bump: now_ms() };
        let shared = Arc::new(Shared {
            tally,
            peers: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            heard_changed: Notify::new(),
            round: AtomicU64::new(0),
            rejected_entries: AtomicU64::new(0),
            dropped_penalties: AtomicU64::new(0),
            own: own.clone(),
            transport,
            settings,
        });
        let greeter = Arc::downgrade(&shared);
        shared.transport.set_greeting(Box::new(move || match greeter.upgrade() {
            Some(shared) => shared.full_state_frames(),
            None => Vec::new(),
        }));
        let (swim, swim_task) = swim::spawn(shared.clone(), own, swim::config(8));
        let interval = shared.settings.interval;
        let tasks = vec![
            swim_task,
            tokio::spawn(receive(shared.clone(), inbound, swim.clone())),
            tokio::spawn(rounds(shared.clone())),
            tokio::spawn(swim::keep_joining(
                shared.clone(),
                swim,
                (interval * 4).max(Duration::from_secs(1)),
            )),
        ];
        Ok(Mesh { shared, tasks: Arc::new(tasks) })
    }

    /// The gossip address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.transport.local_addr()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.shared.own.fingerprint
    }

    /// The tally this mesh shares.
    pub fn tally(&self) -> &Arc<Tally> {
        &self.shared.tally
    }

    /// Counts one event of this node's for `block` now (see [`Tally::record`]).
    pub fn record(&self, block: SourceBlock, kind: Kind) {
        self.shared.tally.record(block, kind, now_ms());
    }

    /// The mesh-wide taken rates of `block` now (see [`Tally::rate`]).
    pub fn rate(&self, block: SourceBlock, caps: Caps) -> Rates {
        self.shared.tally.rate(block, caps, now_ms())
    }

    /// Live peers and known peers (live or down), verified ones only: the
    /// share of the mesh heard.
    pub fn heard_share(&self) -> (usize, usize) {
        let peers = self.shared.peers.lock().unwrap();
        let verified = peers.values().filter(|p| p.verified);
        let (alive, known) = verified.fold((0, 0), |(a, k), p| (a + usize::from(p.alive), k + 1));
        (alive, known)
    }

    /// Waits until every live peer has sent a frame stamped after `since_ms`
    /// (Unix milliseconds, its clock), so that whatever it did up to then has
    /// arrived here, or until `timeout` passes; says how many were heard.
    pub async fn wait_round(&self, since_ms: u64, timeout: Duration) -> Round {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.heard_changed.notified();
            let round = self.shared.round_since(since_ms);
            if round.complete() {
                return round;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => return self.shared.round_since(since_ms),
            }
        }
    }

    /// The peers this node knows, live or down, that proved who they are.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let heard = self.shared.heard.lock().unwrap();
        let mut peers: Vec<PeerStatus> = self
            .shared
            .peers
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p)| p.verified)
            .map(|(fp, p)| PeerStatus {
                name: p.id.name.clone(),
                addr: p.id.addr,
                alive: p.alive,
                last_heard: heard.get(fp).map(|h| h.at.elapsed()),
            })
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        peers
    }

    pub fn stats(&self) -> &crate::transport::Stats {
        &self.shared.transport.stats
    }

    /// Count entries from peers that were dropped as nonsense.
    pub fn rejected_entries(&self) -> u64 {
        self.shared.rejected_entries.load(Ordering::Relaxed)
    }

    /// Penalties from peers dropped as over their bounds.
    pub fn dropped_penalties(&self) -> u64 {
        self.shared.dropped_penalties.load(Ordering::Relaxed)
    }

    /// Members SWIM names that have not proved who they are.
    pub fn unverified(&self) -> usize {
        self.shared.peers.lock().unwrap().values().filter(|p| !p.verified).count()
    }

    /// A fault switch for partition tests: cut this node off from every peer
    /// (its connections close, nothing is sent or accepted), or reconnect it.
    pub fn set_isolated(&self, isolated: bool) {
        self.shared.transport.set_isolated(isolated);
    }

    /// Leaves: stops the tasks and closes the endpoint.
    pub fn shutdown(&self) {
        for task in self.tasks.iter() {
            task.abort();
        }
        self.shared.transport.close();
    }
}

impl Shared {
    pub(crate) fn live_peers(&self) -> Vec<NodeId> {
        self.peers.lock().unwrap().values().filter(|p| p.alive && p.verified).map(|p| p.id.clone()).collect()
    }

    pub(crate) fn member_up(self: &Arc<Self>, id: NodeId) {
        let mut peers = self.peers.lock().unwrap();
        let unverified = peers.values().filter(|p| !p.verified).count();
        let known = peers.get(&id.fingerprint);
        if known.is_none() && unverified >= MAX_UNVERIFIED {
            tracing::warn!(peer = %id.name, addr = %id.addr, "too many unverified members; ignored");
            return;
        }
        // A restarted peer: the connection to its old process is dead. The
        // next send dials anew, and a new connection starts with our whole
        // state. What its old process had open is gone with it.
        if known.is_some_and(|p| p.id.bump != id.bump) {
            self.transport.forget(id.addr);
            self.tally.counts.lock().unwrap().forget_open(id.fingerprint);
        }
        let verified = known.is_some_and(|p| p.verified && p.id.addr == id.addr);
        peers.insert(
            id.fingerprint,
            Peer {
                id: id.clone(),
                alive: true,
                verified: false,
                verifying: false,
                down_since: None,
                outbox: None,
            },
        );
        drop(peers);
        if verified || self.transport.authenticated(id.addr) == Some(id.fingerprint) {
            self.verified(&id);
        } else {
            self.verify(id);
        }
    }

    /// Dials a member SWIM named, to see the certificate at its address.
    fn verify(self: &Arc<Self>, id: NodeId) {
        if let Some(peer) = self.peers.lock().unwrap().get_mut(&id.fingerprint) {
            if std::mem::replace(&mut peer.verifying, true) {
                return;
            }
        }
        let shared = self.clone();
        tokio::spawn(async move {
            let proved = shared.transport.authenticate(id.addr).await;
            if let Some(peer) = shared.peers.lock().unwrap().get_mut(&id.fingerprint) {
                peer.verifying = false;
            }
            match proved {
                Some(fingerprint) if fingerprint == id.fingerprint => shared.verified(&id),
                Some(_) => {
                    tracing::warn!(peer = %id.name, addr = %id.addr, "a member's address shows another certificate; not counted")
                }
                None => {
                    tracing::info!(peer = %id.name, addr = %id.addr, "a member cannot be reached to prove itself; not counted yet")
                }
            }
        });
    }

    /// A frame came from `peer` at `from`: a member claiming that address
    /// and certificate has proved itself.
    fn heard_from(self: &Arc<Self>, peer: Fingerprint, from: SocketAddr) {
        let claimed = self
            .peers
            .lock()
            .unwrap()
            .get(&peer)
            .filter(|p| !p.verified && p.alive && p.id.addr == from)
            .map(|p| p.id.clone());
        if let Some(id) = claimed {
            self.verified(&id);
        }
    }

    /// `id` proved itself: it counts, and gets this node's rounds.
    fn verified(&self, id: &NodeId) {
        let mut peers = self.peers.lock().unwrap();
        let Some(peer) = peers.get_mut(&id.fingerprint).filter(|p| p.id == *id && p.alive) else { return };
        if peer.verified {
            return;
        }
        peer.verified = true;
        peer.outbox = Some(self.peer_sender(id.addr));
        tracing::info!(peer = %id.name, addr = %id.addr, "mesh peer up");
    }

    /// A task that sends one peer's frames in the order they were queued:
    /// the barrier relies on a frame arriving after everything sent before it.
    fn peer_sender(&self, addr: SocketAddr) -> mpsc::Sender<Arc<Vec<u8>>> {
        let (outbox, mut frames) = mpsc::channel::<Arc<Vec<u8>>>(OUTBOX);
        let transport = self.transport.clone();
        tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                transport.send(addr, frame, Delivery::Stream).await;
            }
        });
        outbox
    }

    /// This node's whole state, as the greeting of a new connection: its own
    /// registers and penalties, in frames of about 1 MiB at most.
    fn full_state_frames(&self) -> Vec<Arc<Vec<u8>>> {
        let now = now_ms();
        let entries = self.tally.counts.lock().unwrap().own_state(now);
        let penalties = self.tally.penalties.lock().unwrap().own(now);
        let mut frames = Vec::new();
        let mut entries = entries.into_iter().peekable();
        let mut penalties = penalties.into_iter().peekable();
        loop {
            let (mut chunk, mut size) = (Vec::new(), 0);
            while let Some(entry) = entries.next_if(|_| size < STATE_BYTES) {
                size += 32 + 16 * entry.open.len();
                chunk.push(entry);
            }
            let mut chunk_penalties = Vec::new();
            while let Some(penalty) = penalties.next_if(|_| size < STATE_BYTES) {
                size += 24;
                chunk_penalties.push(penalty);
            }
            let more = entries.peek().is_some() || penalties.peek().is_some();
            frames.push(self.counts_frame(true, more, now, chunk, chunk_penalties));
            if !more {
                return frames;
            }
        }
    }

    pub(crate) fn member_down(&self, id: &NodeId) {
        if let Some(peer) = self.peers.lock().unwrap().get_mut(&id.fingerprint) {
            if peer.id.bump <= id.bump {
                if peer.verified {
                    tracing::info!(peer = %id.name, addr = %id.addr, "mesh peer down");
                }
                peer.alive = false;
                peer.down_since.get_or_insert_with(Instant::now);
                peer.outbox = None;
                self.transport.forget(id.addr);
                // Its open transactions are decided where this node cannot hear.
                self.tally.counts.lock().unwrap().forget_open(id.fingerprint);
            }
        }
    }

    /// A counts frame stamped `base_ms`: the same instant the entries were
    /// taken at, so that the frame holds every change made before its stamp.
    fn counts_frame(
        &self,
        full: bool,
        more: bool,
        base_ms: u64,
        entries: Vec<CountEntry>,
        penalties: Vec<PenaltyEntry>,
    ) -> Arc<Vec<u8>> {
        let round = self.round.fetch_add(1, Ordering::Relaxed);
        Arc::new(encode(&Frame::Counts(CountsFrame { round, full, more, base_ms, entries, penalties })))
    }

    /// Forgets members down longer than `forget_after`: their place, their
    /// counts and their penalties.
    fn forget_gone(&self) {
        let after = self.settings.forget_after;
        let gone: Vec<NodeId> = {
            let mut peers = self.peers.lock().unwrap();
            let gone: Vec<NodeId> = peers
                .values()
                .filter(|p| p.down_since.is_some_and(|since| since.elapsed() >= after))
                .map(|p| p.id.clone())
                .collect();
            for id in &gone {
                peers.remove(&id.fingerprint);
            }
            gone
        };
        for id in gone {
            self.heard.lock().unwrap().remove(&id.fingerprint);
            self.transport.forget_authenticated(id.addr);
            let registers = self.tally.counts.lock().unwrap().forget_origin(id.fingerprint);
            let penalties = self.tally.penalties.lock().unwrap().forget_origin(id.fingerprint);
            tracing::info!(peer = %id.name, addr = %id.addr, registers, penalties, "mesh peer gone for good; forgotten");
        }
    }

    fn round_since(&self, since_ms: u64) -> Round {
        let live = self.live_peers();
        let heard = self.heard.lock().unwrap();
        let count = live
            .iter()
            .filter(|p| heard.get(&p.fingerprint).is_some_and(|h| h.through_ms > since_ms))
            .count();
        Round { heard: count, expected: live.len() }
    }
}

/// Decodes what peers send: SWIM to foca, counts into the CRDT.
async fn receive(
    shared: Arc<Shared>,
    mut inbound: mpsc::Receiver<Inbound>,
    swim: mpsc::UnboundedSender<Input>,
) {
    while let Some(Inbound { peer, from, bytes, .. }) = inbound.recv().await {
        shared.heard_from(peer, from);
        match decode(&bytes) {
            Ok(Frame::Swim(packet)) => {
                let _ = swim.send(Input::Packet(packet));
            }
            Ok(Frame::Counts(frame)) => {
                let mut rejected = 0;
                {
                    let mut counts = shared.tally.counts.lock().unwrap();
                    let Some(origin) = counts.origin(peer) else { continue };
                    for entry in &frame.entries {
                        if counts.merge(origin, frame.base_ms, entry) == Merged::Rejected {
                            rejected += 1;
                        }
                    }
                }
                if !frame.penalties.is_empty() {
                    let (bounds, now) = (shared.settings.peer_bounds, now_ms());
                    let mut penalties = shared.tally.penalties.lock().unwrap();
                    let dropped = frame
                        .penalties
                        .iter()
                        .filter(|p| penalties.merge_from(peer, p, bounds, now) == Taken::Dropped)
                        .count();
                    if dropped > 0 {
                        shared.dropped_penalties.fetch_add(dropped as u64, Ordering::Relaxed);
                        tracing::warn!(peer = %hex(&peer), dropped, "penalties from a peer over its bounds dropped");
                    }
                }
                if rejected > 0 {
                    shared.rejected_entries.fetch_add(rejected, Ordering::Relaxed);
                    tracing::warn!(peer = %hex(&peer), rejected, "nonsense counts from a peer dropped");
                }
                // A round counts as heard once its last piece is in.
                if !frame.more {
                    let mut heard = shared.heard.lock().unwrap();
                    let through_ms = heard.get(&peer).map_or(0, |h| h.through_ms).max(frame.base_ms);
                    heard.insert(peer, Heard { at: Instant::now(), through_ms });
                }
                shared.heard_changed.notify_waiters();
            }
            Err(error) => {
                shared.transport.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %hex(&peer), %error, "gossip frame dropped");
            }
        }
    }
}

/// Every interval: this node's changes (or an empty heartbeat) to every live peer.
async fn rounds(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shared.forget_gone();
        let now = now_ms();
        let entries = shared.tally.counts.lock().unwrap().take_changes(now);
        let penalties = shared.tally.penalties.lock().unwrap().take_changes();
        let outboxes: Vec<(SocketAddr, mpsc::Sender<Arc<Vec<u8>>>)> = shared
            .peers
            .lock()
            .unwrap()
            .values()
            .filter_map(|p| Some((p.id.addr, p.outbox.clone()?)))
            .collect();
        if outboxes.is_empty() {
            continue;
        }
        let frame = shared.counts_frame(false, false, now, entries, penalties);
        for (addr, outbox) in outboxes {
            if outbox.try_send(frame.clone()).is_err() {
                // Too far behind: what it missed comes with the next connection's greeting.
                tracing::warn!(peer = %addr, "gossip peer too slow; reconnecting");
                shared.transport.forget(addr);
            }
        }
    }
}

fn hex(fp: &Fingerprint) -> String {
    fp.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

//! The running mesh of one node, the tokio shell around the [`Engine`]:
//! membership (SWIM), the rounds, the frames the engine hands out sent to
//! their peers (in order, one sender task per peer), the frames peers send
//! handed in, and the questions to a block's home awaited.
//!
//! A member SWIM names counts only once it has proved its identity: a
//! mutual-TLS handshake at its address showed the certificate it claims.
//! Gossip naming members nobody can reach adds no one to the share or to
//! the addresses the policy service waves through. A member down longer
//! than [`MeshSettings::forget_after`] is forgotten, with its counts and
//! penalties, but still counts among the members known (a ghost) until its
//! certificate is revoked, so forgetting it raises no one's share of a limit.
//!
//! SWIM's word that a member is down is not taken alone: this node dials
//! the member itself, and only when no handshake there shows the member's
//! certificate is it down. A member cannot evict another by gossip.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use magicmx_proto::wire::{decode, encode, Frame, Question};
use magicmx_proto::SourceBlock;
use tokio::sync::{mpsc, oneshot};

use crate::counts::{Caps, Fingerprint, Kind, Periods, Rates};
use crate::engine::{Answer, Asked, Engine, EngineSettings, EngineStats, Lenient};
use crate::identity::NodeId;
use crate::penalties::PeerBounds;
use crate::revocation::Revocations;
use crate::swim::{self, Input};
use crate::tally::{now_ms, wire_block, Tally};
use crate::tls::RevokedSet;
use crate::transport::{Delivery, Inbound, Transport};
use crate::Error;

mod revocations;

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
    /// Where revocations signed by the mesh CA are kept (one line each).
    pub revocations_file: Option<PathBuf>,
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
            revocations_file: None,
        }
    }

    /// The certificates refused from the start: `revoked` and those in
    /// `revocations_file`.
    pub fn revoked_at_start(&self) -> Vec<[u8; 32]> {
        let kept = Revocations::load(self.revocations_file.clone());
        let mut all = self.revoked.clone();
        all.extend(kept.certs().filter(|c| !self.revoked.contains(c)));
        all
    }

    /// The engine's part of these settings.
    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            periods: self.periods,
            max_tracked: self.max_tracked,
            peer_bounds: self.peer_bounds,
            ask_timeout_ms: (self.interval.as_millis() as u64 * 2).max(500),
        }
    }
}

/// A member's standing as this node sees it.
#[derive(Debug, Clone)]
pub struct MemberReport {
    pub name: String,
    pub fingerprint: Fingerprint,
    /// What its word weighs now (0 to 1).
    pub weight: f64,
    pub standing: crate::standing::MemberStanding,
    /// How far its clock runs ahead of this node's.
    pub clock_offset_ms: i64,
}

/// A peer as this node sees it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub name: String,
    pub fingerprint: Fingerprint,
    pub addr: SocketAddr,
    pub alive: bool,
    /// Since a frame last came from it.
    pub last_heard: Option<Duration>,
}

struct Peer {
    id: NodeId,
    alive: bool,
    /// A handshake at its address showed its certificate: it counts.
    verified: bool,
    /// A check of its identity is under way.
    verifying: bool,
    /// A check that it is really down is under way.
    probing: bool,
    /// Since when it is down.
    down_since: Option<Instant>,
    /// Frames for it, sent in order by a task of its own (while alive and verified).
    outbox: Option<mpsc::Sender<Arc<Vec<u8>>>>,
}

/// Members named by SWIM and not (yet) verified, at most; more are ignored.
const MAX_UNVERIFIED: usize = 1024;
/// Forgotten members still counted among those known, at most.
const MAX_GHOSTS: usize = 4096;

/// Frames waiting for one peer's sender task; beyond this the peer is too
/// slow to follow, its connection is dropped and the next one starts with
/// the greeting.
const OUTBOX: usize = 256;

pub(crate) struct Shared {
    pub settings: MeshSettings,
    pub own: NodeId,
    pub transport: Arc<Transport>,
    tally: Arc<Tally>,
    peers: Mutex<HashMap<Fingerprint, Peer>>,
    /// When each peer was last heard from.
    heard: Mutex<HashMap<Fingerprint, Instant>>,
    /// Members forgotten after `forget_after`, still known for the share.
    ghosts: Mutex<Vec<Fingerprint>>,
    /// Questions to a home, waiting for its answer.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Revocations signed by the mesh CA, kept on disk.
    revocations: Mutex<Revocations>,
    /// The certificates the handshakes refuse.
    revoked: RevokedSet,
    /// The mesh CA's certificate, which signs revocations.
    ca: rustls::pki_types::CertificateDer<'static>,
}

/// A node's handle on the mesh; cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
    tasks: Arc<Vec<tokio::task::JoinHandle<()>>>,
}

impl Mesh {
    /// Loads the certificates, binds the gossip port, and joins through the
    /// seeds, with a tally of its own that judges leniently (every question
    /// answered yes): for the transport's own tests and benchmarks.
    pub async fn start(settings: MeshSettings) -> Result<Mesh, Error> {
        let tally = Arc::new(Tally::new(settings.engine_settings(), Arc::new(Lenient)));
        Mesh::start_with(settings, tally).await
    }

    /// The same, sharing `tally` (the node's, with its judge) with the mesh.
    pub async fn start_with(settings: MeshSettings, tally: Arc<Tally>) -> Result<Mesh, Error> {
        let revocations = Revocations::load(settings.revocations_file.clone());
        let revoked: RevokedSet =
            Arc::new(std::sync::RwLock::new(settings.revoked_at_start().into_iter().collect()));
        let tls = crate::tls::load(
            &settings.ca_cert,
            &settings.cert,
            &settings.key,
            revoked.clone(),
            (settings.interval * 20).max(Duration::from_secs(5)),
        )?;
        let ca = revocations::ca_certificate(&settings.ca_cert)?;
        let fingerprint = tls.fingerprint;
        tally.set_own(fingerprint);
        // Until the members have noticed this node and sent it their
        // registers, it is no one's home for its own questions.
        let warmup = (settings.interval * 4).max(Duration::from_secs(2));
        tally.engine().warm_until(now_ms() + warmup.as_millis() as u64);
        let (inbox, inbound) = mpsc::channel(4096);
        let transport =
            Transport::bind(settings.listen, tls, inbox).map_err(|e| Error::Bind(settings.listen, e))?;
        let advertise = settings.advertise.unwrap_or_else(|| transport.local_addr());
        let started_ms = now_ms();
        tally.engine().set_started(started_ms);
        let own = NodeId {
            name: settings.name.clone(),
            addr: advertise,
            fingerprint,
            started_ms,
            bump: started_ms,
        };
        let shared = Arc::new(Shared {
            tally,
            peers: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            ghosts: Mutex::new(Vec::new()),
            waiting: Mutex::new(HashMap::new()),
            revocations: Mutex::new(revocations),
            revoked,
            ca,
            own: own.clone(),
            transport,
            settings,
        });
        let greeter = Arc::downgrade(&shared);
        shared.transport.set_greeting(Box::new(move |peer| match greeter.upgrade() {
            Some(shared) => shared.greeting(peer),
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

    /// The taken rates of `block` as held here now (see [`Tally::rate`]).
    pub fn rate(&self, block: SourceBlock, caps: Caps) -> Rates {
        self.shared.tally.rate(block, caps, now_ms())
    }

    /// The homes of `block` (fingerprints), primary first.
    pub fn homes(&self, block: SourceBlock) -> Vec<Fingerprint> {
        self.shared.tally.engine().homes(wire_block(block))
    }

    /// Asks the home of `block` (this node's register going with the
    /// question) and waits for its answer; a home that does not answer is
    /// replaced by the next, and with none answering this node judges alone.
    pub async fn ask(&self, block: SourceBlock, question: Question) -> Answer {
        let (tx, rx) = oneshot::channel();
        {
            let tally = &self.shared.tally;
            let mut engine = tally.engine();
            match engine.ask(wire_block(block), question, now_ms()) {
                Asked::Now(answer) => {
                    self.shared.flush(&mut engine);
                    return answer;
                }
                Asked::Later(id) => {
                    self.shared.waiting.lock().unwrap().insert(id, tx);
                    self.shared.flush(&mut engine);
                }
            }
        }
        match rx.await {
            Ok(answer) => answer,
            // The mesh stopped: judge alone.
            Err(_) => self.shared.tally.answer_alone(block, question, now_ms()),
        }
    }

    /// Live peers and known peers (live or down), verified ones only: the
    /// share of the mesh heard.
    pub fn heard_share(&self) -> (usize, usize) {
        let peers = self.shared.peers.lock().unwrap();
        let verified = peers.values().filter(|p| p.verified);
        let (alive, known) = verified.fold((0, 0), |(a, k), p| (a + usize::from(p.alive), k + 1));
        (alive, known + self.shared.ghosts.lock().unwrap().len())
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
                fingerprint: *fp,
                addr: p.id.addr,
                alive: p.alive,
                last_heard: heard.get(fp).map(|at| at.elapsed()),
            })
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        peers
    }

    pub fn stats(&self) -> &crate::transport::Stats {
        &self.shared.transport.stats
    }

    /// The engine's counters: questions asked and answered, entries and
    /// penalties from peers dropped.
    pub fn engine_stats(&self) -> EngineStats {
        self.shared.tally.engine().stats()
    }

    /// Count entries from peers that were dropped as nonsense.
    pub fn rejected_entries(&self) -> u64 {
        self.engine_stats().rejected_entries
    }

    /// Penalties from peers dropped as over their bounds.
    pub fn dropped_penalties(&self) -> u64 {
        self.engine_stats().dropped_penalties
    }

    /// Each member's standing at this node, why, and its clock's offset.
    pub fn standing(&self) -> Vec<MemberReport> {
        let names: HashMap<Fingerprint, String> =
            self.shared.peers.lock().unwrap().iter().map(|(fp, p)| (*fp, p.id.name.clone())).collect();
        let engine = self.shared.tally.engine();
        let mut all: Vec<MemberReport> = names
            .iter()
            .map(|(fp, name)| {
                let standing = engine.standing().get(fp).cloned();
                MemberReport {
                    name: name.clone(),
                    fingerprint: *fp,
                    weight: engine.standing().weight(fp),
                    standing: standing.unwrap_or_else(|| engine.standing().fresh()),
                    clock_offset_ms: engine.clocks().offset(fp),
                }
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
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

    /// Sends what the engine has for peers, and hands answers to who waits.
    fn flush(&self, engine: &mut Engine) {
        while let Some(fault) = engine.poll_fault() {
            let name =
                self.peers.lock().unwrap().get(&fault.member).map(|p| p.id.name.clone()).unwrap_or_default();
            tracing::warn!(member = %name, fingerprint = %crate::counts::short(&fault.member), what = fault.what, silenced = fault.silenced, "mesh member caught");
        }
        let answers = self.tally.drain(engine);
        if !answers.is_empty() {
            let mut waiting = self.waiting.lock().unwrap();
            for (id, answer) in answers {
                if let Some(tx) = waiting.remove(&id) {
                    let _ = tx.send(answer);
                }
            }
        }
        let peers = self.peers.lock().unwrap();
        while let Some((to, frame)) = engine.poll_transmit() {
            let Some(peer) = peers.get(&to) else { continue };
            let Some(outbox) = &peer.outbox else { continue };
            if outbox.try_send(Arc::new(encode(&frame))).is_err() {
                // Too far behind: what it missed comes with the next connection's greeting.
                tracing::warn!(peer = %peer.id.addr, "gossip peer too slow; reconnecting");
                self.transport.forget(peer.id.addr);
            }
        }
    }

    /// Tells the engine who the members are now.
    fn members_changed(&self) {
        let members: Vec<(Fingerprint, bool)> = self
            .peers
            .lock()
            .unwrap()
            .values()
            .filter(|p| p.verified)
            .map(|p| (p.id.fingerprint, p.alive))
            .chain(self.ghosts.lock().unwrap().iter().map(|fp| (*fp, false)))
            .collect();
        let mut engine = self.tally.engine();
        engine.set_members(&members, now_ms());
        self.flush(&mut engine);
    }

    /// What a peer that has just connected is told first.
    fn greeting(&self, peer: Fingerprint) -> Vec<Arc<Vec<u8>>> {
        let frames = self.tally.engine().greeting(peer, now_ms());
        frames.iter().map(|f| Arc::new(encode(f))).collect()
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
        // next send dials anew, and a new connection starts with the
        // greeting. Its counts are retired only when the member itself says
        // it restarted (in its own frames, `Engine::believe_start`): SWIM
        // gossip about another member's start is anyone's word. A peer that
        // only rejoined after a cut keeps its counts.
        let restarted = known.is_some_and(|p| p.id.started_ms != id.started_ms);
        if restarted {
            self.transport.forget(id.addr);
        }
        let verified = known.is_some_and(|p| p.verified && p.id.addr == id.addr);
        if known.is_some_and(|p| p.verified && p.alive && p.id.addr == id.addr && !restarted) {
            // A new incarnation of a member that is up: it carries on.
            let fingerprint = id.fingerprint;
            peers.get_mut(&fingerprint).expect("known").id = id;
            return;
        }
        peers.insert(
            id.fingerprint,
            Peer {
                id: id.clone(),
                alive: true,
                verified: false,
                verifying: false,
                probing: false,
                down_since: None,
                outbox: None,
            },
        );
        drop(peers);
        self.ghosts.lock().unwrap().retain(|g| *g != id.fingerprint);
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
        self.heard.lock().unwrap().insert(peer, Instant::now());
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

    /// `id` proved itself: it counts, and gets this node's frames.
    fn verified(&self, id: &NodeId) {
        {
            let mut peers = self.peers.lock().unwrap();
            let Some(peer) = peers.get_mut(&id.fingerprint).filter(|p| p.id == *id && p.alive) else {
                return;
            };
            if peer.verified {
                return;
            }
            peer.verified = true;
            peer.outbox = Some(self.peer_sender(id.addr));
        }
        tracing::info!(peer = %id.name, addr = %id.addr, "mesh peer up");
        self.send_revocations_to(id.fingerprint);
        self.members_changed();
    }

    /// A task that sends one peer's frames in the order they were queued.
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

    /// SWIM says `id` is down: this node checks for itself, dialling it,
    /// and takes it as down only when no handshake there shows its
    /// certificate. A member that answers stays up, whoever said otherwise.
    pub(crate) fn member_down(self: &Arc<Self>, id: &NodeId) {
        {
            let mut peers = self.peers.lock().unwrap();
            let Some(peer) = peers.get_mut(&id.fingerprint) else { return };
            if peer.id.bump > id.bump || !peer.alive {
                return;
            }
            if !peer.verified {
                peer.alive = false;
                peer.down_since.get_or_insert_with(Instant::now);
                return;
            }
            if std::mem::replace(&mut peer.probing, true) {
                return;
            }
        }
        let shared = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let answers = shared.transport.probe(id.addr).await == Some(id.fingerprint);
            if let Some(peer) = shared.peers.lock().unwrap().get_mut(&id.fingerprint) {
                peer.probing = false;
            }
            if answers {
                tracing::info!(peer = %id.name, addr = %id.addr, "SWIM says a member is down, but it answers here; kept up");
            } else {
                shared.down(&id);
            }
        });
    }

    /// `id` is down, as this node saw for itself.
    fn down(&self, id: &NodeId) {
        let mut changed = false;
        if let Some(peer) = self.peers.lock().unwrap().get_mut(&id.fingerprint) {
            if peer.verified {
                tracing::info!(peer = %id.name, addr = %id.addr, "mesh peer down");
            }
            changed = peer.verified && peer.alive;
            peer.alive = false;
            peer.down_since.get_or_insert_with(Instant::now);
            peer.outbox = None;
            self.transport.forget(id.addr);
        }
        if changed {
            // Its open transactions are decided where this node cannot hear.
            self.tally.engine().forget_open(id.fingerprint);
            self.members_changed();
        }
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
        {
            let mut ghosts = self.ghosts.lock().unwrap();
            for id in &gone {
                ghosts.retain(|g| *g != id.fingerprint);
                ghosts.push(id.fingerprint);
            }
            let over = ghosts.len().saturating_sub(MAX_GHOSTS);
            ghosts.drain(..over);
        }
        for id in &gone {
            self.heard.lock().unwrap().remove(&id.fingerprint);
            self.transport.forget_authenticated(id.addr);
            let (registers, penalties) = self.tally.engine().forget(id.fingerprint);
            tracing::info!(peer = %id.name, addr = %id.addr, registers, penalties, "mesh peer gone for good; forgotten");
        }
        if !gone.is_empty() {
            self.members_changed();
        }
    }
}

/// Hands what peers send to foca (SWIM) and to the engine.
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
            Ok(Frame::Revoked(list)) => shared.take_revocations(peer, list),
            Ok(frame) => {
                let mut engine = shared.tally.engine();
                engine.handle(peer, frame, now_ms());
                shared.flush(&mut engine);
            }
            Err(error) => {
                shared.transport.stats.frames_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(peer = %crate::counts::short(&peer), %error, "gossip frame dropped");
            }
        }
    }
}

/// Every interval: the engine's round (registers to their homes, penalties
/// to every member, late questions asked again), and gone members forgotten.
async fn rounds(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shared.forget_gone();
        let mut engine = shared.tally.engine();
        engine.tick(now_ms());
        shared.flush(&mut engine);
    }
}

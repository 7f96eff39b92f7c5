//! QUIC between nodes (quinn): one endpoint per node, serving and dialling.
//! SWIM packets go out as datagrams (SWIM expects loss); counts go on a uni
//! stream each (reliable). Every new outgoing connection first carries the
//! node's whole state (the "greeting", in frames of bounded size), so
//! whatever died with an old connection is made good. Each incoming frame is
//! handed on with the authenticated fingerprint of the peer that sent it and
//! the address it came from; the transport also remembers which fingerprint
//! each address proved by a handshake, so that only members who did count.
//!
//! What peers can make this node hold is bounded: a peer reads one frame at
//! a time per connection (at most [`MAX_FRAME`]), at most
//! [`CONNECTIONS_PER_PEER`] connections per certificate are served, and
//! frames waiting to be processed hold at most [`INBOX_BYTES`] in all; a
//! peer past that waits, and QUIC's flow control slows it down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use magicmx_proto::wire::MAX_FRAME;
use quinn::{Connection, Endpoint};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::counts::Fingerprint;
use crate::pki::MESH_NAME;
use crate::tls::{fingerprint, MeshTls};

/// Counters of the transport, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    /// Frames that failed to decode or were too large.
    pub frames_dropped: AtomicU64,
    /// Handshakes refused (wrong CA, expired, revoked, no certificate).
    pub handshakes_refused: AtomicU64,
    /// Connections closed because their peer had [`CONNECTIONS_PER_PEER`] already.
    pub connections_refused: AtomicU64,
    /// The most bytes of frames ever waiting in the inbox at once.
    pub inbox_peak_bytes: AtomicU64,
}

/// Frames received and not yet processed hold at most this many bytes.
pub const INBOX_BYTES: usize = 64 * 1024 * 1024;
/// Connections served at once per peer certificate.
pub const CONNECTIONS_PER_PEER: usize = 4;

/// A frame from a peer: who sent it (certificate fingerprint), from where,
/// and its bytes, which count against the inbox's budget until dropped.
pub struct Inbound {
    pub peer: Fingerprint,
    pub from: SocketAddr,
    pub bytes: Vec<u8>,
    _budget: OwnedSemaphorePermit,
}

/// Makes the frames sent first on every new connection to a peer (given
/// its fingerprint), in order.
pub type Greeting = Box<dyn Fn(Fingerprint) -> Vec<Arc<Vec<u8>>> + Send + Sync>;

/// How a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A datagram if it fits: may be lost.
    Datagram,
    /// A uni stream: arrives unless the connection dies.
    Stream,
}

pub struct Transport {
    endpoint: Endpoint,
    connections: Mutex<HashMap<SocketAddr, Connection>>,
    /// Connections peers made to us (closed on isolation).
    inbound: Arc<Mutex<Vec<Connection>>>,
    /// A fault switch for partition tests: while set, this node neither
    /// sends nor accepts, and its connections are closed, as if cut off.
    isolated: Arc<std::sync::atomic::AtomicBool>,
    /// One dial at a time per address; the others wait for its connection.
    dialing: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>,
    greeting: Mutex<Option<Greeting>>,
    /// The certificate each address proved, by a handshake either way.
    authenticated: Arc<Mutex<HashMap<SocketAddr, Fingerprint>>>,
    pub stats: Arc<Stats>,
}

impl Transport {
    /// Binds `addr` and starts accepting; frames go to `inbox`.
    pub fn bind(
        addr: SocketAddr,
        tls: MeshTls,
        inbox: mpsc::Sender<Inbound>,
    ) -> std::io::Result<Arc<Transport>> {
        let mut endpoint = Endpoint::server(tls.server, addr)?;
        endpoint.set_default_client_config(tls.client);
        let transport = Arc::new(Transport {
            endpoint: endpoint.clone(),
            connections: Mutex::new(HashMap::new()),
            inbound: Arc::new(Mutex::new(Vec::new())),
            isolated: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            dialing: Mutex::new(HashMap::new()),
            greeting: Mutex::new(None),
            authenticated: Arc::new(Mutex::new(HashMap::new())),
            stats: Arc::new(Stats::default()),
        });
        let shared = AcceptShared {
            inbox,
            budget: Arc::new(Semaphore::new(INBOX_BYTES)),
            stats: transport.stats.clone(),
            inbound: transport.inbound.clone(),
            isolated: transport.isolated.clone(),
            authenticated: transport.authenticated.clone(),
        };
        tokio::spawn(accept_loop(endpoint, shared));
        Ok(transport)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("bound endpoint")
    }

    /// The certificate fingerprint `addr` proved in a handshake, if any.
    pub fn authenticated(&self, addr: SocketAddr) -> Option<Fingerprint> {
        self.authenticated.lock().unwrap().get(&addr).copied()
    }

    /// Forgets what `addr` proved (its node has left for good).
    pub fn forget_authenticated(&self, addr: SocketAddr) {
        self.authenticated.lock().unwrap().remove(&addr);
    }

    /// Dials `to` if there is no connection yet; the fingerprint it proved.
    pub async fn authenticate(&self, to: SocketAddr) -> Option<Fingerprint> {
        if self.isolated.load(Ordering::Relaxed) {
            return None;
        }
        self.connection(to).await?;
        self.authenticated(to)
    }

    /// Dials `to` afresh (not over a cached connection) to see whether a
    /// node answers there now, and with which certificate; the connection
    /// is closed at once.
    pub async fn probe(&self, to: SocketAddr) -> Option<Fingerprint> {
        if self.isolated.load(Ordering::Relaxed) {
            return None;
        }
        let connecting = self.endpoint.connect(to, MESH_NAME).ok()?;
        let conn = tokio::time::timeout(Duration::from_secs(2), connecting).await.ok()?.ok()?;
        let fingerprint = peer_fingerprint(&conn);
        conn.close(0u32.into(), b"probe");
        fingerprint
    }

    /// Sets what every new connection carries first.
    pub fn set_greeting(&self, greeting: Greeting) {
        *self.greeting.lock().unwrap() = Some(greeting);
    }

    /// Sends one encoded frame to `to`, dialling if needed. Failures are
    /// logged: SWIM retries, and a new connection starts with the greeting.
    pub async fn send(&self, to: SocketAddr, frame: Arc<Vec<u8>>, delivery: Delivery) {
        if self.isolated.load(Ordering::Relaxed) {
            return;
        }
        let Some(conn) = self.connection(to).await else { return };
        self.send_on(&conn, to, &frame, delivery).await;
    }

    async fn send_on(&self, conn: &Connection, to: SocketAddr, frame: &[u8], delivery: Delivery) {
        let len = frame.len() as u64;
        let sent = match (delivery, conn.max_datagram_size()) {
            (Delivery::Datagram, Some(max)) if frame.len() <= max => {
                conn.send_datagram(bytes::Bytes::copy_from_slice(frame)).map_err(|e| e.to_string())
            }
            _ => send_stream(conn, frame).await,
        };
        match sent {
            Ok(()) => {
                self.stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
                self.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::debug!(peer = %to, %error, "gossip send failed");
                self.connections.lock().unwrap().remove(&to);
            }
        }
    }

    fn cached(&self, to: SocketAddr) -> Option<Connection> {
        self.connections.lock().unwrap().get(&to).filter(|c| c.close_reason().is_none()).cloned()
    }

    async fn connection(&self, to: SocketAddr) -> Option<Connection> {
        if let Some(conn) = self.cached(to) {
            return Some(conn);
        }
        let dial = self.dialing.lock().unwrap().entry(to).or_default().clone();
        let _dialing = dial.lock().await;
        if let Some(conn) = self.cached(to) {
            return Some(conn);
        }
        let connecting = match self.endpoint.connect(to, MESH_NAME) {
            Ok(connecting) => connecting,
            Err(error) => {
                tracing::debug!(peer = %to, %error, "cannot dial peer");
                return None;
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), connecting).await {
            Ok(Ok(conn)) => {
                let fingerprint = peer_fingerprint(&conn)?;
                self.authenticated.lock().unwrap().insert(to, fingerprint);
                self.connections.lock().unwrap().insert(to, conn.clone());
                let greeting = self.greeting.lock().unwrap().as_ref().map(|make| make(fingerprint));
                for frame in greeting.unwrap_or_default() {
                    self.send_on(&conn, to, &frame, Delivery::Stream).await;
                }
                Some(conn)
            }
            Ok(Err(error)) => {
                tracing::info!(peer = %to, %error, "mesh handshake with peer failed");
                None
            }
            Err(_) => None,
        }
    }

    /// Closes every connection, either way, with the member whose
    /// certificate is `member` (revoked).
    pub fn drop_member(&self, member: Fingerprint) {
        let addrs: Vec<SocketAddr> = {
            let mut authenticated = self.authenticated.lock().unwrap();
            let addrs = authenticated.iter().filter(|(_, fp)| **fp == member).map(|(a, _)| *a).collect();
            authenticated.retain(|_, fp| *fp != member);
            addrs
        };
        for addr in addrs {
            self.forget(addr);
        }
        self.inbound.lock().unwrap().retain(|conn| {
            let theirs = peer_fingerprint(conn) == Some(member);
            if theirs {
                conn.close(0u32.into(), b"revoked");
            }
            !theirs
        });
    }

    /// Drops the cached connection to `addr`: the peer there has restarted or
    /// gone, and a connection to its old process would swallow what is sent.
    pub fn forget(&self, addr: SocketAddr) {
        if let Some(conn) = self.connections.lock().unwrap().remove(&addr) {
            conn.close(0u32.into(), b"peer restarted");
        }
    }

    /// Cuts this node off (or reconnects it): for partition tests only.
    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.store(isolated, Ordering::Relaxed);
        if isolated {
            for (_, conn) in self.connections.lock().unwrap().drain() {
                conn.close(0u32.into(), b"isolated");
            }
            for conn in self.inbound.lock().unwrap().drain(..) {
                conn.close(0u32.into(), b"isolated");
            }
        }
    }

    /// Closes every connection and the endpoint.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }
}

async fn send_stream(conn: &Connection, frame: &[u8]) -> Result<(), String> {
    let mut stream = conn.open_uni().await.map_err(|e| e.to_string())?;
    stream.write_all(frame).await.map_err(|e| e.to_string())?;
    stream.finish().map_err(|e| e.to_string())
}

/// What the accept loop shares with the transport.
#[derive(Clone)]
struct AcceptShared {
    inbox: mpsc::Sender<Inbound>,
    /// Bytes of frames waiting in the inbox ([`INBOX_BYTES`]).
    budget: Arc<Semaphore>,
    stats: Arc<Stats>,
    inbound: Arc<Mutex<Vec<Connection>>>,
    isolated: Arc<std::sync::atomic::AtomicBool>,
    authenticated: Arc<Mutex<HashMap<SocketAddr, Fingerprint>>>,
}

async fn accept_loop(endpoint: Endpoint, shared: AcceptShared) {
    while let Some(incoming) = endpoint.accept().await {
        if shared.isolated.load(Ordering::Relaxed) {
            incoming.refuse();
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                // This side refused the peer (its certificate, mostly).
                Err(error @ quinn::ConnectionError::TransportError(_)) => {
                    shared.stats.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %remote, %error, "mesh peer refused at the handshake");
                    return;
                }
                // The dialer gave up or went away.
                Err(error) => {
                    tracing::debug!(peer = %remote, %error, "mesh handshake abandoned");
                    return;
                }
            };
            let Some(peer) = peer_fingerprint(&conn) else {
                shared.stats.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            {
                let mut inbound = shared.inbound.lock().unwrap();
                // Cut off while the handshake ran (checked under the lock
                // `set_isolated` drains: no connection slips past both).
                if shared.isolated.load(Ordering::Relaxed) {
                    conn.close(0u32.into(), b"isolated");
                    return;
                }
                inbound.retain(|c| c.close_reason().is_none());
                let open = inbound.iter().filter(|c| peer_fingerprint(c) == Some(peer)).count();
                if open >= CONNECTIONS_PER_PEER {
                    drop(inbound);
                    shared.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %remote, "mesh peer has too many connections; closed");
                    conn.close(0u32.into(), b"too many connections");
                    return;
                }
                inbound.push(conn.clone());
            }
            shared.authenticated.lock().unwrap().insert(remote, peer);
            serve(conn, peer, remote, &shared).await;
        });
    }
}

fn peer_fingerprint(conn: &Connection) -> Option<Fingerprint> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    certs.first().map(|c| fingerprint(c))
}

/// Reads frames from one authenticated peer until the connection ends, one
/// at a time, each waiting for room in the inbox.
async fn serve(conn: Connection, peer: Fingerprint, from: SocketAddr, shared: &AcceptShared) {
    let stats = &shared.stats;
    loop {
        let frame = tokio::select! {
            stream = conn.accept_uni() => match stream {
                Ok(mut stream) => match stream.read_to_end(MAX_FRAME).await {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(peer = %conn.remote_address(), %error, "gossip frame dropped");
                        continue;
                    }
                },
                Err(_) => return,
            },
            datagram = conn.read_datagram() => match datagram {
                Ok(bytes) => bytes.to_vec(),
                Err(_) => return,
            },
        };
        stats.bytes_received.fetch_add(frame.len() as u64, Ordering::Relaxed);
        stats.frames_received.fetch_add(1, Ordering::Relaxed);
        let cost = u32::try_from(frame.len().max(1)).unwrap_or(u32::MAX);
        let Ok(budget) = shared.budget.clone().acquire_many_owned(cost).await else { return };
        let waiting = INBOX_BYTES - shared.budget.available_permits();
        stats.inbox_peak_bytes.fetch_max(waiting as u64, Ordering::Relaxed);
        let inbound = Inbound { peer, from, bytes: frame, _budget: budget };
        if shared.inbox.send(inbound).await.is_err() {
            return;
        }
    }
}

//! QUIC between nodes (quinn): one endpoint per node, serving and dialling.
//! SWIM packets go out as datagrams (SWIM expects loss); counts go on a uni
//! stream each (reliable). Every new outgoing connection first carries the
//! node's whole state (the "greeting"), so whatever died with an old
//! connection is made good. Each incoming frame is handed on with the
//! authenticated fingerprint of the peer that sent it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use magicmx_proto::wire::MAX_FRAME;
use quinn::{Connection, Endpoint};
use tokio::sync::mpsc;

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
}

/// A frame from a peer: who sent it (certificate fingerprint) and its bytes.
pub type Inbound = (Fingerprint, Vec<u8>);

/// Makes the frame sent first on every new connection.
pub type Greeting = Box<dyn Fn() -> Arc<Vec<u8>> + Send + Sync>;

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
            stats: Arc::new(Stats::default()),
        });
        let shared = AcceptShared {
            inbox,
            stats: transport.stats.clone(),
            inbound: transport.inbound.clone(),
            isolated: transport.isolated.clone(),
        };
        tokio::spawn(accept_loop(endpoint, shared));
        Ok(transport)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("bound endpoint")
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
                self.connections.lock().unwrap().insert(to, conn.clone());
                let greeting = self.greeting.lock().unwrap().as_ref().map(|make| make());
                if let Some(greeting) = greeting {
                    self.send_on(&conn, to, &greeting, Delivery::Stream).await;
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
struct AcceptShared {
    inbox: mpsc::Sender<Inbound>,
    stats: Arc<Stats>,
    inbound: Arc<Mutex<Vec<Connection>>>,
    isolated: Arc<std::sync::atomic::AtomicBool>,
}

async fn accept_loop(endpoint: Endpoint, shared: AcceptShared) {
    while let Some(incoming) = endpoint.accept().await {
        if shared.isolated.load(Ordering::Relaxed) {
            incoming.refuse();
            continue;
        }
        let (inbox, stats, inbound) = (shared.inbox.clone(), shared.stats.clone(), shared.inbound.clone());
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                // This side refused the peer (its certificate, mostly).
                Err(error @ quinn::ConnectionError::TransportError(_)) => {
                    stats.handshakes_refused.fetch_add(1, Ordering::Relaxed);
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
                stats.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            {
                let mut inbound = inbound.lock().unwrap();
                inbound.retain(|c| c.close_reason().is_none());
                inbound.push(conn.clone());
            }
            serve(conn, peer, inbox, stats).await;
        });
    }
}

fn peer_fingerprint(conn: &Connection) -> Option<Fingerprint> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    certs.first().map(|c| fingerprint(c))
}

/// Reads frames from one authenticated peer until the connection ends.
async fn serve(conn: Connection, peer: Fingerprint, inbox: mpsc::Sender<Inbound>, stats: Arc<Stats>) {
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
        if inbox.send((peer, frame)).await.is_err() {
            return;
        }
    }
}

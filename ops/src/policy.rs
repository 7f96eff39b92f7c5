//! The policy service for the domain's real MX (Postfix's policy delegation
//! protocol, `check_policy_service inet:HOST:PORT`): `action=DUNNO` for mesh
//! nodes and trusted senders, and for everyone else a temporary refusal
//! that points at the magic MX (`DEFER_IF_PERMIT 4.7.1`, Postfix's 450).
//!
//! It never answers REJECT. Whoever reaches the real MX without the mesh is
//! one of: a bot that skips the magic MX; an MTA the mesh throttled (421 at
//! connect, 451 at RCPT or after the hold) that moved on to the next MX in
//! the same attempt, as RFC 5321 §5.1 has it; or an MTA that could not reach
//! the magic MX at all (every node down or cut off, a node restarting). The
//! service cannot tell them apart — the mesh may have been unreachable from
//! where the sender stands — and a 5xx bounces the honest ones. A 4xx keeps
//! every message queued at its sender, who tries the magic MX again on its
//! next attempt; a bot gains nothing, since the real MX never takes its mail.
//! It keeps no state per client. Only the configured clients (the real MX
//! hosts, `admin.policy_clients`) are served, a bounded number at once, and
//! a request out of bounds (see `magicmx_proto::policy`) ends its connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use magicmx_node::Node;
use magicmx_proto::policy::{answer, RequestReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub struct Policy {
    pub node: Arc<Node>,
    /// Addresses the real MX sees mesh nodes connect from (besides the peers').
    pub mesh_clients: Vec<ipnet::IpNet>,
    /// The magic MX name, for the reply text.
    pub magic_mx: String,
}

impl Policy {
    pub fn new(node: Arc<Node>, mesh_clients: Vec<ipnet::IpNet>, magic_mx: String) -> Policy {
        Policy { node, mesh_clients, magic_mx }
    }

    /// The action for a client.
    pub fn action(&self, client: IpAddr) -> String {
        if self.is_mesh(client) || self.node.trust().is_trusted(client, magicmx_gossip::tally::now_ms()) {
            return "DUNNO".into();
        }
        format!(
            "DEFER_IF_PERMIT 4.7.1 This domain takes mail from unknown senders only through its MX {}: please deliver there (try again later)",
            self.magic_mx
        )
    }

    fn is_mesh(&self, client: IpAddr) -> bool {
        if self.mesh_clients.iter().any(|n| n.contains(&client)) {
            return true;
        }
        let own = self.node.smtp_addrs().iter().any(|a| a.ip() == client);
        let peer = self.node.mesh().is_some_and(|m| m.peers().iter().any(|p| p.addr.ip() == client));
        own || peer
    }
}

/// Who may ask, and how much of the service one may hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The only clients served (the real MX hosts); others are closed at once.
    pub clients: Vec<ipnet::IpNet>,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// A connection that sends nothing this long is closed.
    pub idle_timeout: Duration,
}

/// Serves the policy service on a listener the caller has bound.
pub async fn serve(listener: TcpListener, policy: Arc<Policy>, limits: Limits) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, clients = ?limits.clients, "policy service listening");
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = listener.accept().await?;
        let peer = peer.ip().to_canonical();
        if !limits.clients.iter().any(|net| net.contains(&peer)) {
            tracing::debug!(client = %peer, "policy service: not an allowed client; closed");
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, max = limits.max_connections, "policy service: too many connections; closed");
            continue;
        };
        let (policy, idle) = (policy.clone(), limits.idle_timeout);
        tokio::spawn(async move {
            answer_requests(stream, &policy, idle).await;
            drop(slot);
        });
    }
}

/// One connection: Postfix keeps it for many requests, each answered in turn.
async fn answer_requests(mut stream: TcpStream, policy: &Policy, idle: Duration) {
    let mut reader = RequestReader::default();
    let mut buf = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        let requests = match reader.feed(&buf[..n]) {
            Ok(requests) => requests,
            Err(error) => {
                tracing::info!(%error, "policy service: request refused; connection closed");
                return;
            }
        };
        for request in requests {
            let action = match request.client_address {
                Some(ip) => policy.action(ip),
                None => "DUNNO".into(),
            };
            tracing::debug!(client = ?request.client_address, %action, "policy");
            if stream.write_all(answer(&action).as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

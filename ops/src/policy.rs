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
//! It keeps no state per client.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use magicmx_node::Node;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

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

/// Serves the policy service on a listener the caller has bound.
pub async fn serve(listener: TcpListener, policy: Arc<Policy>) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "policy service listening");
    loop {
        let (stream, _) = listener.accept().await?;
        let policy = policy.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let mut request: HashMap<String, String> = HashMap::new();
            // Postfix keeps the connection for many requests, each ended by an empty line.
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.is_empty() {
                    if let Some((k, v)) = line.split_once('=') {
                        request.insert(k.to_string(), v.to_string());
                    }
                    if request.len() > 100 {
                        return;
                    }
                    continue;
                }
                let client = request.get("client_address").and_then(|a| a.parse::<IpAddr>().ok());
                let action = match client {
                    Some(ip) => policy.action(ip),
                    None => "DUNNO".into(),
                };
                tracing::debug!(client = ?client, %action, "policy");
                if write.write_all(format!("action={action}\n\n").as_bytes()).await.is_err() {
                    return;
                }
                request.clear();
            }
        });
    }
}

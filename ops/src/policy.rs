//! The policy service for the domain's real MX (Postfix's policy delegation
//! protocol, `check_policy_service inet:HOST:PORT`): `action=DUNNO` for mesh
//! nodes and trusted senders, `action=REJECT 5.7.1 … use our MX …` for
//! everyone else, so a spambot that skips the magic MX is refused at the
//! door. Optionally a client's first attempts are deferred instead (some
//! legitimate senders retry other MX hosts only after a temporary failure).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use magicmx_node::Node;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub struct Policy {
    pub node: Arc<Node>,
    /// Addresses the real MX sees mesh nodes connect from (besides the peers').
    pub mesh_clients: Vec<ipnet::IpNet>,
    /// Attempts per client answered DEFER before REJECT (0: reject at once).
    pub defer_first: u32,
    /// The magic MX name, for the reply text.
    pub magic_mx: String,
    attempts: Mutex<HashMap<IpAddr, u32>>,
}

impl Policy {
    pub fn new(
        node: Arc<Node>,
        mesh_clients: Vec<ipnet::IpNet>,
        defer_first: u32,
        magic_mx: String,
    ) -> Policy {
        Policy { node, mesh_clients, defer_first, magic_mx, attempts: Mutex::new(HashMap::new()) }
    }

    /// The action for a client.
    pub fn action(&self, client: IpAddr) -> String {
        if self.is_mesh(client) || self.node.throttle().is_trusted(client) {
            return "DUNNO".into();
        }
        let tries = {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(client).or_insert(0);
            *n += 1;
            *n
        };
        if tries <= self.defer_first {
            return format!("DEFER_IF_PERMIT 4.7.1 Please deliver through our MX {} first", self.magic_mx);
        }
        format!(
            "REJECT 5.7.1 This domain takes mail from unknown senders only through its MX {}: please use our MX",
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

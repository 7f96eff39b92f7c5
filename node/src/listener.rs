//! The accept loop: binds the SMTP addresses, hands each connection a slot
//! (or a cheap `421` when the caps are reached) and spawns its session.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::connection;
use crate::error::{Error, Result};
use crate::gate::Verdict;
use crate::replies::{self, Refusal};
use crate::stats::Stats;
use crate::Shared;

pub(crate) async fn bind(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let listener = TcpListener::bind(addr).await.map_err(|error| Error::Listen { addr, error })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let client_ip = peer.ip().to_canonical();
        Stats::add(&shared.stats.connections);
        let verdict = shared.gate.judge(&shared.throttle, &shared.trust, client_ip, shared.clock.now());
        match &verdict {
            Verdict::Refuse(refusal) => {
                Stats::add(&shared.stats.refused_at_connect);
                shared.stats.refusal(refusal.label());
            }
            // A penalised block past its polite refusals.
            Verdict::Drop => {
                Stats::add(&shared.stats.refused_at_connect);
                shared.stats.refusal(replies::PENALISED);
            }
            Verdict::Trusted | Verdict::Pass => {}
        }
        let trusted = match verdict {
            Verdict::Trusted => true,
            Verdict::Pass => false,
            Verdict::Drop => continue,
            Verdict::Refuse(refusal) => {
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = stream.write_all(&refusal.reply().to_bytes()).await;
                    let _ = stream.shutdown().await;
                });
                continue;
            }
        };
        let slot = shared.connections.take(client_ip, trusted);
        let shared = shared.clone();
        tokio::spawn(async move {
            match slot {
                Ok(slot) => {
                    connection::serve(shared, stream, peer, trusted).await;
                    drop(slot);
                }
                Err(full) => {
                    let refusal =
                        Refusal::TooManyConnections { hostname: shared.session_config.hostname.clone() };
                    Stats::add(&shared.stats.refused_at_connect);
                    shared.stats.refusal(refusal.label());
                    let mut stream = stream;
                    let reply = refusal.reply();
                    tracing::info!(client = %peer.ip(), ?full, "connection refused: too many connections");
                    let _ = stream.write_all(&reply.to_bytes()).await;
                    let _ = stream.shutdown().await;
                }
            }
        });
    }
}

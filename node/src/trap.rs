//! The honeypot: listeners published as a very high-preference MX (OpenBSD
//! spamd's `-M` idea). No honest sender gets that far down the MX list while
//! the better ones answer, so whoever connects is penalised mesh-wide for
//! `throttle.trap_penalty` and told 421 (a few times per penalty; after
//! that its connections are closed without a word).

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::throttle::Gate;
use crate::Shared;

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        shared.stats.refusal("trap");
        let Gate::Refuse(reply) = shared.throttle.trap_hit(peer.ip().to_canonical()) else {
            continue;
        };
        tokio::spawn(async move {
            let _ = stream.write_all(&reply.to_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

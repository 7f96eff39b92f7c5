//! The honeypot: listeners published as a very high-preference MX (OpenBSD
//! spamd's `-M` idea). A bot that goes straight for the last MX is
//! penalised mesh-wide for `throttle.trap_penalty` and told 421 (a few
//! times per penalty; after that its connections are closed without a word).
//!
//! An honest MTA gets this far only when every better MX refused or
//! deferred it: the magic MX throttled it (421, 451), and the real MX's
//! policy service sent it back to the magic MX (450). Such a sender came
//! through the mesh moments ago, so the trap asks the block's home, which
//! holds every node's count for it, and spares a block the mesh has just
//! seen (`limits`); a block already penalised is not penalised again.
//!
//! "Not seen" is believed only from a whole view: while this node hears
//! less than the whole mesh (a split, a member down) or no home answered,
//! the sender may have been throttled where this node cannot see, so the
//! trap closes the connection without penalising anyone.

use std::net::IpAddr;
use std::sync::Arc;

use magicmx_gossip::Question;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::gate::Verdict;
use crate::replies::Refusal;
use crate::Shared;

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        shared.stats.refusal(Refusal::Trap.label());
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Verdict::Refuse(refusal) = hit(&shared, peer.ip().to_canonical()).await {
                let _ = stream.write_all(&refusal.reply().to_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
    }
}

/// What the trap does with a client at `ip`.
async fn hit(shared: &Shared, ip: IpAddr) -> Verdict {
    let closing = Verdict::Refuse(Refusal::Trap);
    let throttle = &shared.throttle;
    let clock = &shared.clock;
    if shared.trust.is_trusted(ip, clock.now()) {
        return closing;
    }
    let block = throttle.block_of(ip);
    let penalised = |now| throttle.penalty(block, now).map(|p| shared.gate.refuse(block, p, now));
    if let Some(verdict) = penalised(clock.now()) {
        return if verdict == Verdict::Drop { verdict } else { closing };
    }
    // A sender the mesh refused moments ago: the block's home has its count.
    let seen = throttle.ask(block, Question::Seen, clock.now()).await;
    let now = clock.now();
    if let Some(verdict) = penalised(now) {
        return if verdict == Verdict::Drop { verdict } else { closing };
    }
    if seen.yes {
        tracing::info!(%block, client = %ip, "trap hit by a sender the mesh throttled: not penalised");
        return closing;
    }
    if seen.alone || !throttle.hears_whole_mesh() {
        shared.stats.check("trap", "spared_unsure");
        tracing::info!(%block, client = %ip, "trap hit while this node hears less than the whole mesh: not penalised");
        return closing;
    }
    let penalty = throttle.penalise_for(block, now, shared.settings.throttle.trap_penalty, "trap hit");
    match shared.gate.refuse(block, penalty, now) {
        Verdict::Drop => Verdict::Drop,
        _ => closing,
    }
}

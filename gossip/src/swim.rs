//! The SWIM driver: one task owns the foca instance, feeds it packets,
//! timer events and announcements, and carries out what it asks: packets to
//! send, timers to set, and membership changes to record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use magicmx_proto::wire::{encode, Frame};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::mpsc;

use crate::identity::NodeId;
use crate::mesh::Shared;
use crate::transport::Delivery;

pub(crate) enum Input {
    Packet(Vec<u8>),
    Timer(Timer<NodeId>),
    Announce(NodeId),
}

pub(crate) fn config(expected_size: u32) -> foca::Config {
    let mut config =
        foca::Config::new_lan(std::num::NonZeroU32::new(expected_size.max(1)).expect("non-zero"));
    // One QUIC datagram.
    config.max_packet_size = std::num::NonZeroUsize::new(1100).expect("non-zero");
    config
}

/// Starts the driver; its sender, and its task (to abort at shutdown: its
/// own timers keep it alive otherwise).
pub(crate) fn spawn(
    shared: Arc<Shared>,
    identity: NodeId,
    config: foca::Config,
) -> (mpsc::UnboundedSender<Input>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let timers = tx.clone();
    let task = tokio::spawn(async move {
        let rng = SmallRng::seed_from_u64(rand::random());
        let mut foca = Foca::new(identity, config, rng, PostcardCodec);
        let mut runtime = AccumulatingRuntime::new();
        while let Some(input) = rx.recv().await {
            let result = match input {
                Input::Packet(packet) => foca.handle_data(&packet, &mut runtime),
                Input::Timer(timer) => foca.handle_timer(timer, &mut runtime),
                Input::Announce(seed) => foca.announce(seed, &mut runtime),
            };
            if let Err(error) = result {
                shared.transport.stats.frames_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(%error, "SWIM input dropped");
            }
            carry_out(&shared, &mut runtime, &timers);
        }
    });
    (tx, task)
}

fn carry_out(
    shared: &Arc<Shared>,
    runtime: &mut AccumulatingRuntime<NodeId>,
    timers: &mpsc::UnboundedSender<Input>,
) {
    while let Some((to, packet)) = runtime.to_send() {
        let frame = Arc::new(encode(&Frame::Swim(packet.to_vec())));
        let transport = shared.transport.clone();
        tokio::spawn(async move { transport.send(to.addr, frame, Delivery::Datagram).await });
    }
    while let Some((after, timer)) = runtime.to_schedule() {
        let timers = timers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = timers.send(Input::Timer(timer));
        });
    }
    while let Some(notification) = runtime.to_notify() {
        match notification {
            OwnedNotification::MemberUp(id) => shared.member_up(id),
            OwnedNotification::MemberDown(id) => shared.member_down(&id),
            // The same member (address and certificate) with a new
            // incarnation: it carries on; anything else is a new member.
            OwnedNotification::Rename(old, new) if old.fingerprint == new.fingerprint => {
                shared.member_up(new)
            }
            OwnedNotification::Rename(old, new) => {
                shared.member_down(&old);
                shared.member_up(new);
            }
            _ => {}
        }
    }
}

/// Announces to the seeds whenever this node knows no live peer (each seed
/// dialled first, to learn the certificate it shows).
pub(crate) async fn keep_joining(shared: Arc<Shared>, swim: mpsc::UnboundedSender<Input>, every: Duration) {
    let mut last = Instant::now() - every;
    loop {
        if shared.live_peers().is_empty() && last.elapsed() >= every {
            for seed in &shared.settings.seeds {
                if *seed == shared.own.addr {
                    continue;
                }
                // SWIM knows a member by its address and certificate: the
                // handshake tells the seed's.
                let Some(fingerprint) = shared.transport.authenticate(*seed).await else { continue };
                if swim.send(Input::Announce(NodeId::seed(*seed, fingerprint))).is_err() {
                    return;
                }
            }
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

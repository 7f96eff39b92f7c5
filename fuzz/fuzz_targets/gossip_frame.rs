//! Fuzzes what an authenticated but broken or hostile peer can send: any
//! bytes decode to a frame or an error; a decoded frame re-encodes to
//! itself; and the mesh engine takes it in — counts, a question to this
//! node as a block's home, an answer, penalties — judging with the node's
//! real limits, without panicking, storing nonsense, letting the peer add
//! more than its cap, or taking penalties beyond the peer's bounds.

#![no_main]

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use magicmx_gossip::counts::{Caps, Periods};
use magicmx_gossip::penalties::PeerBounds;
use magicmx_gossip::{Engine, EngineSettings};
use magicmx_node::limits::Limits;
use magicmx_proto::wire::{decode, encode, Frame};

const PEER: [u8; 16] = [1; 16];

fn limits() -> Limits {
    Limits {
        recipients_per_hour: 30.0,
        connections_per_minute: 20.0,
        penalty: Duration::from_secs(900),
        penalty_max: Duration::from_secs(3600),
        comeback_recipients: 5.0,
        peer_share: 0.5,
        periods: Periods::default(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = decode(data) else { return };
    // Compared as bytes: a frame may carry NaN, which is not equal to itself.
    let bytes = encode(&frame);
    let again = decode(&bytes).expect("a frame's own encoding decodes");
    assert_eq!(encode(&again), bytes, "a frame survives its own round trip");
    let now = match &frame {
        Frame::Counts(c) => c.base_ms,
        Frame::Ask(a) => a.base_ms,
        _ => 1_800_000_000_000,
    };
    let bounds = PeerBounds { penalty_max_ms: 3_600_000, max_strikes: 8, per_minute: 100 };
    let settings = EngineSettings { peer_bounds: bounds, max_tracked: 10_000, ..EngineSettings::default() };
    let mut engine = Engine::new([0; 16], settings, Arc::new(limits()));
    engine.set_members(&[(PEER, true)], now);
    engine.handle(PEER, frame.clone(), now);
    engine.tick(now);
    while engine.poll_transmit().is_some() {}
    while engine.poll_event().is_some() {}
    let caps = Caps { recipients: 15.0, connections: 10.0 };
    if let Frame::Counts(counts) = &frame {
        for entry in &counts.entries {
            let rate = engine.rate(entry.block, now, caps);
            assert!(rate.recipients.is_finite() && rate.recipients <= 15.0 + 1e-9);
            assert!(rate.connections.is_finite() && rate.connections <= 10.0 + 1e-9);
        }
        assert!(engine.penalties().len() <= 100);
        for p in &counts.penalties {
            if let Some(held) = engine.last_penalty(p.block) {
                assert!(held.until_ms <= now.saturating_add(3_600_000) && held.strikes <= 8);
            }
        }
    }
});

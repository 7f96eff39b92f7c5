//! Fuzzes the gossip frame decoder and the count CRDT behind it: any bytes
//! from an authenticated but broken or hostile peer decode to a frame or an
//! error; a decoded frame re-encodes to itself; merging its entries never
//! panics, never stores nonsense, and a peer never adds more than its cap
//! nor imposes penalties beyond its bounds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use magicmx_gossip::counts::{Caps, Counts, Periods};
use magicmx_gossip::penalties::{PeerBounds, Penalties};
use magicmx_proto::wire::{decode, encode, Frame};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = decode(data) else { return };
    // Compared as bytes: a frame may carry NaN, which is not equal to itself.
    let bytes = encode(&frame);
    let again = decode(&bytes).expect("a frame's own encoding decodes");
    assert_eq!(encode(&again), bytes, "a frame survives its own round trip");
    let Frame::Counts(counts) = frame else { return };
    let mut view = Counts::new([0; 16], Periods::default());
    let peer = view.origin([1; 16]).unwrap();
    for entry in &counts.entries {
        view.merge(peer, counts.base_ms, entry);
    }
    let caps = Caps { recipients: 15.0, connections: 10.0 };
    for entry in &counts.entries {
        let rate = view.rate(entry.block, counts.base_ms, caps);
        assert!(rate.recipients.is_finite() && rate.recipients <= 15.0 + 1e-9);
        assert!(rate.connections.is_finite() && rate.connections <= 10.0 + 1e-9);
    }
    // A peer's penalties: never past penalty_max from the frame's time, never
    // more strikes than the bounds, never more than the per-minute rate.
    let bounds = PeerBounds { penalty_max_ms: 3_600_000, max_strikes: 8, per_minute: 100 };
    let mut penalties = Penalties::new([0; 16], 1_000);
    for p in &counts.penalties {
        penalties.merge_from([1; 16], p, bounds, counts.base_ms);
    }
    assert!(penalties.len() <= 100);
    for p in &counts.penalties {
        if let Some(held) = penalties.last(p.block) {
            assert!(held.until_ms <= counts.base_ms.saturating_add(3_600_000) && held.strikes <= 8);
        }
    }
});

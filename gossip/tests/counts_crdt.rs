//! Property tests of the count CRDT: merging is commutative, associative and
//! idempotent; the merged rate is the sum of the origins' own rates; and a
//! peer never adds more than its cap.

use magicmx_gossip::counts::{Caps, Counts, Fingerprint, Kind, Periods, SELF};
use magicmx_proto::wire::{CountEntry, OpenEntry, WireBlock};
use proptest::prelude::*;

const NOW: u64 = 10_000;

fn block(n: u8) -> WireBlock {
    WireBlock { net: 0xC000_0000 | (u64::from(n) << 8), prefix: 24 }
}

fn fingerprint(n: u8) -> Fingerprint {
    [n; 16]
}

/// An update as it travels: from origin `origin` (1..=3), about `block`.
#[derive(Debug, Clone)]
struct Update {
    origin: u8,
    entry: CountEntry,
    base_ms: u64,
}

fn update() -> impl Strategy<Value = Update> {
    // Only an origin writes its registers, and each write has a new version:
    // two updates with the same version are the same update. So the content
    // is derived from (origin, block, version) here.
    (1u8..=3, 0u8..3, 0u64..5_000, 0u32..1_000, 0u16..3).prop_map(|(origin, b, base, age, seq)| {
        let base_ms = base + 1_000;
        let version = (base_ms - u64::from(age)) * 4 + u64::from(seq);
        let r = ((version * 31 + u64::from(origin) * 7 + u64::from(b)) % 1_000) as f32 / 10.0;
        let open = (0..version % 3)
            .map(|i| OpenEntry {
                id: i as u32,
                recipients: (version % 5) as u16,
                opened_age_ms: age + 10,
                sealed_age_ms: (i == 0).then_some(age),
            })
            .collect();
        Update {
            origin,
            entry: CountEntry {
                block: block(b),
                recipients: r,
                connections: r / 2.0,
                age_ms: age,
                seq,
                open,
            },
            base_ms,
        }
    })
}

fn observer() -> Counts {
    let mut counts = Counts::new(fingerprint(0), Periods::default());
    for o in 1..=3 {
        counts.origin(fingerprint(o));
    }
    counts
}

fn apply(counts: &mut Counts, updates: &[Update]) {
    for u in updates {
        let origin = counts.origin(fingerprint(u.origin)).unwrap();
        counts.merge(origin, u.base_ms, &u.entry, u64::MAX / 2);
    }
}

fn view(counts: &Counts) -> Vec<(u64, u64, String)> {
    (0..3)
        .map(|b| {
            let r = counts.rate(block(b), NOW, Caps::NONE);
            let open: Vec<_> = counts.view(block(b), NOW).origins.into_iter().map(|o| o.open).collect();
            (r.recipients.to_bits(), r.connections.to_bits(), format!("{open:?}"))
        })
        .collect()
}

proptest! {
    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        updates in proptest::collection::vec(update(), 0..40),
        order in any::<proptest::sample::Index>(),
        duplicates in proptest::collection::vec(any::<proptest::sample::Index>(), 0..20),
    ) {
        let mut in_order = observer();
        apply(&mut in_order, &updates);

        // Any other order, with any updates delivered again (replays included).
        let mut shuffled = updates.clone();
        if !shuffled.is_empty() {
            let k = order.index(shuffled.len());
            shuffled.rotate_left(k);
            shuffled.reverse();
            for d in &duplicates {
                shuffled.push(updates[d.index(updates.len())].clone());
            }
        }
        let mut out_of_order = observer();
        apply(&mut out_of_order, &shuffled);
        prop_assert_eq!(view(&in_order), view(&out_of_order));

        // Grouping does not matter: merging halves separately into two
        // nodes' views and then one into the other is the same as all at once.
        let (first, second) = updates.split_at(updates.len() / 2);
        let mut left = observer();
        apply(&mut left, second);
        apply(&mut left, first);
        prop_assert_eq!(view(&in_order), view(&left));
    }

    #[test]
    fn merged_rate_is_the_sum_of_the_origins_own_rates(
        events in proptest::collection::vec((1u8..=3, 0u8..3, any::<bool>(), 0u64..1_000), 0..60),
        replays in proptest::collection::vec(0usize..60, 0..10),
    ) {
        // Three origins count their own events...
        let mut origins: Vec<Counts> = (1..=3).map(|n| Counts::new(fingerprint(n), Periods::default())).collect();
        let mut snapshots: Vec<(u8, Vec<CountEntry>, u64)> = vec![];
        let mut clock = 1_000;
        for (i, &(o, b, recipient, step)) in events.iter().enumerate() {
            clock += step;
            let kind = if recipient { Kind::Recipient } else { Kind::Connection };
            origins[usize::from(o - 1)].record(block(b), kind, clock);
            if i % 7 == 0 {
                // ...and some earlier states are sent along the way (old frames to replay later).
                snapshots.push((o, origins[usize::from(o - 1)].own_state(clock), clock));
            }
        }
        // An observer hears old frames, then every origin's current state, then old frames again.
        let mut observer = observer();
        let deliver = |observer: &mut Counts, o: u8, entries: &[CountEntry], base: u64| {
            let origin = observer.origin(fingerprint(o)).unwrap();
            for e in entries {
                observer.merge(origin, base, e, u64::MAX / 2);
            }
        };
        for (o, entries, base) in &snapshots {
            deliver(&mut observer, *o, entries, *base);
        }
        for (n, origin) in origins.iter().enumerate() {
            deliver(&mut observer, n as u8 + 1, &origin.own_state(clock), clock);
        }
        for &i in &replays {
            if let Some((o, entries, base)) = snapshots.get(i) {
                deliver(&mut observer, *o, entries, *base);
            }
        }
        let now = clock + 500;
        for b in 0..3 {
            let expected: f64 = origins.iter().map(|c| c.rate(block(b), now, Caps::NONE).recipients).sum();
            let seen = observer.rate(block(b), now, Caps::NONE).recipients;
            prop_assert!((seen - expected).abs() <= 1e-3 * expected.max(1.0), "block {}: {} vs {}", b, seen, expected);
            let expected: f64 = origins.iter().map(|c| c.rate(block(b), now, Caps::NONE).connections).sum();
            let seen = observer.rate(block(b), now, Caps::NONE).connections;
            prop_assert!((seen - expected).abs() <= 1e-3 * expected.max(1.0));
        }
    }

    #[test]
    fn a_peer_adds_at_most_its_cap(claimed in 0f32..1.0e6, cap in 0f64..1_000.0, own_events in 0usize..50) {
        let mut counts = observer();
        for _ in 0..own_events {
            counts.record(block(0), Kind::Recipient, NOW);
        }
        let peer = counts.origin(fingerprint(2)).unwrap();
        let entry =
            CountEntry { block: block(0), recipients: claimed, connections: claimed, age_ms: 0, seq: 0, open: vec![] };
        counts.merge(peer, NOW, &entry, NOW);
        let rate = counts.rate(block(0), NOW, Caps { recipients: cap, connections: cap });
        let expected = own_events as f64 + f64::from(claimed).min(cap);
        prop_assert!((rate.recipients - expected).abs() < 1e-2 * expected.max(1.0), "{} vs {}", rate.recipients, expected);
        prop_assert!(rate.connections <= cap + 1e-6, "own connections are zero, the peer's capped");
        prop_assert_ne!(peer, SELF);
    }
}

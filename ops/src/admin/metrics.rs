//! `/metrics`: the node's numbers in the OpenMetrics text format, encoded by
//! `prometheus-client`. A collector reads them from the node at each scrape
//! (the same numbers as `/status`), so the node keeps one set of counters.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use magicmx_node::route::hop_faults::HOP_FAULTS;
use magicmx_node::stats::HOLD_BUCKETS_MS;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::status::{status, StatusJson};
use super::Admin;

pub async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot::of(&admin)));
    let mut out = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(%error, "cannot encode /metrics");
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
}

/// The numbers of one scrape.
#[derive(Debug)]
struct Snapshot {
    status: StatusJson,
    checks: Vec<((&'static str, &'static str), u64)>,
    /// Next hops' configuration faults, by kind (every kind, zero or not).
    hop_faults: Vec<(&'static str, u64)>,
    gossip: Option<Gossip>,
    /// Per-bucket counts (not cumulative) of the hold, and their sum in milliseconds.
    hold: (Vec<u64>, u64),
    disk: magicmx_node::DiskNow,
}

#[derive(Debug)]
struct Gossip {
    bytes: [(&'static str, u64); 2],
    frames: [(&'static str, u64); 3],
    handshakes_refused: u64,
    /// Questions to blocks' homes, by how they were answered.
    questions: [(&'static str, u64); 5],
    /// Entries and penalties from peers dropped.
    dropped: [(&'static str, u64); 2],
    /// Homes that disagreed, frames refused for a clock beyond the bound,
    /// restarts claimed too often.
    strangers: [(&'static str, u64); 3],
}

impl Snapshot {
    /// Each member's standing here, what it was caught at, and its clock.
    fn member_families(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let members: Vec<(&str, &crate::admin::status::StandingJson)> = self
            .status
            .peers
            .iter()
            .filter_map(|p| p.standing.as_ref().map(|s| (p.name.as_str(), s)))
            .collect();
        let weights: Vec<(Vec<(&str, &str)>, ConstGauge<f64>)> =
            members.iter().map(|(name, s)| (vec![("member", *name)], ConstGauge::new(s.weight))).collect();
        family(
            e,
            "magicmx_mesh_member_standing",
            "What each member's word weighs at this node (1 whole, 0 nothing).",
            MetricType::Gauge,
            &weights,
        )?;
        let offsets: Vec<(Vec<(&str, &str)>, ConstGauge<f64>)> = members
            .iter()
            .map(|(name, s)| (vec![("member", *name)], ConstGauge::new(s.clock_offset_ms as f64 / 1000.0)))
            .collect();
        family(
            e,
            "magicmx_mesh_member_clock_offset_seconds",
            "How far each member's clock runs ahead of this node's, as measured.",
            MetricType::Gauge,
            &offsets,
        )?;
        let caught: Vec<(Vec<(&str, &str)>, ConstCounter)> = members
            .iter()
            .flat_map(|(name, s)| {
                s.caught.iter().map(move |(why, n)| {
                    (vec![("member", *name), ("why", why.as_str())], ConstCounter::new(*n))
                })
            })
            .chain(members.iter().map(|(name, s)| {
                (
                    vec![("member", *name), ("why", "outvoted by the other homes")],
                    ConstCounter::new(s.outvoted),
                )
            }))
            .collect();
        family(
            e,
            "magicmx_mesh_member_faults",
            "What each member was caught at, by what.",
            MetricType::Counter,
            &caught,
        )
    }

    /// The disk: bodies in flight, free space, the queue reopened.
    fn disk_families(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let d = &self.disk;
        family(
            e,
            "magicmx_spool_in_flight_bytes",
            "Octets of message bodies being received and not yet queued (bounded by queue.max_in_flight).",
            MetricType::Gauge,
            &single_gauge(d.in_flight),
        )?;
        if let Some(free) = d.free {
            family(
                e,
                "magicmx_disk_free_bytes",
                "Free space on the queue's and the spool's file systems, the lesser (floor: queue.min_free).",
                MetricType::Gauge,
                &single_gauge(free),
            )?;
        }
        family(
            e,
            "magicmx_queue_reopened",
            "Times the queue database was opened again after a commit failed (a full disk).",
            MetricType::Counter,
            &single_counter(d.queue_reopened),
        )
    }

    fn of(admin: &Admin) -> Snapshot {
        let stats = admin.node.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let gossip = admin.node.mesh().map(|mesh| {
            let g = mesh.stats();
            let e = mesh.engine_stats();
            Gossip {
                questions: [
                    ("answered_here", e.answered_here),
                    ("asked_away", e.asked_away),
                    ("answered_for_others", e.answered_for_others),
                    ("timed_out", e.timeouts),
                    ("judged_alone", e.judged_alone),
                ],
                dropped: [("entries", e.rejected_entries), ("penalties", e.dropped_penalties)],
                strangers: [
                    ("homes_disagreed", e.disputes),
                    ("clock_refused", e.clock_refused),
                    ("restart_refused", e.restarts_refused),
                ],
                bytes: [("sent", load(&g.bytes_sent)), ("received", load(&g.bytes_received))],
                frames: [
                    ("sent", load(&g.frames_sent)),
                    ("received", load(&g.frames_received)),
                    ("dropped", load(&g.frames_dropped)),
                ],
                handshakes_refused: load(&g.handshakes_refused),
            }
        });
        Snapshot {
            status: status(admin),
            checks: stats.checks().into_iter().collect(),
            hop_faults: {
                let counted = stats.hop_faults();
                HOP_FAULTS.iter().map(|f| (*f, counted.get(f).copied().unwrap_or(0))).collect()
            },
            gossip,
            hold: stats.hold_histogram(),
            disk: admin.node.disk(),
        }
    }
}

/// A family of counters or gauges; one sample without labels is a plain metric.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(Vec<(&str, &str)>, M)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    if let [(labels, value)] = samples {
        if labels.is_empty() {
            return value.encode(metric);
        }
    }
    for (labels, value) in samples {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn counters<'a>(
    label: &'a str,
    values: &'a [(&'a str, u64)],
) -> Vec<(Vec<(&'a str, &'a str)>, ConstCounter)> {
    values.iter().map(|(value, n)| (vec![(label, *value)], ConstCounter::new(*n))).collect()
}

fn single_counter(n: u64) -> Vec<(Vec<(&'static str, &'static str)>, ConstCounter)> {
    vec![(vec![], ConstCounter::new(n))]
}

fn single_gauge(n: u64) -> Vec<(Vec<(&'static str, &'static str)>, ConstGauge)> {
    vec![(vec![], ConstGauge::new(n as i64))]
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (s, c) = (&self.status, &self.status.counters);
        let e = &mut encoder;
        family(
            e,
            "magicmx_connections",
            "SMTP connections accepted by the listener.",
            MetricType::Counter,
            &single_counter(c.connections),
        )?;
        let messages = [
            ("accepted", c.accepted),
            ("tempfailed", c.tempfailed),
            ("rejected", c.rejected),
            ("resent", c.resent),
        ];
        family(
            e,
            "magicmx_messages",
            "Messages at the end of DATA, by result.",
            MetricType::Counter,
            &counters("result", &messages),
        )?;
        let refusals: Vec<(&str, u64)> = s.refusals.iter().map(|(r, n)| (r.as_str(), *n)).collect();
        family(
            e,
            "magicmx_refusals",
            "Refusals by reason (connections, senders, recipients, messages).",
            MetricType::Counter,
            &counters("reason", &refusals),
        )?;
        let deliveries = [("sent", c.delivered), ("deferred", c.deferred), ("bounced", c.bounced)];
        family(
            e,
            "magicmx_deliveries",
            "Delivery attempts per recipient, by outcome.",
            MetricType::Counter,
            &counters("status", &deliveries),
        )?;
        let checks: Vec<(Vec<(&str, &str)>, ConstCounter)> = self
            .checks
            .iter()
            .map(|((check, result), n)| (vec![("check", *check), ("result", *result)], ConstCounter::new(*n)))
            .collect();
        family(e, "magicmx_checks", "Check outcomes.", MetricType::Counter, &checks)?;
        family(
            e,
            "magicmx_next_hop_faults",
            "Next hops that did not take XCLIENT, or lost their reply after the final dot.",
            MetricType::Counter,
            &counters("fault", &self.hop_faults),
        )?;
        if let Some(g) = &self.gossip {
            family(
                e,
                "magicmx_gossip_bytes",
                "Gossip bytes.",
                MetricType::Counter,
                &counters("direction", &g.bytes),
            )?;
            family(
                e,
                "magicmx_gossip_frames",
                "Gossip frames.",
                MetricType::Counter,
                &counters("direction", &g.frames),
            )?;
            family(
                e,
                "magicmx_gossip_handshakes_refused",
                "Mesh handshakes refused.",
                MetricType::Counter,
                &single_counter(g.handshakes_refused),
            )?;
            family(
                e,
                "magicmx_mesh_questions",
                "Questions about blocks: answered here (this node is the home), asked of a home, answered for other nodes, timed out at a home, judged alone (no home answered).",
                MetricType::Counter,
                &counters("outcome", &g.questions),
            )?;
            family(
                e,
                "magicmx_mesh_dropped",
                "Count entries (nonsense) and penalties (over the peer's bounds) from peers, dropped.",
                MetricType::Counter,
                &counters("what", &g.dropped),
            )?;
            family(
                e,
                "magicmx_mesh_strangers",
                "What members were caught at: homes that disagreed on a verdict, frames refused for a clock over an hour off, restarts claimed too often.",
                MetricType::Counter,
                &counters("event", &g.strangers),
            )?;
            self.member_families(e)?;
        }
        let alive = s.peers.iter().filter(|p| p.alive).count() as i64;
        let peers = [
            (vec![("state", "alive")], ConstGauge::new(alive)),
            (vec![("state", "down")], ConstGauge::new(s.peers.len() as i64 - alive)),
        ];
        family(e, "magicmx_peers", "Mesh peers known, by state.", MetricType::Gauge, &peers)?;
        family(
            e,
            "magicmx_queue_messages",
            "Messages in the queue.",
            MetricType::Gauge,
            &single_gauge(s.queue.messages),
        )?;
        family(
            e,
            "magicmx_queue_oldest_seconds",
            "Age of the oldest queued message.",
            MetricType::Gauge,
            &single_gauge(s.queue.oldest_age_seconds),
        )?;
        family(
            e,
            "magicmx_penalised_blocks",
            "Blocks penalised now.",
            MetricType::Gauge,
            &single_gauge(s.penalised.len() as u64),
        )?;
        self.disk_families(e)?;
        // Per-bucket counts: the encoder makes them cumulative.
        let (buckets, sum_ms) = &self.hold;
        let count = buckets.iter().sum();
        let buckets: Vec<(f64, u64)> = buckets
            .iter()
            .enumerate()
            // The last bucket, +Inf, is f64::MAX to the encoder.
            .map(|(i, n)| (HOLD_BUCKETS_MS.get(i).map_or(f64::MAX, |ms| *ms as f64 / 1000.0), *n))
            .collect();
        let mut hold = e.encode_descriptor(
            "magicmx_hold_seconds",
            "End-of-DATA hold, untrusted transactions.",
            None,
            MetricType::Histogram,
        )?;
        hold.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            *sum_ms as f64 / 1000.0,
            count,
            &buckets,
            None,
        )
    }
}

//! `/` (the status page), `/status` (JSON) and `/metrics` (Prometheus text).

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::Json;
use magicmx_node::stats::{Sample, Stats, HOLD_BUCKETS_MS};
use serde::{Deserialize, Serialize};

use super::Admin;

const PAGE: &str = include_str!("status.html");

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusJson {
    pub version: String,
    pub node: String,
    pub uptime_seconds: u64,
    pub counters: Counters,
    pub refusals: std::collections::BTreeMap<String, u64>,
    pub queue: QueueSummary,
    pub peers: Vec<PeerJson>,
    pub penalised: Vec<PenaltyJson>,
    pub top_blocks: Vec<BlockJson>,
    pub history: Vec<HistoryJson>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Counters {
    pub connections: u64,
    pub accepted: u64,
    pub tempfailed: u64,
    pub rejected: u64,
    /// Second tries of messages whose 250 was lost: answered, not queued twice.
    #[serde(default)]
    pub resent: u64,
    pub refused_at_connect: u64,
    pub delivered: u64,
    pub deferred: u64,
    pub bounced: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct QueueSummary {
    pub messages: u64,
    pub oldest_age_seconds: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PeerJson {
    pub name: String,
    pub addr: String,
    pub alive: bool,
    pub last_heard_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PenaltyJson {
    pub block: String,
    pub until: String,
    pub strikes: u8,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BlockJson {
    pub block: String,
    pub recipients_per_hour: f64,
    pub connections_per_minute: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HistoryJson {
    pub t: u64,
    pub accepted: u64,
    pub refused: u64,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

pub fn status(admin: &Admin) -> StatusJson {
    let node = &admin.node;
    let stats = node.stats();
    let queued = node.queue().list().unwrap_or_default();
    let oldest = queued.iter().map(|(_, e)| e.arrived).min().map_or(0, |t| now_secs().saturating_sub(t));
    let tally = node.throttle().tally();
    let now_ms = magicmx_gossip::tally::now_ms();
    let mut history: Vec<HistoryJson> = stats
        .history()
        .into_iter()
        .map(|Sample { t, accepted, refused }| HistoryJson { t, accepted, refused })
        .collect();
    let refused_now =
        Stats::get(&stats.refused_at_connect) + Stats::get(&stats.rejected) + Stats::get(&stats.tempfailed);
    history.push(HistoryJson { t: now_secs(), accepted: Stats::get(&stats.accepted), refused: refused_now });
    StatusJson {
        version: env!("CARGO_PKG_VERSION").to_string(),
        node: node.name().to_string(),
        uptime_seconds: node.uptime().as_secs(),
        counters: Counters {
            connections: Stats::get(&stats.connections),
            accepted: Stats::get(&stats.accepted),
            tempfailed: Stats::get(&stats.tempfailed),
            rejected: Stats::get(&stats.rejected),
            resent: Stats::get(&stats.resent),
            refused_at_connect: Stats::get(&stats.refused_at_connect),
            delivered: Stats::get(&stats.delivered),
            deferred: Stats::get(&stats.deferred),
            bounced: Stats::get(&stats.bounced),
        },
        refusals: stats.refusals().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        queue: QueueSummary { messages: queued.len() as u64, oldest_age_seconds: oldest },
        peers: node
            .mesh()
            .map(|mesh| {
                mesh.peers()
                    .into_iter()
                    .map(|p| PeerJson {
                        name: p.name,
                        addr: p.addr.to_string(),
                        alive: p.alive,
                        last_heard_ms: p.last_heard.map(|d| d.as_millis() as u64),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        penalised: tally
            .penalties_in_force(now_ms)
            .into_iter()
            .map(|p| PenaltyJson {
                block: magicmx_gossip::tally::block_text(p.block),
                until: rfc3339(p.until_ms),
                strikes: p.strikes,
            })
            .collect(),
        top_blocks: tally
            .top_blocks(20, node.throttle().caps(), now_ms)
            .into_iter()
            .map(|(block, r)| BlockJson {
                block,
                recipients_per_hour: r.recipients,
                connections_per_minute: r.connections,
            })
            .collect(),
        history,
    }
}

pub async fn status_json(State(admin): State<Admin>) -> Json<StatusJson> {
    Json(status(&admin))
}

/// Prometheus text exposition (version 0.0.4).
pub async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    let s = status(&admin);
    let stats = admin.node.stats();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let c = &s.counters;
    counter(
        "magicmx_connections_total",
        "SMTP connections accepted by the listener.",
        &[(String::new(), c.connections)],
    );
    let messages = [
        ("accepted", c.accepted),
        ("tempfailed", c.tempfailed),
        ("rejected", c.rejected),
        ("resent", c.resent),
    ];
    let messages: Vec<(String, u64)> =
        messages.iter().map(|(r, v)| (format!("{{result=\"{r}\"}}"), *v)).collect();
    counter("magicmx_messages_total", "Messages at the end of DATA, by result.", &messages);
    let refusals: Vec<(String, u64)> =
        s.refusals.iter().map(|(r, v)| (format!("{{reason=\"{r}\"}}"), *v)).collect();
    counter(
        "magicmx_refusals_total",
        "Refusals by reason (connections, senders, recipients, messages).",
        &refusals,
    );
    let deliveries = [("sent", c.delivered), ("deferred", c.deferred), ("bounced", c.bounced)];
    let deliveries: Vec<(String, u64)> =
        deliveries.iter().map(|(r, v)| (format!("{{status=\"{r}\"}}"), *v)).collect();
    counter("magicmx_deliveries_total", "Delivery attempts per recipient, by outcome.", &deliveries);
    let checks: Vec<(String, u64)> = stats
        .checks()
        .into_iter()
        .map(|((check, result), v)| (format!("{{check=\"{check}\",result=\"{result}\"}}"), v))
        .collect();
    counter("magicmx_checks_total", "Check outcomes.", &checks);
    if let Some(mesh) = admin.node.mesh() {
        let g = mesh.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        counter(
            "magicmx_gossip_bytes_total",
            "Gossip bytes.",
            &[
                ("{direction=\"sent\"}".into(), load(&g.bytes_sent)),
                ("{direction=\"received\"}".into(), load(&g.bytes_received)),
            ],
        );
        counter(
            "magicmx_gossip_frames_total",
            "Gossip frames.",
            &[
                ("{direction=\"sent\"}".into(), load(&g.frames_sent)),
                ("{direction=\"received\"}".into(), load(&g.frames_received)),
                ("{direction=\"dropped\"}".into(), load(&g.frames_dropped)),
            ],
        );
        counter(
            "magicmx_gossip_handshakes_refused_total",
            "Mesh handshakes refused.",
            &[(String::new(), load(&g.handshakes_refused))],
        );
    }
    let alive = s.peers.iter().filter(|p| p.alive).count();
    let _ = writeln!(out, "# HELP magicmx_peers Mesh peers known, by state.\n# TYPE magicmx_peers gauge");
    let _ = writeln!(
        out,
        "magicmx_peers{{state=\"alive\"}} {alive}\nmagicmx_peers{{state=\"down\"}} {}",
        s.peers.len() - alive
    );
    let _ = writeln!(
        out,
        "# HELP magicmx_queue_messages Messages in the queue.\n# TYPE magicmx_queue_messages gauge"
    );
    let _ = writeln!(out, "magicmx_queue_messages {}", s.queue.messages);
    let _ = writeln!(out, "# HELP magicmx_queue_oldest_seconds Age of the oldest queued message.\n# TYPE magicmx_queue_oldest_seconds gauge");
    let _ = writeln!(out, "magicmx_queue_oldest_seconds {}", s.queue.oldest_age_seconds);
    let _ = writeln!(
        out,
        "# HELP magicmx_penalised_blocks Blocks penalised now.\n# TYPE magicmx_penalised_blocks gauge"
    );
    let _ = writeln!(out, "magicmx_penalised_blocks {}", s.penalised.len());
    let (buckets, sum_ms) = stats.hold_histogram();
    let _ = writeln!(out, "# HELP magicmx_hold_seconds End-of-DATA hold, untrusted transactions.\n# TYPE magicmx_hold_seconds histogram");
    let mut cumulative = 0;
    for (i, count) in buckets.iter().enumerate() {
        cumulative += count;
        let le = HOLD_BUCKETS_MS.get(i).map_or("+Inf".to_string(), |ms| format!("{}", *ms as f64 / 1000.0));
        let _ = writeln!(out, "magicmx_hold_seconds_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(
        out,
        "magicmx_hold_seconds_sum {}\nmagicmx_hold_seconds_count {cumulative}",
        sum_ms as f64 / 1000.0
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

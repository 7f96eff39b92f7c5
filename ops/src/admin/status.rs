//! `/` (the status page) and `/status` (JSON); `/metrics` is in `metrics.rs`.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::Html;
use axum::Json;
use magicmx_node::stats::{Sample, Stats};
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
    /// How much this member's word counts here (0 to 1), and why.
    #[serde(default)]
    pub standing: Option<StandingJson>,
}

/// A member's standing at this node: built slowly by being corroborated,
/// lost fast when caught.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandingJson {
    pub fingerprint: String,
    /// What its word weighs: 1 whole, 0 nothing.
    pub weight: f64,
    pub score: f64,
    pub corroborated: u64,
    pub outvoted: u64,
    /// Certain faults, by what it did.
    pub caught: BTreeMap<String, u64>,
    /// The last thing that lowered it.
    pub last_fault: Option<String>,
    /// How far its clock runs ahead of this node's.
    pub clock_offset_ms: i64,
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
    let now_ms = node.now();
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
        peers: node.mesh().map(peers).unwrap_or_default(),
        penalised: node
            .penalties_in_force(now_ms)
            .into_iter()
            .map(|p| PenaltyJson {
                block: magicmx_gossip::tally::block_text(p.block),
                until: rfc3339(p.until_ms),
                strikes: p.strikes,
            })
            .collect(),
        top_blocks: node
            .top_blocks(20, now_ms)
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

/// The peers this node knows, each with its standing here.
fn peers(mesh: &magicmx_gossip::Mesh) -> Vec<PeerJson> {
    let standing: HashMap<[u8; 16], StandingJson> = mesh
        .standing()
        .into_iter()
        .map(|m| {
            let json = StandingJson {
                fingerprint: m.fingerprint.iter().map(|b| format!("{b:02x}")).collect(),
                weight: m.weight,
                score: m.standing.score,
                corroborated: m.standing.corroborated,
                outvoted: m.standing.outvoted,
                caught: m.standing.contradicted.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                last_fault: m.standing.last_fault.map(|(why, at)| format!("{why} at {}", rfc3339(at))),
                clock_offset_ms: m.clock_offset_ms,
            };
            (m.fingerprint, json)
        })
        .collect();
    mesh.peers()
        .into_iter()
        .map(|p| PeerJson {
            standing: standing.get(&p.fingerprint).cloned(),
            name: p.name,
            addr: p.addr.to_string(),
            alive: p.alive,
            last_heard_ms: p.last_heard.map(|d| d.as_millis() as u64),
        })
        .collect()
}

pub async fn status_json(State(admin): State<Admin>) -> Json<StatusJson> {
    Json(status(&admin))
}

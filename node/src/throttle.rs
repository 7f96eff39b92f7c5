//! The throttle: per-block limits enforced on the tally the mesh shares.
//!
//! - The **gate** (at accept, the flood path: no DNS, no disk) lets trusted
//!   sources through uncounted, refuses penalised blocks (a polite `421` the
//!   first few times per penalty, then a bare close), counts the connection,
//!   and penalises a block over its connection rate.
//! - At **RCPT**, each recipient is counted; over the recipient rate the
//!   block is penalised and the recipient gets `451 4.7.1`.
//! - The **hold**, at the end of DATA, waits for one gossip round from every
//!   live peer (bounded by `throttle.hold`), then re-reads the block's rate:
//!   over the limit, `451 4.7.1` and the sender keeps the message.
//!
//! Partitions: a node that hears `k` of the `n` peers it knows enforces the
//! limits scaled by `(k + 1) / (n + 1)`, its share of the mesh, so a split
//! mesh never adds up to more than one limit.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use magicmx_gossip::{Caps, Kind, Mesh, Penalty, Tally};
use magicmx_proto::smtp::Reply;
use magicmx_proto::{Address, SourceBlock};
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::settings::ThrottleSettings;
use crate::trust::TrustList;

/// The gate's verdict on a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Serve it; nothing counted.
    Trusted,
    /// Serve it; counted.
    Pass,
    /// Answer this and close.
    Refuse(Reply),
    /// Close without a word.
    Drop,
}

pub struct Throttle {
    settings: ThrottleSettings,
    prefixes: (u8, u8),
    tally: Arc<Tally>,
    mesh: Option<Mesh>,
    pub trust: TrustList,
    /// Polite refusals given per block during its current penalty.
    refusals: DashMap<SourceBlock, (u64, u32)>,
    /// Addresses trusted by forward-confirmed host name, and since when: the
    /// gate cannot ask DNS, so it remembers (for `NAMED_TRUST`).
    named: DashMap<IpAddr, Instant>,
    /// Woken when a penalty is imposed (to save penalties to disk).
    pub penalised: Notify,
}

impl Throttle {
    pub fn new(
        settings: ThrottleSettings,
        prefixes: (u8, u8),
        tally: Arc<Tally>,
        mesh: Option<Mesh>,
        trust: TrustList,
    ) -> Throttle {
        Throttle {
            settings,
            prefixes,
            tally,
            mesh,
            trust,
            refusals: DashMap::new(),
            named: DashMap::new(),
            penalised: Notify::new(),
        }
    }

    pub fn block_of(&self, ip: IpAddr) -> SourceBlock {
        SourceBlock::of(ip, self.prefixes.0, self.prefixes.1)
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trust.contains(ip) || self.named.get(&ip).is_some_and(|since| since.elapsed() < NAMED_TRUST)
    }

    /// `ip` proved to be a trusted host name: the gate lets it through from now on.
    pub fn trust_by_name(&self, ip: IpAddr) {
        self.named.insert(ip, Instant::now());
    }

    /// The verdict at accept.
    pub fn gate(&self, ip: IpAddr) -> Gate {
        if self.is_trusted(ip) {
            return Gate::Trusted;
        }
        let block = self.block_of(ip);
        if let Some(penalty) = self.tally.penalty(block) {
            return self.refusal(block, penalty);
        }
        self.tally.record(block, Kind::Connection);
        let rate = self.tally.rate(block, self.caps()).connections;
        let limit = self.settings.connections_per_minute * self.share();
        if rate > limit {
            let penalty = self.penalise(block, &format!("{rate:.0} connections a minute, limit {limit:.0}"));
            return self.refusal(block, penalty);
        }
        Gate::Pass
    }

    /// Counts a recipient of an untrusted client; a refusal when its block is over the limit.
    pub fn recipient(&self, ip: IpAddr, recipient: &Address) -> Option<Reply> {
        let block = self.block_of(ip);
        self.tally.record(block, Kind::Recipient);
        if recipient.is_postmaster() {
            return None;
        }
        self.over_recipient_limit(block)
    }

    /// The end-of-DATA hold for an untrusted client whose first recipient
    /// came at `since`; a refusal when its block is over the limit then.
    pub async fn hold(&self, ip: IpAddr, since: Instant) -> Option<Reply> {
        if let Some(mesh) = &self.mesh {
            mesh.wait_round(since, self.settings.hold).await;
        }
        self.over_recipient_limit(self.block_of(ip))
    }

    /// A client hit the trap: its block is penalised for `trap_penalty`.
    /// A block already penalised is not penalised again (no log, no save, no
    /// gossip per hit); like the gate, the trap answers a few times per
    /// penalty and then closes without a word.
    pub fn trap_hit(&self, ip: IpAddr) -> Gate {
        let closing = Reply::new(421, "4.7.0", "Service not available, closing transmission channel");
        if self.is_trusted(ip) {
            return Gate::Refuse(closing);
        }
        let block = self.block_of(ip);
        let penalty = match self.tally.penalty(block) {
            Some(penalty) => penalty,
            None => {
                let penalty = self.tally.penalise_for(block, self.settings.trap_penalty);
                tracing::info!(%block, client = %ip, until = %when(penalty.until_ms), "trap hit: block penalised");
                self.penalised.notify_one();
                penalty
            }
        };
        match self.refusal(block, penalty) {
            Gate::Refuse(_) => Gate::Refuse(closing),
            other => other,
        }
    }

    fn over_recipient_limit(&self, block: SourceBlock) -> Option<Reply> {
        let rate = self.tally.rate(block, self.caps()).recipients;
        let limit = self.settings.recipients_per_hour * self.share();
        if rate <= limit {
            return None;
        }
        let penalty = match self.tally.penalty(block) {
            Some(penalty) => penalty,
            None => self.penalise(block, &format!("{rate:.0} recipients an hour, limit {limit:.0}")),
        };
        let text = format!(
            "Too much mail from your network {block}: over {limit:.0} recipients an hour across this mesh; try again after {}",
            when(penalty.until_ms)
        );
        Some(Reply::new(451, "4.7.1", text))
    }

    fn penalise(&self, block: SourceBlock, why: &str) -> Penalty {
        let penalty = self.tally.penalise(block, self.settings.penalty, self.settings.penalty_max);
        tracing::info!(%block, reason = why, until = %when(penalty.until_ms), strikes = penalty.strikes, "block penalised");
        self.penalised.notify_one();
        penalty
    }

    fn refusal(&self, block: SourceBlock, penalty: Penalty) -> Gate {
        let mut given = self.refusals.entry(block).or_insert((penalty.until_ms, 0));
        if given.0 != penalty.until_ms {
            *given = (penalty.until_ms, 0);
        }
        given.1 += 1;
        if given.1 > self.settings.polite_refusals {
            return Gate::Drop;
        }
        let minutes = penalty.until_ms.saturating_sub(now_ms()).div_ceil(60_000);
        let text = format!(
            "Too much mail from your network {block}; come back after {} (in {minutes} min)",
            when(penalty.until_ms)
        );
        Gate::Refuse(Reply::new(421, "4.7.0", text))
    }

    /// The most one peer's counts may add to a block.
    pub fn caps(&self) -> Caps {
        let share = self.settings.peer_share;
        Caps {
            recipients: self.settings.recipients_per_hour * share,
            connections: self.settings.connections_per_minute * share,
        }
    }

    /// The share of the mesh this node hears: 1 alone or with every peer up.
    fn share(&self) -> f64 {
        match &self.mesh {
            Some(mesh) => {
                let (alive, known) = mesh.heard_share();
                (1 + alive) as f64 / (1 + known) as f64
            }
            None => 1.0,
        }
    }

    /// Forgets refusal counts of penalties that are over.
    pub fn sweep(&self) {
        let now = now_ms();
        self.refusals.retain(|_, (until, _)| *until > now);
        self.named.retain(|_, since| since.elapsed() < NAMED_TRUST);
    }

    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }
}

/// How long a forward-confirmed trusted host name is remembered by address.
const NAMED_TRUST: std::time::Duration = std::time::Duration::from_secs(3600);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// A time for a reply: RFC 2822 date, UTC.
fn when(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| t.format(&Rfc2822).ok())
        .unwrap_or_else(|| "later".into())
}

//! magicmx-node: the relay engine. [`Node::start`] wires the stages of one
//! node together: accept → session → queue → delivery.

pub mod bounded;
pub mod checks;
pub mod clock;
mod connection;
mod connections;
mod deliver;
mod disk;
mod dns;
mod domains;
mod dsn;
mod error;
mod gate;
mod hold;
mod housekeeping;
mod intake;
pub mod limits;
mod listener;
pub mod named_trust;
pub mod queue;
mod replies;
mod resend;
mod reservation;
pub mod route;
mod session;
pub mod settings;
pub mod stats;
pub mod throttle;
mod tls;
mod trap;
pub mod trust;

use std::net::SocketAddr;
use std::sync::Arc;

use clock::{Clock, SystemClock};
use magicmx_gossip::{EngineSettings, Mesh, Tally};
use magicmx_proto::smtp::SessionConfig;
use throttle::Throttle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use trust::TrustList;

pub use error::{Error, Result};
pub use queue::{Envelope, Queue, QueueId, RecipientStatus};
pub use settings::{DomainSettings, NodeSettings, SmtpSettings, TlsFiles};
pub use tls::install_crypto_provider;

use connections::ConnectionSlots;
use dns::Dns;
use domains::Domains;
use route::outbound::Outbound;

/// What the node's tasks (the accept loops, connections, delivery,
/// housekeeping) share. The stages a message goes through do not take it
/// whole: each takes the parts it uses (`session/`, `hold.rs`, `gate.rs`,
/// and the queue stage its [`intake::Intake`]).
pub(crate) struct Shared {
    pub settings: NodeSettings,
    pub session_config: Arc<SessionConfig>,
    /// What the served domains' next hops take, and so the node.
    pub sizes: route::sizes::NextHopSizes,
    pub domains: Domains,
    pub queue: Queue,
    /// The queue stage: what taking a message in uses.
    pub intake: intake::Intake,
    /// Deliveries noted the moment the next hop takes them (`deliver::journal`).
    pub journal: deliver::journal::Journal,
    pub tls: Option<TlsAcceptor>,
    pub connections: Arc<ConnectionSlots>,
    pub delivery: mpsc::UnboundedSender<deliver::Job>,
    pub dns: Arc<Dns>,
    pub outbound: Outbound,
    /// Limits, counts, penalties, and the mesh when there is one.
    pub throttle: Throttle,
    pub gate: gate::Gate,
    pub trust: TrustList,
    pub checks: Arc<checks::Checks>,
    pub stats: Arc<stats::Stats>,
    pub started: std::time::Instant,
    /// The time every decision is taken at.
    pub clock: Arc<dyn Clock>,
}

/// See [`Node::disk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskNow {
    pub in_flight: u64,
    pub free: Option<u64>,
    pub queue_reopened: u64,
}

/// A running node. Dropping it leaves its tasks running; call
/// [`Node::shutdown`] to stop them.
pub struct Node {
    shared: Arc<Shared>,
    smtp_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Opens the queue, binds the listeners and starts serving. Messages left
    /// in the queue by an earlier run are delivered.
    pub async fn start(settings: NodeSettings) -> Result<Node> {
        std::fs::create_dir_all(&settings.data_dir)
            .map_err(|error| Error::Io { path: settings.data_dir.clone(), error })?;
        let queue = Queue::open(&settings.data_dir)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let unanswered = Arc::new(resend::UnansweredMessages::load(&queue, clock.now() / 1000)?);
        let (journal, journaled) = deliver::journal::Journal::open(&settings.data_dir)?;
        deliver::journal::apply(&queue, journaled).await?;
        journal.forget_left_over();
        let tls = settings.smtp.tls.as_ref().map(tls::acceptor).transpose()?;
        let mut session_config = settings.smtp.session.clone();
        session_config.starttls = tls.is_some();
        let listeners = listener::bind(&settings.smtp.listen).await?;
        let smtp_addrs: Vec<SocketAddr> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
        let (delivery, wake) = mpsc::unbounded_channel();
        let dns = Arc::new(Dns::new(&settings.dns)?);
        let stats = Arc::new(stats::Stats::default());
        let outbound = Outbound::new(
            dns.clone(),
            settings.delivery.clone(),
            smtp_addrs.clone(),
            stats.clone(),
            clock.clone(),
        )?;
        // The tally judges with the limits: at this node for the blocks it
        // is home for (all of them, alone), and for what it cannot ask.
        let limits = Arc::new(settings.throttle.limits());
        let engine = match &settings.mesh {
            Some(mesh) => mesh.engine_settings(),
            None => EngineSettings { max_tracked: settings.max_tracked, ..EngineSettings::default() },
        };
        let peer_bounds = magicmx_gossip::penalties::PeerBounds {
            penalty_max_ms: settings.throttle.penalty_max.as_millis() as u64,
            ..engine.peer_bounds
        };
        let ask_timeout_ms = settings.throttle.hold.as_millis() as u64;
        let engine = EngineSettings { ask_timeout_ms, peer_bounds, ..engine };
        let tally = Arc::new(Tally::new(engine, limits.clone()));
        // Penalties imposed by a node since revoked are not taken back.
        let revoked: Vec<[u8; 16]> = settings
            .mesh
            .iter()
            .flat_map(|m| m.revoked_at_start())
            .map(|fp| fp[..16].try_into().expect("16 of 32 bytes"))
            .collect();
        let stored = queue.load_penalties()?;
        let restored = tally.restore_penalties(&stored, &revoked);
        if restored < stored.len() {
            tracing::info!(dropped = stored.len() - restored, "penalties imposed by revoked nodes dropped");
        }
        let mesh = match &settings.mesh {
            Some(mesh) => Some(Mesh::start_with(mesh.clone(), tally.clone()).await?),
            None => None,
        };
        let trust = TrustList::load(&settings.trusted, queue.clone())?;
        let prefixes = (settings.ipv4_prefix, settings.ipv6_prefix);
        let throttle = Throttle::new(limits, prefixes, tally, mesh, clock.clone());
        let gate = gate::Gate::new(settings.throttle.polite_refusals);
        let traps = listener::bind(&settings.trap_listen).await?;
        let checks = Arc::new(checks::Checks::new(dns.clone(), settings.checks.clone(), stats.clone()));
        let disk_dirs = vec![settings.data_dir.clone(), queue.spool().dir().to_path_buf()];
        let intake = intake::Intake {
            disk: Arc::new(disk::Disk::new(&settings.queue, disk_dirs)),
            queue: queue.clone(),
            unanswered,
            checks: checks.clone(),
            hostname: session_config.hostname.clone(),
            prefixes,
            stats: stats.clone(),
            delivery: delivery.clone(),
        };
        let domains = Domains::new(&settings.domains, &session_config.hostname);
        let session_config = Arc::new(session_config);
        let shared = Arc::new(Shared {
            sizes: route::sizes::NextHopSizes::new(domains.next_hops(), session_config.clone()),
            domains,
            connections: ConnectionSlots::new(
                settings.smtp.max_connections,
                settings.smtp.max_connections_per_ip,
            ),
            session_config,
            settings,
            queue,
            intake,
            journal,
            tls,
            delivery,
            dns,
            outbound,
            throttle,
            gate,
            trust,
            checks,
            stats,
            started: std::time::Instant::now(),
            clock,
        });
        let mut tasks = vec![
            tokio::spawn(deliver::run(shared.clone(), wake)),
            tokio::spawn(housekeeping::run(shared.clone())),
        ];
        for trap in traps {
            tasks.push(tokio::spawn(trap::accept_loop(shared.clone(), trap)));
        }
        for listener in listeners {
            tasks.push(tokio::spawn(listener::accept_loop(shared.clone(), listener)));
        }
        Ok(Node { shared, smtp_addrs, tasks })
    }

    /// The addresses the SMTP listeners are bound to (useful with port 0).
    pub fn smtp_addrs(&self) -> &[SocketAddr] {
        &self.smtp_addrs
    }

    /// Connections being served now.
    pub fn connections_in_use(&self) -> usize {
        self.shared.connections.in_use()
    }

    /// The node's clock: what every decision is taken at.
    pub fn now(&self) -> clock::Millis {
        self.shared.clock.now()
    }

    /// Penalties in force at `now_ms` (this node's and its peers').
    pub fn penalties_in_force(&self, now_ms: clock::Millis) -> Vec<magicmx_proto::wire::PenaltyEntry> {
        self.shared.throttle.tally().penalties_in_force(now_ms)
    }

    /// The `n` blocks with the highest mesh-wide rates this node knows, at `now_ms`.
    pub fn top_blocks(
        &self,
        n: usize,
        now_ms: clock::Millis,
    ) -> Vec<(String, magicmx_gossip::counts::Rates)> {
        let throttle = &self.shared.throttle;
        throttle.tally().top_blocks(n, throttle.caps(), now_ms)
    }

    /// The sources that bypass the throttle.
    pub fn trust(&self) -> &TrustList {
        &self.shared.trust
    }

    /// What the node has done, counted.
    pub fn stats(&self) -> &stats::Stats {
        &self.shared.stats
    }

    /// The disk now: octets of bodies being received (not yet queued), the
    /// least free space under the queue and the spool, and the times the
    /// queue database was opened again after a failed commit.
    pub fn disk(&self) -> DiskNow {
        let disk = &self.shared.intake.disk;
        DiskNow {
            in_flight: disk.in_flight(),
            free: disk.free(),
            queue_reopened: self.shared.queue.reopened(),
        }
    }

    /// Time since the node started.
    pub fn uptime(&self) -> std::time::Duration {
        self.shared.started.elapsed()
    }

    /// The node's name (`node.name`).
    pub fn name(&self) -> &str {
        &self.shared.settings.name
    }

    /// Tries a queued message's pending recipients now; false if it is not queued.
    pub fn retry(&self, id: QueueId) -> Result<bool> {
        let Some(mut envelope) = self.shared.queue.envelope(id)? else { return Ok(false) };
        for rcpt in &mut envelope.recipients {
            if let RecipientStatus::Pending { next_attempt_ms, .. } = &mut rcpt.status {
                *next_attempt_ms = 0;
            }
        }
        let _ = self.shared.delivery.send(deliver::Job { id, loaded: None });
        Ok(true)
    }

    /// Removes a queued message without delivering it; false if it was not queued.
    pub async fn drop_message(&self, id: QueueId) -> Result<bool> {
        if self.shared.queue.envelope(id)?.is_none() {
            return Ok(false);
        }
        self.shared.queue.remove(id).await?;
        tracing::info!(queue_id = %id, "dropped by the operator");
        Ok(true)
    }

    /// The node's mesh, when it has one.
    pub fn mesh(&self) -> Option<&Mesh> {
        self.shared.throttle.mesh()
    }

    pub fn queue(&self) -> &Queue {
        &self.shared.queue
    }

    /// Waits until the node's tasks end (they run until shut down).
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Stops accepting and delivering. Sessions in progress are dropped;
    /// what they had not been told 250 for is theirs to send again.
    pub fn shutdown(&self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(mesh) = self.shared.throttle.mesh() {
            mesh.shutdown();
        }
    }
}

//! magicmx-node: the relay engine. [`Node::start`] wires the stages of one
//! node together: accept → session → queue → delivery.

pub mod bounded;
pub mod checks;
mod connection;
mod connections;
mod deliver;
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
pub mod queue;
mod replies;
mod resend;
mod reservation;
pub mod route;
pub mod settings;
pub mod stats;
pub mod throttle;
mod tls;
mod trap;
pub mod trust;

use std::net::SocketAddr;
use std::sync::Arc;

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

/// What every task of a node shares.
pub(crate) struct Shared {
    pub settings: NodeSettings,
    pub session_config: Arc<SessionConfig>,
    pub domains: Domains,
    pub queue: Queue,
    /// Messages whose 250 may not have reached the client (`resend`).
    pub unanswered: Arc<resend::UnansweredMessages>,
    /// Deliveries noted the moment the next hop takes them (`deliver::journal`).
    pub journal: deliver::journal::Journal,
    pub tls: Option<TlsAcceptor>,
    pub connections: Arc<ConnectionSlots>,
    pub delivery: mpsc::UnboundedSender<deliver::Job>,
    pub dns: Arc<Dns>,
    pub outbound: Outbound,
    pub mesh: Option<Mesh>,
    pub throttle: Throttle,
    pub gate: gate::Gate,
    pub trust: TrustList,
    pub checks: checks::Checks,
    pub stats: Arc<stats::Stats>,
    pub started: std::time::Instant,
}

impl Shared {
    /// The source block a client address counts under.
    pub fn block_of(&self, ip: std::net::IpAddr) -> magicmx_proto::SourceBlock {
        magicmx_proto::SourceBlock::of(ip, self.settings.ipv4_prefix, self.settings.ipv6_prefix)
    }
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
        let unanswered = Arc::new(resend::UnansweredMessages::load(&queue, intake::unix_now())?);
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
        let outbound = Outbound::new(dns.clone(), settings.delivery.clone(), smtp_addrs.clone())?;
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
            .flat_map(|m| &m.revoked)
            .map(|fp| fp[..16].try_into().expect("16 of 32 bytes"))
            .collect();
        let stored = queue.load_penalties()?;
        let restored = tally.restore_penalties(&stored, &revoked);
        if restored < stored.len() {
            tracing::info!(dropped = stored.len() - restored, "penalties imposed by revoked nodes dropped");
        }
        let mesh = match &settings.mesh {
            Some(mesh) => Some(
                Mesh::start_with(mesh.clone(), tally.clone())
                    .await
                    .map_err(|e| Error::Mesh(e.to_string()))?,
            ),
            None => None,
        };
        let trust = TrustList::load(&settings.trusted, queue.clone())?;
        let prefixes = (settings.ipv4_prefix, settings.ipv6_prefix);
        let throttle = Throttle::new(limits, prefixes, tally, mesh.clone());
        let gate = gate::Gate::new(settings.throttle.polite_refusals);
        let traps = listener::bind(&settings.trap_listen).await?;
        let stats = Arc::new(stats::Stats::default());
        let checks = checks::Checks::new(dns.clone(), settings.checks.clone(), stats.clone());
        let shared = Arc::new(Shared {
            domains: Domains::new(&settings.domains, &session_config.hostname),
            connections: ConnectionSlots::new(
                settings.smtp.max_connections,
                settings.smtp.max_connections_per_ip,
            ),
            session_config: Arc::new(session_config),
            settings,
            queue,
            unanswered,
            journal,
            tls,
            delivery,
            dns,
            outbound,
            mesh,
            throttle,
            gate,
            trust,
            checks,
            stats,
            started: std::time::Instant::now(),
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

    /// The throttle: limits, counts and penalties.
    pub fn throttle(&self) -> &Throttle {
        &self.shared.throttle
    }

    /// The sources that bypass the throttle.
    pub fn trust(&self) -> &TrustList {
        &self.shared.trust
    }

    /// What the node has done, counted.
    pub fn stats(&self) -> &stats::Stats {
        &self.shared.stats
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
        self.shared.mesh.as_ref()
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
        if let Some(mesh) = &self.shared.mesh {
            mesh.shutdown();
        }
    }
}

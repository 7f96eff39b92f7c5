//! `magicmx run`: logging, the crypto provider, the node, and a clean stop on
//! SIGINT or SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use magicmx_node::Node;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::config::Config;

pub fn run(config: Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("MAGICMX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    magicmx_node::install_crypto_provider();
    let priority = crate::priority::lower(config.node.nice);
    tracing::info!(%priority, "running at low priority");
    let settings = config.node_settings();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(async {
        // Bound before the node takes mail, so that once SMTP answers the
        // admin API and the policy service do too.
        let admin_addr = config.admin.listen;
        let admin_listener = TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("cannot listen on admin.listen = {admin_addr}"))?;
        let policy_addr = config.admin.policy_listen;
        let policy_listener = TcpListener::bind(policy_addr)
            .await
            .with_context(|| format!("cannot listen on admin.policy_listen = {policy_addr}"))?;
        let (admin_bound, policy_bound) = (admin_listener.local_addr()?, policy_listener.local_addr()?);
        let node = std::sync::Arc::new(Node::start(settings.clone()).await.context("cannot start the node")?);
        let allowed =
            crate::admin::Allowed { listen: admin_bound, hostnames: config.admin.hostnames.clone() };
        let admin = crate::admin::Admin {
            node: node.clone(),
            token: config.admin.token.clone(),
            allowed: Arc::new(allowed),
        };
        if config.admin.policy_defer_first.is_some() {
            tracing::warn!(
                "admin.policy_defer_first is no longer used: the policy service always defers, never rejects"
            );
        }
        let policy = std::sync::Arc::new(crate::policy::Policy::new(
            node.clone(),
            config.admin.mesh_clients.clone(),
            config.admin.magic_mx.clone(),
        ));
        let limits = crate::policy::Limits {
            clients: config.admin.policy_clients.clone(),
            max_connections: config.admin.policy_max_connections,
            idle_timeout: config.admin.policy_idle_timeout,
        };
        let policy_task = tokio::spawn(async move {
            if let Err(error) = crate::policy::serve(policy_listener, policy, limits).await {
                tracing::error!(%policy_addr, %error, "policy service stopped");
            }
        });
        let admin_task = tokio::spawn(async move {
            if let Err(error) = crate::admin::serve(admin_listener, admin).await {
                tracing::error!(%admin_addr, %error, "admin API stopped");
            }
        });
        tracing::info!(
            node = %settings.name,
            smtp = ?node.smtp_addrs(),
            admin = %admin_bound,
            policy = %policy_bound,
            gossip = ?node.mesh().map(|m| m.local_addr()),
            data_dir = %settings.data_dir.display(),
            domains = settings.domains.len(),
            "magicmx started"
        );
        wait_for_signal().await;
        tracing::info!("stopping");
        admin_task.abort();
        policy_task.abort();
        node.shutdown();
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

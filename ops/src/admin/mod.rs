//! The admin HTTP API (axum), on loopback by default: what `magicmx` CLI
//! commands talk to. Beyond loopback it requires the configured token;
//! every request passes `guard.rs` first.

mod guard;
mod metrics;
pub mod queue;
pub mod revoke;
pub mod status;
mod trust;

/// The JSON shapes of `/trust`, shared with the CLI.
pub mod trust_json {
    pub use super::trust::{AddTrust, TrustedJson};
}

use std::sync::Arc;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use magicmx_node::Node;

pub use guard::Allowed;

#[derive(Clone)]
pub struct Admin {
    pub node: Arc<Node>,
    pub token: Option<String>,
    /// The hosts and origins the API answers to.
    pub allowed: Arc<Allowed>,
}

/// Serves the admin API on a listener the caller has bound.
pub async fn serve(listener: tokio::net::TcpListener, admin: Admin) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/", get(status::page))
        .route("/status", get(status::status_json))
        .route("/metrics", get(metrics::metrics))
        .route("/queue", get(queue::list))
        .route("/queue/{id}", get(queue::show).delete(queue::drop))
        .route("/queue/{id}/retry", post(queue::retry))
        .route("/trust", get(trust::list).post(trust::add).delete(trust::remove))
        .route("/mesh/revoke", post(revoke::revoke))
        .layer(middleware::from_fn_with_state(admin.clone(), guard::guard))
        .with_state(admin);
    tracing::info!(addr = %listener.local_addr()?, "admin API listening");
    axum::serve(listener, app).await?;
    Ok(())
}

//! `/trust`: list, add and remove trusted sources while the node runs.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use ipnet::IpNet;
use magicmx_node::trust::Removed;
use serde::{Deserialize, Serialize};

use super::Admin;

#[derive(Debug, Serialize, Deserialize)]
pub struct TrustedJson {
    pub cidr: String,
    pub reason: String,
    pub from_config: bool,
    pub added: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AddTrust {
    pub cidr: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
pub struct RemoveTrust {
    pub cidr: String,
}

type Failure = (StatusCode, String);

pub async fn list(State(admin): State<Admin>) -> Json<Vec<TrustedJson>> {
    let list = admin.node.trust().list();
    Json(
        list.into_iter()
            .map(|t| TrustedJson {
                cidr: t.net.to_string(),
                reason: t.reason,
                from_config: t.from_config,
                added: t.added,
            })
            .collect(),
    )
}

fn parse(cidr: &str) -> Result<IpNet, Failure> {
    cidr.parse::<IpNet>()
        .or_else(|_| cidr.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| (StatusCode::BAD_REQUEST, format!("{cidr:?} is not an address or CIDR block")))
}

pub async fn add(State(admin): State<Admin>, Json(body): Json<AddTrust>) -> Result<StatusCode, Failure> {
    let net = parse(&body.cidr)?;
    admin
        .node
        .trust()
        .add(net, body.reason)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    tracing::info!(cidr = %net, "trusted");
    Ok(StatusCode::CREATED)
}

pub async fn remove(
    State(admin): State<Admin>,
    Query(query): Query<RemoveTrust>,
) -> Result<StatusCode, Failure> {
    let net = parse(&query.cidr)?;
    match admin
        .node
        .trust()
        .remove(net)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    {
        Removed::Removed => {
            tracing::info!(cidr = %net, "no longer trusted");
            Ok(StatusCode::NO_CONTENT)
        }
        Removed::NotFound => Err((StatusCode::NOT_FOUND, format!("{net} is not trusted"))),
        Removed::FromConfig => Err((
            StatusCode::CONFLICT,
            format!("{net} is trusted by the configuration file; remove it there"),
        )),
    }
}

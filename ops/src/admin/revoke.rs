//! `POST /mesh/revoke`: a revocation signed by the mesh CA (its one-line
//! form, as `magicmx mesh revoke` prints it) for this node to apply and
//! pass on to every member.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::Admin;

#[derive(Debug, Serialize, Deserialize)]
pub struct RevokeJson {
    /// `magicmx-revocation:v1:…`
    pub revocation: String,
}

pub async fn revoke(
    State(admin): State<Admin>,
    Json(body): Json<RevokeJson>,
) -> Result<(StatusCode, String), (StatusCode, String)> {
    let bad = |e: String| (StatusCode::BAD_REQUEST, e);
    let revocation = magicmx_gossip::revocation::from_text(&body.revocation).map_err(bad)?;
    let mesh = admin.node.mesh().ok_or_else(|| bad("this node is not in a mesh".into()))?;
    match mesh.revoke(revocation).map_err(bad)? {
        true => Ok((StatusCode::OK, "revoked; passed on to every member".into())),
        false => Ok((StatusCode::OK, "already revoked here".into())),
    }
}

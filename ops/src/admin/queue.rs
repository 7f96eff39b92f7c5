//! `/queue`: what waits for delivery, one message in detail, retry now, drop.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use magicmx_node::{QueueId, RecipientStatus};
use serde::{Deserialize, Serialize};

use super::Admin;

#[derive(Debug, Serialize, Deserialize)]
pub struct QueuedJson {
    pub id: String,
    pub arrived: u64,
    pub sender: String,
    pub client: String,
    pub size: u64,
    pub recipients: Vec<RecipientJson>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecipientJson {
    pub address: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_ms: Option<u64>,
    pub last_error: Option<String>,
}

type Failure = (StatusCode, String);

fn id(text: &str) -> Result<QueueId, Failure> {
    text.parse().map_err(|_| (StatusCode::BAD_REQUEST, format!("{text:?} is not a queue id")))
}

fn internal(e: impl std::fmt::Display) -> Failure {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn json(id: QueueId, e: magicmx_node::Envelope) -> QueuedJson {
    QueuedJson {
        id: id.to_string(),
        arrived: e.arrived,
        sender: e.sender.map(|s| s.to_string()).unwrap_or_default(),
        client: e.client_ip.to_string(),
        size: e.size,
        recipients: e
            .recipients
            .into_iter()
            .map(|r| {
                let (status, attempts, next, error) = match r.status {
                    RecipientStatus::Pending { attempts, next_attempt_ms, last_error } => {
                        ("pending", attempts, Some(next_attempt_ms), last_error)
                    }
                    RecipientStatus::Delivered => ("delivered", 0, None, None),
                    RecipientStatus::Failed(why) => ("failed", 0, None, Some(why)),
                };
                RecipientJson {
                    address: r.address.to_string(),
                    status: status.into(),
                    attempts,
                    next_attempt_ms: next,
                    last_error: error,
                }
            })
            .collect(),
    }
}

pub async fn list(State(admin): State<Admin>) -> Result<Json<Vec<QueuedJson>>, Failure> {
    let queued = admin.node.queue().list().map_err(internal)?;
    Ok(Json(queued.into_iter().map(|(id, e)| json(id, e)).collect()))
}

pub async fn show(State(admin): State<Admin>, Path(text): Path<String>) -> Result<Json<QueuedJson>, Failure> {
    let id = id(&text)?;
    match admin.node.queue().envelope(id).map_err(internal)? {
        Some(envelope) => Ok(Json(json(id, envelope))),
        None => Err((StatusCode::NOT_FOUND, format!("no message {text} in the queue"))),
    }
}

pub async fn retry(State(admin): State<Admin>, Path(text): Path<String>) -> Result<StatusCode, Failure> {
    match admin.node.retry(id(&text)?).map_err(internal)? {
        true => Ok(StatusCode::ACCEPTED),
        false => Err((StatusCode::NOT_FOUND, format!("no message {text} in the queue"))),
    }
}

pub async fn drop(State(admin): State<Admin>, Path(text): Path<String>) -> Result<StatusCode, Failure> {
    match admin.node.drop_message(id(&text)?).await.map_err(internal)? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err((StatusCode::NOT_FOUND, format!("no message {text} in the queue"))),
    }
}

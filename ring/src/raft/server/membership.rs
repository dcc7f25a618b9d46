//! The membership routes of a metadata member's API (see the parent module's table): thin
//! handlers that parse the body and call [`Membership`](crate::raft::group::Membership),
//! which holds every check. Refusals become answers through [`ApiError`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, ServerState, parse_json};
use crate::raft::NodeId;

/// The body of `POST /meta/init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    /// The group's first voters: id → the address members reach it at.
    pub members: BTreeMap<NodeId, String>,
}

/// The body of `POST /meta/learners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLearnerRequest {
    /// The new member's id.
    pub id: NodeId,
    /// The address members reach it at.
    pub addr: String,
}

/// The body of `POST /meta/learners/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveLearnerRequest {
    /// The learner's id.
    pub id: NodeId,
}

/// The body of `POST /meta/voters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VotersRequest {
    /// Every voter of the new configuration; voters left out leave the group (learners
    /// stay learners).
    pub voters: BTreeSet<NodeId>,
}

pub(super) async fn init(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: InitRequest = parse_json(&body)?;
    let view = state.membership.initialize(request.members).await?;
    Ok(Json(view).into_response())
}

pub(super) async fn add_learner(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: AddLearnerRequest = parse_json(&body)?;
    let view = state
        .membership
        .add_learner(request.id, &request.addr)
        .await?;
    Ok(Json(view).into_response())
}

pub(super) async fn voters(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: VotersRequest = parse_json(&body)?;
    let view = state.membership.change_membership(request.voters).await?;
    Ok(Json(view).into_response())
}

pub(super) async fn remove_learner(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: RemoveLearnerRequest = parse_json(&body)?;
    let view = state.membership.remove_learner(request.id).await?;
    Ok(Json(view).into_response())
}

pub(super) async fn status(State(state): State<Arc<ServerState>>) -> Response {
    Json(state.membership.status()).into_response()
}

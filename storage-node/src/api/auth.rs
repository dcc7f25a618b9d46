//! Request authentication: every `/v1` request must carry a date, its sender's ring epoch and
//! an HMAC over them (see `nimbus_core::auth`). Missing credentials get 401, wrong ones 403,
//! and either way the handler never runs.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nimbus_core::auth::{DATE_HEADER, EPOCH_HEADER, MAX_SKEW_SECS};

use super::{ApiError, NodeState};

pub(super) async fn authenticate(
    State(state): State<Arc<NodeState>>,
    request: Request,
    next: Next,
) -> Response {
    match check(&state, &request) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

fn check(state: &NodeState, request: &Request) -> Result<(), ApiError> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let (Some(authorization), Some(date), Some(epoch)) = (
        header("authorization"),
        header(DATE_HEADER),
        header(EPOCH_HEADER),
    ) else {
        return Err(ApiError::Unauthenticated);
    };
    let bad = |what: &str| ApiError::Forbidden(format!("malformed {what}"));
    let date: u64 = date.parse().map_err(|_| bad(DATE_HEADER))?;
    let epoch: u64 = epoch.parse().map_err(|_| bad(EPOCH_HEADER))?;
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    state
        .secret
        .verify(
            authorization,
            request.method().as_str(),
            path_and_query,
            date,
            epoch,
        )
        .map_err(|e| ApiError::Forbidden(e.to_string()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now.abs_diff(date) > MAX_SKEW_SECS {
        return Err(ApiError::Forbidden(format!(
            "request date {date} is more than {MAX_SKEW_SECS} s from this node's clock"
        )));
    }
    state.observe_epoch(epoch)
}

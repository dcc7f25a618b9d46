//! Request authentication: every `/v1` request must carry a date, its sender's ring epoch and
//! an HMAC over them (see `nimbus_core::auth`). Missing credentials get 401, wrong ones 403,
//! and either way the handler never runs.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nimbus_core::auth::{DATE_HEADER, EPOCH_HEADER, RequestAuthError, RequestCredentials};

use super::{ApiError, NodeState};

pub(super) async fn authenticate(
    State(state): State<Arc<NodeState>>,
    request: Request,
    next: Next,
) -> Response {
    match check(&state, &request) {
        Ok((epoch, raised)) => {
            if raised {
                state.epoch_raised(epoch).await;
            }
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// Checks the request's credentials; returns its epoch and whether it raised the node's.
fn check(state: &NodeState, request: &Request) -> Result<(u64, bool), ApiError> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let credentials = RequestCredentials {
        authorization: header("authorization"),
        date: header(DATE_HEADER),
        epoch: header(EPOCH_HEADER),
    };
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let epoch = state
        .secret
        .check_request(credentials, request.method().as_str(), path_and_query, now)
        .map_err(|e| match e {
            RequestAuthError::Missing => ApiError::Unauthenticated,
            RequestAuthError::Forbidden(why) => ApiError::Forbidden(why),
        })?;
    state.observe_epoch(epoch).map(|raised| (epoch, raised))
}

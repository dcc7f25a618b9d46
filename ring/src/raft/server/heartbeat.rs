//! The heartbeat route of a metadata member's API (see the parent module's table): a thin
//! handler that checks the body and hands it to the member's
//! [`Liveness`](crate::raft::liveness::Liveness) duty, which holds the decisions.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, ServerState, parse_json};

/// The most devices one heartbeat may name.
pub const MAX_HEARTBEAT_DEVICES: usize = 1024;

/// The body of `POST /meta/heartbeat`: a storage node's devices that are running. It
/// carries no time: the leader's clock decides when a device was last heard of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The node's address, as its devices are placed in the rings (`ip:port`).
    pub node: SocketAddr,
    /// The names of its devices that are running; a device left out counts as unheard.
    pub devices: Vec<String>,
}

/// The answer to a recorded heartbeat: the leader's map, so that a node learns of a newer
/// map without asking, and what a node's read lease rests on.
///
/// When `confirmed`, the leader had confirmed with a quorum that it still leads and had
/// applied everything committed before the heartbeat came: `epoch` was then the newest
/// placement epoch, and it had been for at least `epoch_age_ms`. A node that sent the
/// heartbeat at `t` thus knows that no newer epoch was committed before `t`, and that
/// `epoch` was committed before it received the answer, less `epoch_age_ms`
/// (`storage_node::lease`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The leader's applied [`ClusterMap::version`](crate::map::ClusterMap::version).
    pub map_version: u64,
    /// Its placement [`Epoch`](nimbus_core::ids::Epoch).
    pub epoch: u64,
    /// Whether the leader confirmed its leadership with a quorum before reading `epoch`
    /// (`false` from a leader that could not, and from a member of an older Nimbus).
    #[serde(default)]
    pub confirmed: bool,
    /// How long, at least, this leader has had `epoch` applied, in milliseconds.
    #[serde(default)]
    pub epoch_age_ms: u64,
}

impl HeartbeatRequest {
    /// Refuses a heartbeat naming more than [`MAX_HEARTBEAT_DEVICES`] devices, or a device
    /// whose name breaks the device-name rule (`crate::device::validate_device_name`).
    fn check(&self) -> Result<(), ApiError> {
        if self.devices.len() > MAX_HEARTBEAT_DEVICES {
            return Err(ApiError::BadRequest(format!(
                "a heartbeat names at most {MAX_HEARTBEAT_DEVICES} devices, not {}",
                self.devices.len()
            )));
        }
        for name in &self.devices {
            crate::device::validate_device_name(name)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        }
        Ok(())
    }
}

pub(super) async fn heartbeat(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: HeartbeatRequest = parse_json(&body)?;
    request.check()?;
    state
        .liveness
        .heartbeat(request.node, &request.devices)
        .map_err(ApiError::NotLeader)?;
    // The heartbeat counts whether or not the leadership is confirmed; only a confirmed
    // answer grants the node a lease.
    let confirmed = match super::ensure_linearizable(&state).await {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "heartbeat answered unconfirmed");
            false
        }
    };
    let map = state.reader.current();
    let epoch = map.epoch().0;
    let answer = HeartbeatResponse {
        map_version: map.version(),
        epoch,
        confirmed,
        epoch_age_ms: state.epoch_age(epoch, std::time::Instant::now()),
    };
    Ok(Json(answer).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(devices: &[&str]) -> HeartbeatRequest {
        HeartbeatRequest {
            node: SocketAddr::from(([10, 0, 0, 1], 6200)),
            devices: devices.iter().map(|&d| d.to_owned()).collect(),
        }
    }

    #[test]
    fn heartbeats_with_bad_device_names_or_too_many_devices_are_refused() {
        assert!(request(&["sdb", "sdc"]).check().is_ok());
        assert!(request(&[]).check().is_ok());
        let long = "x".repeat(65);
        for bad in ["", "a\nb", long.as_str()] {
            assert!(request(&[bad]).check().is_err(), "{bad:?}");
        }
        let many = vec!["d"; MAX_HEARTBEAT_DEVICES + 1];
        assert!(request(&many).check().is_err());
    }

    #[test]
    fn a_heartbeat_body_carries_no_time_of_the_sender() {
        let parsed: HeartbeatRequest =
            serde_json::from_str(r#"{"node": "10.0.0.1:6200", "devices": ["sdb"]}"#).unwrap();
        assert_eq!(parsed, request(&["sdb"]));
        let timed = r#"{"node": "10.0.0.1:6200", "devices": [], "now_ms": 5}"#;
        assert!(serde_json::from_str::<HeartbeatRequest>(timed).is_err());
    }
}

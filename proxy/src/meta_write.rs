//! Changes to the cluster map (buckets created and deleted through S3): sent to the
//! metadata leader, following the members' leader hints, and then awaited in the proxy's
//! own copy of the map so the next request sees them.

use std::time::Duration;

use nimbus_ring::map::{ClusterMap, MapCommand, MapError, MapOutcome};
use nimbus_ring::raft::network::paths;
use nimbus_ring::raft::server::NO_LEADER;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::DataError;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER: usize = 1 << 20;
const MAX_HOPS: usize = 3;
/// How long to wait for an election, or for the change to reach the proxy's map.
const PATIENCE: Duration = Duration::from_secs(10);

/// Applies `command` through the metadata leader; returns the map's answer once the
/// proxy's own map reflects it (per `visible`).
///
/// # Errors
/// [`DataError::Unavailable`] when no leader answered, or the outcome is unknown.
pub async fn write(
    cluster: &Cluster,
    command: &MapCommand,
    visible: impl Fn(&ClusterMap) -> bool,
) -> Result<Result<MapOutcome, MapError>, DataError> {
    let started = Instant::now();
    let mut last = String::from("no member");
    'members: for member in cluster.members() {
        let mut addr = member.clone();
        let mut hops = 0;
        loop {
            let answer = match cluster
                .client()
                .post_json(&addr, paths::WRITE, command, None, CALL_TIMEOUT, MAX_ANSWER)
                .await
            {
                Ok(a) => a,
                Err(e) if e.not_sent() => {
                    last = e.to_string();
                    continue 'members;
                }
                Err(e) => {
                    return Err(DataError::Unavailable(format!(
                        "cluster map change, outcome unknown: {e}"
                    )));
                }
            };
            match (answer.status.as_u16(), answer.error_code().as_deref()) {
                (200, _) => {
                    let response: Result<MapOutcome, MapError> =
                        serde_json::from_slice(&answer.body)
                            .map_err(|e| DataError::Internal(format!("map write answer: {e}")))?;
                    if response.is_ok() {
                        await_visible(cluster, &visible).await;
                    }
                    return Ok(response);
                }
                (421, Some("not_leader")) if hops < MAX_HOPS => {
                    match answer.leader_hint().leader_addr {
                        Some(leader) if leader != addr => {
                            hops += 1;
                            addr = leader;
                        }
                        _ => continue 'members,
                    }
                }
                (503, Some(code)) if code == NO_LEADER && started.elapsed() < PATIENCE => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                (status, _) => {
                    last = format!("{addr}: {status} {}", answer.error_message());
                    continue 'members;
                }
            }
        }
    }
    Err(DataError::Unavailable(format!(
        "cluster map change: {last}"
    )))
}

async fn await_visible(cluster: &Cluster, visible: &impl Fn(&ClusterMap) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let map = cluster.map();
        if visible(&map) || Instant::now() > deadline {
            return;
        }
        cluster
            .newer_than(map.version(), Duration::from_millis(500))
            .await;
    }
}

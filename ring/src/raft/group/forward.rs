//! Requests that must reach the leader, from any member: [`MetaNode::write`] and
//! [`MetaNode::linearizable_map`]. Each first asks the local Raft (which serves them when
//! this member leads), then follows the leader hints that members answer with (`421` with
//! the leader's address, `503 no_leader` during an election) until its deadline.
//!
//! **Invariant:** a write is sent again only when it certainly was not proposed: a member
//! that is not the leader refused it, or no connection was made. Every other failure after
//! it may have been proposed is [`WriteError::OutcomeUnknown`].

use std::sync::Arc;

use openraft::BasicNode;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use tokio::time::Instant;

use super::{MetaNode, RETRY_PAUSE, ReadError, WriteError};
use crate::map::{ClusterMap, MapCommand};
use crate::raft::network::paths;
use crate::raft::server::{self, LeaderHint};
use crate::raft::snapshot_file::MAX_SNAPSHOT_BYTES;
use crate::raft::{MapResponse, NodeId};

impl MetaNode {
    /// Applies `command` to the map through the leader, from any member, and returns the
    /// map's answer (a refusal is an answer: the map is unchanged).
    ///
    /// # Errors
    /// [`WriteError`]; see the module documentation for when a write is retried.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped write may still be applied.
    pub async fn write(&self, command: MapCommand) -> Result<MapResponse, WriteError> {
        let timeout = self.tuning.request_timeout;
        let deadline = Instant::now() + timeout;
        // `None`: ask the local Raft, which knows (or learns) who leads.
        let mut leader: Option<String> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(WriteError::NoLeader(timeout));
            }
            let Some(addr) = leader.take() else {
                let written =
                    tokio::time::timeout(remaining, self.raft.client_write(command.clone()))
                        .await
                        .map_err(|_| {
                            WriteError::OutcomeUnknown(format!("not committed within {timeout:?}"))
                        })?;
                match written {
                    Ok(response) => return Ok(response.data),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                        leader = self.remote_leader(f.into()).await;
                        continue;
                    }
                    Err(RaftError::APIError(e)) => {
                        return Err(WriteError::OutcomeUnknown(e.to_string()));
                    }
                    Err(RaftError::Fatal(_)) => return Err(WriteError::Stopped),
                }
            };
            let sent = self
                .client
                .post_json(
                    &addr,
                    paths::WRITE,
                    &command,
                    None,
                    remaining,
                    server::MAX_WRITE_BODY_BYTES,
                )
                .await;
            let answer = match sent {
                Ok(answer) => answer,
                Err(e) if e.not_sent() => {
                    pause(deadline).await;
                    continue;
                }
                Err(e) => return Err(WriteError::OutcomeUnknown(e.to_string())),
            };
            match answer.status.as_u16() {
                200 => {
                    return serde_json::from_slice(&answer.body).map_err(|e| {
                        WriteError::OutcomeUnknown(format!("unreadable answer: {e}"))
                    });
                }
                421 => leader = self.remote_leader(answer.leader_hint()).await,
                503 if answer.error_code().as_deref() == Some(server::NO_LEADER) => {
                    pause(deadline).await;
                }
                503 | 504 => return Err(WriteError::OutcomeUnknown(body_text(&answer.body))),
                status => {
                    return Err(WriteError::Refused {
                        status,
                        message: body_text(&answer.body),
                    });
                }
            }
        }
    }

    /// Returns the map as of a read index: everything committed before the call is in it.
    /// The leader confirms its leadership with a quorum; from another member, the map is
    /// read from the leader.
    ///
    /// # Errors
    /// [`ReadError`].
    pub async fn linearizable_map(&self) -> Result<Arc<ClusterMap>, ReadError> {
        let timeout = self.tuning.request_timeout;
        let deadline = Instant::now() + timeout;
        let path = format!("{}?linearizable=true", paths::MAP);
        let mut leader: Option<String> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ReadError::NoLeader(timeout));
            }
            let Some(addr) = leader.take() else {
                let confirmed = tokio::time::timeout(remaining, self.raft.ensure_linearizable())
                    .await
                    .map_err(|_| ReadError::NoLeader(timeout))?;
                match confirmed {
                    Ok(_) => return Ok(self.reader.current()),
                    Err(RaftError::APIError(e)) => match read_leader_hint(e) {
                        Some(hint) => leader = self.remote_leader(hint).await,
                        None => pause(deadline).await,
                    },
                    Err(RaftError::Fatal(_)) => return Err(ReadError::Stopped),
                }
                continue;
            };
            let max = usize::try_from(MAX_SNAPSHOT_BYTES).unwrap_or(usize::MAX);
            let answer = match self.client.get(&addr, &path, remaining, max).await {
                Ok(answer) => answer,
                Err(e) if e.not_sent() => {
                    pause(deadline).await;
                    continue;
                }
                Err(e) => return Err(ReadError::Leader(e.to_string())),
            };
            match answer.status.as_u16() {
                200 => {
                    let map = tokio::task::spawn_blocking(move || ClusterMap::decode(&answer.body))
                        .await
                        .map_err(|e| ReadError::Leader(format!("decode task failed: {e}")))?
                        .map_err(ReadError::Decode)?;
                    return Ok(Arc::new(map));
                }
                421 => leader = self.remote_leader(answer.leader_hint()).await,
                503 => pause(deadline).await,
                status => {
                    return Err(ReadError::Leader(format!(
                        "status {status}: {}",
                        body_text(&answer.body)
                    )));
                }
            }
        }
    }

    /// Returns where to send a request that this member refused as not the leader, or
    /// `None` (after a pause) to ask the local Raft again.
    async fn remote_leader(&self, hint: LeaderHint) -> Option<String> {
        match (hint.leader_id, hint.leader_addr) {
            (Some(id), Some(addr)) if id != self.id => Some(addr),
            _ => {
                tokio::time::sleep(RETRY_PAUSE).await;
                None
            }
        }
    }
}

/// Sleeps [`RETRY_PAUSE`], or until `deadline` if sooner.
async fn pause(deadline: Instant) {
    tokio::time::sleep_until(deadline.min(Instant::now() + RETRY_PAUSE)).await;
}

fn body_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

/// Returns the leader hint of a refused linearizable read, if it was refused for that.
fn read_leader_hint(e: CheckIsLeaderError<NodeId, BasicNode>) -> Option<LeaderHint> {
    match e {
        CheckIsLeaderError::ForwardToLeader(f) => Some(f.into()),
        CheckIsLeaderError::QuorumNotEnough(_) => None,
    }
}

//! Heartbeats to the metadata group (DESIGN.md, "Index", liveness): every interval the node
//! posts the names of its devices to the leader's `POST /meta/heartbeat`, so that the leader
//! keeps them up in the cluster map; when heartbeats stop, it marks them down.
//!
//! The leader is found as writes find it: ask a member, follow its `421` leader hint. The
//! member that last took a heartbeat is asked first next time; after a failure the members
//! are tried in turn.
//!
//! **Invariants:**
//! - Each heartbeat, hints and retries included, ends within one interval: every call has
//!   the time left as its timeout, and at most [`max_calls`] calls are made.
//! - A failure is logged at debug and never ends the task: the next interval tries again
//!   (the leader tolerates missed heartbeats up to its timeout).
//! - The task is owned by the [`RunningNode`](crate::node::RunningNode) and stops when told.
//! - Each answer goes to the node's [`Leases`], timed from when the heartbeat began (its
//!   first call), so a lease never starts later than the heartbeat it rests on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nimbus_ring::raft::network::{PeerClient, PeerError, paths};
use nimbus_ring::raft::server::{HeartbeatRequest, HeartbeatResponse};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::debug;

use crate::lease::Leases;

/// The largest answer read from a member (a small JSON object, or an error).
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// Why one heartbeat was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// The last member asked could not be reached or did not answer in time.
    #[error("heartbeat not delivered")]
    Peer(#[from] PeerError),
    /// The last member asked refused it (authentication, a malformed body, no leader).
    #[error("metadata member {addr} answered {status}: {message}")]
    Refused {
        /// The member.
        addr: String,
        /// The HTTP status.
        status: u16,
        /// What it said.
        message: String,
    },
    /// The leader's answer did not parse.
    #[error("metadata member {addr} answered with an unreadable body: {reason}")]
    Unreadable {
        /// The member.
        addr: String,
        /// What serde_json reported.
        reason: String,
    },
    /// The interval ran out while following hints or trying members.
    #[error("no leader took the heartbeat within {0:?}")]
    OutOfTime(Duration),
}

/// A node's heartbeat sender. See the module documentation.
#[derive(Debug)]
pub struct Heartbeats {
    client: PeerClient,
    members: Vec<String>,
    request: HeartbeatRequest,
    interval: Duration,
    /// The member that took the last heartbeat, asked first.
    leader: Option<String>,
    /// The member to ask first when no leader is known (rotates on failures).
    next_member: usize,
    /// Where answers go.
    leases: Arc<Leases>,
}

impl Heartbeats {
    /// Returns a sender posting `devices` of `node` to `members` every `interval`, signing
    /// with `client`'s secret, and recording answers in `leases`.
    #[must_use]
    pub fn new(
        client: PeerClient,
        members: Vec<String>,
        node: SocketAddr,
        devices: Vec<String>,
        interval: Duration,
        leases: Arc<Leases>,
    ) -> Self {
        Heartbeats {
            client,
            members,
            request: HeartbeatRequest { node, devices },
            interval,
            leader: None,
            next_member: 0,
            leases,
        }
    }

    /// Sends a heartbeat every interval until `stop` turns `true` (or its sender is
    /// dropped).
    ///
    /// # Cancel safety
    /// Cancel safe: a heartbeat dropped mid-flight is merely a missed heartbeat.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let node = self.request.node;
        let work = async {
            loop {
                ticks.tick().await;
                let sent = Instant::now();
                match self.beat().await {
                    Ok(answer) => {
                        self.leases.heard(
                            answer.epoch,
                            answer.confirmed,
                            Duration::from_millis(answer.epoch_age_ms),
                            sent,
                            Instant::now(),
                        );
                        debug!(
                            %node,
                            map_version = answer.map_version,
                            epoch = answer.epoch,
                            confirmed = answer.confirmed,
                            "heartbeat delivered"
                        );
                    }
                    Err(error) => debug!(%node, %error, "heartbeat failed"),
                }
            }
        };
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => {}
            () = work => {}
        }
        debug!(%node, "heartbeats stopped");
    }

    /// Delivers one heartbeat to the leader within one interval.
    ///
    /// # Errors
    /// [`HeartbeatError`] from the last member asked.
    pub async fn beat(&mut self) -> Result<HeartbeatResponse, HeartbeatError> {
        let deadline = Instant::now() + self.interval;
        let mut target = self.first_target();
        let mut last = HeartbeatError::OutOfTime(self.interval);
        for _ in 0..max_calls(self.members.len()) {
            let Some(addr) = target.take() else {
                break;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let sent = self
                .client
                .post_json(
                    &addr,
                    paths::HEARTBEAT,
                    &self.request,
                    None,
                    remaining,
                    MAX_ANSWER_BYTES,
                )
                .await;
            let answer = match sent {
                Ok(answer) => answer,
                Err(e) => {
                    debug!(member = %addr, error = %e, "heartbeat call failed");
                    last = HeartbeatError::Peer(e);
                    target = self.next_member();
                    continue;
                }
            };
            match answer.status.as_u16() {
                200 => {
                    let parsed = serde_json::from_slice(&answer.body).map_err(|e| {
                        HeartbeatError::Unreadable {
                            addr: addr.clone(),
                            reason: e.to_string(),
                        }
                    });
                    self.leader = Some(addr);
                    return parsed;
                }
                421 => {
                    let hint = answer.leader_hint().leader_addr;
                    debug!(member = %addr, leader = ?hint, "heartbeat sent to the leader");
                    last = refused(&addr, &answer);
                    target = match hint {
                        Some(leader) if leader != addr => Some(leader),
                        _ => self.next_member(),
                    };
                }
                _ => {
                    last = refused(&addr, &answer);
                    target = self.next_member();
                }
            }
        }
        Err(last)
    }

    /// Returns the member that took the last heartbeat, else the next member in turn.
    fn first_target(&mut self) -> Option<String> {
        match self.leader.take() {
            Some(leader) => Some(leader),
            None => self.next_member(),
        }
    }

    /// Returns the next member to ask, in turn (`None` when none is configured).
    fn next_member(&mut self) -> Option<String> {
        let member = self.members.get(self.next_member).cloned();
        self.next_member = (self.next_member + 1) % self.members.len().max(1);
        member
    }
}

/// Returns the most calls one heartbeat makes: each member once and a hint after each.
#[must_use]
pub fn max_calls(members: usize) -> usize {
    2 * members + 1
}

fn refused(addr: &str, answer: &nimbus_ring::raft::network::PeerResponse) -> HeartbeatError {
    HeartbeatError::Refused {
        addr: addr.to_owned(),
        status: answer.status.as_u16(),
        message: answer.error_message(),
    }
}

#[cfg(test)]
mod tests {
    use nimbus_core::auth::ClusterSecret;

    use super::*;

    fn sender(members: &[&str]) -> Heartbeats {
        Heartbeats::new(
            PeerClient::new(ClusterSecret::new([1; 32])),
            members.iter().map(|&m| m.to_owned()).collect(),
            SocketAddr::from(([10, 0, 0, 7], 6200)),
            vec!["sdb".to_owned()],
            Duration::from_secs(1),
            Arc::new(Leases::default()),
        )
    }

    #[test]
    fn members_are_tried_in_turn_and_the_last_leader_first() {
        let mut s = sender(&["a:1", "b:1", "c:1"]);
        let order: Vec<_> = (0..4).filter_map(|_| s.next_member()).collect();
        assert_eq!(order, ["a:1", "b:1", "c:1", "a:1"]);
        s.leader = Some("c:1".to_owned());
        assert_eq!(s.first_target().as_deref(), Some("c:1"));
        // A leader that fails is forgotten: the next heartbeat goes round the members.
        assert_eq!(s.first_target().as_deref(), Some("b:1"));
        assert_eq!(sender(&[]).first_target(), None);
    }

    #[tokio::test]
    async fn a_heartbeat_with_no_member_reachable_fails_within_its_interval() {
        let mut s = sender(&["127.0.0.1:9"]);
        let started = Instant::now();
        assert!(s.beat().await.is_err());
        assert!(started.elapsed() <= Duration::from_secs(1) + Duration::from_millis(100));
        assert!(sender(&[]).beat().await.is_err());
    }
}

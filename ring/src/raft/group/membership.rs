//! Who belongs to the cluster map's Raft group: initializing it, adding learners, choosing
//! the voters, and reporting a member's view of all that. [`Membership`] is the one place
//! these operations and their safety checks live: [`MetaNode`](super::MetaNode) and the
//! HTTP API (`/meta/init`, `/meta/learners`, `/meta/voters`, `/meta/status`) both call it.
//!
//! **Invariants:**
//! - A voter change that would leave no voter, names a member the group does not know, or
//!   makes voters whose majority is not caught up with the leader is refused before
//!   anything is proposed ([`check_voters`] decides, from values only).
//! - A member address is `host:port`; a learner id already in the group keeps its address:
//!   asking to add it at another one is refused, never silently ignored.
//! - Only the leader proposes a change; elsewhere the caller learns who leads
//!   ([`MembershipError::NotLeader`]).
//! - Every call waits at most the request timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{BasicNode, ChangeMembers, Raft, RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::CAUGHT_UP_LAG_ENTRIES;
use crate::raft::server::LeaderHint;
use crate::raft::state_machine::MapReader;
use crate::raft::{MapRaft, NodeId};

/// Why a membership operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Only the leader changes membership; it is named when known.
    #[error("this member is not the leader (leader: {:?})", .0.leader_id)]
    NotLeader(LeaderHint),
    /// The group was initialized already.
    #[error("the group is initialized already")]
    AlreadyInitialized,
    /// The member asked to initialize the group is not one of the members named.
    #[error("member {id} is not among the members named; initialize the group on one of them")]
    NotInMembers {
        /// The member asked.
        id: NodeId,
    },
    /// A member address that is not `host:port`.
    #[error("member {id}: address {addr:?} is not host:port")]
    BadAddress {
        /// The member.
        id: NodeId,
        /// What was given.
        addr: String,
    },
    /// The id is a member already, at another address.
    #[error("member {id} is in the group already, at {addr}")]
    MemberExists {
        /// The member.
        id: NodeId,
        /// Its address in the group.
        addr: String,
    },
    /// The new configuration has no voter.
    #[error("a configuration needs at least one voter")]
    NoVoters,
    /// A voter named is not a member (add it as a learner first).
    #[error("member {0} is not in the group; add it as a learner first")]
    UnknownMember(NodeId),
    /// Too few of the new voters are caught up to form a quorum: the group would stall.
    #[error(
        "only {caught_up} of the voters {voters:?} are caught up with the leader; a quorum needs {needed}"
    )]
    WouldLoseQuorum {
        /// The voters asked for.
        voters: BTreeSet<NodeId>,
        /// How many of them are caught up.
        caught_up: usize,
        /// A majority of them.
        needed: usize,
    },
    /// A learner did not catch up within the deadline.
    #[error("member {id} did not catch up within {waited:?}")]
    NotCaughtUp {
        /// The learner.
        id: NodeId,
        /// How long it was given.
        waited: Duration,
    },
    /// Raft refused the change as it stands (another change is still in progress).
    #[error("raft refused the change: {0}")]
    Refused(String),
    /// No answer within the request timeout; the change may still be applied.
    #[error("not done within {0:?}; the change may still be applied")]
    Timeout(Duration),
    /// This member's Raft stopped.
    #[error("this metadata member stopped")]
    Stopped,
    /// Raft failed on this member.
    #[error("raft: {0}")]
    Raft(String),
}

/// The members of the group, with their addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    /// The voters (during a joint change, those of both configurations).
    pub voters: BTreeMap<NodeId, String>,
    /// The learners: members receiving the log without voting.
    pub learners: BTreeMap<NodeId, String>,
}

impl MembershipView {
    fn of(membership: &openraft::Membership<NodeId, BasicNode>) -> Self {
        let with_addr = |id: NodeId| {
            let addr = membership.get_node(&id).map(|n| n.addr.clone());
            (id, addr.unwrap_or_default())
        };
        MembershipView {
            voters: membership.voter_ids().map(with_addr).collect(),
            learners: membership.learner_ids().map(with_addr).collect(),
        }
    }
}

/// A member's Raft role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// It leads the group.
    Leader,
    /// A voter following the leader.
    Follower,
    /// A voter standing for election.
    Candidate,
    /// It receives the log without voting (also a member not yet in any group).
    Learner,
    /// It is stopping.
    Shutdown,
}

impl From<ServerState> for MemberState {
    fn from(state: ServerState) -> Self {
        match state {
            ServerState::Leader => MemberState::Leader,
            ServerState::Follower => MemberState::Follower,
            ServerState::Candidate => MemberState::Candidate,
            ServerState::Learner => MemberState::Learner,
            ServerState::Shutdown => MemberState::Shutdown,
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberState::Leader => "leader",
            MemberState::Follower => "follower",
            MemberState::Candidate => "candidate",
            MemberState::Learner => "learner",
            MemberState::Shutdown => "shutdown",
        })
    }
}

/// One member's view of the group and of its map (`GET /meta/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's id.
    pub id: NodeId,
    /// Its role.
    pub state: MemberState,
    /// The leader it knows of.
    pub leader_id: Option<NodeId>,
    /// That leader's address.
    pub leader_addr: Option<String>,
    /// Its current Raft term.
    pub term: u64,
    /// The index of the last entry in its log.
    pub last_log_index: Option<u64>,
    /// The index of the last entry it applied to its map.
    pub last_applied: Option<u64>,
    /// The group's members as it knows them.
    pub membership: MembershipView,
    /// Its map's [`ClusterMap::version`](crate::map::ClusterMap::version).
    pub map_version: u64,
    /// Its map's placement [`ClusterMap::epoch`](crate::map::ClusterMap::epoch).
    pub map_epoch: u64,
}

/// The membership operations of one member. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    id: NodeId,
    raft: Raft<MapRaft>,
    reader: MapReader,
    request_timeout: Duration,
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Returns the operations of member `id`, each bounded by `request_timeout`.
    pub(crate) fn new(
        id: NodeId,
        raft: Raft<MapRaft>,
        reader: MapReader,
        request_timeout: Duration,
    ) -> Self {
        Membership {
            id,
            raft,
            reader,
            request_timeout,
        }
    }

    /// Initializes a new group whose voters are `members` (id → address); call it on one
    /// of them. Returns the group's membership.
    ///
    /// # Errors
    /// [`MembershipError::NoVoters`], [`MembershipError::NotInMembers`],
    /// [`MembershipError::BadAddress`], [`MembershipError::AlreadyInitialized`], or a
    /// failure of Raft.
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, String>,
    ) -> Result<MembershipView, MembershipError> {
        if members.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if !members.contains_key(&self.id) {
            return Err(MembershipError::NotInMembers { id: self.id });
        }
        for (&id, addr) in &members {
            check_address(id, addr)?;
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(&id, addr)| (id, BasicNode::new(addr)))
            .collect();
        match self.bounded(self.raft.initialize(nodes)).await? {
            Ok(()) => {}
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                return Err(MembershipError::AlreadyInitialized);
            }
            Err(RaftError::APIError(InitializeError::NotInMembers(_))) => {
                return Err(MembershipError::NotInMembers { id: self.id });
            }
            Err(RaftError::Fatal(e)) => return Err(fatal(&e)),
        }
        info!(voters = ?members, "initialized the metadata group");
        Ok(MembershipView {
            voters: members,
            learners: BTreeMap::new(),
        })
    }

    /// Adds member `id` at `addr` as a learner (on the leader): it starts receiving the log,
    /// or a snapshot when the log it needs was purged. Returns once the change is committed,
    /// with the group's membership; a member already in the group at `addr` changes nothing.
    ///
    /// # Errors
    /// [`MembershipError::BadAddress`], [`MembershipError::MemberExists`],
    /// [`MembershipError::NotLeader`], or a failure of Raft.
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: &str,
    ) -> Result<MembershipView, MembershipError> {
        check_address(id, addr)?;
        let metrics = self.leader_metrics()?;
        let membership = metrics.membership_config.membership();
        if let Some(node) = membership.get_node(&id) {
            if node.addr != addr {
                return Err(MembershipError::MemberExists {
                    id,
                    addr: node.addr.clone(),
                });
            }
            return Ok(MembershipView::of(membership));
        }
        info!(id, addr, "adding a metadata learner");
        let added = self.bounded(self.raft.add_learner(id, BasicNode::new(addr), false));
        self.committed(added.await?)
    }

    /// Waits until the leader (this member) has replicated its whole log, as of the call, to
    /// member `id`.
    ///
    /// # Errors
    /// [`MembershipError::NotLeader`] or [`MembershipError::NotCaughtUp`].
    pub async fn wait_caught_up(
        &self,
        id: NodeId,
        timeout: Duration,
    ) -> Result<(), MembershipError> {
        let metrics = self.leader_metrics()?;
        let target = metrics.last_log_index.unwrap_or(0);
        let waited = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| matched_index(m, id).is_some_and(|i| i >= target),
                "learner caught up",
            )
            .await;
        waited
            .map(|_| ())
            .map_err(|_| MembershipError::NotCaughtUp {
                id,
                waited: timeout,
            })
    }

    /// Makes `voters` the group's voters (on the leader), through a joint configuration;
    /// voters left out are removed from the group. Returns once the change is committed,
    /// with the group's membership.
    ///
    /// # Errors
    /// [`MembershipError::NoVoters`], [`MembershipError::NotLeader`],
    /// [`MembershipError::UnknownMember`] and [`MembershipError::WouldLoseQuorum`] before
    /// anything is proposed; a failure of Raft after.
    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
    ) -> Result<MembershipView, MembershipError> {
        if voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        let metrics = self.leader_metrics()?;
        let membership = metrics.membership_config.membership();
        let last = metrics.last_log_index.unwrap_or(0);
        check_voters(
            &voters,
            |v| membership.get_node(&v).is_some(),
            |v| {
                v == self.id
                    || matched_index(&metrics, v)
                        .is_some_and(|i| i.saturating_add(CAUGHT_UP_LAG_ENTRIES) >= last)
            },
        )?;
        info!(?voters, "changing metadata voters");
        let changed = self.bounded(
            self.raft
                .change_membership(ChangeMembers::ReplaceAllVoters(voters), false),
        );
        self.committed(changed.await?)
    }

    /// Removes learner `id` from the group (on the leader). Returns once the change is
    /// committed, with the group's membership. A voter is not removed this way: change the
    /// voters first.
    ///
    /// # Errors
    /// [`MembershipError::UnknownMember`] and [`MembershipError::Refused`] (a voter) before
    /// anything is proposed; [`MembershipError::NotLeader`]; a failure of Raft after.
    pub async fn remove_learner(&self, id: NodeId) -> Result<MembershipView, MembershipError> {
        let metrics = self.leader_metrics()?;
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(MembershipError::UnknownMember(id));
        }
        if membership.voter_ids().any(|v| v == id) {
            return Err(MembershipError::Refused(format!(
                "member {id} is a voter; change the voters first"
            )));
        }
        info!(id, "removing a metadata learner");
        let removed = self.bounded(
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false),
        );
        self.committed(removed.await?)
    }

    /// Returns this member's view of the group and of its map.
    #[must_use]
    pub fn status(&self) -> MemberStatus {
        let map = self.reader.current();
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let leader_addr = metrics
            .current_leader
            .and_then(|l| membership.get_node(&l).map(|n| n.addr.clone()));
        MemberStatus {
            id: self.id,
            state: metrics.state.into(),
            leader_id: metrics.current_leader,
            leader_addr,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|l| l.index),
            membership: MembershipView::of(membership),
            map_version: map.version(),
            map_epoch: map.epoch().0,
        }
    }

    /// Returns this member's metrics if it is the leader.
    fn leader_metrics(&self) -> Result<RaftMetrics<NodeId, BasicNode>, MembershipError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader == Some(self.id) && metrics.replication.is_some() {
            return Ok(metrics);
        }
        let leader_addr = metrics.current_leader.and_then(|l| {
            metrics
                .membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.addr.clone())
        });
        Err(MembershipError::NotLeader(LeaderHint {
            leader_id: metrics.current_leader,
            leader_addr,
        }))
    }

    /// Bounds a Raft membership call by the request deadline.
    async fn bounded<T>(&self, call: impl Future<Output = T>) -> Result<T, MembershipError> {
        tokio::time::timeout(self.request_timeout, call)
            .await
            .map_err(|_| MembershipError::Timeout(self.request_timeout))
    }

    /// Returns the membership a committed change made, or why it was not made.
    fn committed(
        &self,
        result: Result<
            ClientWriteResponse<MapRaft>,
            RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
        >,
    ) -> Result<MembershipView, MembershipError> {
        match result {
            Ok(response) => Ok(match &response.membership {
                Some(membership) => MembershipView::of(membership),
                None => self.status().membership,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(MembershipError::NotLeader(f.into()))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(MembershipError::Refused(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(fatal(&e)),
        }
    }
}

/// Decides whether `voters` may become the group's voters: at least one, each a member
/// (`is_member`), and a majority of them caught up with the leader (`is_caught_up`), so
/// that the new configuration can commit at once.
///
/// # Errors
/// [`MembershipError::NoVoters`], [`MembershipError::UnknownMember`] (the lowest id
/// unknown), or [`MembershipError::WouldLoseQuorum`].
pub fn check_voters(
    voters: &BTreeSet<NodeId>,
    is_member: impl Fn(NodeId) -> bool,
    is_caught_up: impl Fn(NodeId) -> bool,
) -> Result<(), MembershipError> {
    if voters.is_empty() {
        return Err(MembershipError::NoVoters);
    }
    if let Some(&unknown) = voters.iter().find(|&&v| !is_member(v)) {
        return Err(MembershipError::UnknownMember(unknown));
    }
    let caught_up = voters.iter().filter(|&&v| is_caught_up(v)).count();
    let needed = voters.len() / 2 + 1;
    if caught_up < needed {
        return Err(MembershipError::WouldLoseQuorum {
            voters: voters.clone(),
            caught_up,
            needed,
        });
    }
    Ok(())
}

/// Checks that `addr` reads as `host:port`: a non-empty host without spaces or URL
/// delimiters, and a port number.
fn check_address(id: NodeId, addr: &str) -> Result<(), MembershipError> {
    let bad = || MembershipError::BadAddress {
        id,
        addr: addr.to_owned(),
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/?#@".contains(c));
    if !host_ok || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// Returns the last log index the leader knows member `id` holds.
fn matched_index(metrics: &RaftMetrics<NodeId, BasicNode>, id: NodeId) -> Option<u64> {
    metrics
        .replication
        .as_ref()?
        .get(&id)
        .copied()
        .flatten()
        .map(|log_id| log_id.index)
}

fn fatal(e: &Fatal<NodeId>) -> MembershipError {
    match e {
        Fatal::Stopped => MembershipError::Stopped,
        other => MembershipError::Raft(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn voters_need_at_least_one_member() {
        let refused = check_voters(&set(&[]), |_| true, |_| true);
        assert!(matches!(refused, Err(MembershipError::NoVoters)));
    }

    #[test]
    fn voters_must_all_be_members_and_the_lowest_unknown_is_named() {
        let refused = check_voters(&set(&[1, 2, 7, 9]), |v| v < 5, |_| true);
        assert!(matches!(refused, Err(MembershipError::UnknownMember(7))));
    }

    #[test]
    fn voters_whose_majority_lags_would_lose_quorum() {
        // Three voters, one caught up: a quorum needs two.
        let refused = check_voters(&set(&[1, 5, 6]), |_| true, |v| v == 1);
        assert!(matches!(
            refused,
            Err(MembershipError::WouldLoseQuorum {
                caught_up: 1,
                needed: 2,
                ..
            })
        ));
        // Four voters, two caught up: a quorum needs three.
        let refused = check_voters(&set(&[1, 2, 5, 6]), |_| true, |v| v <= 2);
        assert!(matches!(
            refused,
            Err(MembershipError::WouldLoseQuorum {
                caught_up: 2,
                needed: 3,
                ..
            })
        ));
    }

    #[test]
    fn voters_with_a_caught_up_majority_are_accepted() {
        assert!(check_voters(&set(&[1, 2, 3, 4]), |_| true, |v| v != 4).is_ok());
        assert!(check_voters(&set(&[2]), |_| true, |v| v == 2).is_ok());
    }

    #[test]
    fn member_addresses_are_host_and_port() {
        for good in ["127.0.0.1:7001", "meta-1.example:7001", "[::1]:7001"] {
            assert!(check_address(1, good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "127.0.0.1",
            ":7001",
            "127.0.0.1:http",
            "127.0.0.1:70000",
            "a b:1",
            "http://x:1",
            "x/y:1",
        ] {
            assert!(
                matches!(
                    check_address(1, bad),
                    Err(MembershipError::BadAddress { .. })
                ),
                "{bad}"
            );
        }
    }
}

//! How `nimbus admin` reaches the metadata group: signed requests
//! ([`PeerClient`]) to the members given with `--meta`, in order, following the leader.
//!
//! ```text
//! answer / failure                   then
//! no connection                      the next --meta member (nothing was sent)
//! 421 not_leader + leader_addr       the leader named, at most MAX_LEADER_HOPS times
//! 503 no_leader (an election)        the same member again, every NO_LEADER_PAUSE, for
//!                                    at most NO_LEADER_WAIT
//! timeout, broken connection         stop: a write may or may not have been applied
//! anything else                      the command's answer (or its refusal)
//! ```
//!
//! **Invariant:** a request is sent again only when it certainly was not acted on: it
//! never reached a member, or a member refused it as not the leader (or knowing none)
//! before proposing it. Every call has a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nimbus_core::auth::ClusterSecret;
use nimbus_ring::map::{ClusterMap, MapCommand};
use nimbus_ring::raft::group::{MemberStatus, MembershipView};
use nimbus_ring::raft::network::{PeerClient, PeerError, PeerResponse, paths};
use nimbus_ring::raft::server::{
    AddLearnerRequest, InitRequest, MAX_WRITE_BODY_BYTES, NO_LEADER, RemoveLearnerRequest,
    VotersRequest,
};
use nimbus_ring::raft::snapshot_file::MAX_SNAPSHOT_BYTES;
use nimbus_ring::raft::{MapResponse, NodeId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// Deadline of one request. Members give up on a write after their own request timeout
/// (5 s by default) and say so; this leaves them time to.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How many leader hints one request follows.
const MAX_LEADER_HOPS: usize = 3;

/// How long one member is asked again while it knows no leader.
const NO_LEADER_WAIT: Duration = Duration::from_secs(5);

/// The pause between those attempts.
const NO_LEADER_PAUSE: Duration = Duration::from_millis(200);

/// The largest JSON answer read.
const MAX_JSON_ANSWER_BYTES: usize = 1 << 20;

/// A client of the metadata group.
pub struct MetaClient {
    peers: PeerClient,
    members: Vec<String>,
}

/// One request: what to send and whether it must reach the leader.
struct Call<'a, B> {
    path: &'a str,
    /// POSTed as JSON; `None`: a GET.
    body: Option<&'a B>,
    leader_only: bool,
    max_answer_bytes: usize,
}

/// An answer and the member that gave it.
struct Answer {
    addr: String,
    response: PeerResponse,
}

/// Why asking one member ended without an answer.
enum Failure {
    /// Nothing reached it (nor the leader it named): try the next member.
    NotSent(PeerError),
    /// Stop here.
    Fatal(anyhow::Error),
}

impl MetaClient {
    /// Returns a client of the members at `members` (asked in order), signing with
    /// `secret`.
    ///
    /// # Errors
    /// No member given.
    pub fn new(members: Vec<String>, secret: ClusterSecret) -> Result<Self> {
        let members: Vec<String> = members
            .into_iter()
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        if members.is_empty() {
            bail!("no metadata member given: pass --meta ADDR (or set NIMBUS_META)");
        }
        Ok(MetaClient {
            peers: PeerClient::new(secret),
            members,
        })
    }

    /// Applies `command` to the map through the leader; returns the map's answer (a
    /// refusal is an answer).
    ///
    /// # Errors
    /// No member reachable, no leader, a refused request, or an outcome unknown.
    pub async fn write(&self, command: &MapCommand) -> Result<MapResponse> {
        let call = Call {
            path: paths::WRITE,
            body: Some(command),
            leader_only: true,
            max_answer_bytes: MAX_WRITE_BODY_BYTES,
        };
        json_answer(self.call(&call).await?, true)
    }

    /// Returns a storage node's `/health` answer (devices and their workers' counters).
    ///
    /// # Errors
    /// The node did not answer, or not with JSON.
    pub async fn node_health(&self, node: &str) -> Result<serde_json::Value> {
        let answer = self
            .peers
            .send_bytes(
                hyper::Method::GET,
                node,
                "/health",
                0,
                bytes::Bytes::new(),
                Duration::from_secs(5),
                1 << 20,
            )
            .await
            .with_context(|| format!("ask storage node {node} for its health"))?;
        if answer.status.as_u16() != 200 {
            bail!("storage node {node} answered {}", answer.status);
        }
        serde_json::from_slice(&answer.body)
            .with_context(|| format!("read the health of storage node {node}"))
    }

    /// Asks a storage node what one of its devices holds, partition by partition
    /// (`GET /v1/placement/{device}`, signed, under the map's `epoch`).
    ///
    /// # Errors
    /// The node did not answer, or not with a placement.
    pub async fn node_placement(
        &self,
        node: &str,
        device: &str,
        epoch: u64,
    ) -> Result<serde_json::Value> {
        let answer = self
            .peers
            .send_bytes(
                hyper::Method::GET,
                node,
                &format!("/v1/placement/{device}"),
                epoch,
                bytes::Bytes::new(),
                Duration::from_secs(60),
                256 << 20,
            )
            .await
            .with_context(|| format!("ask storage node {node} what {device} holds"))?;
        if answer.status.as_u16() != 200 {
            bail!(
                "storage node {node} answered {} for {device}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        serde_json::from_slice(&answer.body)
            .with_context(|| format!("read what {device} on {node} holds"))
    }

    /// Returns the leader's map, as of a read index (everything committed before is in
    /// it).
    ///
    /// # Errors
    /// No member reachable, no leader, a refused request, a map that does not decode.
    pub async fn map(&self) -> Result<ClusterMap> {
        let path = format!("{}?linearizable=true", paths::MAP);
        let call: Call<'_, ()> = Call {
            path: &path,
            body: None,
            leader_only: true,
            max_answer_bytes: usize::try_from(MAX_SNAPSHOT_BYTES).unwrap_or(usize::MAX),
        };
        let answer = self.call(&call).await?;
        if answer.response.status.as_u16() != 200 {
            return Err(refused(&answer, false));
        }
        ClusterMap::decode(&answer.response.body)
            .with_context(|| format!("decode the map of metadata member {}", answer.addr))
    }

    /// Returns the status of the first member that answers.
    ///
    /// # Errors
    /// No member reachable, a refused request.
    pub async fn status(&self) -> Result<MemberStatus> {
        let call: Call<'_, ()> = Call {
            path: paths::STATUS,
            body: None,
            leader_only: false,
            max_answer_bytes: MAX_JSON_ANSWER_BYTES,
        };
        json_answer(self.call(&call).await?, false)
    }

    /// Returns the status of the member at `addr`, or why it gave none.
    pub async fn status_of(&self, addr: &str) -> Result<MemberStatus> {
        let call: Call<'_, ()> = Call {
            path: paths::STATUS,
            body: None,
            leader_only: false,
            max_answer_bytes: MAX_JSON_ANSWER_BYTES,
        };
        match self.call_member(addr, &call).await {
            Ok(answer) => json_answer(answer, false),
            Err(Failure::NotSent(e)) => Err(anyhow!(e)),
            Err(Failure::Fatal(e)) => Err(e),
        }
    }

    /// Initializes the group on the first member that answers (one of `members`).
    ///
    /// # Errors
    /// No member reachable, a refused request (a group exists already, …).
    pub async fn init(&self, members: BTreeMap<NodeId, String>) -> Result<MembershipView> {
        let body = InitRequest { members };
        let call = Call {
            path: paths::INIT,
            body: Some(&body),
            leader_only: false,
            max_answer_bytes: MAX_JSON_ANSWER_BYTES,
        };
        json_answer(self.call(&call).await?, true)
    }

    /// Adds member `id` at `addr` as a learner, through the leader.
    ///
    /// # Errors
    /// No member reachable, no leader, a refused request.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<MembershipView> {
        let body = AddLearnerRequest { id, addr };
        let call = Call {
            path: paths::LEARNERS,
            body: Some(&body),
            leader_only: true,
            max_answer_bytes: MAX_JSON_ANSWER_BYTES,
        };
        json_answer(self.call(&call).await?, true)
    }

    /// Removes learner `id`, through the leader.
    ///
    /// # Errors
    /// No member reachable, no leader, a refused request (a voter, an unknown member).
    pub async fn remove_learner(&self, id: NodeId) -> Result<MembershipView> {
        let body = RemoveLearnerRequest { id };
        let call = Call {
            path: paths::REMOVE_LEARNER,
            body: Some(&body),
            leader_only: true,
            max_answer_bytes: MAX_JSON_ANSWER_BYTES,
        };
        json_answer(self.call(&call).await?, true)
    }

    /// Makes `voters` the group's voters, through the leader.
    ///
    /// # Errors
    /// No member reachable, no leader, a refused change (losing quorum, …).
    pub async fn set_voters(&self, voters: BTreeSet<NodeId>) -> Result<MembershipView> {
        let body = VotersRequest { voters };
        let call = Call {
            path: paths::VOTERS,
            body: Some(&body),
            leader_only: true,
            max_answer_bytes: MAX_JSON_ANSWER_BYTES,
        };
        json_answer(self.call(&call).await?, true)
    }

    /// Sends `call` to the members in order until one answers.
    async fn call<B: Serialize>(&self, call: &Call<'_, B>) -> Result<Answer> {
        let mut unreachable = Vec::new();
        for member in &self.members {
            match self.call_member(member, call).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::NotSent(e)) => unreachable.push(format!("{:#}", anyhow!(e))),
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        bail!(
            "no metadata member could be reached: {}",
            unreachable.join("; ")
        )
    }

    /// Sends `call` to the member at `first`, following leader hints when the call must
    /// reach the leader.
    async fn call_member<B: Serialize>(
        &self,
        first: &str,
        call: &Call<'_, B>,
    ) -> Result<Answer, Failure> {
        let mut addr = first.to_owned();
        let mut hops = 0;
        let election_deadline = Instant::now() + NO_LEADER_WAIT;
        loop {
            let sent = match call.body {
                Some(body) => {
                    self.peers
                        .post_json(
                            &addr,
                            call.path,
                            body,
                            None,
                            REQUEST_TIMEOUT,
                            call.max_answer_bytes,
                        )
                        .await
                }
                None => {
                    self.peers
                        .get(&addr, call.path, REQUEST_TIMEOUT, call.max_answer_bytes)
                        .await
                }
            };
            let response = match sent {
                Ok(response) => response,
                Err(e) if e.not_sent() => return Err(Failure::NotSent(e)),
                Err(e) if call.body.is_some() => {
                    return Err(Failure::Fatal(anyhow!(e).context(
                        "the change may or may not have been applied; check with `nimbus admin map show` or `meta status`",
                    )));
                }
                Err(e) => return Err(Failure::Fatal(anyhow!(e))),
            };
            if call.leader_only {
                let code = response.error_code();
                match (response.status.as_u16(), code.as_deref()) {
                    (421, Some("not_leader")) => {
                        let hint = response.leader_hint();
                        match hint.leader_addr {
                            Some(leader) if hops < MAX_LEADER_HOPS && leader != addr => {
                                hops += 1;
                                addr = leader;
                                continue;
                            }
                            _ => {
                                return Err(Failure::Fatal(anyhow!(
                                    "metadata member {addr} is not the leader, and the leader it names ({:?}) could not be followed after {hops} hop(s)",
                                    hint.leader_id
                                )));
                            }
                        }
                    }
                    (503, Some(code)) if code == NO_LEADER => {
                        if Instant::now() + NO_LEADER_PAUSE > election_deadline {
                            return Err(Failure::Fatal(anyhow!(
                                "metadata member {addr} knows no leader after {NO_LEADER_WAIT:?}: is a majority of voters up?"
                            )));
                        }
                        tokio::time::sleep(NO_LEADER_PAUSE).await;
                        continue;
                    }
                    _ => {}
                }
            }
            return Ok(Answer { addr, response });
        }
    }
}

/// Reads a `200` answer as `T`, or turns any other into an error.
fn json_answer<T: DeserializeOwned>(answer: Answer, is_change: bool) -> Result<T> {
    if answer.response.status.as_u16() != 200 {
        return Err(refused(&answer, is_change));
    }
    serde_json::from_slice(&answer.response.body)
        .with_context(|| format!("read the answer of metadata member {}", answer.addr))
}

/// Says why a member refused a request, in its own words.
fn refused(answer: &Answer, is_change: bool) -> anyhow::Error {
    let Answer { addr, response } = answer;
    let status = response.status.as_u16();
    let message = response.error_message();
    match status {
        401 | 403 => anyhow!(
            "metadata member {addr} refused the request ({status}): {message}; is --secret-file the cluster's secret?"
        ),
        503 | 504 if is_change => anyhow!(
            "metadata member {addr} answered {status}: {message}; the change may or may not have been applied"
        ),
        _ => anyhow!("metadata member {addr} refused the request ({status}): {message}"),
    }
}

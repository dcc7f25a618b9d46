//! The metadata group's membership over HTTP (`/meta/init`, `/meta/learners`,
//! `/meta/voters`, `/meta/status`): members started uninitialized in one test process, a
//! group formed, grown and shrunk through signed requests, every refusal answered with
//! its status and code, and nothing proposed for a refused change.

#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use nimbus_core::auth::ClusterSecret;
use nimbus_ring::map::{MapCommand, MapOutcome};
use nimbus_ring::raft::NodeId;
use nimbus_ring::raft::group::{
    MemberState, MemberStatus, MembershipView, MetaConfig, MetaNode, RaftTuning,
};
use nimbus_ring::raft::network::{PeerClient, PeerResponse, paths};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep};

const TIMEOUT: Duration = Duration::from_secs(10);

fn secret() -> ClusterSecret {
    ClusterSecret::new([0x3c; 32])
}

/// Members `1..=count`, started but in no group.
async fn start_members(dir: &TempDir, count: u64) -> BTreeMap<NodeId, MetaNode> {
    let mut members = BTreeMap::new();
    for id in 1..=count {
        let config = MetaConfig {
            id,
            dir: dir.path().join(format!("member-{id}")),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            secret: secret(),
            tuning: RaftTuning::default(),
        };
        members.insert(id, MetaNode::start(config).await.unwrap());
    }
    members
}

async fn post(client: &PeerClient, addr: &str, path: &str, body: Value) -> PeerResponse {
    client
        .post_json(addr, path, &body, None, TIMEOUT, 1 << 20)
        .await
        .unwrap()
}

async fn status(client: &PeerClient, addr: &str) -> MemberStatus {
    let answer = client
        .get(addr, paths::STATUS, TIMEOUT, 1 << 20)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    serde_json::from_slice(&answer.body).unwrap()
}

fn view(answer: &PeerResponse) -> MembershipView {
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    serde_json::from_slice(&answer.body).unwrap()
}

/// Asserts that `answer` is a refusal with `status` and `code` whose message says `says`.
fn refused(answer: &PeerResponse, status: u16, code: &str, says: &str) {
    assert_eq!(answer.status, status, "{}", answer.error_message());
    assert_eq!(answer.error_code().as_deref(), Some(code));
    let message = answer.error_message();
    assert!(message.contains(says), "{message:?} lacks {says:?}");
}

/// Waits until the members at `addrs` all name the same leader, one of `among`; returns it.
async fn agreed_leader(client: &PeerClient, addrs: &[String], among: &[NodeId]) -> NodeId {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut leaders = Vec::new();
        for addr in addrs {
            leaders.push(status(client, addr).await.leader_id);
        }
        if let Some(Some(first)) = leaders.first()
            && among.contains(first)
            && leaders.iter().all(|l| *l == Some(*first))
        {
            return *first;
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_formed_grown_and_shrunk_over_http() {
    let dir = TempDir::new().unwrap();
    let members = start_members(&dir, 4).await;
    let addr = |id: NodeId| members[&id].addr().to_owned();
    let client = PeerClient::new(secret());

    // A member in no group says so.
    let fresh = status(&client, &addr(1)).await;
    assert_eq!(fresh.state, MemberState::Learner);
    assert_eq!(fresh.membership, MembershipView::default());
    assert_eq!((fresh.leader_id, fresh.map_version), (None, 0));

    // Initialization names a member that is not the one asked: refused, nothing changes.
    let first_three = json!({ "members": { "1": addr(1), "2": addr(2), "3": addr(3) } });
    let answer = post(&client, &addr(4), paths::INIT, first_three.clone()).await;
    refused(&answer, 400, "not_in_members", "member 4 is not among");
    let answer = post(&client, &addr(1), paths::INIT, json!({ "members": {} })).await;
    refused(&answer, 400, "no_voters", "at least one voter");
    let bad = json!({ "members": { "1": "nowhere" } });
    let answer = post(&client, &addr(1), paths::INIT, bad).await;
    refused(&answer, 400, "bad_address", "not host:port");
    assert_eq!(
        status(&client, &addr(1)).await.membership,
        MembershipView::default()
    );

    let answer = post(&client, &addr(1), paths::INIT, first_three.clone()).await;
    let formed = view(&answer);
    assert_eq!(formed.voters.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert!(formed.learners.is_empty());
    // Once member 2 has heard of the group (replication is asynchronous: under load it may
    // take a moment), initializing it again is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status(&client, &addr(2)).await.membership.voters.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "member 2 never heard of the group"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = post(&client, &addr(2), paths::INIT, first_three).await;
    refused(&answer, 409, "already_initialized", "initialized already");

    let voters: Vec<String> = (1..=3).map(addr).collect();
    let leader = agreed_leader(&client, &voters, &[1, 2, 3]).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let lead = status(&client, &addr(leader)).await;
    assert_eq!(lead.state, MemberState::Leader);
    assert_eq!(lead.leader_addr.as_deref(), Some(addr(leader).as_str()));
    assert!(lead.term >= 1);
    assert_eq!(lead.membership.voters, formed.voters);

    // A write shows in the status's map version.
    let command = MapCommand::CreateAccount {
        name: "AUTH_ops".into(),
        now_ms: 1,
    };
    let written = members[&follower].write(command).await.unwrap();
    assert_eq!(written, Ok(MapOutcome::Done));
    let deadline = Instant::now() + TIMEOUT;
    while status(&client, &addr(follower)).await.map_version != 1 {
        assert!(
            Instant::now() < deadline,
            "the follower never applied the write"
        );
        sleep(Duration::from_millis(20)).await;
    }
    let caught_up = status(&client, &addr(follower)).await;
    assert_eq!(caught_up.state, MemberState::Follower);
    assert_eq!(caught_up.last_applied, caught_up.last_log_index);

    // Learners are added on the leader; a follower names it.
    let learner = json!({ "id": 4, "addr": addr(4) });
    let answer = post(&client, &addr(follower), paths::LEARNERS, learner.clone()).await;
    assert_eq!(answer.status, 421);
    assert_eq!(answer.leader_hint().leader_id, Some(leader));
    assert_eq!(answer.leader_hint().leader_addr, Some(addr(leader)));
    let grown = view(&post(&client, &addr(leader), paths::LEARNERS, learner.clone()).await);
    assert_eq!(grown.learners, BTreeMap::from([(4, addr(4))]));
    // Asking again is a no-op; another address for the same id is refused.
    let again = view(&post(&client, &addr(leader), paths::LEARNERS, learner).await);
    assert_eq!(again, grown);
    let moved = json!({ "id": 4, "addr": "127.0.0.1:1" });
    let answer = post(&client, &addr(leader), paths::LEARNERS, moved).await;
    refused(
        &answer,
        409,
        "member_exists",
        "member 4 is in the group already",
    );
    let unparsable = json!({ "id": 5 });
    let answer = post(&client, &addr(leader), paths::LEARNERS, unparsable).await;
    refused(&answer, 400, "bad_request", "addr");

    // Voter changes that would stall the group are refused before anything is proposed.
    let before = status(&client, &addr(leader)).await;
    let answer = post(
        &client,
        &addr(leader),
        paths::VOTERS,
        json!({ "voters": [] }),
    )
    .await;
    refused(&answer, 400, "no_voters", "at least one voter");
    let unknown = json!({ "voters": [1, 2, 3, 9] });
    let answer = post(&client, &addr(leader), paths::VOTERS, unknown).await;
    refused(
        &answer,
        409,
        "unknown_member",
        "member 9 is not in the group",
    );
    for id in [5, 6] {
        let nobody = json!({ "id": id, "addr": "127.0.0.1:9" });
        view(&post(&client, &addr(leader), paths::LEARNERS, nobody).await);
    }
    let stalled = json!({ "voters": [leader, 5, 6] });
    let answer = post(&client, &addr(leader), paths::VOTERS, stalled).await;
    refused(&answer, 409, "would_lose_quorum", "a quorum needs 2");
    let after = status(&client, &addr(leader)).await;
    assert_eq!(after.membership.voters, before.membership.voters);
    assert_eq!(after.map_version, before.map_version);
    let answer = post(
        &client,
        &addr(follower),
        paths::VOTERS,
        json!({ "voters": [1] }),
    )
    .await;
    assert_eq!(answer.status, 421);

    // Member 4 becomes a voter and follows; then the leader removes itself (learners stay
    // learners), and the others elect a new one.
    let all_four = json!({ "voters": [1, 2, 3, 4] });
    let grown = view(&post(&client, &addr(leader), paths::VOTERS, all_four).await);
    assert_eq!(
        grown.voters.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(grown.learners.keys().copied().collect::<Vec<_>>(), [5, 6]);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let fourth = status(&client, &addr(4)).await;
        if fourth.state == MemberState::Follower && fourth.map_version == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member 4 never followed: {fourth:?}"
        );
        sleep(Duration::from_millis(20)).await;
    }
    let others: Vec<NodeId> = (1..=4).filter(|&id| id != leader).collect();
    let without_leader = json!({ "voters": others });
    let shrunk = view(&post(&client, &addr(leader), paths::VOTERS, without_leader).await);
    assert_eq!(shrunk.voters.keys().copied().collect::<Vec<_>>(), others);
    assert_eq!(shrunk.learners.keys().copied().collect::<Vec<_>>(), [5, 6]);
    let remaining: Vec<String> = others.iter().map(|&id| addr(id)).collect();
    // The old leader leads until the others' election timeout; then one of them does.
    let new_leader = agreed_leader(&client, &remaining, &others).await;
    let took_over = status(&client, &addr(new_leader)).await;
    assert_eq!(took_over.state, MemberState::Leader);
    assert_eq!(took_over.membership, shrunk);
    for member in members.values() {
        member.shutdown().await;
    }
}

/// Sends one unsigned HTTP/1.1 request; returns its status.
async fn unsigned(addr: &str, method: &str, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response[9..12]).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_routes_refuse_requests_without_the_cluster_secret() {
    let dir = TempDir::new().unwrap();
    let members = start_members(&dir, 1).await;
    let addr = members[&1].addr().to_owned();
    let forged = PeerClient::new(ClusterSecret::new([0x3d; 32]));
    let init = json!({ "members": { "1": addr } });
    for (method, path) in [
        ("POST", paths::INIT),
        ("POST", paths::LEARNERS),
        ("POST", paths::VOTERS),
        ("GET", paths::STATUS),
    ] {
        assert_eq!(unsigned(&addr, method, path).await, 401, "{method} {path}");
        let answer = if method == "GET" {
            forged.get(&addr, path, TIMEOUT, 1 << 20).await.unwrap()
        } else {
            post(&forged, &addr, path, init.clone()).await
        };
        refused(&answer, 403, "forbidden", "bad signature");
    }
    // Nothing above initialized the member.
    let client = PeerClient::new(secret());
    assert_eq!(
        status(&client, &addr).await.membership,
        MembershipView::default()
    );
    members[&1].shutdown().await;
}

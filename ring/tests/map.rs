//! The cluster map as a state machine: deterministic, all-or-nothing, and faithful to S3's
//! rules for buckets.

#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic

use std::net::SocketAddr;

use nimbus_core::ids::DeviceId;
use nimbus_ring::map::{ClusterMap, MapCommand, MapError, MapOutcome, NewCredential, Versioning};
use nimbus_ring::{DeviceSpec, Location};
use proptest::prelude::*;

fn device(zone: u32, node: u8) -> DeviceSpec {
    DeviceSpec {
        location: Location {
            region: 1,
            zone,
            node: SocketAddr::from(([10, 0, zone as u8, node], 6200)),
            name: format!("d{node}"),
        },
        weight: 100.0,
    }
}

fn create_policy(spec: &str) -> MapCommand {
    MapCommand::CreatePolicy {
        spec: spec.into(),
        part_power: 6,
        min_part_hours: 0,
        seed: 1,
        hash_key: [3; 32],
        make_default: false,
    }
}

fn bucket(name: &str, owner: &str) -> MapCommand {
    MapCommand::CreateBucket {
        name: name.into(),
        owner: owner.into(),
        policy: None,
        shards: None,
        now_ms: 1,
    }
}

fn set_index(policy: &str) -> MapCommand {
    MapCommand::SetIndexPolicy {
        policy: policy.into(),
    }
}

fn account(name: &str) -> MapCommand {
    MapCommand::CreateAccount {
        name: name.into(),
        now_ms: 1,
    }
}

/// Commands over a small universe of names, so that collisions and refusals are common.
fn command() -> impl Strategy<Value = MapCommand> {
    let policy = prop::sample::select(vec!["rep3", "ec2+1", "ec9"]);
    let acct = prop::sample::select(vec!["AUTH_a", "AUTH_b", "AUTH_c"]);
    let name = prop::sample::select(vec!["photos", "backups", "logs-2024", "Bad_Name", "ab"]);
    prop_oneof![
        policy.clone().prop_map(create_policy),
        (policy.clone(), 0u32..4, 0u8..3).prop_map(|(p, z, n)| MapCommand::AddDevice {
            policy: p.into(),
            device: device(z, n),
            id: None,
        }),
        (policy.clone(), 0u32..8, 0.0f64..200.0).prop_map(|(p, id, w)| MapCommand::SetWeight {
            policy: p.into(),
            id: DeviceId(id),
            weight: w,
        }),
        (policy.clone(), 0u32..8).prop_map(|(p, id)| MapCommand::RemoveDevice {
            policy: p.into(),
            id: DeviceId(id)
        }),
        (policy.clone(), 0u64..10_000_000).prop_map(|(p, t)| MapCommand::Rebalance {
            policy: p.into(),
            now_ms: t,
            transition_ms: None,
        }),
        policy.prop_map(|p| MapCommand::SetIndexPolicy { policy: p.into() }),
        acct.clone().prop_map(account),
        acct.clone()
            .prop_map(|a| MapCommand::DeleteAccount { name: a.into() }),
        (acct.clone(), "[A-Z0-9]{14,18}").prop_map(|(a, k)| MapCommand::CreateCredential {
            account: a.into(),
            credential: NewCredential::S3 {
                access_key: k,
                secret: "secret-key-1".into()
            },
        }),
        (name.clone(), acct).prop_map(|(n, a)| bucket(n, a)),
        name.clone()
            .prop_map(|n| MapCommand::DeleteBucket { name: n.into() }),
        (
            name,
            prop::sample::select(vec![
                Versioning::Enabled,
                Versioning::Suspended,
                Versioning::Unversioned
            ])
        )
            .prop_map(|(n, state)| MapCommand::SetVersioning {
                name: n.into(),
                state
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_member_applying_the_same_log_holds_the_same_map(
        log in prop::collection::vec(command(), 1..60),
    ) {
        let (mut a, mut b) = (ClusterMap::new(), ClusterMap::new());
        for c in &log {
            let before = a.clone();
            let ra = a.apply(c);
            let rb = b.apply(c);
            prop_assert_eq!(&ra, &rb);
            if ra.is_err() {
                prop_assert_eq!(&a, &before, "a refused command changed the map: {:?}", c);
            } else {
                prop_assert_eq!(a.version(), before.version() + 1);
            }
        }
        prop_assert_eq!(a.encode(), b.encode());
        let restored = ClusterMap::decode(&a.encode()).unwrap();
        prop_assert_eq!(&restored, &a);
    }

    #[test]
    fn a_damaged_snapshot_is_refused(at: prop::sample::Index, bit in 0u8..8) {
        let mut m = ClusterMap::new();
        m.apply(&account("AUTH_a")).unwrap();
        m.apply(&create_policy("rep3")).unwrap();
        m.apply(&set_index("rep3")).unwrap();
        m.apply(&bucket("photos", "AUTH_a")).unwrap();
        let mut bytes = m.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(ClusterMap::decode(&bytes).is_err());
    }
}

#[test]
fn of_two_creates_of_one_bucket_exactly_one_wins() {
    let mut m = ClusterMap::new();
    m.apply(&create_policy("ec2+1")).unwrap();
    m.apply(&account("AUTH_a")).unwrap();
    m.apply(&account("AUTH_b")).unwrap();
    assert_eq!(m.apply(&bucket("photos", "AUTH_a")), Ok(MapOutcome::Done));
    assert_eq!(
        m.apply(&bucket("photos", "AUTH_b")),
        Err(MapError::BucketExists {
            name: "photos".into(),
            owner: "AUTH_a".into()
        })
    );
    assert_eq!(m.bucket("photos").unwrap().owner, "AUTH_a");
    assert_eq!(m.bucket("photos").unwrap().policy, "ec2+1");
    assert_eq!(m.bucket("photos").unwrap().shards, 8);
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let mut m = ClusterMap::new();
    m.apply(&account("AUTH_a")).unwrap();
    let cases = [
        bucket("photos", "AUTH_a"), // no policy yet
        create_policy("raid5"),
        MapCommand::CreatePolicy {
            spec: "rep3".into(),
            part_power: 30,
            min_part_hours: 0,
            seed: 1,
            hash_key: [3; 32],
            make_default: false,
        },
    ];
    for c in &cases {
        let before = m.clone();
        assert!(m.apply(c).is_err(), "{c:?}");
        assert_eq!(m, before);
    }
    m.apply(&create_policy("rep3")).unwrap();
    let refused = [
        bucket("Photos", "AUTH_a"),
        bucket("192.168.0.1", "AUTH_a"),
        bucket("photos", "AUTH_nobody"),
        MapCommand::CreateBucket {
            name: "photos".into(),
            owner: "AUTH_a".into(),
            policy: Some("ec9+9".into()),
            shards: None,
            now_ms: 1,
        },
        MapCommand::CreateBucket {
            name: "photos".into(),
            owner: "AUTH_a".into(),
            policy: None,
            shards: Some(0),
            now_ms: 1,
        },
        account("AUTH/x"),
        account(""),
        MapCommand::CreateCredential {
            account: "AUTH_a".into(),
            credential: NewCredential::S3 {
                access_key: "short".into(),
                secret: "secret-key".into(),
            },
        },
        MapCommand::CreateCredential {
            account: "AUTH_a".into(),
            credential: NewCredential::Swift {
                user: "bob".into(),
                key: "short".into(),
            },
        },
        MapCommand::CreateCredential {
            account: "AUTH_z".into(),
            credential: NewCredential::Swift {
                user: "bob".into(),
                key: "long-enough".into(),
            },
        },
        MapCommand::DeleteBucket {
            name: "nothing".into(),
        },
        MapCommand::RevokeCredential {
            id: "nothing".into(),
        },
        MapCommand::Rebalance {
            policy: "rep3".into(),
            now_ms: 0,
            transition_ms: None,
        }, // no devices
    ];
    for c in &refused {
        let before = m.clone();
        assert!(m.apply(c).is_err(), "{c:?} was accepted");
        assert_eq!(m, before, "{c:?} changed the map");
    }
    m.apply(&bucket("photos", "AUTH_a")).unwrap();
    m.apply(&MapCommand::CreateCredential {
        account: "AUTH_a".into(),
        credential: NewCredential::Swift {
            user: "bob".into(),
            key: "long-enough".into(),
        },
    })
    .unwrap();
    assert!(m.credential("AUTH_a:bob").is_some());
    let err = m
        .apply(&MapCommand::DeleteAccount {
            name: "AUTH_a".into(),
        })
        .unwrap_err();
    assert_eq!(
        err,
        MapError::AccountNotEmpty {
            name: "AUTH_a".into(),
            buckets: 1,
            credentials: 1
        }
    );
    m.apply(&MapCommand::SetVersioning {
        name: "photos".into(),
        state: Versioning::Enabled,
    })
    .unwrap();
    assert!(
        m.apply(&MapCommand::SetVersioning {
            name: "photos".into(),
            state: Versioning::Unversioned
        })
        .is_err()
    );
    assert_eq!(m.bucket("photos").unwrap().versioning, Versioning::Enabled);
}

#[test]
fn ring_changes_through_the_map_build_rings_and_raise_the_epoch() {
    let mut m = ClusterMap::new();
    m.apply(&create_policy("ec2+1")).unwrap();
    for z in 0..3 {
        for n in 0..2 {
            m.apply(&MapCommand::AddDevice {
                policy: "ec2+1".into(),
                device: device(z, n),
                id: None,
            })
            .unwrap();
        }
    }
    assert!(m.policy("ec2+1").unwrap().ring.is_none());
    let r = m
        .apply(&MapCommand::Rebalance {
            policy: "ec2+1".into(),
            now_ms: 1_000,
            transition_ms: None,
        })
        .unwrap();
    assert!(matches!(r, MapOutcome::Rebalanced { slots_moved: 0, .. }));
    assert_eq!(m.epoch().0, 1);
    let ring = m.policy("ec2+1").unwrap().ring.clone().unwrap();
    assert_eq!(ring.primaries(ring.partition_of("a/c/o")).count(), 3);
    // nothing changed: no new epoch
    m.apply(&MapCommand::Rebalance {
        policy: "ec2+1".into(),
        now_ms: 2_000,
        transition_ms: None,
    })
    .unwrap();
    assert_eq!(m.epoch().0, 1);
    // a snapshot restores the ring too
    let restored = ClusterMap::decode(&m.encode()).unwrap();
    assert_eq!(restored.policy("ec2+1").unwrap().ring.as_ref(), Some(&ring));
}

#[test]
fn policies_keep_the_rings_their_rebalances_replace_for_the_transition() {
    let mut m = ClusterMap::new();
    m.apply(&create_policy("rep3")).unwrap();
    m.apply(&create_policy("ec2+1")).unwrap();
    m.apply(&set_index("rep3")).unwrap();
    let add = |m: &mut ClusterMap, policy: &str, z: u32, n: u8| {
        m.apply(&MapCommand::AddDevice {
            policy: policy.into(),
            device: device(z, n),
            id: None,
        })
        .unwrap();
    };
    let rebalance = |m: &mut ClusterMap, policy: &str, now_ms: u64| {
        m.apply(&MapCommand::Rebalance {
            policy: policy.into(),
            now_ms,
            transition_ms: None,
        })
        .unwrap();
    };
    for policy in ["rep3", "ec2+1"] {
        for z in 0..3 {
            add(&mut m, policy, z, 0);
        }
        rebalance(&mut m, policy, 1_000);
    }
    // The first ring replaced nothing.
    assert_eq!(m.previous_rings("rep3", 1_000).count(), 0);
    let first = m.policy("rep3").unwrap().ring.clone().unwrap();
    for policy in ["rep3", "ec2+1"] {
        for z in 0..3 {
            add(&mut m, policy, z, 1);
        }
        rebalance(&mut m, policy, 2_000);
    }
    let previous: Vec<_> = m.previous_rings("rep3", 2_000).cloned().collect();
    assert_eq!(previous, std::slice::from_ref(&first));
    // Data policies keep theirs too (their previous owners are read sources).
    assert_eq!(m.previous_rings("ec2+1", 2_000).count(), 1);
    // A snapshot keeps them.
    let restored = ClusterMap::decode(&m.encode()).unwrap();
    assert_eq!(restored, m);
    // They stop counting once the transition is over, and the next rebalance forgets them.
    let over = 2_000 + nimbus_ring::map::RING_TRANSITION_MS;
    assert_eq!(m.previous_rings("rep3", over - 1).count(), 1);
    assert_eq!(m.previous_rings("rep3", over).count(), 0);
    let second = m.policy("rep3").unwrap().ring.clone().unwrap();
    add(&mut m, "rep3", 0, 2);
    rebalance(&mut m, "rep3", over);
    let previous: Vec<_> = m.previous_rings("rep3", over).cloned().collect();
    assert_eq!(previous, [second]);
    assert_eq!(m.policy("rep3").unwrap().previous.len(), 1);
    // A rebalance may name a shorter transition.
    add(&mut m, "rep3", 1, 2);
    m.apply(&MapCommand::Rebalance {
        policy: "rep3".into(),
        now_ms: over + 10,
        transition_ms: Some(5_000),
    })
    .unwrap();
    assert_eq!(m.previous_rings("rep3", over + 10).count(), 2);
    assert_eq!(m.previous_rings("rep3", over + 5_009).count(), 2);
    assert_eq!(m.previous_rings("rep3", over + 5_010).count(), 1);
}

#[test]
fn the_index_policy_is_an_existing_replication_policy() {
    let mut m = ClusterMap::new();
    assert_eq!(m.index_policy(), None);
    assert_eq!(
        m.apply(&set_index("rep5")),
        Err(MapError::NoSuchPolicy {
            name: "rep5".into()
        })
    );
    m.apply(&create_policy("ec4+2")).unwrap();
    m.apply(&create_policy("rep5")).unwrap();
    let before = m.clone();
    let refused = m.apply(&set_index("ec4+2")).unwrap_err();
    assert!(
        matches!(&refused, MapError::Invalid { reason } if reason.contains("replication policy")),
        "{refused:?}"
    );
    assert_eq!(m, before);

    assert_eq!(m.apply(&set_index("rep5")), Ok(MapOutcome::Done));
    assert_eq!(m.index_policy(), Some("rep5"));
    // The default policy is another matter.
    assert_eq!(m.default_policy(), Some("ec4+2"));
    // Without buckets, it may change.
    m.apply(&create_policy("rep3")).unwrap();
    m.apply(&set_index("rep3")).unwrap();
    assert_eq!(m.index_policy(), Some("rep3"));
    m.apply(&set_index("rep5")).unwrap();

    let restored = ClusterMap::decode(&m.encode()).unwrap();
    assert_eq!(restored, m);
    assert_eq!(restored.index_policy(), Some("rep5"));
}

#[test]
fn the_index_policy_is_fixed_once_a_bucket_exists() {
    let mut m = ClusterMap::new();
    m.apply(&create_policy("rep3")).unwrap();
    m.apply(&create_policy("rep5")).unwrap();
    m.apply(&set_index("rep5")).unwrap();
    m.apply(&account("AUTH_a")).unwrap();
    m.apply(&bucket("photos", "AUTH_a")).unwrap();

    let before = m.clone();
    let refused = m.apply(&set_index("rep3")).unwrap_err();
    assert!(
        matches!(&refused, MapError::Invalid { reason } if reason.contains("would orphan")),
        "{refused:?}"
    );
    assert_eq!(m, before, "a refused change changed the map");
    // The same one again is a no-op that succeeds.
    assert_eq!(m.apply(&set_index("rep5")), Ok(MapOutcome::Done));
    assert_eq!(m.index_policy(), Some("rep5"));
    assert_eq!(m.version(), before.version() + 1);

    // Once the last bucket is gone, it may change again.
    m.apply(&MapCommand::DeleteBucket {
        name: "photos".into(),
    })
    .unwrap();
    m.apply(&set_index("rep3")).unwrap();
    assert_eq!(m.index_policy(), Some("rep3"));

    // With buckets and no index policy yet, a first choice is refused too: where their
    // shards went was decided without one.
    let mut m = ClusterMap::new();
    m.apply(&create_policy("rep3")).unwrap();
    m.apply(&account("AUTH_a")).unwrap();
    m.apply(&bucket("photos", "AUTH_a")).unwrap();
    let before = m.clone();
    assert!(m.apply(&set_index("rep3")).is_err());
    assert_eq!(m, before);
}

#[test]
fn a_flipped_byte_in_a_snapshot_with_an_index_policy_is_detected() {
    let mut m = ClusterMap::new();
    m.apply(&create_policy("rep3")).unwrap();
    m.apply(&set_index("rep3")).unwrap();
    let bytes = m.encode();
    assert_eq!(
        ClusterMap::decode(&bytes).unwrap().index_policy(),
        Some("rep3")
    );
    // Every byte, the index policy's own last ones included.
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x10;
        assert!(ClusterMap::decode(&damaged).is_err(), "byte {i} flipped");
    }
}

//! The first run of a dev cluster, through the metadata members' API in-process (the same
//! client as `nimbus admin`): the Raft group, the storage policies with their rings, the
//! index policy, an account and its credentials.
//!
//! **Invariant:** every step first reads the map (or the group's membership) and does only
//! what is missing, so a bootstrap cut short anywhere (Ctrl-C, a crash, a write whose
//! outcome is unknown) is finished by the next run, never done twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nimbus_ring::DeviceSpec;
use nimbus_ring::map::{ClusterMap, CredentialKind, MapCommand, MapOutcome, NewCredential};
use tokio::time::Instant;

use super::layout::{Credentials, DEVICES, Layout, META_MEMBERS, NODES};
use crate::admin::client::MetaClient;
use crate::admin::map::{
    ACCESS_KEY_ALPHABET, ACCESS_KEY_LEN, SECRET_ALPHABET, SECRET_LEN, now_ms, random_bytes,
    random_string,
};

/// The policy of buckets created without one.
const DEFAULT_POLICY: &str = "ec4+2";
/// The policy whose ring places index shards.
const INDEX_POLICY: &str = "rep5";
/// Every policy, created in this order.
const POLICIES: [&str; 3] = [DEFAULT_POLICY, "rep3", INDEX_POLICY];
/// 256 partitions: 128 slots per device for `ec4+2` over 12 devices, plenty for a laptop.
const PART_POWER: u32 = 8;
/// Partitions may move again at once, so that tests can change rings freely.
const MIN_PART_HOURS: u32 = 0;
/// Every device weighs the same.
const WEIGHT: f64 = 1.0;
/// The account that owns the dev cluster's buckets.
const ACCOUNT: &str = "dev";
/// Its Swift user (`X-Auth-User: dev:admin`).
const SWIFT_USER: &str = "admin";
/// How long the group may take to elect a leader and answer.
const LEADER_WAIT: Duration = Duration::from_secs(60);
/// The pause between attempts while it does.
const LEADER_PAUSE: Duration = Duration::from_millis(250);

/// Attempts at the whole setup: one whose change timed out (a loaded machine commits
/// slowly) is finished by the next, which does only what is missing.
const ATTEMPTS: u32 = 3;

/// Sets up the cluster (or finishes setting it up) and returns its credentials.
///
/// # Errors
/// No leader within [`LEADER_WAIT`], a refused change, or a change whose outcome was unknown
/// [`ATTEMPTS`] times.
pub async fn run(client: &MetaClient, layout: &Layout) -> Result<Credentials> {
    let mut attempt = 1;
    loop {
        match attempt_setup(client, layout).await {
            Ok(credentials) => return Ok(credentials),
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    attempt,
                    "setup cut short; trying again"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn attempt_setup(client: &MetaClient, layout: &Layout) -> Result<Credentials> {
    init_group(client, layout).await?;
    let map = wait_for_map(client).await?;
    let hash_key: [u8; 32] = random_bytes().context("draw the cluster hash key")?;
    for spec in POLICIES {
        if map.policy(spec).is_none() {
            let seed = getrandom::u64().map_err(|e| anyhow!("draw a ring seed: {e}"))?;
            apply(
                client,
                MapCommand::CreatePolicy {
                    spec: spec.to_owned(),
                    part_power: PART_POWER,
                    min_part_hours: MIN_PART_HOURS,
                    seed,
                    hash_key,
                    make_default: spec == DEFAULT_POLICY,
                },
            )
            .await?;
        }
    }
    if map.index_policy() != Some(INDEX_POLICY) {
        let policy = INDEX_POLICY.to_owned();
        apply(client, MapCommand::SetIndexPolicy { policy }).await?;
    }
    let map = client.map().await?;
    for spec in POLICIES {
        let Some(entry) = map.policy(spec) else {
            bail!("storage policy {spec} vanished from the map");
        };
        let present: BTreeSet<String> = entry
            .builder
            .devices()
            .iter()
            .filter(|d| !d.removed)
            .map(|d| d.device.location.to_string())
            .collect();
        for i in 1..=NODES {
            for device in DEVICES {
                let location = layout.location(i, device);
                if !present.contains(&location.to_string()) {
                    let device = DeviceSpec {
                        location,
                        weight: WEIGHT,
                    };
                    let policy = spec.to_owned();
                    let id = None;
                    apply(client, MapCommand::AddDevice { policy, device, id }).await?;
                }
            }
        }
    }
    let map = client.map().await?;
    for spec in POLICIES {
        let needed = map
            .policy(spec)
            .is_none_or(|e| e.ring.is_none() || e.builder.has_pending_changes());
        if needed {
            let policy = spec.to_owned();
            let now_ms = now_ms();
            apply(
                client,
                MapCommand::Rebalance {
                    policy,
                    now_ms,
                    transition_ms: None,
                },
            )
            .await?;
        }
    }
    if map.account(ACCOUNT).is_none() {
        let name = ACCOUNT.to_owned();
        let now_ms = now_ms();
        apply(client, MapCommand::CreateAccount { name, now_ms }).await?;
    }
    let (access_key, secret_key) = match s3_credential(&map) {
        Some(found) => found,
        None => {
            let access_key = random_string(ACCESS_KEY_ALPHABET, ACCESS_KEY_LEN)?;
            let secret = random_string(SECRET_ALPHABET, SECRET_LEN)?;
            let credential = NewCredential::S3 {
                access_key: access_key.clone(),
                secret: secret.clone(),
            };
            create_credential(client, credential).await?;
            (access_key, secret)
        }
    };
    let swift_user = format!("{ACCOUNT}:{SWIFT_USER}");
    let swift_key = match map.credential(&swift_user) {
        Some(c) => c.secret.clone(),
        None => {
            let key = random_string(SECRET_ALPHABET, SECRET_LEN)?;
            let credential = NewCredential::Swift {
                user: SWIFT_USER.to_owned(),
                key: key.clone(),
            };
            create_credential(client, credential).await?;
            key
        }
    };
    Ok(Credentials {
        account: ACCOUNT.to_owned(),
        access_key,
        secret_key,
        swift_user,
        swift_key,
    })
}

/// Waits until the group has a leader that answers with its map; returns the map.
///
/// # Errors
/// No answer within [`LEADER_WAIT`]: the last error says why.
pub async fn wait_for_map(client: &MetaClient) -> Result<ClusterMap> {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        match client.map().await {
            Ok(map) => return Ok(map),
            Err(e) if Instant::now() + LEADER_PAUSE < deadline => {
                tracing::debug!(error = format!("{e:#}"), "no map yet");
                tokio::time::sleep(LEADER_PAUSE).await;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "the metadata group gave no map within {} s",
                    LEADER_WAIT.as_secs()
                )));
            }
        }
    }
}

/// Checks that the map still holds the credentials of an earlier bootstrap.
///
/// # Errors
/// One is missing or differs: the metadata directories and `dev.json` disagree.
pub fn check_credentials(map: &ClusterMap, credentials: &Credentials) -> Result<()> {
    let s3 = map
        .credential(&credentials.access_key)
        .is_some_and(|c| c.kind == CredentialKind::S3 && c.secret == credentials.secret_key);
    let swift = map
        .credential(&credentials.swift_user)
        .is_some_and(|c| c.kind == CredentialKind::Swift && c.secret == credentials.swift_key);
    if !(s3 && swift) {
        bail!("the cluster map does not hold the credentials of dev.json");
    }
    Ok(())
}

/// Forms the Raft group of members 1 to 5, unless the first member to answer is in one.
async fn init_group(client: &MetaClient, layout: &Layout) -> Result<()> {
    let deadline = Instant::now() + LEADER_WAIT;
    let status = loop {
        match client.status().await {
            Ok(status) => break status,
            Err(e) if Instant::now() + LEADER_PAUSE < deadline => {
                tracing::debug!(error = format!("{e:#}"), "no member status yet");
                tokio::time::sleep(LEADER_PAUSE).await;
            }
            Err(e) => return Err(e.context("ask a metadata member for its status")),
        }
    };
    if !status.membership.voters.is_empty() {
        return Ok(());
    }
    let members: BTreeMap<u64, String> = (1..=META_MEMBERS)
        .map(|i| (u64::from(i), layout.meta_addr(i).to_string()))
        .collect();
    client
        .init(members)
        .await
        .context("initialize the metadata group")?;
    Ok(())
}

/// Returns an S3 credential of the dev account already in the map.
fn s3_credential(map: &ClusterMap) -> Option<(String, String)> {
    map.credentials()
        .find(|(_, c)| c.account == ACCOUNT && c.kind == CredentialKind::S3)
        .map(|(id, c)| (id.to_owned(), c.secret.clone()))
}

async fn create_credential(client: &MetaClient, credential: NewCredential) -> Result<()> {
    let account = ACCOUNT.to_owned();
    apply(
        client,
        MapCommand::CreateCredential {
            account,
            credential,
        },
    )
    .await
    .map(drop)
}

/// Applies `command` through the leader; a refusal is an error.
async fn apply(client: &MetaClient, command: MapCommand) -> Result<MapOutcome> {
    // Named, not printed: a credential's secret stays out of error messages.
    let what = match &command {
        MapCommand::CreatePolicy { spec, .. } => format!("create storage policy {spec}"),
        MapCommand::SetIndexPolicy { policy } => format!("make {policy} the index policy"),
        MapCommand::AddDevice { policy, device, .. } => {
            format!("add device {} to {policy}", device.location)
        }
        MapCommand::Rebalance { policy, .. } => format!("rebalance {policy}"),
        MapCommand::CreateAccount { name, .. } => format!("create account {name}"),
        MapCommand::CreateCredential { account, .. } => {
            format!("create a credential for {account}")
        }
        _ => "change the cluster map".to_owned(),
    };
    let outcome = client
        .write(&command)
        .await
        .with_context(|| format!("apply {what}"))?;
    outcome.with_context(|| format!("apply {what}"))
}

//! The `nimbus admin` commands that change or read the cluster map: storage policies,
//! devices and rings, accounts, credentials and buckets. Each change is one
//! [`MapCommand`], built here with the local clock and fresh randomness, and applied
//! through the leader; a read is the leader's map as of a read index.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use nimbus_core::ids::DeviceId;
use nimbus_core::policy::{PolicyKind, StoragePolicy};
use nimbus_ring::map::{MapCommand, MapOutcome, Millis, NewCredential, Versioning};
use nimbus_ring::{DeviceSpec, Location};
use serde_json::json;

use super::client::MetaClient;
use super::output::{self, Report};
#[cfg(doc)]
use nimbus_ring::map::MapError;

/// Letters of a generated S3 access key id.
pub(crate) const ACCESS_KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Length of a generated S3 access key id.
pub(crate) const ACCESS_KEY_LEN: usize = 20;
/// Letters of a generated secret key.
pub(crate) const SECRET_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Length of a generated secret key.
pub(crate) const SECRET_LEN: usize = 40;

#[derive(Subcommand)]
pub(super) enum PolicyCommand {
    /// Create a storage policy and its (empty) ring.
    Create(PolicyCreateArgs),
    /// Make a replication policy the index policy: its ring places every bucket's index
    /// shards. Fixed once a bucket exists.
    SetIndex {
        /// The policy: an existing repN (e.g. rep5).
        name: String,
    },
}

#[derive(Args)]
pub(super) struct PolicyCreateArgs {
    /// repN (e.g. rep3) or ecK+M (e.g. ec4+2); also the policy's name.
    spec: String,
    /// 2^part_power partitions (1 to 24). Aim for at least 100 slots per device.
    #[arg(long)]
    part_power: u32,
    /// Hours a partition that moved must stay before it moves again.
    #[arg(long, default_value_t = 1)]
    min_part_hours: u32,
    /// Make it the policy of buckets created without one (the first policy is anyway).
    #[arg(long)]
    default: bool,
    /// Also make it the index policy (a repN only), as `policy set-index` does.
    #[arg(long)]
    index: bool,
    /// Seed for the ring's random choices [default: random].
    #[arg(long)]
    seed: Option<u64>,
    /// cluster_hash_key as 64 hex digits [default: random]. Never changes once data exists.
    #[arg(long, value_parser = crate::ring::parse_hash_key)]
    hash_key: Option<[u8; 32]>,
}

#[derive(Subcommand)]
pub(super) enum DeviceCommand {
    /// Add a device: `add rep3 r1z2-10.0.0.5:6200/sdb 100`.
    #[command(allow_negative_numbers = true)]
    Add {
        /// The policy.
        policy: String,
        #[arg(
            help = "Where the device sits: r<region>z<zone>-<ip:port>/<device>, e.g. r1z2-10.0.0.5:6200/sdb"
        )]
        location: Location,
        /// Its weight (normally its capacity, e.g. in TiB).
        weight: f64,
        /// Use this device id instead of the next free one.
        #[arg(long)]
        id: Option<u32>,
    },
    /// Remove a device: rebalances drain it, then it is forgotten.
    Remove {
        /// The policy.
        policy: String,
        /// The device's id.
        id: u32,
    },
    /// Change a device's weight.
    #[command(allow_negative_numbers = true)]
    SetWeight {
        /// The policy.
        policy: String,
        /// The device's id.
        id: u32,
        /// The new weight.
        weight: f64,
    },
}

#[derive(Subcommand)]
pub(super) enum RingCommand {
    /// Assign partitions to the policy's devices; a new ring epoch if anything moved.
    Rebalance {
        /// The policy.
        policy: String,
        /// Seconds during which the replaced ring's devices still count: for the index
        /// policy, every shard's reads and writes need a majority of its old replicas too
        /// while anti-entropy hands their records over (keep it several `index_sync_secs`;
        /// stop a device removed from the index ring only after it); for data, reads look
        /// for fragments at their slots' previous owners [default: 3600].
        #[arg(long, value_name = "SECS")]
        transition_secs: Option<u64>,
    },
    /// Show the policy's devices, their slots and the ring's epoch.
    Show {
        /// The policy.
        policy: String,
    },
}

#[derive(Subcommand)]
pub(super) enum AccountCommand {
    /// Create an account (e.g. AUTH_alice).
    Create {
        /// Its name.
        name: String,
    },
    /// Delete an account that has no buckets and no credentials left.
    Delete {
        /// Its name.
        name: String,
    },
}

#[derive(Subcommand)]
pub(super) enum CredentialCommand {
    /// Create an S3 access key for an account; what is not given is generated and printed once.
    CreateS3 {
        /// The account it acts for.
        account: String,
        /// The access key id: 16 to 128 of A-Z 0-9 [default: 20 random ones].
        #[arg(long)]
        access_key: Option<String>,
        /// The secret access key: 8 to 128 characters [default: 40 random ones].
        #[arg(long)]
        secret: Option<String>,
    },
    /// Create a Swift user (X-Auth-User: ACCOUNT:USER); a key not given is generated and printed once.
    CreateSwift {
        /// The account it acts for.
        account: String,
        /// The user: 1 to 64 of A-Z a-z 0-9 . _ -.
        user: String,
        /// Its key: 8 to 128 characters [default: 40 random ones].
        #[arg(long)]
        key: Option<String>,
    },
    /// Revoke a credential: an S3 access key id, or a Swift ACCOUNT:USER.
    Revoke {
        /// The credential's id.
        id: String,
    },
}

#[derive(Subcommand)]
pub(super) enum BucketCommand {
    /// Create a bucket.
    Create {
        /// Its name (S3 rules: 3 to 63 of a-z 0-9 . -).
        name: String,
        /// The owning account.
        #[arg(long)]
        owner: String,
        /// Its storage policy [default: the default policy].
        #[arg(long)]
        policy: Option<String>,
        /// Index shards, fixed for the bucket's life [default: 8].
        #[arg(long)]
        shards: Option<u16>,
    },
    /// Delete a bucket from the map. Its objects are not checked: empty it first.
    Delete {
        /// The bucket.
        name: String,
    },
    /// List buckets.
    List {
        /// Only this account's.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Enable or suspend versioning.
    Versioning {
        /// The bucket.
        name: String,
        /// The new state.
        state: VersioningArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum VersioningArg {
    /// Keep every version of every object.
    Enabled,
    /// Keep existing versions; new writes replace the null version.
    Suspended,
}

#[derive(Subcommand)]
pub(super) enum MapViewCommand {
    /// Summarize the map: version, epoch, default and index policies, policies, accounts,
    /// credentials, buckets, down devices.
    Show,
}

/// Runs `policy …`.
pub(super) async fn policy(client: &MetaClient, command: PolicyCommand) -> Result<Report> {
    match command {
        PolicyCommand::Create(a) => create_policy(client, a).await,
        PolicyCommand::SetIndex { name } => {
            let command = MapCommand::SetIndexPolicy {
                policy: name.clone(),
            };
            let text = format!("{name} is the index policy");
            change(client, &command, text, json!({ "index_policy": name })).await
        }
    }
}

/// Runs `ring …`.
pub(super) async fn ring(client: &MetaClient, command: RingCommand) -> Result<Report> {
    match command {
        RingCommand::Rebalance {
            policy,
            transition_secs,
        } => {
            let command = MapCommand::Rebalance {
                policy: policy.clone(),
                now_ms: now_ms(),
                transition_ms: transition_secs.map(|s| s.saturating_mul(1000)),
            };
            let MapOutcome::Rebalanced {
                ring_epoch,
                slots_moved,
            } = apply(client, &command).await?
            else {
                bail!("the map answered a rebalance with another outcome");
            };
            Ok(Report::new(
                format!("rebalanced {policy}: ring epoch {ring_epoch}, {slots_moved} slots moved"),
                json!({ "policy": policy, "ring_epoch": ring_epoch, "slots_moved": slots_moved }),
            ))
        }
        RingCommand::Show { policy } => output::ring(&client.map().await?, &policy),
    }
}

/// Runs `map …`.
pub(super) async fn map_view(client: &MetaClient, command: MapViewCommand) -> Result<Report> {
    match command {
        MapViewCommand::Show => Ok(output::map_summary(&client.map().await?)),
    }
}

/// Applies `command`; a refusal becomes the error, as the map's [`MapError`].
async fn apply(client: &MetaClient, command: &MapCommand) -> Result<MapOutcome> {
    client.write(command).await?.map_err(anyhow::Error::from)
}

/// Applies `command` and reports `done` (the text) and `value` (the JSON).
async fn change(
    client: &MetaClient,
    command: &MapCommand,
    done: String,
    value: serde_json::Value,
) -> Result<Report> {
    apply(client, command).await?;
    Ok(Report::new(done, value))
}

async fn create_policy(client: &MetaClient, a: PolicyCreateArgs) -> Result<Report> {
    if a.index {
        let policy: StoragePolicy = a.spec.parse().map_err(|e| anyhow!("{e}"))?;
        if !matches!(policy.kind(), PolicyKind::Replication { .. }) {
            bail!(
                "--index: the index policy must be a replication policy (repN), not {}",
                a.spec
            );
        }
    }
    let seed = match a.seed {
        Some(seed) => seed,
        None => getrandom::u64().map_err(|e| anyhow!("read random bytes for the seed: {e}"))?,
    };
    let hash_key = match a.hash_key {
        Some(key) => key,
        None => random_bytes().context("draw the hash key")?,
    };
    let command = MapCommand::CreatePolicy {
        spec: a.spec.clone(),
        part_power: a.part_power,
        min_part_hours: a.min_part_hours,
        seed,
        hash_key,
        make_default: a.default,
    };
    apply(client, &command).await?;
    let mut roles = String::new();
    if a.default {
        roles.push_str(", the default");
    }
    if a.index {
        let command = MapCommand::SetIndexPolicy {
            policy: a.spec.clone(),
        };
        apply(client, &command).await.with_context(|| {
            format!(
                "created storage policy {}, but could not make it the index policy",
                a.spec
            )
        })?;
        roles.push_str(", the index policy");
    }
    Ok(Report::new(
        format!(
            "created storage policy {}{roles}: 2^{} partitions, min_part_hours {}, seed {seed}",
            a.spec, a.part_power, a.min_part_hours
        ),
        json!({
            "policy": a.spec,
            "part_power": a.part_power,
            "min_part_hours": a.min_part_hours,
            "seed": seed,
            "made_default": a.default,
            "made_index": a.index,
        }),
    ))
}

/// Runs `device …`.
pub(super) async fn device(client: &MetaClient, command: DeviceCommand) -> Result<Report> {
    match command {
        DeviceCommand::Add {
            policy,
            location,
            weight,
            id,
        } => {
            let command = MapCommand::AddDevice {
                policy: policy.clone(),
                device: DeviceSpec {
                    location: location.clone(),
                    weight,
                },
                id: id.map(DeviceId),
            };
            let MapOutcome::DeviceAdded { id } = apply(client, &command).await? else {
                bail!("the map answered a device addition with another outcome");
            };
            Ok(Report::new(
                format!(
                    "added device {id} to {policy}: {location} with weight {weight} (placed by the next `ring rebalance`)"
                ),
                json!({ "policy": policy, "id": id, "location": location.to_string(), "weight": weight }),
            ))
        }
        DeviceCommand::Remove { policy, id } => {
            let command = MapCommand::RemoveDevice {
                policy: policy.clone(),
                id: DeviceId(id),
            };
            let text = format!("removed device {id} from {policy} (the next rebalances drain it)");
            change(
                client,
                &command,
                text,
                json!({ "policy": policy, "removed": id }),
            )
            .await
        }
        DeviceCommand::SetWeight { policy, id, weight } => {
            let command = MapCommand::SetWeight {
                policy: policy.clone(),
                id: DeviceId(id),
                weight,
            };
            let text = format!(
                "device {id} of {policy} now has weight {weight} (applied by the next `ring rebalance`)"
            );
            let value = json!({ "policy": policy, "id": id, "weight": weight });
            change(client, &command, text, value).await
        }
    }
}

/// Runs `account …`.
pub(super) async fn account(client: &MetaClient, command: AccountCommand) -> Result<Report> {
    match command {
        AccountCommand::Create { name } => {
            let command = MapCommand::CreateAccount {
                name: name.clone(),
                now_ms: now_ms(),
            };
            let text = format!("created account {name}");
            change(client, &command, text, json!({ "account": name })).await
        }
        AccountCommand::Delete { name } => {
            let command = MapCommand::DeleteAccount { name: name.clone() };
            let text = format!("deleted account {name}");
            change(client, &command, text, json!({ "deleted": name })).await
        }
    }
}

/// Runs `credential …`.
pub(super) async fn credential(client: &MetaClient, command: CredentialCommand) -> Result<Report> {
    match command {
        CredentialCommand::CreateS3 {
            account,
            access_key,
            secret,
        } => {
            let access_key = match access_key {
                Some(key) => key,
                None => random_string(ACCESS_KEY_ALPHABET, ACCESS_KEY_LEN)?,
            };
            let generated = match secret {
                Some(given) => (given, false),
                None => (random_string(SECRET_ALPHABET, SECRET_LEN)?, true),
            };
            let (secret, secret_generated) = generated;
            let command = MapCommand::CreateCredential {
                account: account.clone(),
                credential: NewCredential::S3 {
                    access_key: access_key.clone(),
                    secret: secret.clone(),
                },
            };
            apply(client, &command).await?;
            let shown = secret_generated.then_some(secret);
            let text = match &shown {
                Some(secret) => format!(
                    "created S3 access key {access_key} for {account}, secret key {secret} (shown only now)"
                ),
                None => format!("created S3 access key {access_key} for {account}"),
            };
            Ok(Report::new(
                text,
                json!({ "account": account, "access_key": access_key, "secret": shown }),
            ))
        }
        CredentialCommand::CreateSwift { account, user, key } => {
            let (key, key_generated) = match key {
                Some(given) => (given, false),
                None => (random_string(SECRET_ALPHABET, SECRET_LEN)?, true),
            };
            let command = MapCommand::CreateCredential {
                account: account.clone(),
                credential: NewCredential::Swift {
                    user: user.clone(),
                    key: key.clone(),
                },
            };
            apply(client, &command).await?;
            let id = format!("{account}:{user}");
            let shown = key_generated.then_some(key);
            let text = match &shown {
                Some(key) => format!("created Swift user {id}, key {key} (shown only now)"),
                None => format!("created Swift user {id}"),
            };
            Ok(Report::new(
                text,
                json!({ "account": account, "user": id, "key": shown }),
            ))
        }
        CredentialCommand::Revoke { id } => {
            let command = MapCommand::RevokeCredential { id: id.clone() };
            let text = format!("revoked credential {id}");
            change(client, &command, text, json!({ "revoked": id })).await
        }
    }
}

/// Runs `bucket …`.
pub(super) async fn bucket(client: &MetaClient, command: BucketCommand) -> Result<Report> {
    match command {
        BucketCommand::Create {
            name,
            owner,
            policy,
            shards,
        } => {
            let command = MapCommand::CreateBucket {
                name: name.clone(),
                owner: owner.clone(),
                policy: policy.clone(),
                shards,
                now_ms: now_ms(),
            };
            let text = format!("created bucket {name} for {owner}");
            let value =
                json!({ "bucket": name, "owner": owner, "policy": policy, "shards": shards });
            change(client, &command, text, value).await
        }
        BucketCommand::Delete { name } => {
            let command = MapCommand::DeleteBucket { name: name.clone() };
            let text = format!("deleted bucket {name}");
            change(client, &command, text, json!({ "deleted": name })).await
        }
        BucketCommand::Versioning { name, state } => {
            let (state, word) = match state {
                VersioningArg::Enabled => (Versioning::Enabled, "enabled"),
                VersioningArg::Suspended => (Versioning::Suspended, "suspended"),
            };
            let command = MapCommand::SetVersioning {
                name: name.clone(),
                state,
            };
            let text = format!("versioning of {name} is {word}");
            change(
                client,
                &command,
                text,
                json!({ "bucket": name, "versioning": state }),
            )
            .await
        }
        BucketCommand::List { owner } => {
            Ok(output::buckets(&client.map().await?, owner.as_deref()))
        }
    }
}

/// Returns the local clock in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Returns `N` random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("read random bytes: {e}"))?;
    Ok(bytes)
}

/// Returns `len` characters drawn uniformly from `alphabet` (at most 256 letters).
pub(crate) fn random_string(alphabet: &[u8], len: usize) -> Result<String> {
    // Bytes at or above the largest multiple of the alphabet's size are dropped, so that
    // every letter is equally likely.
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<64>()? {
            let b = usize::from(b);
            if b < limit && out.len() < len {
                out.push(char::from(alphabet[b % alphabet.len()]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_use_only_their_alphabet() {
        let key = random_string(ACCESS_KEY_ALPHABET, ACCESS_KEY_LEN).unwrap();
        assert_eq!(key.len(), 20);
        assert!(key.bytes().all(|b| ACCESS_KEY_ALPHABET.contains(&b)));
        let secret = random_string(SECRET_ALPHABET, SECRET_LEN).unwrap();
        assert_eq!(secret.len(), 40);
        assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(secret, random_string(SECRET_ALPHABET, SECRET_LEN).unwrap());
    }
}

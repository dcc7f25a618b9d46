//! The cluster map: the one truth every proxy and node works from — storage policies and
//! their rings, accounts, credentials and buckets — as a deterministic state machine.
//!
//! Raft (`ring::raft`) replicates [`MapCommand`]s; every member applies them in log order with
//! [`ClusterMap::apply`] and so holds the same map. Determinism is the contract: `apply`
//! reads no clock and draws no randomness (times, seeds and keys travel inside commands, set
//! by whoever proposed them), and iterates only ordered collections.
//!
//! **Invariant:** a command that fails leaves the map exactly as it was; one that succeeds
//! raises [`ClusterMap::version`]. Placement changes (a rebalance that moved or placed
//! slots) also raise [`ClusterMap::epoch`], which nodes compare to refuse stale requests.
//!
//! The *index policy* is the replication policy whose ring places index shards (DESIGN.md:
//! a shard lives on the `r` devices of its partition in the index ring). **Invariant:** once
//! a bucket exists it never changes (nor is first set), since the shards already written
//! would be orphaned.

mod bucket_name;
mod codec;

use std::collections::BTreeMap;

use nimbus_core::ids::{DeviceId, Epoch};
use nimbus_core::policy::{PolicyKind, StoragePolicy};
use serde::{Deserialize, Serialize};

pub use bucket_name::{InvalidBucketName, validate_bucket_name};

use crate::builder::{BuilderSettings, RingBuilder};
use crate::device::DeviceSpec;
use crate::placement::Ring;

/// Milliseconds since the Unix epoch, as carried in commands.
pub type Millis = u64;

/// The most index shards a bucket may have.
pub const MAX_SHARDS: u16 = 1024;
/// Index shards of a bucket when the creator does not say.
pub const DEFAULT_SHARDS: u16 = 8;
/// The longest S3 bucket access-policy document accepted.
pub const MAX_ACCESS_POLICY_BYTES: usize = 20 * 1024;
/// The longest attribute name of an account or bucket, in bytes.
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 256;
/// The most attributes one account or bucket has.
pub const MAX_ATTRIBUTES: usize = 256;
/// The most attribute bytes (names and values) of one account or bucket: every proxy and
/// node holds the map, so what the APIs keep here (Swift metadata, ACLs, TempURL keys, CORS
/// and tagging documents) stays small.
pub const MAX_ATTRIBUTE_BYTES: usize = 128 * 1024;

/// A change to the cluster map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum MapCommand {
    /// Creates a storage policy and its (empty) ring builder.
    CreatePolicy {
        /// `repN` or `ecK+M`; also the policy's name.
        spec: String,
        /// `2^part_power` partitions.
        part_power: u32,
        /// Hours a moved partition stays put.
        min_part_hours: u32,
        /// Seed of the ring builder.
        seed: u64,
        /// `cluster_hash_key` of the ring.
        hash_key: [u8; 32],
        /// Make it the policy of buckets created without one.
        make_default: bool,
    },
    /// Adds a device to a policy's ring builder.
    AddDevice {
        /// The policy.
        policy: String,
        /// The device.
        device: DeviceSpec,
        /// Its id, or the next free one.
        id: Option<DeviceId>,
    },
    /// Removes a device from a policy's ring (drained by rebalances).
    RemoveDevice {
        /// The policy.
        policy: String,
        /// The device.
        id: DeviceId,
    },
    /// Changes a device's weight.
    SetWeight {
        /// The policy.
        policy: String,
        /// The device.
        id: DeviceId,
        /// The new weight.
        weight: f64,
    },
    /// Rebalances a policy's ring as of `now_ms` (for `min_part_hours`).
    Rebalance {
        /// The policy.
        policy: String,
        /// When, as the proposer's clock said.
        now_ms: Millis,
        /// How long the replaced ring's devices still count (see [`PreviousRing`]);
        /// [`RING_TRANSITION_MS`] when not given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transition_ms: Option<Millis>,
    },
    /// Creates an account.
    CreateAccount {
        /// The account's name (`AUTH_alice`).
        name: String,
        /// When.
        now_ms: Millis,
    },
    /// Deletes an account that has no buckets and no credentials left.
    DeleteAccount {
        /// The account.
        name: String,
    },
    /// Creates credentials for an account.
    CreateCredential {
        /// The account.
        account: String,
        /// The credential.
        credential: NewCredential,
    },
    /// Revokes credentials: an S3 access key id, or a Swift `account:user`.
    RevokeCredential {
        /// The credential's id.
        id: String,
    },
    /// Creates a bucket (a container).
    CreateBucket {
        /// Its name (S3 rules).
        name: String,
        /// The owning account.
        owner: String,
        /// Its storage policy, or the default.
        policy: Option<String>,
        /// Index shards, or [`DEFAULT_SHARDS`].
        shards: Option<u16>,
        /// When.
        now_ms: Millis,
    },
    /// Deletes a bucket (the caller has checked that it is empty).
    DeleteBucket {
        /// The bucket.
        name: String,
    },
    /// Sets a bucket's versioning state.
    SetVersioning {
        /// The bucket.
        name: String,
        /// `Enabled` or `Suspended`; a bucket never returns to `Unversioned`.
        state: Versioning,
    },
    /// Marks a device up or down (proposed by the leader's liveness tracker). Marking it as
    /// it already is changes nothing.
    MarkDevice {
        /// The device.
        device: DeviceKey,
        /// Up or down.
        up: bool,
        /// When.
        now_ms: Millis,
    },
    /// Sets or removes a bucket's S3 access-policy document.
    SetAccessPolicy {
        /// The bucket.
        name: String,
        /// The JSON document, or `None` to remove it.
        document: Option<String>,
    },
    /// Makes a replication policy (`repN`) the index policy: its ring places every bucket's
    /// index shards. Once a bucket exists, any change is refused (its shards would be
    /// orphaned), a first choice too; naming the current one again changes nothing.
    SetIndexPolicy {
        /// The policy: an existing `repN`.
        policy: String,
    },
    /// Sets and removes attributes of an account (Swift account metadata, TempURL keys).
    SetAccountAttributes {
        /// The account.
        name: String,
        /// Attribute name → new value, or `None` to remove it.
        changes: BTreeMap<String, Option<String>>,
    },
    /// Sets and removes attributes of a bucket (Swift container metadata and ACLs, S3 CORS
    /// and tagging documents).
    SetBucketAttributes {
        /// The bucket.
        name: String,
        /// Attribute name → new value, or `None` to remove it.
        changes: BTreeMap<String, Option<String>>,
    },
}

/// Credentials to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NewCredential {
    /// An S3 access key id and its secret.
    S3 {
        /// 16 to 128 of `A-Z 0-9`.
        access_key: String,
        /// 8 to 128 characters.
        secret: String,
    },
    /// A Swift user and key (`X-Auth-User: account:user`).
    Swift {
        /// 1 to 64 of `A-Z a-z 0-9 . _ -`.
        user: String,
        /// 8 to 128 characters.
        key: String,
    },
}

/// What a successful command did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MapOutcome {
    /// The change was made.
    Done,
    /// A device was added with this id.
    DeviceAdded {
        /// Its id.
        id: DeviceId,
    },
    /// A ring was rebalanced.
    Rebalanced {
        /// The policy's new ring epoch.
        ring_epoch: Epoch,
        /// Slots moved.
        slots_moved: u64,
    },
}

/// Why a command was refused; the map is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum MapError {
    /// A name, size or value breaks a rule.
    #[error("invalid request: {reason}")]
    Invalid {
        /// Which rule.
        reason: String,
    },
    /// The policy exists already.
    #[error("storage policy {name} exists already")]
    PolicyExists {
        /// The policy.
        name: String,
    },
    /// No such policy.
    #[error("no storage policy {name}")]
    NoSuchPolicy {
        /// The policy.
        name: String,
    },
    /// The ring builder refused the change.
    #[error("ring of {policy}: {message}")]
    Ring {
        /// The policy.
        policy: String,
        /// What the builder said.
        message: String,
    },
    /// The account exists already.
    #[error("account {name} exists already")]
    AccountExists {
        /// The account.
        name: String,
    },
    /// No such account.
    #[error("no account {name}")]
    NoSuchAccount {
        /// The account.
        name: String,
    },
    /// The account still has buckets or credentials.
    #[error("account {name} still has {buckets} bucket(s) and {credentials} credential(s)")]
    AccountNotEmpty {
        /// The account.
        name: String,
        /// Its buckets.
        buckets: usize,
        /// Its credentials.
        credentials: usize,
    },
    /// The credential id is taken.
    #[error("credential {id} exists already")]
    CredentialExists {
        /// The id.
        id: String,
    },
    /// No such credential.
    #[error("no credential {id}")]
    NoSuchCredential {
        /// The id.
        id: String,
    },
    /// The bucket exists (S3: `BucketAlreadyOwnedByYou` when `owner` is the requester,
    /// `BucketAlreadyExists` otherwise).
    #[error("bucket {name} exists already (owner {owner})")]
    BucketExists {
        /// The bucket.
        name: String,
        /// Its owner.
        owner: String,
    },
    /// No such bucket.
    #[error("no bucket {name}")]
    NoSuchBucket {
        /// The bucket.
        name: String,
    },
}

/// A storage policy and its ring.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyEntry {
    /// The ring builder: every member applies the same changes to it.
    pub builder: RingBuilder,
    /// The ring built at the last rebalance.
    pub ring: Option<Ring>,
    /// The rings its rebalances replaced whose transition may not be over, oldest first
    /// (see [`ClusterMap::previous_rings`]).
    pub previous: Vec<PreviousRing>,
}

/// A ring a rebalance replaced, and until when its devices still count for the partitions
/// that moved. For the index policy, a shard's reads and writes need a majority of its
/// previous replicas as well as of its new ones (joint quorums, as in Raft's joint
/// consensus), and a new primary peers from both (DESIGN.md: from the previous acting set),
/// until index anti-entropy has handed every record over to the new replicas. For a data
/// policy, a slot's previous owner is where a read looks next while the mover hands its
/// fragments over (DESIGN.md: reads find data at the new primaries, the previous owners or
/// handoffs).
#[derive(Clone, Debug, PartialEq)]
pub struct PreviousRing {
    /// The ring.
    pub ring: Ring,
    /// When its devices stop counting: the replacing rebalance's time plus its transition.
    pub until_ms: Millis,
}

/// How long a replaced ring's devices count by default: for the index, several anti-entropy
/// periods (600 s by default), so that every record has been handed over by then.
pub const RING_TRANSITION_MS: Millis = 60 * 60 * 1000;

/// The most previous rings a policy keeps (each is a copy of its ring in every proxy's and
/// node's map): a rebalance beyond that many transitions forgets the oldest.
pub const MAX_PREVIOUS_RINGS: usize = 4;

/// An account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Account {
    /// When it was created.
    pub created_ms: Millis,
    /// Attributes the APIs keep (see [`MapCommand::SetAccountAttributes`]).
    pub attributes: BTreeMap<String, String>,
}

/// Stored credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Credential {
    /// The account it acts for.
    pub account: String,
    /// The secret (S3 secret access key, Swift key).
    #[serde(skip_serializing)]
    pub secret: String,
    /// S3 or Swift.
    pub kind: CredentialKind,
}

/// Which API a credential is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An S3 access key.
    S3,
    /// A Swift user.
    Swift,
}

/// A bucket's versioning state (S3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Versioning {
    /// Never enabled.
    Unversioned,
    /// Enabled.
    Enabled,
    /// Enabled once, now suspended.
    Suspended,
}

/// A bucket (a container).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// The owning account.
    pub owner: String,
    /// Its storage policy, fixed at creation.
    pub policy: String,
    /// Versioning state.
    pub versioning: Versioning,
    /// Index shards, fixed at creation.
    pub shards: u16,
    /// When it was created.
    pub created_ms: Millis,
    /// S3 access-policy document, if set.
    pub access_policy: Option<String>,
    /// Attributes the APIs keep (see [`MapCommand::SetBucketAttributes`]).
    pub attributes: BTreeMap<String, String>,
}

/// The cluster map. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterMap {
    pub(crate) version: u64,
    pub(crate) epoch: Epoch,
    pub(crate) default_policy: Option<String>,
    /// The replication policy whose ring places index shards.
    pub(crate) index_policy: Option<String>,
    pub(crate) policies: BTreeMap<String, PolicyEntry>,
    pub(crate) accounts: BTreeMap<String, Account>,
    pub(crate) credentials: BTreeMap<String, Credential>,
    pub(crate) buckets: BTreeMap<String, Bucket>,
    /// Devices marked down, by location, with when.
    pub(crate) down: BTreeMap<DeviceKey, Millis>,
}

/// A physical device, wherever it appears: its node and its name there.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceKey {
    /// The storage node.
    pub node: std::net::SocketAddr,
    /// The device's name on it.
    pub device: String,
}

fn invalid(reason: impl Into<String>) -> MapError {
    MapError::Invalid {
        reason: reason.into(),
    }
}

/// Checks an account name: 1 to 256 bytes, no `/`, no control characters.
fn check_account_name(name: &str) -> Result<(), MapError> {
    if name.is_empty()
        || name.len() > 256
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "account name {name:?}: use 1 to 256 characters, no '/'"
        )));
    }
    Ok(())
}

fn check_secret(secret: &str) -> Result<(), MapError> {
    if !(8..=128).contains(&secret.len()) || secret.chars().any(char::is_control) {
        return Err(invalid("a secret or key has 8 to 128 printable characters"));
    }
    Ok(())
}

impl ClusterMap {
    /// Returns an empty map.
    #[must_use]
    pub fn new() -> Self {
        ClusterMap::default()
    }

    /// Returns how many changes were applied.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Returns the placement epoch.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Returns the default storage policy's name.
    #[must_use]
    pub fn default_policy(&self) -> Option<&str> {
        self.default_policy.as_deref()
    }

    /// Returns the index policy's name: the replication policy whose ring places every
    /// bucket's index shards (see [`MapCommand::SetIndexPolicy`]).
    #[must_use]
    pub fn index_policy(&self) -> Option<&str> {
        self.index_policy.as_deref()
    }

    /// Returns the rings of `name` that rebalances replaced and whose devices still count at
    /// `now_ms` (see [`PreviousRing`]), oldest first.
    pub fn previous_rings(&self, name: &str, now_ms: Millis) -> impl Iterator<Item = &Ring> {
        self.policies
            .get(name)
            .into_iter()
            .flat_map(|entry| &entry.previous)
            .filter(move |p| p.until_ms > now_ms)
            .map(|p| &p.ring)
    }

    /// Returns a policy and its ring.
    #[must_use]
    pub fn policy(&self, name: &str) -> Option<&PolicyEntry> {
        self.policies.get(name)
    }

    /// Returns every policy name.
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }

    /// Returns an account.
    #[must_use]
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.get(name)
    }

    /// Returns every account, in name order.
    pub fn accounts(&self) -> impl Iterator<Item = (&str, &Account)> {
        self.accounts.iter().map(|(n, a)| (n.as_str(), a))
    }

    /// Returns every credential (id and what it stores), in id order.
    pub fn credentials(&self) -> impl Iterator<Item = (&str, &Credential)> {
        self.credentials.iter().map(|(id, c)| (id.as_str(), c))
    }

    /// Returns a credential by id (S3 access key id, or Swift `account:user`).
    #[must_use]
    pub fn credential(&self, id: &str) -> Option<&Credential> {
        self.credentials.get(id)
    }

    /// Returns whether a device is up (devices are up unless marked down).
    #[must_use]
    pub fn is_up(&self, device: &DeviceKey) -> bool {
        !self.down.contains_key(device)
    }

    /// Returns the devices marked down, with when.
    pub fn down_devices(&self) -> impl Iterator<Item = (&DeviceKey, Millis)> {
        self.down.iter().map(|(k, &t)| (k, t))
    }

    /// Returns every device of every ring, once.
    #[must_use]
    pub fn all_devices(&self) -> std::collections::BTreeSet<DeviceKey> {
        self.policies
            .values()
            .flat_map(|p| p.builder.devices())
            .filter(|d| !d.removed)
            .map(|d| DeviceKey {
                node: d.device.location.node,
                device: d.device.location.name.clone(),
            })
            .collect()
    }

    /// Returns a bucket.
    #[must_use]
    pub fn bucket(&self, name: &str) -> Option<&Bucket> {
        self.buckets.get(name)
    }

    /// Returns every bucket, in name order.
    pub fn buckets(&self) -> impl Iterator<Item = (&str, &Bucket)> {
        self.buckets.iter().map(|(n, b)| (n.as_str(), b))
    }

    /// Returns the buckets of an account, in name order.
    pub fn buckets_of<'a>(&'a self, owner: &'a str) -> impl Iterator<Item = (&'a str, &'a Bucket)> {
        self.buckets
            .iter()
            .filter(move |(_, b)| b.owner == owner)
            .map(|(n, b)| (n.as_str(), b))
    }

    fn policy_mut(&mut self, name: &str) -> Result<&mut PolicyEntry, MapError> {
        self.policies
            .get_mut(name)
            .ok_or_else(|| MapError::NoSuchPolicy {
                name: name.to_owned(),
            })
    }

    fn bucket_mut(&mut self, name: &str) -> Result<&mut Bucket, MapError> {
        self.buckets
            .get_mut(name)
            .ok_or_else(|| MapError::NoSuchBucket {
                name: name.to_owned(),
            })
    }

    /// Applies one command. On error the map is unchanged.
    ///
    /// # Errors
    /// [`MapError`] saying why the command was refused.
    pub fn apply(&mut self, command: &MapCommand) -> Result<MapOutcome, MapError> {
        let outcome = self.apply_inner(command)?;
        self.version += 1;
        Ok(outcome)
    }

    fn apply_inner(&mut self, command: &MapCommand) -> Result<MapOutcome, MapError> {
        match command {
            MapCommand::CreatePolicy {
                spec,
                part_power,
                min_part_hours,
                seed,
                hash_key,
                make_default,
            } => {
                let policy: StoragePolicy = spec.parse().map_err(|e| invalid(format!("{e}")))?;
                if self.policies.contains_key(spec) {
                    return Err(MapError::PolicyExists { name: spec.clone() });
                }
                let builder = RingBuilder::new(BuilderSettings {
                    policy,
                    part_power: *part_power,
                    min_part_hours: *min_part_hours,
                    seed: *seed,
                    hash_key: *hash_key,
                })
                .map_err(|e| invalid(e.to_string()))?;
                self.policies.insert(
                    spec.clone(),
                    PolicyEntry {
                        builder,
                        ring: None,
                        previous: Vec::new(),
                    },
                );
                if *make_default || self.default_policy.is_none() {
                    self.default_policy = Some(spec.clone());
                }
                Ok(MapOutcome::Done)
            }
            MapCommand::AddDevice { policy, device, id } => {
                let entry = self.policy_mut(policy)?;
                let id = entry
                    .builder
                    .add_device(device.clone(), *id)
                    .map_err(|e| ring_error(policy, &e))?;
                Ok(MapOutcome::DeviceAdded { id })
            }
            MapCommand::RemoveDevice { policy, id } => {
                let entry = self.policy_mut(policy)?;
                entry
                    .builder
                    .remove_device(*id)
                    .map_err(|e| ring_error(policy, &e))?;
                Ok(MapOutcome::Done)
            }
            MapCommand::SetWeight { policy, id, weight } => {
                let entry = self.policy_mut(policy)?;
                entry
                    .builder
                    .set_weight(*id, *weight)
                    .map_err(|e| ring_error(policy, &e))?;
                Ok(MapOutcome::Done)
            }
            MapCommand::Rebalance {
                policy,
                now_ms,
                transition_ms,
            } => {
                let entry = self.policy_mut(policy)?;
                let now = std::time::UNIX_EPOCH + std::time::Duration::from_millis(*now_ms);
                // On a copy, so that nothing changes unless everything succeeds.
                let mut builder = entry.builder.clone();
                let report = builder.rebalance(now).map_err(|e| ring_error(policy, &e))?;
                let ring = builder.ring().map_err(|e| ring_error(policy, &e))?;
                entry.builder = builder;
                if report.new_epoch {
                    let replaced = entry.ring.replace(ring);
                    entry.previous.retain(|p| p.until_ms > *now_ms);
                    let transition = transition_ms.unwrap_or(RING_TRANSITION_MS);
                    entry.previous.extend(replaced.map(|ring| PreviousRing {
                        ring,
                        until_ms: now_ms.saturating_add(transition),
                    }));
                    let excess = entry.previous.len().saturating_sub(MAX_PREVIOUS_RINGS);
                    entry.previous.drain(..excess);
                    self.epoch = self.epoch.next();
                }
                Ok(MapOutcome::Rebalanced {
                    ring_epoch: report.epoch,
                    slots_moved: report.slots_moved,
                })
            }
            MapCommand::CreateAccount { name, now_ms } => {
                check_account_name(name)?;
                if self.accounts.contains_key(name) {
                    return Err(MapError::AccountExists { name: name.clone() });
                }
                self.accounts.insert(
                    name.clone(),
                    Account {
                        created_ms: *now_ms,
                        attributes: BTreeMap::new(),
                    },
                );
                Ok(MapOutcome::Done)
            }
            MapCommand::DeleteAccount { name } => {
                if !self.accounts.contains_key(name) {
                    return Err(MapError::NoSuchAccount { name: name.clone() });
                }
                let buckets = self.buckets_of(name).count();
                let credentials = self
                    .credentials
                    .values()
                    .filter(|c| &c.account == name)
                    .count();
                if buckets + credentials > 0 {
                    return Err(MapError::AccountNotEmpty {
                        name: name.clone(),
                        buckets,
                        credentials,
                    });
                }
                self.accounts.remove(name);
                Ok(MapOutcome::Done)
            }
            MapCommand::CreateCredential {
                account,
                credential,
            } => {
                if !self.accounts.contains_key(account) {
                    return Err(MapError::NoSuchAccount {
                        name: account.clone(),
                    });
                }
                let (id, stored) = match credential {
                    NewCredential::S3 { access_key, secret } => {
                        let ok = (16..=128).contains(&access_key.len())
                            && access_key
                                .bytes()
                                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
                        if !ok {
                            return Err(invalid(
                                "an S3 access key id has 16 to 128 of A-Z and 0-9",
                            ));
                        }
                        check_secret(secret)?;
                        (access_key.clone(), (secret.clone(), CredentialKind::S3))
                    }
                    NewCredential::Swift { user, key } => {
                        let ok = !user.is_empty()
                            && user.len() <= 64
                            && user
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                        if !ok {
                            return Err(invalid("a Swift user has 1 to 64 of A-Z a-z 0-9 . _ -"));
                        }
                        check_secret(key)?;
                        (
                            format!("{account}:{user}"),
                            (key.clone(), CredentialKind::Swift),
                        )
                    }
                };
                if self.credentials.contains_key(&id) {
                    return Err(MapError::CredentialExists { id });
                }
                self.credentials.insert(
                    id,
                    Credential {
                        account: account.clone(),
                        secret: stored.0,
                        kind: stored.1,
                    },
                );
                Ok(MapOutcome::Done)
            }
            MapCommand::RevokeCredential { id } => {
                self.credentials
                    .remove(id)
                    .ok_or_else(|| MapError::NoSuchCredential { id: id.clone() })?;
                Ok(MapOutcome::Done)
            }
            MapCommand::CreateBucket {
                name,
                owner,
                policy,
                shards,
                now_ms,
            } => {
                validate_bucket_name(name).map_err(|e| invalid(e.to_string()))?;
                if !self.accounts.contains_key(owner) {
                    return Err(MapError::NoSuchAccount {
                        name: owner.clone(),
                    });
                }
                if let Some(existing) = self.buckets.get(name) {
                    return Err(MapError::BucketExists {
                        name: name.clone(),
                        owner: existing.owner.clone(),
                    });
                }
                let policy = match policy.as_ref().or(self.default_policy.as_ref()) {
                    Some(p) if self.policies.contains_key(p) => p.clone(),
                    Some(p) => return Err(MapError::NoSuchPolicy { name: p.clone() }),
                    None => return Err(invalid("no storage policy exists yet")),
                };
                let shards = shards.unwrap_or(DEFAULT_SHARDS);
                if !(1..=MAX_SHARDS).contains(&shards) {
                    return Err(invalid(format!("index shards: use 1 to {MAX_SHARDS}")));
                }
                self.buckets.insert(
                    name.clone(),
                    Bucket {
                        owner: owner.clone(),
                        policy,
                        versioning: Versioning::Unversioned,
                        shards,
                        created_ms: *now_ms,
                        access_policy: None,
                        attributes: BTreeMap::new(),
                    },
                );
                Ok(MapOutcome::Done)
            }
            MapCommand::DeleteBucket { name } => {
                self.buckets
                    .remove(name)
                    .ok_or_else(|| MapError::NoSuchBucket { name: name.clone() })?;
                Ok(MapOutcome::Done)
            }
            MapCommand::SetVersioning { name, state } => {
                if *state == Versioning::Unversioned {
                    return Err(invalid(
                        "versioning can be Enabled or Suspended, never Unversioned again",
                    ));
                }
                self.bucket_mut(name)?.versioning = *state;
                Ok(MapOutcome::Done)
            }
            MapCommand::MarkDevice { device, up, now_ms } => {
                let changed = if *up {
                    self.down.remove(device).is_some()
                } else if self.down.contains_key(device) {
                    false
                } else {
                    self.down.insert(device.clone(), *now_ms);
                    true
                };
                if changed {
                    self.epoch = self.epoch.next();
                }
                Ok(MapOutcome::Done)
            }
            MapCommand::SetAccessPolicy { name, document } => {
                if let Some(doc) = document
                    && (doc.is_empty() || doc.len() > MAX_ACCESS_POLICY_BYTES)
                {
                    return Err(invalid(format!(
                        "an access policy has 1 to {MAX_ACCESS_POLICY_BYTES} bytes"
                    )));
                }
                self.bucket_mut(name)?.access_policy = document.clone();
                Ok(MapOutcome::Done)
            }
            MapCommand::SetIndexPolicy { policy } => self.set_index_policy(policy),
            MapCommand::SetAccountAttributes { name, changes } => {
                let account = self
                    .accounts
                    .get_mut(name)
                    .ok_or_else(|| MapError::NoSuchAccount { name: name.clone() })?;
                account.attributes = changed_attributes(&account.attributes, changes)?;
                Ok(MapOutcome::Done)
            }
            MapCommand::SetBucketAttributes { name, changes } => {
                let bucket = self.bucket_mut(name)?;
                bucket.attributes = changed_attributes(&bucket.attributes, changes)?;
                Ok(MapOutcome::Done)
            }
        }
    }

    fn set_index_policy(&mut self, name: &str) -> Result<MapOutcome, MapError> {
        let entry = self.policy(name).ok_or_else(|| MapError::NoSuchPolicy {
            name: name.to_owned(),
        })?;
        if !matches!(
            entry.builder.policy().kind(),
            PolicyKind::Replication { .. }
        ) {
            return Err(invalid(format!(
                "the index policy must be a replication policy (repN), not {name}"
            )));
        }
        if self.index_policy.as_deref() == Some(name) {
            return Ok(MapOutcome::Done);
        }
        // Where the index shards of existing buckets live follows from the index policy in
        // effect when they were written (none included): any change would orphan them.
        if !self.buckets.is_empty() {
            return Err(invalid(format!(
                "the index policy is {} and {} bucket(s) exist: changing it to {name} would orphan their index shards",
                self.index_policy.as_deref().unwrap_or("not set"),
                self.buckets.len()
            )));
        }
        self.index_policy = Some(name.to_owned());
        Ok(MapOutcome::Done)
    }
}

/// `current` with `changes` made, or why the result would break a bound.
fn changed_attributes(
    current: &BTreeMap<String, String>,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<BTreeMap<String, String>, MapError> {
    let mut next = current.clone();
    for (name, value) in changes {
        if name.is_empty() || name.len() > MAX_ATTRIBUTE_NAME_BYTES {
            return Err(invalid(format!(
                "an attribute name has 1 to {MAX_ATTRIBUTE_NAME_BYTES} bytes"
            )));
        }
        match value {
            Some(v) => next.insert(name.clone(), v.clone()),
            None => next.remove(name),
        };
    }
    let bytes: usize = next.iter().map(|(k, v)| k.len() + v.len()).sum();
    if next.len() > MAX_ATTRIBUTES || bytes > MAX_ATTRIBUTE_BYTES {
        return Err(invalid(format!(
            "at most {MAX_ATTRIBUTES} attributes of {MAX_ATTRIBUTE_BYTES} bytes in all"
        )));
    }
    Ok(next)
}

fn ring_error(policy: &str, e: &crate::error::BuilderError) -> MapError {
    MapError::Ring {
        policy: policy.to_owned(),
        message: e.to_string(),
    }
}

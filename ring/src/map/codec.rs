//! The cluster map's snapshot encoding (what Raft snapshots hold): the ring file frame
//! (`NIMBCMAP`, version, length, blake3) around the map's fields, builders in their own
//! encoding. Decoding validates everything and rebuilds each policy's ring.
//!
//! The frame's version is shared with ring and builder files, so the map's payload grows
//! only at its end: a field added later (so far: the index policy, attributes, the rings
//! rebalances replaced) follows every older one,
//! and a payload that ends exactly where such a field would start was written before it
//! existed and decodes as its absence. Anything else left over, or missing, is refused.

use std::collections::BTreeMap;

use nimbus_core::encoding::{Reader, Writer};
use nimbus_core::ids::Epoch;
use nimbus_core::policy::PolicyKind;

use super::{
    Account, Bucket, ClusterMap, Credential, CredentialKind, DeviceKey, PolicyEntry, PreviousRing,
    Versioning,
};
use crate::builder::RingBuilder;
use crate::error::FormatError;
use crate::format::{frame, unframe};

const MAGIC: &[u8; 8] = b"NIMBCMAP";

fn invalid(reason: impl Into<String>) -> FormatError {
    FormatError::Invalid {
        reason: reason.into(),
    }
}

fn put_opt_str(w: &mut Writer, v: Option<&str>) {
    match v {
        Some(s) => {
            w.put_u8(1);
            w.put_u32(s.len() as u32);
            w.put_bytes(s.as_bytes());
        }
        None => w.put_u8(0),
    }
}

fn get_long_str(r: &mut Reader<'_>, field: &'static str) -> Result<String, FormatError> {
    let len = r.u32(field)? as usize;
    let bytes = r.bytes(len, field)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| invalid(format!("{field} is not UTF-8")))
}

fn get_opt_str(r: &mut Reader<'_>, field: &'static str) -> Result<Option<String>, FormatError> {
    match r.u8(field)? {
        0 => Ok(None),
        1 => get_long_str(r, field).map(Some),
        v => Err(invalid(format!("{field} flag {v}"))),
    }
}

/// Writes the owners that have attributes, each with its attributes.
fn put_attributes<'a>(
    w: &mut Writer,
    owners: impl Iterator<Item = (&'a String, &'a BTreeMap<String, String>)>,
) {
    let owners: Vec<_> = owners.filter(|(_, a)| !a.is_empty()).collect();
    w.put_u32(owners.len() as u32);
    for (name, attributes) in owners {
        w.put_str(name);
        w.put_u32(attributes.len() as u32);
        for (k, v) in attributes {
            w.put_str(k);
            w.put_u32(v.len() as u32);
            w.put_bytes(v.as_bytes());
        }
    }
}

type Attributes = BTreeMap<String, String>;

fn get_attributes(
    r: &mut Reader<'_>,
    owner: &'static str,
) -> Result<Vec<(String, Attributes)>, FormatError> {
    let mut owners = Vec::new();
    for _ in 0..count(r, "attribute owner count")? {
        let name = r.str(owner)?.to_owned();
        let mut attributes = BTreeMap::new();
        for _ in 0..count(r, "attribute count")? {
            let k = r.str("attribute name")?.to_owned();
            attributes.insert(k, get_long_str(r, "attribute value")?);
        }
        owners.push((name, attributes));
    }
    Ok(owners)
}

fn count(r: &mut Reader<'_>, field: &'static str) -> Result<usize, FormatError> {
    let n = r.u32(field)? as usize;
    // Every element takes at least one byte: a count beyond what is left is corrupt.
    if n > r.remaining() {
        return Err(invalid(format!(
            "{field} of {n} in {} bytes",
            r.remaining()
        )));
    }
    Ok(n)
}

impl ClusterMap {
    /// Encodes the whole map (a Raft snapshot).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.put_u64(self.version);
        w.put_u64(self.epoch.0);
        put_opt_str(&mut w, self.default_policy.as_deref());
        w.put_u32(self.policies.len() as u32);
        for (name, p) in &self.policies {
            w.put_str(name);
            let bytes = p.builder.encode();
            w.put_u64(bytes.len() as u64);
            w.put_bytes(&bytes);
            // The ring in effect (built at the last rebalance), not one derived from the
            // builder, which may hold changes not rebalanced yet.
            let ring = p
                .ring
                .as_ref()
                .map(crate::placement::Ring::encode)
                .unwrap_or_default();
            w.put_u64(ring.len() as u64);
            w.put_bytes(&ring);
        }
        w.put_u32(self.accounts.len() as u32);
        for (name, a) in &self.accounts {
            w.put_str(name);
            w.put_u64(a.created_ms);
        }
        w.put_u32(self.credentials.len() as u32);
        for (id, c) in &self.credentials {
            w.put_str(id);
            w.put_str(&c.account);
            w.put_str(&c.secret);
            w.put_u8(match c.kind {
                CredentialKind::S3 => 0,
                CredentialKind::Swift => 1,
            });
        }
        w.put_u32(self.buckets.len() as u32);
        for (name, b) in &self.buckets {
            w.put_str(name);
            w.put_str(&b.owner);
            w.put_str(&b.policy);
            w.put_u8(match b.versioning {
                Versioning::Unversioned => 0,
                Versioning::Enabled => 1,
                Versioning::Suspended => 2,
            });
            w.put_u16(b.shards);
            w.put_u64(b.created_ms);
            put_opt_str(&mut w, b.access_policy.as_deref());
        }
        w.put_u32(self.down.len() as u32);
        for (key, since) in &self.down {
            w.put_str(&key.node.to_string());
            w.put_str(&key.device);
            w.put_u64(*since);
        }
        // Added after the first release of this encoding: see the module documentation.
        put_opt_str(&mut w, self.index_policy.as_deref());
        put_attributes(
            &mut w,
            self.accounts.iter().map(|(n, a)| (n, &a.attributes)),
        );
        put_attributes(&mut w, self.buckets.iter().map(|(n, b)| (n, &b.attributes)));
        let with_previous: Vec<_> = self
            .policies
            .iter()
            .filter(|(_, p)| !p.previous.is_empty())
            .collect();
        w.put_u32(with_previous.len() as u32);
        for (name, p) in with_previous {
            w.put_str(name);
            w.put_u32(p.previous.len() as u32);
            for previous in &p.previous {
                w.put_u64(previous.until_ms);
                let ring = previous.ring.encode();
                w.put_u64(ring.len() as u64);
                w.put_bytes(&ring);
            }
        }
        frame(MAGIC, w.as_slice())
    }

    /// Decodes a map encoded by [`ClusterMap::encode`].
    ///
    /// # Errors
    /// [`FormatError`] for damaged, truncated, newer or inconsistent bytes.
    pub fn decode(bytes: &[u8]) -> Result<ClusterMap, FormatError> {
        let mut r = Reader::new(unframe(MAGIC, "cluster map", bytes)?);
        let version = r.u64("version")?;
        let epoch = Epoch(r.u64("epoch")?);
        let default_policy = get_opt_str(&mut r, "default policy")?;
        let mut policies = BTreeMap::new();
        for _ in 0..count(&mut r, "policy count")? {
            let name = r.str("policy name")?.to_owned();
            let len =
                usize::try_from(r.u64("builder length")?).map_err(|_| invalid("builder length"))?;
            let builder = RingBuilder::decode(r.bytes(len, "builder")?)?;
            if builder.policy().name() != name {
                return Err(invalid(format!(
                    "policy {name} holds the builder of {}",
                    builder.policy().name()
                )));
            }
            let len = usize::try_from(r.u64("ring length")?).map_err(|_| invalid("ring length"))?;
            let ring = match r.bytes(len, "ring")? {
                [] => None,
                bytes => Some(crate::placement::Ring::decode(bytes)?),
            };
            policies.insert(
                name,
                PolicyEntry {
                    builder,
                    ring,
                    previous: Vec::new(),
                },
            );
        }
        let mut accounts = BTreeMap::new();
        for _ in 0..count(&mut r, "account count")? {
            let name = r.str("account")?.to_owned();
            accounts.insert(
                name,
                Account {
                    created_ms: r.u64("account created")?,
                    attributes: BTreeMap::new(),
                },
            );
        }
        let mut credentials = BTreeMap::new();
        for _ in 0..count(&mut r, "credential count")? {
            let id = r.str("credential id")?.to_owned();
            let account = r.str("credential account")?.to_owned();
            let secret = r.str("credential secret")?.to_owned();
            let kind = match r.u8("credential kind")? {
                0 => CredentialKind::S3,
                1 => CredentialKind::Swift,
                v => return Err(invalid(format!("credential kind {v}"))),
            };
            if !accounts.contains_key(&account) {
                return Err(invalid(format!(
                    "credential {id} of unknown account {account}"
                )));
            }
            credentials.insert(
                id,
                Credential {
                    account,
                    secret,
                    kind,
                },
            );
        }
        let mut buckets = BTreeMap::new();
        for _ in 0..count(&mut r, "bucket count")? {
            let name = r.str("bucket")?.to_owned();
            let owner = r.str("bucket owner")?.to_owned();
            let policy = r.str("bucket policy")?.to_owned();
            let versioning = match r.u8("versioning")? {
                0 => Versioning::Unversioned,
                1 => Versioning::Enabled,
                2 => Versioning::Suspended,
                v => return Err(invalid(format!("versioning {v}"))),
            };
            let shards = r.u16("shards")?;
            let created_ms = r.u64("bucket created")?;
            let access_policy = get_opt_str(&mut r, "access policy")?;
            if !accounts.contains_key(&owner) || !policies.contains_key(&policy) {
                return Err(invalid(format!(
                    "bucket {name} refers to an unknown account or policy"
                )));
            }
            buckets.insert(
                name,
                Bucket {
                    owner,
                    policy,
                    versioning,
                    shards,
                    created_ms,
                    access_policy,
                    attributes: BTreeMap::new(),
                },
            );
        }
        let mut down = BTreeMap::new();
        for _ in 0..count(&mut r, "down device count")? {
            let node = r
                .str("down device node")?
                .parse()
                .map_err(|_| invalid("down device node is not ip:port"))?;
            let device = r.str("down device name")?.to_owned();
            down.insert(DeviceKey { node, device }, r.u64("down since")?);
        }
        // A map encoded before the index policy existed ends here.
        let index_policy = if r.remaining() == 0 {
            None
        } else {
            get_opt_str(&mut r, "index policy")?
        };
        // And one encoded before attributes existed here.
        if r.remaining() > 0 {
            for (name, attributes) in get_attributes(&mut r, "account")? {
                accounts
                    .get_mut(&name)
                    .ok_or_else(|| invalid(format!("attributes of unknown account {name}")))?
                    .attributes = attributes;
            }
            for (name, attributes) in get_attributes(&mut r, "bucket")? {
                buckets
                    .get_mut(&name)
                    .ok_or_else(|| invalid(format!("attributes of unknown bucket {name}")))?
                    .attributes = attributes;
            }
        }
        // And one encoded before previous rings were kept here.
        if r.remaining() > 0 {
            for _ in 0..count(&mut r, "policies with previous rings")? {
                let name = r.str("policy with previous rings")?;
                let entry = policies
                    .get_mut(name)
                    .ok_or_else(|| invalid(format!("previous rings of unknown policy {name}")))?;
                for _ in 0..count(&mut r, "previous ring count")? {
                    let until_ms = r.u64("previous ring until")?;
                    let len = usize::try_from(r.u64("previous ring length")?)
                        .map_err(|_| invalid("previous ring length"))?;
                    let ring = crate::placement::Ring::decode(r.bytes(len, "previous ring")?)?;
                    entry.previous.push(PreviousRing { ring, until_ms });
                }
            }
        }
        r.finish()?;
        if let Some(p) = &default_policy
            && !policies.contains_key(p)
        {
            return Err(invalid(format!("default policy {p} does not exist")));
        }
        if let Some(p) = &index_policy {
            let replication = policies.get(p).is_some_and(|entry| {
                matches!(
                    entry.builder.policy().kind(),
                    PolicyKind::Replication { .. }
                )
            });
            if !replication {
                return Err(invalid(format!(
                    "index policy {p} is not an existing replication policy"
                )));
            }
        }
        Ok(ClusterMap {
            version,
            epoch,
            default_policy,
            index_policy,
            policies,
            accounts,
            credentials,
            buckets,
            down,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::MapCommand;

    fn map_with_index_policy() -> ClusterMap {
        let mut m = ClusterMap::new();
        m.apply(&MapCommand::CreatePolicy {
            spec: "rep3".into(),
            part_power: 4,
            min_part_hours: 0,
            seed: 1,
            hash_key: [3; 32],
            make_default: false,
        })
        .unwrap();
        m.apply(&MapCommand::SetIndexPolicy {
            policy: "rep3".into(),
        })
        .unwrap();
        m
    }

    /// The payload inside an encoded map's frame.
    fn payload(bytes: &[u8]) -> Vec<u8> {
        unframe(MAGIC, "cluster map", bytes).unwrap().to_vec()
    }

    #[test]
    fn a_map_encoded_before_the_index_policy_existed_decodes_without_one() {
        let m = map_with_index_policy();
        let mut old = payload(&m.encode());
        // Drop the trailing fields: no previous rings (an empty count), no attributes (two
        // empty counts), then the index policy (flag 1, length 4, "rep3").
        old.truncate(old.len() - 4 - 8 - (1 + 4 + 4));
        let decoded = ClusterMap::decode(&frame(MAGIC, &old)).unwrap();
        assert_eq!(decoded.index_policy(), None);
        assert_eq!(decoded.policy_names().collect::<Vec<_>>(), ["rep3"]);
    }

    #[test]
    fn a_cut_or_padded_index_policy_is_refused() {
        let m = map_with_index_policy();
        let mut full = payload(&m.encode());
        full.truncate(full.len() - 4 - 8);
        for cut in 1..(1 + 4 + 4) {
            let bytes = frame(MAGIC, &full[..full.len() - cut]);
            assert!(ClusterMap::decode(&bytes).is_err(), "cut {cut}");
        }
        let mut padded = full.clone();
        padded.push(0);
        assert!(ClusterMap::decode(&frame(MAGIC, &padded)).is_err());
        // An index policy that is not a policy of the map.
        let mut unknown = full[..full.len() - 4].to_vec();
        unknown.extend_from_slice(b"rep5");
        let err = ClusterMap::decode(&frame(MAGIC, &unknown)).unwrap_err();
        assert!(err.to_string().contains("index policy rep5"), "{err}");
    }

    #[test]
    fn attributes_round_trip_and_old_maps_have_none() {
        let mut m = map_with_index_policy();
        m.apply(&MapCommand::CreateAccount {
            name: "AUTH_a".into(),
            now_ms: 1,
        })
        .unwrap();
        m.apply(&MapCommand::CreateBucket {
            name: "photos".into(),
            owner: "AUTH_a".into(),
            policy: Some("rep3".into()),
            shards: None,
            now_ms: 2,
        })
        .unwrap();
        let before = m.encode();
        m.apply(&MapCommand::SetAccountAttributes {
            name: "AUTH_a".into(),
            changes: BTreeMap::from([("meta:color".into(), Some("blue".into()))]),
        })
        .unwrap();
        m.apply(&MapCommand::SetBucketAttributes {
            name: "photos".into(),
            changes: BTreeMap::from([("read-acl".into(), Some(".r:*".into()))]),
        })
        .unwrap();
        let decoded = ClusterMap::decode(&m.encode()).unwrap();
        assert_eq!(decoded, m);
        assert_eq!(
            decoded.bucket("photos").unwrap().attributes["read-acl"],
            ".r:*"
        );
        // A map encoded before previous rings were kept: the payload without their count.
        let mut old = payload(&m.encode());
        old.truncate(old.len() - 4);
        assert_eq!(ClusterMap::decode(&frame(MAGIC, &old)).unwrap(), m);
        // A map encoded before attributes existed: the payload without the two counts.
        let mut old = payload(&before);
        old.truncate(old.len() - 4 - 8);
        let decoded = ClusterMap::decode(&frame(MAGIC, &old)).unwrap();
        assert!(decoded.bucket("photos").unwrap().attributes.is_empty());
        // Attributes of a bucket the map does not have.
        let mut orphan = payload(&before);
        orphan.truncate(orphan.len() - 8);
        let mut w = Writer::default();
        w.put_u32(1);
        w.put_str("nope");
        w.put_u32(0);
        orphan.extend_from_slice(w.as_slice());
        assert!(ClusterMap::decode(&frame(MAGIC, &orphan)).is_err());
    }

    #[test]
    fn attribute_changes_are_bounded_and_leave_the_map_alone_when_refused() {
        let mut m = map_with_index_policy();
        m.apply(&MapCommand::CreateAccount {
            name: "AUTH_a".into(),
            now_ms: 1,
        })
        .unwrap();
        let big = "x".repeat(crate::map::MAX_ATTRIBUTE_BYTES);
        let before = m.clone();
        let err = m
            .apply(&MapCommand::SetAccountAttributes {
                name: "AUTH_a".into(),
                changes: BTreeMap::from([("k".into(), Some(big))]),
            })
            .unwrap_err();
        assert!(err.to_string().contains("attributes"), "{err}");
        assert_eq!(m, before);
        m.apply(&MapCommand::SetAccountAttributes {
            name: "AUTH_a".into(),
            changes: BTreeMap::from([("k".into(), Some("v".into())), ("gone".into(), None)]),
        })
        .unwrap();
        m.apply(&MapCommand::SetAccountAttributes {
            name: "AUTH_a".into(),
            changes: BTreeMap::from([("k".into(), None)]),
        })
        .unwrap();
        assert!(m.accounts["AUTH_a"].attributes.is_empty());
        assert!(
            m.apply(&MapCommand::SetBucketAttributes {
                name: "nope".into(),
                changes: BTreeMap::new(),
            })
            .is_err()
        );
    }
}

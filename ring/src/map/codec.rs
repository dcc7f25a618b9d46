//! The cluster map's snapshot encoding (what Raft snapshots hold): the ring file frame
//! (`NIMBCMAP`, version, length, blake3) around the map's fields, builders in their own
//! encoding. Decoding validates everything and rebuilds each policy's ring.

use std::collections::BTreeMap;

use nimbus_core::encoding::{Reader, Writer};
use nimbus_core::ids::Epoch;

use super::{
    Account, Bucket, ClusterMap, Credential, CredentialKind, DeviceKey, PolicyEntry, Versioning,
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
            policies.insert(name, PolicyEntry { builder, ring });
        }
        let mut accounts = BTreeMap::new();
        for _ in 0..count(&mut r, "account count")? {
            let name = r.str("account")?.to_owned();
            accounts.insert(
                name,
                Account {
                    created_ms: r.u64("account created")?,
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
        r.finish()?;
        if let Some(p) = &default_policy
            && !policies.contains_key(p)
        {
            return Err(invalid(format!("default policy {p} does not exist")));
        }
        Ok(ClusterMap {
            version,
            epoch,
            default_policy,
            policies,
            accounts,
            credentials,
            buckets,
            down,
        })
    }
}

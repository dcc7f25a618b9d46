//! A built ring: an immutable value with an epoch that maps object paths to partitions and
//! partitions to devices in O(1), and orders further devices as handoffs.
//!
//! **Invariant:** no I/O, no clock: a lookup is a keyed hash and a table read.

use std::collections::HashMap;

use nimbus_core::ids::{Epoch, PartitionId};
use nimbus_core::policy::StoragePolicy;

use crate::device::Device;
use crate::rng::mix64;

/// A built ring. Every slot of every partition has a device; a partition's devices are
/// distinct.
#[derive(Clone, Debug, PartialEq)]
pub struct Ring {
    epoch: Epoch,
    policy: StoragePolicy,
    part_power: u8,
    hash_key: [u8; 32],
    devices: Vec<Device>,
    /// Partition-major: `table[partition * slots + slot]` indexes `devices`.
    table: Vec<u16>,
    slots: usize,
    /// Per device: dense indices of its region, zone and node, for handoff ordering.
    domains: Vec<[u32; 3]>,
}

impl Ring {
    /// Assembles a ring from parts the caller has validated: `table` has `2^part_power ×
    /// slot_count` entries, each indexing `devices`.
    pub(crate) fn from_parts(
        epoch: Epoch,
        policy: StoragePolicy,
        part_power: u8,
        hash_key: [u8; 32],
        devices: Vec<Device>,
        table: Vec<u16>,
    ) -> Ring {
        let mut regions = HashMap::new();
        let mut zones = HashMap::new();
        let mut nodes = HashMap::new();
        let domains = devices
            .iter()
            .map(|d| {
                let l = &d.location;
                let r = regions.len() as u32;
                let r = *regions.entry(l.region).or_insert(r);
                let z = zones.len() as u32;
                let z = *zones.entry((l.region, l.zone)).or_insert(z);
                let n = nodes.len() as u32;
                let n = *nodes.entry(l.node).or_insert(n);
                [r, z, n]
            })
            .collect();
        let slots = usize::from(policy.slot_count());
        Ring {
            epoch,
            policy,
            part_power,
            hash_key,
            devices,
            table,
            slots,
            domains,
        }
    }

    /// Returns the ring's epoch.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Returns the storage policy.
    #[must_use]
    pub fn policy(&self) -> &StoragePolicy {
        &self.policy
    }

    /// Returns the part power.
    #[must_use]
    pub fn part_power(&self) -> u32 {
        u32::from(self.part_power)
    }

    /// Returns the number of partitions.
    #[must_use]
    pub fn partitions(&self) -> u32 {
        1 << self.part_power
    }

    /// Returns the `cluster_hash_key`.
    #[must_use]
    pub fn hash_key(&self) -> &[u8; 32] {
        &self.hash_key
    }

    /// Returns every device of the ring, including drained ones of weight 0.
    #[must_use]
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    pub(crate) fn table(&self) -> &[u16] {
        &self.table
    }

    /// Returns the partition of an object path `account/container/object`: the top
    /// `part_power` bits of the first 8 bytes (big-endian) of its keyed blake3 hash.
    #[must_use]
    pub fn partition_of(&self, path: &str) -> PartitionId {
        let hash = blake3::keyed_hash(&self.hash_key, path.as_bytes());
        self.partition_from_hash(hash)
    }

    /// Returns the partition of `account/container/object` without building the path.
    #[must_use]
    pub fn object_partition(&self, account: &str, container: &str, object: &str) -> PartitionId {
        let mut hasher = blake3::Hasher::new_keyed(&self.hash_key);
        hasher.update(account.as_bytes());
        hasher.update(b"/");
        hasher.update(container.as_bytes());
        hasher.update(b"/");
        hasher.update(object.as_bytes());
        self.partition_from_hash(hasher.finalize())
    }

    fn partition_from_hash(&self, hash: blake3::Hash) -> PartitionId {
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        let top = u64::from_be_bytes(first) >> (64 - u32::from(self.part_power));
        PartitionId(top as u32)
    }

    /// Returns the devices of partition `p`'s slots, in slot order: slot `i` holds fragment
    /// index `i` (or replica `i`).
    ///
    /// # Panics
    /// If `p` is not a partition of this ring.
    pub fn primaries(&self, p: PartitionId) -> impl ExactSizeIterator<Item = &Device> + '_ {
        let base = p.0 as usize * self.slots;
        self.table[base..base + self.slots]
            .iter()
            .map(|&d| &self.devices[usize::from(d)])
    }

    /// Returns the device in slot `slot` of partition `p`.
    ///
    /// # Panics
    /// If `p` or `slot` is out of range.
    #[must_use]
    pub fn slot_device(&self, p: PartitionId, slot: usize) -> &Device {
        assert!(slot < self.slots, "slot {slot} out of range");
        &self.devices[usize::from(self.table[p.0 as usize * self.slots + slot])]
    }

    /// Returns the handoff devices of partition `p`, best first: devices with weight that are
    /// not primaries of `p`, each next one from a region the partition does not use yet if
    /// possible, else an unused zone, else an unused node, else any; ties are broken by a
    /// hash of the partition and device id (rendezvous hashing), so the order is stable
    /// across rings and nodes.
    ///
    /// # Panics
    /// If `p` is not a partition of this ring.
    #[must_use]
    pub fn handoffs(&self, p: PartitionId) -> Handoffs<'_> {
        let mut h = Handoffs {
            ring: self,
            partition: p,
            salt: mix64(u64::from_le_bytes(
                self.hash_key[..8].try_into().expect("8 bytes"),
            )),
            used_device: vec![false; self.devices.len()],
            used: [Vec::new(), Vec::new(), Vec::new()],
        };
        let base = p.0 as usize * self.slots;
        for &d in &self.table[base..base + self.slots] {
            h.mark_used(usize::from(d));
        }
        h
    }
}

/// Iterator over a partition's handoff devices; see [`Ring::handoffs`].
#[derive(Debug, Clone)]
pub struct Handoffs<'a> {
    ring: &'a Ring,
    partition: PartitionId,
    salt: u64,
    used_device: Vec<bool>,
    /// Region, zone and node indices already used by primaries or earlier handoffs.
    used: [Vec<u32>; 3],
}

impl Handoffs<'_> {
    fn mark_used(&mut self, dev: usize) {
        self.used_device[dev] = true;
        for (t, &dom) in self.ring.domains[dev].iter().enumerate() {
            if !self.used[t].contains(&dom) {
                self.used[t].push(dom);
            }
        }
    }

    /// 0: new region, 1: new zone, 2: new node, 3: none new.
    fn novelty(&self, dev: usize) -> usize {
        let doms = &self.ring.domains[dev];
        (0..3)
            .find(|&t| !self.used[t].contains(&doms[t]))
            .unwrap_or(3)
    }
}

impl<'a> Iterator for Handoffs<'a> {
    type Item = &'a Device;

    fn next(&mut self) -> Option<&'a Device> {
        let ring = self.ring;
        let mut best: Option<(usize, u64, usize)> = None;
        for (i, d) in ring.devices.iter().enumerate() {
            if self.used_device[i] || d.weight <= 0.0 {
                continue;
            }
            let novelty = self.novelty(i);
            let score = mix64(self.salt ^ (u64::from(self.partition.0) << 32) ^ u64::from(d.id.0));
            if best.is_none_or(|(bn, bs, _)| novelty < bn || (novelty == bn && score > bs)) {
                best = Some((novelty, score, i));
            }
        }
        let (_, _, i) = best?;
        self.mark_used(i);
        Some(&ring.devices[i])
    }
}

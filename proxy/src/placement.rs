//! Where an object's fragments and a shard's index entries live, as the newest cluster map
//! says: the partition's slot devices (with whether the map has them up) and the handoffs.

use nimbus_core::ids::PartitionId;
use nimbus_core::policy::StoragePolicy;
use nimbus_ring::map::{ClusterMap, DeviceKey};

use crate::error::DataError;

/// A partition's devices for one request.
#[derive(Clone, Debug)]
pub struct Place {
    /// The policy.
    pub policy: StoragePolicy,
    /// The partition.
    pub partition: PartitionId,
    /// Slot `i`'s device and whether it is up.
    pub slots: Vec<(DeviceKey, bool)>,
    /// Devices to stand in for slots that are down or fail, best first, only those up.
    pub handoffs: Vec<DeviceKey>,
    /// The map epoch this placement is from.
    pub epoch: u64,
}

/// How many handoffs a placement lists beyond the slots.
const HANDOFFS: usize = 8;

impl Place {
    /// Places `path` (`account/container/object`, or a shard's name) in `policy`'s ring.
    ///
    /// # Errors
    /// [`DataError::Unavailable`] when the policy or its ring is missing.
    pub fn of(map: &ClusterMap, policy: &str, path: &str) -> Result<Place, DataError> {
        let entry = map
            .policy(policy)
            .ok_or_else(|| DataError::Unavailable(format!("no storage policy {policy}")))?;
        let ring = entry
            .ring
            .as_ref()
            .ok_or_else(|| DataError::Unavailable(format!("policy {policy} has no ring yet")))?;
        let partition = ring.partition_of(path);
        let key = |d: &nimbus_ring::device::Device| DeviceKey {
            node: d.location.node,
            device: d.location.name.clone(),
        };
        let slots = ring
            .primaries(partition)
            .map(|d| {
                let k = key(d);
                let up = map.is_up(&k);
                (k, up)
            })
            .collect();
        let handoffs = ring
            .handoffs(partition)
            .map(key)
            .filter(|k| map.is_up(k))
            .take(HANDOFFS)
            .collect();
        Ok(Place {
            policy: ring.policy().clone(),
            partition,
            slots,
            handoffs,
            epoch: map.epoch().0,
        })
    }
}

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
    /// The partition's slot devices, in slot order, in each ring a rebalance replaced whose
    /// transition is not over ([`nimbus_ring::map::PreviousRing`]), where they differ from
    /// `slots` (oldest first; each with whether the map has it up). An index read or write
    /// needs a majority of each of these as well as of `slots`; a data read looks for slot
    /// `i`'s fragment at its previous owners after its owner.
    pub previous: Vec<Vec<(DeviceKey, bool)>>,
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
        Place::with_handoffs(map, policy, path, HANDOFFS)
    }

    /// Places an index shard (by its name) in `policy`'s ring: the slots and previous sets,
    /// no handoffs (index writes and reads never use them).
    ///
    /// # Errors
    /// [`DataError::Unavailable`] when the policy or its ring is missing.
    pub fn of_shard(map: &ClusterMap, policy: &str, name: &str) -> Result<Place, DataError> {
        Place::with_handoffs(map, policy, name, 0)
    }

    fn with_handoffs(
        map: &ClusterMap,
        policy: &str,
        path: &str,
        handoffs: usize,
    ) -> Result<Place, DataError> {
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
        let slots_of = |ring: &nimbus_ring::placement::Ring| -> Vec<(DeviceKey, bool)> {
            ring.primaries(partition)
                .map(|d| {
                    let k = key(d);
                    let up = map.is_up(&k);
                    (k, up)
                })
                .collect()
        };
        let slots = slots_of(ring);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // Two sets of the same devices are one set.
        let same = |a: &[(DeviceKey, bool)], b: &[(DeviceKey, bool)]| {
            a.len() == b.len() && a.iter().all(|(d, _)| b.iter().any(|(e, _)| d == e))
        };
        let mut previous: Vec<Vec<(DeviceKey, bool)>> = Vec::new();
        for old in map.previous_rings(policy, now_ms) {
            let set = slots_of(old);
            if !same(&set, &slots) && !previous.iter().any(|p| same(p, &set)) {
                previous.push(set);
            }
        }
        let handoffs = if handoffs == 0 {
            Vec::new()
        } else {
            ring.handoffs(partition)
                .map(key)
                .filter(|k| map.is_up(k))
                .take(handoffs)
                .collect()
        };
        Ok(Place {
            policy: ring.policy().clone(),
            partition,
            slots,
            handoffs,
            previous,
            epoch: map.epoch().0,
        })
    }

    /// The replicas of an index shard: the slot devices, then those of the previous sets
    /// not among them, each once.
    #[must_use]
    pub fn replicas(&self) -> Vec<&(DeviceKey, bool)> {
        let mut out: Vec<&(DeviceKey, bool)> = Vec::with_capacity(self.slots.len());
        for slot in self.slots.iter().chain(self.previous.iter().flatten()) {
            if !out.iter().any(|(d, _)| *d == slot.0) {
                out.push(slot);
            }
        }
        out
    }

    /// Tells whether the devices `holds` accepts make a majority of the slots and of each
    /// previous set: what an index write must reach and a read must hear from.
    pub fn majorities(&self, holds: impl Fn(&DeviceKey) -> bool) -> bool {
        std::iter::once(&self.slots)
            .chain(&self.previous)
            .all(|set| set.iter().filter(|(d, _)| holds(d)).count() > set.len() / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str) -> (DeviceKey, bool) {
        let key = DeviceKey {
            node: "127.0.0.1:6200".parse().expect("an address"),
            device: name.to_owned(),
        };
        (key, true)
    }

    fn place(slots: &str, previous: &[&str]) -> Place {
        let set = |names: &str| names.split(',').map(device).collect::<Vec<_>>();
        Place {
            policy: "rep5".parse().expect("a policy"),
            partition: PartitionId(0),
            slots: set(slots),
            handoffs: Vec::new(),
            previous: previous.iter().map(|p| set(p)).collect(),
            epoch: 1,
        }
    }

    fn holding(place: &Place, names: &str) -> bool {
        let names: Vec<&str> = names.split(',').collect();
        place.majorities(|d| names.contains(&d.device.as_str()))
    }

    #[test]
    fn a_transition_needs_a_majority_of_every_ring() {
        let steady = place("a,b,c,d,e", &[]);
        assert!(holding(&steady, "a,b,c"));
        assert!(!holding(&steady, "a,b,x"));
        assert_eq!(steady.replicas().len(), 5);

        let moving = place("a,b,f,g,h", &["a,b,c,d,e"]);
        let replicas: Vec<&str> = moving
            .replicas()
            .iter()
            .map(|(d, _)| d.device.as_str())
            .collect();
        assert_eq!(replicas, ["a", "b", "f", "g", "h", "c", "d", "e"]);
        // A majority of the new ring alone (what a read of the empty new devices would be)
        // is not enough, nor of the old one alone.
        assert!(!holding(&moving, "f,g,h"));
        assert!(!holding(&moving, "c,d,e"));
        assert!(!holding(&moving, "a,b,f"));
        assert!(holding(&moving, "a,b,c,f"));
        assert!(holding(&moving, "c,d,e,f,g,h"));
    }
}

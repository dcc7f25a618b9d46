//! The ring builder: the operator's devices, the policy, and the assignment of every
//! partition's slots to devices, changed only by [`RingBuilder::rebalance`].
//!
//! Pure: no I/O, no clock. `rebalance` takes the time as an argument and draws randomness
//! only from the builder's seed, so the same builder and the same calls give the same ring on
//! every machine.

mod assign;

use std::time::{SystemTime, UNIX_EPOCH};

use nimbus_core::ids::{DeviceId, Epoch, PartitionId};
use nimbus_core::policy::StoragePolicy;
use serde::Serialize;

use assign::Assigner;
pub(crate) use assign::NONE;

use crate::device::{Device, DeviceSpec, validate_weight};
use crate::error::BuilderError;
use crate::placement::Ring;
use crate::report::{BalanceReport, DispersionReport};
use crate::rng::{SplitMix64, mix64};
use crate::topology::{DeviceInput, Topology};

/// The smallest and largest part powers accepted.
pub const PART_POWER_RANGE: std::ops::RangeInclusive<u32> = 1..=24;

/// The most devices a builder can name (table entries are 16-bit, one value means "none").
pub const MAX_DEVICES: usize = u16::MAX as usize;

/// A device as the builder keeps it: removed devices stay until they hold no slot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BuilderDevice {
    /// The device.
    #[serde(flatten)]
    pub device: Device,
    /// Removed by the operator; drained by rebalances, then forgotten.
    pub removed: bool,
}

/// The settings a builder is created with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuilderSettings {
    /// The storage policy whose ring this is.
    pub policy: StoragePolicy,
    /// `2^part_power` partitions, 1 to 24.
    pub part_power: u32,
    /// Hours during which a partition that moved may not move again.
    pub min_part_hours: u32,
    /// Seed for every random choice the builder makes.
    pub seed: u64,
    /// `cluster_hash_key`: keys the hash from object path to partition; never changes.
    pub hash_key: [u8; 32],
}

/// Builds and changes a ring. See the module documentation.
#[derive(Clone, Debug, PartialEq)]
pub struct RingBuilder {
    pub(crate) policy: StoragePolicy,
    pub(crate) part_power: u8,
    pub(crate) min_part_hours: u32,
    pub(crate) seed: u64,
    pub(crate) hash_key: [u8; 32],
    /// Epoch of the newest ring built (0: none yet).
    pub(crate) epoch: Epoch,
    pub(crate) devices: Vec<BuilderDevice>,
    pub(crate) next_device_id: u32,
    /// Partition-major: `table[partition * slots + slot]` is a device index, or [`NONE`].
    pub(crate) table: Vec<u16>,
    /// Per partition: when a slot of it last moved, in minutes since the Unix epoch (0: never).
    pub(crate) last_moved: Vec<u32>,
    /// Devices changed since the last rebalance.
    pub(crate) pending: bool,
}

/// What a rebalance did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RebalanceReport {
    /// The epoch of the ring the builder now describes.
    pub epoch: Epoch,
    /// Whether this rebalance produced a new ring (a new epoch).
    pub new_epoch: bool,
    /// Slots whose device changed: their data moves.
    pub slots_moved: u64,
    /// Slots that had no device before (a new ring): no data moves.
    pub slots_placed: u64,
    /// Partitions with at least one slot moved.
    pub partitions_moved: u64,
    /// All slots in the ring.
    pub total_slots: u64,
    /// `slots_moved` as a percentage of all slots.
    pub moved_pct: f64,
    /// Partitions that `min_part_hours` kept from moving.
    pub frozen_partitions: u64,
    /// When every partition may move again, if some were frozen.
    pub frozen_until_unix_minutes: Option<u32>,
    /// Slots still above their device's quota: another rebalance (after `min_part_hours`)
    /// would move them.
    pub slots_off_target: u64,
    /// Partitions with more slots in a failure domain than its cap.
    pub partitions_crowded: u64,
    /// Removed devices that were drained and are now gone from the builder.
    pub devices_dropped: Vec<DeviceId>,
    /// Worst device balance against weight, in percent (positive: more than its share).
    pub worst_over_pct: f64,
    /// Worst device balance against weight, in percent (negative: less than its share).
    pub worst_under_pct: f64,
}

impl RingBuilder {
    /// Returns an empty builder.
    ///
    /// # Errors
    /// [`BuilderError::PartPowerOutOfRange`].
    pub fn new(settings: BuilderSettings) -> Result<Self, BuilderError> {
        let BuilderSettings {
            policy,
            part_power,
            min_part_hours,
            seed,
            hash_key,
        } = settings;
        if !PART_POWER_RANGE.contains(&part_power) {
            return Err(BuilderError::PartPowerOutOfRange { part_power });
        }
        let part_power = u8::try_from(part_power).expect("range checked above");
        let partitions = 1usize << part_power;
        let slots = usize::from(policy.slot_count());
        Ok(RingBuilder {
            policy,
            part_power,
            min_part_hours,
            seed,
            hash_key,
            epoch: Epoch(0),
            devices: Vec::new(),
            next_device_id: 0,
            table: vec![NONE; partitions * slots],
            last_moved: vec![0; partitions],
            pending: false,
        })
    }

    /// Returns a fresh random `cluster_hash_key` from the operating system.
    ///
    /// # Errors
    /// When the operating system has no randomness to give.
    pub fn random_hash_key() -> Result<[u8; 32], getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(key)
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

    /// Returns the number of partitions, `2^part_power`.
    #[must_use]
    pub fn partitions(&self) -> u32 {
        1 << self.part_power
    }

    /// Returns slots per partition.
    #[must_use]
    pub fn slot_count(&self) -> u8 {
        self.policy.slot_count()
    }

    /// Returns `min_part_hours`.
    #[must_use]
    pub fn min_part_hours(&self) -> u32 {
        self.min_part_hours
    }

    /// Sets `min_part_hours`; it applies from the next rebalance.
    pub fn set_min_part_hours(&mut self, hours: u32) {
        self.min_part_hours = hours;
    }

    /// Returns the seed.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Returns when a slot of partition `p` last moved (to the minute), or `None` if none
    /// ever did (filling the slots of a new ring is not a move).
    #[must_use]
    pub fn last_moved(&self, p: PartitionId) -> Option<std::time::SystemTime> {
        let minutes = *self.last_moved.get(p.0 as usize)?;
        (minutes > 0).then(|| {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(minutes) * 60)
        })
    }

    /// Returns the epoch of the newest ring built, 0 before the first rebalance.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Returns whether devices changed since the last rebalance.
    #[must_use]
    pub fn has_pending_changes(&self) -> bool {
        self.pending
    }

    /// Returns the devices, removed ones included.
    #[must_use]
    pub fn devices(&self) -> &[BuilderDevice] {
        &self.devices
    }

    /// Returns how many slots each device holds, in the order of [`RingBuilder::devices`].
    #[must_use]
    pub fn slot_counts(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.devices.len()];
        for &dev in &self.table {
            if dev != NONE {
                counts[usize::from(dev)] += 1;
            }
        }
        counts
    }

    /// Returns the device ids of partition `p`'s slots, `None` where a slot has no device.
    #[must_use]
    pub fn partition_devices(&self, p: PartitionId) -> Vec<Option<DeviceId>> {
        let slots = usize::from(self.slot_count());
        let base = p.0 as usize * slots;
        self.table[base..base + slots]
            .iter()
            .map(|&d| (d != NONE).then(|| self.devices[usize::from(d)].device.id))
            .collect()
    }

    /// Adds a device and returns its id: `id` if given, else the next unused one.
    ///
    /// # Errors
    /// A bad weight or name, a device name already on that node, a node already placed in
    /// another region or zone, an id already used, or too many devices.
    pub fn add_device(
        &mut self,
        spec: DeviceSpec,
        id: Option<DeviceId>,
    ) -> Result<DeviceId, BuilderError> {
        validate_weight(spec.weight)?;
        spec.location.validate()?;
        if self.devices.len() >= MAX_DEVICES {
            return Err(BuilderError::TooManyDevices);
        }
        let l = &spec.location;
        for d in &self.devices {
            let other = &d.device.location;
            if other.node == l.node && (other.region, other.zone) != (l.region, l.zone) {
                return Err(BuilderError::NodeInOtherZone {
                    node: l.node,
                    region: other.region,
                    zone: other.zone,
                });
            }
            if other.node == l.node && other.name == l.name {
                return Err(BuilderError::DuplicateDevice {
                    node: l.node,
                    name: l.name.clone(),
                    id: d.device.id,
                });
            }
        }
        let id = match id {
            Some(id) if id.0 < self.next_device_id => {
                return Err(BuilderError::DuplicateDeviceId { id });
            }
            Some(id) => id,
            None => DeviceId(self.next_device_id),
        };
        if id.0 == u32::MAX {
            return Err(BuilderError::DuplicateDeviceId { id });
        }
        self.next_device_id = id.0 + 1;
        self.devices.push(BuilderDevice {
            device: Device {
                id,
                location: spec.location,
                weight: spec.weight,
            },
            removed: false,
        });
        self.pending = true;
        Ok(id)
    }

    /// Marks a device removed: it gets no new slots, rebalances drain it (within the move
    /// limits), and it is forgotten once empty.
    ///
    /// # Errors
    /// An unknown or already removed device.
    pub fn remove_device(&mut self, id: DeviceId) -> Result<(), BuilderError> {
        let d = self.live_device_mut(id)?;
        d.removed = true;
        d.device.weight = 0.0;
        self.pending = true;
        Ok(())
    }

    /// Sets a device's weight.
    ///
    /// # Errors
    /// A bad weight, or an unknown or removed device.
    pub fn set_weight(&mut self, id: DeviceId, weight: f64) -> Result<(), BuilderError> {
        validate_weight(weight)?;
        let d = self.live_device_mut(id)?;
        if d.device.weight.to_bits() != weight.to_bits() {
            d.device.weight = weight;
            self.pending = true;
        }
        Ok(())
    }

    fn live_device_mut(&mut self, id: DeviceId) -> Result<&mut BuilderDevice, BuilderError> {
        let d = self
            .devices
            .iter_mut()
            .find(|d| d.device.id == id)
            .ok_or(BuilderError::UnknownDevice { id })?;
        if d.removed {
            return Err(BuilderError::DeviceRemoved { id });
        }
        Ok(d)
    }

    fn active(&self) -> Vec<bool> {
        self.devices
            .iter()
            .map(|d| !d.removed && d.device.weight > 0.0)
            .collect()
    }

    /// Returns the failure-domain tree with targets and quotas for the current devices.
    pub(crate) fn topology(&self) -> Topology {
        let counts = self.slot_counts();
        let inputs: Vec<DeviceInput<'_>> = self
            .devices
            .iter()
            .zip(&counts)
            .map(|(d, &current)| DeviceInput {
                location: &d.device.location,
                weight: if d.removed { 0.0 } else { d.device.weight },
                current,
            })
            .collect();
        Topology::build(
            &inputs,
            u32::from(self.slot_count()),
            u64::from(self.partitions()),
        )
    }

    fn check_enough_devices(&self) -> Result<(), BuilderError> {
        let active = self.active().iter().filter(|&&a| a).count();
        let slots = self.slot_count();
        if active < usize::from(slots) {
            return Err(BuilderError::TooFewDevices {
                policy: self.policy.name().to_owned(),
                slots,
                devices: active,
            });
        }
        Ok(())
    }

    /// Assigns slots to devices: every slot gets a device, partitions are dispersed across
    /// failure domains as widely as the topology allows, and devices approach their share by
    /// weight, moving as few slots as possible. At most [`StoragePolicy::max_slot_moves`]
    /// slots of a partition move, and none of a partition that moved less than
    /// `min_part_hours` before `now`. Returns what moved; a new epoch when anything changed.
    ///
    /// # Errors
    /// [`BuilderError::TooFewDevices`] when fewer devices have weight than a partition has
    /// slots. The builder is unchanged on error.
    pub fn rebalance(&mut self, now: SystemTime) -> Result<RebalanceReport, BuilderError> {
        self.check_enough_devices()?;
        let now_minutes = unix_minutes(now);
        let window = self.min_part_hours.saturating_mul(60);
        let frozen: Vec<bool> = self
            .last_moved
            .iter()
            .map(|&t| t != 0 && now_minutes < t.saturating_add(window))
            .collect();

        let topo = self.topology();
        let active = self.active();
        let before = self.table.clone();
        let mut rng = SplitMix64::new(self.seed ^ mix64(self.epoch.0));
        let mut order: Vec<u32> = (0..self.partitions()).collect();
        rng.shuffle(&mut order);
        Assigner::new(
            &topo,
            &mut self.table,
            &active,
            &frozen,
            self.policy.max_slot_moves(),
            rng.next_u64(),
        )
        .run(&order);

        let slots = usize::from(self.slot_count());
        let (mut slots_moved, mut slots_placed, mut partitions_moved) = (0u64, 0u64, 0u64);
        for (p, (old, new)) in before
            .chunks_exact(slots)
            .zip(self.table.chunks_exact(slots))
            .enumerate()
        {
            let moved = old
                .iter()
                .zip(new)
                .filter(|(o, n)| **o != NONE && o != n)
                .count() as u64;
            slots_placed += old
                .iter()
                .zip(new)
                .filter(|(o, n)| **o == NONE && **n != NONE)
                .count() as u64;
            if moved > 0 {
                slots_moved += moved;
                partitions_moved += 1;
                self.last_moved[p] = now_minutes.max(1);
            }
        }
        let devices_dropped = self.drop_drained_devices();
        let new_epoch = slots_moved > 0 || slots_placed > 0 || self.pending;
        if new_epoch {
            self.epoch = self.epoch.next();
            self.pending = false;
        }

        let frozen_partitions = frozen.iter().filter(|&&f| f).count() as u64;
        let frozen_until_unix_minutes = self
            .last_moved
            .iter()
            .zip(&frozen)
            .filter(|&(_, &f)| f)
            .map(|(&t, _)| t.saturating_add(window))
            .max();
        let balance = self.balance_report();
        let dispersion = self.dispersion_report();
        let total_slots = self.table.len() as u64;
        Ok(RebalanceReport {
            epoch: self.epoch,
            new_epoch,
            slots_moved,
            slots_placed,
            partitions_moved,
            total_slots,
            moved_pct: 100.0 * slots_moved as f64 / total_slots as f64,
            frozen_partitions,
            frozen_until_unix_minutes,
            slots_off_target: balance.slots_off_target,
            partitions_crowded: dispersion.partitions_crowded,
            devices_dropped,
            worst_over_pct: balance.worst_over_pct,
            worst_under_pct: balance.worst_under_pct,
        })
    }

    /// Forgets removed devices that hold no slot, renumbering the table.
    fn drop_drained_devices(&mut self) -> Vec<DeviceId> {
        let counts = self.slot_counts();
        let mut dropped = Vec::new();
        let mut remap = vec![NONE; self.devices.len()];
        let mut kept = Vec::with_capacity(self.devices.len());
        for (i, d) in std::mem::take(&mut self.devices).into_iter().enumerate() {
            if d.removed && counts[i] == 0 {
                dropped.push(d.device.id);
            } else {
                remap[i] = u16::try_from(kept.len()).expect("at most MAX_DEVICES devices");
                kept.push(d);
            }
        }
        self.devices = kept;
        if !dropped.is_empty() {
            for dev in &mut self.table {
                if *dev != NONE {
                    *dev = remap[usize::from(*dev)];
                }
            }
        }
        dropped
    }

    /// Returns each device's slots against its share by weight and its target, with the
    /// reason wherever dispersion made the target differ from the weight.
    #[must_use]
    pub fn balance_report(&self) -> BalanceReport {
        BalanceReport::new(self, &self.topology())
    }

    /// Returns how well partitions are spread over failure domains.
    #[must_use]
    pub fn dispersion_report(&self) -> DispersionReport {
        DispersionReport::new(self, &self.topology())
    }

    /// Returns the ring the builder describes now.
    ///
    /// # Errors
    /// [`BuilderError::NotBuilt`] when some slot has no device (never rebalanced).
    pub fn ring(&self) -> Result<Ring, BuilderError> {
        if self.epoch == Epoch(0) || self.table.contains(&NONE) {
            return Err(BuilderError::NotBuilt);
        }
        let devices = self
            .devices
            .iter()
            .map(|d| d.device.clone())
            .collect::<Vec<_>>();
        Ok(Ring::from_parts(
            self.epoch,
            self.policy.clone(),
            self.part_power,
            self.hash_key,
            devices,
            self.table.clone(),
        ))
    }
}

/// Minutes since the Unix epoch, saturating (a clock before 1970 counts as 1970).
fn unix_minutes(t: SystemTime) -> u32 {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    u32::try_from(secs / 60).unwrap_or(u32::MAX)
}

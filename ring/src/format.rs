//! The binary formats of ring files (`.ring`) and builder files (`.builder`).
//!
//! Both share one frame (all integers little-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic: "NIMBRING" (ring) or "NIMBBLDR" (builder)
//!      8     2  format version (1)
//!     10     2  flags (0)
//!     12     8  payload length in bytes
//!     20     n  payload
//!   20+n    32  blake3 of bytes 0 .. 20+n
//! ```
//!
//! A reader checks, in order: magic, version (a newer one is refused by name), length
//! (truncated or padded files), checksum (any flipped byte), then every field, and then that
//! the fields make a valid ring: nothing read from a file is trusted. docs/ring.md lays out
//! the payloads.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nimbus_core::encoding::{Reader, Writer};
use nimbus_core::ids::{DeviceId, Epoch};
use nimbus_core::policy::{PolicyKind, StoragePolicy};

use crate::builder::{BuilderDevice, MAX_DEVICES, NONE, PART_POWER_RANGE, RingBuilder};
use crate::device::{Device, Location, validate_weight};
use crate::error::FormatError;
use crate::placement::Ring;

/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

const RING_MAGIC: &[u8; 8] = b"NIMBRING";
const BUILDER_MAGIC: &[u8; 8] = b"NIMBBLDR";
pub(crate) const HEADER_LEN: usize = 20;
pub(crate) const CHECKSUM_LEN: usize = 32;

pub(crate) fn frame(magic: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(HEADER_LEN + payload.len() + CHECKSUM_LEN);
    w.put_bytes(magic);
    w.put_u16(FORMAT_VERSION);
    w.put_u16(0);
    w.put_u64(payload.len() as u64);
    w.put_bytes(payload);
    let sum = blake3::hash(w.as_slice());
    w.put_bytes(sum.as_bytes());
    w.into_inner()
}

pub(crate) fn unframe<'a>(
    magic: &[u8; 8],
    what: &'static str,
    bytes: &'a [u8],
) -> Result<&'a [u8], FormatError> {
    if bytes.len() < 8 || &bytes[..8] != magic {
        return Err(FormatError::WrongMagic { expected: what });
    }
    let mut r = Reader::new(&bytes[8..]);
    let version = r.u16("format version")?;
    if version > FORMAT_VERSION {
        return Err(FormatError::NewerFormat {
            version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(FormatError::Invalid {
            reason: "format version 0".to_owned(),
        });
    }
    let _flags = r.u16("flags")?;
    let payload_len = r.u64("payload length")?;
    let expected = payload_len.saturating_add((HEADER_LEN + CHECKSUM_LEN) as u64);
    if expected != bytes.len() as u64 {
        return Err(FormatError::WrongLength {
            expected,
            actual: bytes.len() as u64,
        });
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if blake3::hash(body).as_bytes() != sum {
        return Err(FormatError::ChecksumMismatch);
    }
    Ok(&body[HEADER_LEN..])
}

fn invalid(reason: impl Into<String>) -> FormatError {
    FormatError::Invalid {
        reason: reason.into(),
    }
}

fn put_policy(w: &mut Writer, policy: &StoragePolicy) {
    w.put_str(policy.name());
    match policy.kind() {
        PolicyKind::Replication { replicas } => {
            w.put_u8(0);
            w.put_u8(replicas);
            w.put_u8(0);
        }
        PolicyKind::ErasureCoding { data, parity } => {
            w.put_u8(1);
            w.put_u8(data);
            w.put_u8(parity);
        }
    }
}

fn get_policy(r: &mut Reader<'_>) -> Result<StoragePolicy, FormatError> {
    let name = r.str("policy name")?;
    let kind = match (
        r.u8("policy kind")?,
        r.u8("policy count")?,
        r.u8("policy count")?,
    ) {
        (0, replicas, 0) => PolicyKind::Replication { replicas },
        (1, data, parity) => PolicyKind::ErasureCoding { data, parity },
        (kind, _, _) => return Err(invalid(format!("unknown policy kind {kind}"))),
    };
    StoragePolicy::new(name, kind).map_err(|e| invalid(e.to_string()))
}

fn put_device(w: &mut Writer, d: &Device) {
    w.put_u32(d.id.0);
    w.put_u32(d.location.region);
    w.put_u32(d.location.zone);
    match d.location.node.ip() {
        IpAddr::V4(ip) => {
            w.put_u8(4);
            w.put_bytes(&ip.octets());
        }
        IpAddr::V6(ip) => {
            w.put_u8(6);
            w.put_bytes(&ip.octets());
        }
    }
    w.put_u16(d.location.node.port());
    w.put_str(&d.location.name);
    w.put_f64(d.weight);
}

fn get_device(r: &mut Reader<'_>) -> Result<Device, FormatError> {
    let id = DeviceId(r.u32("device id")?);
    let region = r.u32("device region")?;
    let zone = r.u32("device zone")?;
    let ip = match r.u8("address family")? {
        4 => {
            let b: [u8; 4] = r.bytes(4, "ipv4 address")?.try_into().expect("4 bytes");
            IpAddr::V4(Ipv4Addr::from(b))
        }
        6 => {
            let b: [u8; 16] = r.bytes(16, "ipv6 address")?.try_into().expect("16 bytes");
            IpAddr::V6(Ipv6Addr::from(b))
        }
        family => return Err(invalid(format!("unknown address family {family}"))),
    };
    let port = r.u16("port")?;
    let name = r.str("device name")?.to_owned();
    let weight = r.f64("weight")?;
    let location = Location {
        region,
        zone,
        node: SocketAddr::new(ip, port),
        name,
    };
    location.validate().map_err(|e| invalid(e.to_string()))?;
    validate_weight(weight).map_err(|e| invalid(format!("device {id}: {e}")))?;
    Ok(Device {
        id,
        location,
        weight,
    })
}

fn put_table(w: &mut Writer, table: &[u16]) {
    for &d in table {
        w.put_u16(d);
    }
}

fn get_table(r: &mut Reader<'_>, entries: usize) -> Result<Vec<u16>, FormatError> {
    let bytes = r.bytes(entries * 2, "slot table")?;
    Ok(bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect())
}

fn get_part_power(r: &mut Reader<'_>) -> Result<u8, FormatError> {
    let part_power = r.u8("part power")?;
    if !PART_POWER_RANGE.contains(&u32::from(part_power)) {
        return Err(invalid(format!("part power {part_power} out of range")));
    }
    Ok(part_power)
}

/// Checks ids, names and nodes as [`RingBuilder::add_device`] does.
fn check_devices<'a>(devices: impl Iterator<Item = &'a Device>) -> Result<(), FormatError> {
    let mut ids = HashSet::new();
    let mut names = HashSet::new();
    let mut zone_of = std::collections::HashMap::new();
    for (count, d) in devices.enumerate() {
        if count >= MAX_DEVICES {
            return Err(invalid("more than 65,535 devices"));
        }
        if !ids.insert(d.id) {
            return Err(invalid(format!("device id {} appears twice", d.id)));
        }
        let l = &d.location;
        if !names.insert((l.node, l.name.as_str())) {
            return Err(invalid(format!("device {} appears twice", l)));
        }
        if *zone_of.entry(l.node).or_insert((l.region, l.zone)) != (l.region, l.zone) {
            return Err(invalid(format!("node {} is in two zones", l.node)));
        }
    }
    Ok(())
}

/// Checks that every entry names a device (or is [`NONE`] where allowed) and that no
/// partition has a device twice.
fn check_table(
    table: &[u16],
    slots: usize,
    devices: usize,
    allow_none: bool,
) -> Result<(), FormatError> {
    for (p, devs) in table.chunks_exact(slots).enumerate() {
        for (i, &d) in devs.iter().enumerate() {
            if d == NONE {
                if allow_none {
                    continue;
                }
                return Err(invalid(format!("partition {p} slot {i} has no device")));
            }
            if usize::from(d) >= devices {
                return Err(invalid(format!(
                    "partition {p} slot {i} names device index {d} of {devices}"
                )));
            }
            if devs[..i].contains(&d) {
                return Err(invalid(format!("partition {p} holds a device twice")));
            }
        }
    }
    Ok(())
}

impl Ring {
    /// Encodes the ring in the ring file format.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.table().len() * 2 + 256);
        w.put_u64(self.epoch().0);
        w.put_u8(u8::try_from(self.part_power()).expect("part power ≤ 24"));
        put_policy(&mut w, self.policy());
        w.put_bytes(self.hash_key());
        w.put_u32(self.devices().len() as u32);
        for d in self.devices() {
            put_device(&mut w, d);
        }
        put_table(&mut w, self.table());
        frame(RING_MAGIC, w.as_slice())
    }

    /// Decodes and validates a ring file.
    ///
    /// # Errors
    /// [`FormatError`] naming the first problem found.
    pub fn decode(bytes: &[u8]) -> Result<Ring, FormatError> {
        let mut r = Reader::new(unframe(RING_MAGIC, "ring", bytes)?);
        let epoch = Epoch(r.u64("epoch")?);
        let part_power = get_part_power(&mut r)?;
        let policy = get_policy(&mut r)?;
        let hash_key: [u8; 32] = r.bytes(32, "hash key")?.try_into().expect("32 bytes");
        let count = r.u32("device count")? as usize;
        if count > MAX_DEVICES {
            return Err(invalid(format!("{count} devices, more than 65,535")));
        }
        let devices = (0..count)
            .map(|_| get_device(&mut r))
            .collect::<Result<Vec<_>, _>>()?;
        check_devices(devices.iter())?;
        let slots = usize::from(policy.slot_count());
        let table = get_table(&mut r, (1usize << part_power) * slots)?;
        r.finish()?;
        check_table(&table, slots, devices.len(), false)?;
        Ok(Ring::from_parts(
            epoch, policy, part_power, hash_key, devices, table,
        ))
    }
}

impl RingBuilder {
    /// Encodes the builder in the builder file format.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.table.len() * 2 + self.last_moved.len() * 4 + 256);
        w.put_u64(self.epoch.0);
        w.put_u8(self.part_power);
        put_policy(&mut w, &self.policy);
        w.put_bytes(&self.hash_key);
        w.put_u32(self.min_part_hours);
        w.put_u64(self.seed);
        w.put_u32(self.next_device_id);
        w.put_u8(u8::from(self.pending));
        w.put_u32(self.devices.len() as u32);
        for d in &self.devices {
            put_device(&mut w, &d.device);
            w.put_u8(u8::from(d.removed));
        }
        put_table(&mut w, &self.table);
        for &t in &self.last_moved {
            w.put_u32(t);
        }
        frame(BUILDER_MAGIC, w.as_slice())
    }

    /// Decodes and validates a builder file.
    ///
    /// # Errors
    /// [`FormatError`] naming the first problem found.
    pub fn decode(bytes: &[u8]) -> Result<RingBuilder, FormatError> {
        let mut r = Reader::new(unframe(BUILDER_MAGIC, "ring builder", bytes)?);
        let epoch = Epoch(r.u64("epoch")?);
        let part_power = get_part_power(&mut r)?;
        let policy = get_policy(&mut r)?;
        let hash_key: [u8; 32] = r.bytes(32, "hash key")?.try_into().expect("32 bytes");
        let min_part_hours = r.u32("min part hours")?;
        let seed = r.u64("seed")?;
        let next_device_id = r.u32("next device id")?;
        let pending = match r.u8("pending flag")? {
            0 => false,
            1 => true,
            v => return Err(invalid(format!("pending flag {v}"))),
        };
        let count = r.u32("device count")? as usize;
        if count > MAX_DEVICES {
            return Err(invalid(format!("{count} devices, more than 65,535")));
        }
        let mut devices = Vec::with_capacity(count);
        for _ in 0..count {
            let device = get_device(&mut r)?;
            let removed = match r.u8("removed flag")? {
                0 => false,
                1 => true,
                v => return Err(invalid(format!("removed flag {v}"))),
            };
            if device.id.0 >= next_device_id {
                return Err(invalid(format!(
                    "device id {} is not below the next id {next_device_id}",
                    device.id
                )));
            }
            devices.push(BuilderDevice { device, removed });
        }
        check_devices(devices.iter().map(|d| &d.device))?;
        let slots = usize::from(policy.slot_count());
        let partitions = 1usize << part_power;
        let table = get_table(&mut r, partitions * slots)?;
        let moved = r.bytes(partitions * 4, "last moved times")?;
        let last_moved = moved
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        r.finish()?;
        check_table(&table, slots, devices.len(), true)?;
        Ok(RingBuilder {
            policy,
            part_power,
            min_part_hours,
            seed,
            hash_key,
            epoch,
            devices,
            next_device_id,
            table,
            last_moved,
            pending,
        })
    }
}

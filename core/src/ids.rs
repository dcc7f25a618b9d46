//! Ids and quantities that cross crate, file and wire boundaries, each as its own type so that
//! a device id is never mistaken for a partition or an epoch.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies a device (one disk, normally its own mount) for the life of the cluster.
///
/// Ids are assigned when a device is added to a ring and never reused, so an id in a log line,
/// a metric or an old ring always names the same disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub u32);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A partition of the ring: the top `part_power` bits of an object path's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The version of a built ring. Every ring a builder produces has a higher epoch than the one
/// before it; nodes refuse requests that carry an older epoch than theirs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// Returns the epoch after this one.
    #[must_use]
    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Names a version of an object: the timestamp of the PUT that created it, in microseconds
/// since the Unix epoch, with the low bits holding a node-unique tiebreak, so versions are
/// totally ordered. Fragments are immutable and named by their version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionId(pub u64);

/// Bits of a [`VersionId`] below the microseconds: the tiebreak.
pub const VERSION_TIEBREAK_BITS: u32 = 12;

impl VersionId {
    /// Returns the version of a write at `micros` (since the Unix epoch) with `tiebreak`
    /// (its low [`VERSION_TIEBREAK_BITS`] bits are used).
    #[must_use]
    pub fn from_parts(micros: u64, tiebreak: u16) -> VersionId {
        VersionId((micros << VERSION_TIEBREAK_BITS) | u64::from(tiebreak & 0xfff))
    }

    /// Returns the time of the write, in microseconds since the Unix epoch.
    #[must_use]
    pub fn micros(self) -> u64 {
        self.0 >> VERSION_TIEBREAK_BITS
    }
}

impl fmt::Display for VersionId {
    /// 16 lowercase hex digits, so that versions sort as strings the way they sort as numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

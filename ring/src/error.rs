//! The ring's errors: one enum for builder changes, one for the file formats, one for
//! reading and writing ring files.

use std::net::SocketAddr;
use std::path::PathBuf;

use nimbus_core::encoding::DecodeError;
use nimbus_core::ids::DeviceId;
use nimbus_core::policy::PolicyError;

/// Why a builder refused a change or a rebalance. The builder is left as it was.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuilderError {
    /// `part_power` outside `1..=24`.
    #[error("part power {part_power} is out of range: use 1 to 24 (2 to 16,777,216 partitions)")]
    PartPowerOutOfRange {
        /// What was given.
        part_power: u32,
    },
    /// A weight that is negative, NaN or infinite.
    #[error("weight {weight} is not allowed: a weight is a finite number at least 0")]
    BadWeight {
        /// What was given.
        weight: f64,
    },
    /// A device name with characters outside `A-Z a-z 0-9 . _ -`, empty or too long.
    #[error(
        "bad device name {name:?}: use 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.'"
    )]
    BadDeviceName {
        /// What was given.
        name: String,
    },
    /// A location not of the form `r<region>z<zone>-<ip:port>/<name>`.
    #[error(
        "bad device location {location:?}: expected r<region>z<zone>-<ip:port>/<name>, e.g. r1z2-10.0.0.5:6200/sdb"
    )]
    BadLocation {
        /// What was given.
        location: String,
    },
    /// The node already has a device of that name.
    #[error("duplicate device: {node} already has a device named {name:?} (id {id})")]
    DuplicateDevice {
        /// The node.
        node: SocketAddr,
        /// The device name.
        name: String,
        /// The id of the device already there.
        id: DeviceId,
    },
    /// The id asked for is taken (or was used by a removed device).
    #[error(
        "device id {id} is not available: ids are handed out in increasing order and never reused"
    )]
    DuplicateDeviceId {
        /// What was asked for.
        id: DeviceId,
    },
    /// The node is already known in another region or zone.
    #[error("node {node} is already in region {region} zone {zone}; a node belongs to one zone")]
    NodeInOtherZone {
        /// The node.
        node: SocketAddr,
        /// Its region.
        region: u32,
        /// Its zone.
        zone: u32,
    },
    /// No device has this id.
    #[error("no device has id {id}")]
    UnknownDevice {
        /// What was asked for.
        id: DeviceId,
    },
    /// The device was removed and waits only to be drained.
    #[error("device {id} has been removed")]
    DeviceRemoved {
        /// The device.
        id: DeviceId,
    },
    /// The builder holds as many devices as its table can name.
    #[error("a ring holds at most 65,535 devices")]
    TooManyDevices,
    /// Fewer devices with weight than slots per partition: slots could not be distinct.
    #[error(
        "policy {policy} needs {slots} devices with weight > 0 so that each partition's slots are on distinct devices; the builder has {devices}"
    )]
    TooFewDevices {
        /// The policy's name.
        policy: String,
        /// Slots per partition.
        slots: u8,
        /// Devices with weight > 0.
        devices: usize,
    },
    /// A ring was asked for before any rebalance assigned the slots.
    #[error("the builder has not been rebalanced yet: run `nimbus ring rebalance`")]
    NotBuilt,
    /// The policy is not valid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Why bytes are not a valid ring or builder file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    /// The file does not start with the expected magic bytes.
    #[error("not a Nimbus {expected} file")]
    WrongMagic {
        /// `"ring"` or `"ring builder"`.
        expected: &'static str,
    },
    /// The file was written by a newer Nimbus.
    #[error(
        "format version {version} was written by a newer Nimbus; this one reads up to version {supported}"
    )]
    NewerFormat {
        /// The file's version.
        version: u16,
        /// The newest this build reads.
        supported: u16,
    },
    /// The file is shorter (or longer) than its header says.
    #[error("truncated or padded: the header promises {expected} bytes, the file has {actual}")]
    WrongLength {
        /// Bytes the header promises.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The checksum does not match the contents.
    #[error("corrupt: the blake3 checksum does not match the contents")]
    ChecksumMismatch,
    /// A field could not be read.
    #[error("malformed: {0}")]
    Decode(#[from] DecodeError),
    /// The fields were read but do not form a valid ring or builder.
    #[error("invalid contents: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
}

/// Why a ring or builder file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RingFileError {
    /// The file system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The file's contents are not valid.
    #[error("{}: {source}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: FormatError,
    },
}

//! Raft snapshot files: the last snapshot of a voter's state machine, its meta and its
//! bytes, in one file `current.snapshot` of the voter's snapshot directory.
//!
//! # Format
//!
//! The frame of ring files (see [`crate::format`]) with its own magic; all integers
//! little-endian:
//!
//! ```text
//! offset  size  field
//!      0     8  magic: "NIMBSNAP"
//!      8     2  format version (1)
//!     10     2  flags (0)
//!     12     8  payload length in bytes (n)
//!     20     n  payload
//!   20+n    32  blake3 of bytes 0 .. 20+n
//!
//! payload:
//!      0     4  meta length in bytes (m)
//!      4     m  snapshot meta, serde_json (last log id, last membership, snapshot id)
//!    4+m     8  data length in bytes (d)
//!   12+m     d  the state machine's bytes, as its snapshot builder made them
//! ```
//!
//! A reader checks, in order: magic, version (a newer one is refused by name), length
//! (truncated or padded files), checksum (any flipped byte), then every field.
//!
//! **Invariants:**
//! - A snapshot file is never half-written: it is written to a temporary name in the same
//!   directory, fsynced, renamed over the old one and the directory fsynced
//!   ([`crate::file::write_atomic`]). A crash leaves the old snapshot or the new one.
//! - Nothing read is trusted: a damaged, truncated or foreign file is a
//!   [`SnapshotFileError::Format`], never a panic and never a snapshot.
//! - One writer per directory: the voter's state machine store saves its snapshots one at a
//!   time.
//! - Files are at most [`MAX_SNAPSHOT_BYTES`] long, both written and read.

use std::fs::{self, File};
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};

use nimbus_core::encoding::{Reader, Writer};
use openraft::storage::SnapshotSignature;
use openraft::{
    AnyError, ErrorVerb, NodeId, RaftTypeConfig, Snapshot, SnapshotMeta, StorageError,
    StorageIOError,
};

use crate::error::FormatError;
use crate::file::write_atomic;

/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = crate::format::FORMAT_VERSION;

/// The name of the snapshot file in a snapshot directory.
pub const SNAPSHOT_FILE_NAME: &str = "current.snapshot";

/// The largest snapshot file written or read, frame included: 1 GiB. A cluster map is
/// orders of magnitude smaller; the bound keeps a damaged length or a stray file from
/// exhausting memory.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

const MAGIC: &[u8; 8] = b"NIMBSNAP";
use crate::format::{CHECKSUM_LEN, HEADER_LEN};
/// The payload's fixed fields: meta length (4) and data length (8).
const PAYLOAD_FIXED_LEN: usize = 12;

/// A snapshot as stored: its meta and the state machine's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot<C: RaftTypeConfig> {
    /// Last log id, last membership and id of the snapshot.
    pub meta: SnapshotMeta<C::NodeId, C::Node>,
    /// The state machine's bytes.
    pub data: Vec<u8>,
}

impl<C> StoredSnapshot<C>
where
    C: RaftTypeConfig<SnapshotData = Cursor<Vec<u8>>>,
{
    /// Returns the snapshot as openraft hands it around, for type configs whose snapshot
    /// data is an in-memory cursor (openraft's default).
    #[must_use]
    pub fn into_snapshot(self) -> Snapshot<C> {
        Snapshot {
            meta: self.meta,
            snapshot: Box::new(Cursor::new(self.data)),
        }
    }
}

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// The snapshot meta could not be encoded as JSON.
    #[error("encode snapshot meta as JSON")]
    EncodeMeta {
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
    /// The snapshot would make a file larger than [`MAX_SNAPSHOT_BYTES`]; nothing was
    /// written.
    #[error("a snapshot file of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The file's size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The file system refused a write; the previous snapshot file is untouched.
    #[error("write snapshot file {}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// The file system refused a read.
    #[error("read snapshot file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// The file is not a valid snapshot file: damaged, truncated, foreign or too new.
    #[error("snapshot file {} is not valid", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: FormatError,
    },
    /// The blocking task saving or loading the snapshot panicked or was cancelled.
    #[error("a snapshot file task failed")]
    Task {
        /// Whether it was writing or reading.
        verb: ErrorVerb,
        /// What the runtime reported.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl SnapshotFileError {
    /// Returns whether the failure happened while writing or while reading.
    #[must_use]
    pub fn verb(&self) -> ErrorVerb {
        match self {
            SnapshotFileError::EncodeMeta { .. }
            | SnapshotFileError::TooLarge { .. }
            | SnapshotFileError::Write { .. } => ErrorVerb::Write,
            SnapshotFileError::Read { .. } | SnapshotFileError::Format { .. } => ErrorVerb::Read,
            SnapshotFileError::Task { verb, .. } => *verb,
        }
    }

    /// Returns the openraft error for this failure on the snapshot `signature` names (when
    /// known).
    #[must_use]
    pub fn into_storage_error<NID: NodeId>(
        self,
        signature: Option<SnapshotSignature<NID>>,
    ) -> StorageError<NID> {
        let verb = self.verb();
        let source = AnyError::new(&self);
        match verb {
            ErrorVerb::Write => StorageIOError::write_snapshot(signature, source),
            _ => StorageIOError::read_snapshot(signature, source),
        }
        .into()
    }
}

/// Returns the path of the snapshot file in `dir`.
#[must_use]
pub fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE_NAME)
}

/// Encodes a snapshot in the snapshot file format.
///
/// # Errors
/// [`SnapshotFileError::EncodeMeta`] or [`SnapshotFileError::TooLarge`].
pub fn encode<C: RaftTypeConfig>(
    meta: &SnapshotMeta<C::NodeId, C::Node>,
    data: &[u8],
) -> Result<Vec<u8>, SnapshotFileError> {
    let meta_json =
        serde_json::to_vec(meta).map_err(|source| SnapshotFileError::EncodeMeta { source })?;
    let payload_len = PAYLOAD_FIXED_LEN + meta_json.len() + data.len();
    let file_len = (HEADER_LEN + payload_len + CHECKSUM_LEN) as u64;
    if file_len > MAX_SNAPSHOT_BYTES {
        return Err(SnapshotFileError::TooLarge {
            bytes: file_len,
            max: MAX_SNAPSHOT_BYTES,
        });
    }
    let mut w = Writer::with_capacity(payload_len);
    w.put_u32(u32::try_from(meta_json.len()).expect("bounded by MAX_SNAPSHOT_BYTES < 4 GiB"));
    w.put_bytes(&meta_json);
    w.put_u64(data.len() as u64);
    w.put_bytes(data);
    Ok(crate::format::frame(MAGIC, w.as_slice()))
}

/// Decodes and checks a snapshot file's bytes.
///
/// # Errors
/// [`FormatError`] naming the first problem found.
pub fn decode<C: RaftTypeConfig>(bytes: &[u8]) -> Result<StoredSnapshot<C>, FormatError> {
    let mut r = Reader::new(crate::format::unframe(MAGIC, "raft snapshot", bytes)?);
    let meta_len = r.u32("snapshot meta length")? as usize;
    let meta_json = r.bytes(meta_len, "snapshot meta")?;
    let meta = serde_json::from_slice(meta_json).map_err(|e| FormatError::Invalid {
        reason: format!("snapshot meta does not decode: {e}"),
    })?;
    let data_len = r.u64("snapshot data length")?;
    let data_len = usize::try_from(data_len).map_err(|_| FormatError::Invalid {
        reason: format!("snapshot data length {data_len} does not fit in memory"),
    })?;
    let data = r.bytes(data_len, "snapshot data")?.to_vec();
    r.finish()?;
    Ok(StoredSnapshot { meta, data })
}

/// Writes the snapshot as the current snapshot of `dir`, atomically and durably: when this
/// returns `Ok`, [`load_latest_blocking`] returns it, after a crash too. Creates `dir` when
/// absent (its parent must exist) and removes temporary files an interrupted earlier save
/// left behind.
///
/// Blocking: from async code, call [`save`].
///
/// # Errors
/// [`SnapshotFileError`]; on error the previous snapshot file is untouched.
pub fn save_blocking<C: RaftTypeConfig>(
    dir: &Path,
    meta: &SnapshotMeta<C::NodeId, C::Node>,
    data: &[u8],
) -> Result<(), SnapshotFileError> {
    let bytes = encode::<C>(meta, data)?;
    let write_failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotFileError::Write { path, source }
    };
    create_dir_durably(dir).map_err(write_failed(dir))?;
    remove_stale_temp_files(dir).map_err(write_failed(dir))?;
    let path = snapshot_path(dir);
    write_atomic(&path, &bytes).map_err(write_failed(&path))
}

/// Reads the current snapshot of `dir`: `None` when none was saved (no file, or no
/// directory).
///
/// Blocking: from async code, call [`load_latest`].
///
/// # Errors
/// [`SnapshotFileError::Read`] when the file cannot be read, [`SnapshotFileError::Format`]
/// when it is not a valid snapshot file.
pub fn load_latest_blocking<C: RaftTypeConfig>(
    dir: &Path,
) -> Result<Option<StoredSnapshot<C>>, SnapshotFileError> {
    let path = snapshot_path(dir);
    let read_failed = |source| SnapshotFileError::Read {
        path: path.clone(),
        source,
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_failed(e)),
    };
    // One byte past the limit tells an oversized file without reading all of it.
    let mut bytes = Vec::new();
    file.take(MAX_SNAPSHOT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_failed)?;
    if bytes.len() as u64 > MAX_SNAPSHOT_BYTES {
        return Err(SnapshotFileError::Format {
            path,
            source: FormatError::Invalid {
                reason: format!("the file is larger than {MAX_SNAPSHOT_BYTES} bytes"),
            },
        });
    }
    decode(&bytes)
        .map(Some)
        .map_err(|source| SnapshotFileError::Format { path, source })
}

/// Writes the snapshot as the current snapshot of `dir` on tokio's blocking pool (see
/// [`save_blocking`]).
///
/// # Errors
/// As [`save_blocking`], and [`SnapshotFileError::Task`].
///
/// # Cancel safety
/// Dropping the future does not stop the write, which completes or fails on its own; the
/// next save must not start before it has (one writer per directory).
pub async fn save<C: RaftTypeConfig>(
    dir: PathBuf,
    meta: SnapshotMeta<C::NodeId, C::Node>,
    data: Vec<u8>,
) -> Result<(), SnapshotFileError> {
    tokio::task::spawn_blocking(move || save_blocking::<C>(&dir, &meta, &data))
        .await
        .map_err(|source| SnapshotFileError::Task {
            verb: ErrorVerb::Write,
            source,
        })?
}

/// Reads the current snapshot of `dir` on tokio's blocking pool (see
/// [`load_latest_blocking`]).
///
/// # Errors
/// As [`load_latest_blocking`], and [`SnapshotFileError::Task`].
///
/// # Cancel safety
/// Cancel safe: reading changes nothing.
pub async fn load_latest<C: RaftTypeConfig>(
    dir: PathBuf,
) -> Result<Option<StoredSnapshot<C>>, SnapshotFileError> {
    tokio::task::spawn_blocking(move || load_latest_blocking::<C>(&dir))
        .await
        .map_err(|source| SnapshotFileError::Task {
            verb: ErrorVerb::Read,
            source,
        })?
}

/// Creates `dir` when absent and then fsyncs its parent, so that the directory entry
/// survives a crash along with the files written into it.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => {
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(parent)?.sync_all()
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the temporary files of [`write_atomic`] for the snapshot file that a crash left
/// in `dir`. Left in place, one named after a process id that comes round again (a restarted
/// container's) would make every later save fail.
fn remove_stale_temp_files(dir: &Path) -> io::Result<()> {
    let prefix = format!(".{SNAPSHOT_FILE_NAME}.tmp.");
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let is_stale = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(&prefix));
        if is_stale {
            match fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::{LogId, Membership, StoredMembership};

    use super::*;

    openraft::declare_raft_types!(TestConfig: SnapshotData = Cursor<Vec<u8>>);

    fn meta() -> SnapshotMeta<u64, openraft::BasicNode> {
        let log_id = LogId::new(openraft::CommittedLeaderId::new(3, 1), 42);
        let voters = BTreeSet::from([1, 2, 3]);
        SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::new(
                Some(log_id),
                Membership::new(vec![voters], None),
            ),
            snapshot_id: "3-42-1".to_owned(),
        }
    }

    fn snapshot_bytes() -> Vec<u8> {
        encode::<TestConfig>(&meta(), b"the cluster map").unwrap()
    }

    #[test]
    fn snapshot_round_trips_through_the_format() {
        let decoded = decode::<TestConfig>(&snapshot_bytes()).unwrap();
        assert_eq!(decoded.meta, meta());
        assert_eq!(decoded.data, b"the cluster map");
    }

    #[test]
    fn empty_data_round_trips() {
        let bytes = encode::<TestConfig>(&meta(), b"").unwrap();
        assert!(decode::<TestConfig>(&bytes).unwrap().data.is_empty());
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = snapshot_bytes();
        for len in 0..bytes.len() {
            assert!(decode::<TestConfig>(&bytes[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = snapshot_bytes();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x01;
            assert!(decode::<TestConfig>(&damaged).is_err(), "byte {i}");
        }
    }

    #[test]
    fn newer_format_version_is_refused_by_name() {
        let mut bytes = snapshot_bytes();
        bytes[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            decode::<TestConfig>(&bytes).unwrap_err(),
            FormatError::NewerFormat {
                version: FORMAT_VERSION + 1,
                supported: FORMAT_VERSION
            }
        );
    }

    #[test]
    fn ring_file_is_not_a_snapshot() {
        let mut bytes = snapshot_bytes();
        bytes[..8].copy_from_slice(b"NIMBRING");
        assert!(matches!(
            decode::<TestConfig>(&bytes),
            Err(FormatError::WrongMagic { .. })
        ));
    }

    #[test]
    fn checksummed_garbage_meta_is_refused() {
        // A frame whose checksum holds but whose meta is not JSON: written by a bug, not
        // by a disk, and still refused.
        let mut w = Writer::default();
        w.put_u32(3);
        w.put_bytes(b"{{{");
        w.put_u64(0);
        let payload = w.into_inner();
        let mut f = Writer::default();
        f.put_bytes(MAGIC);
        f.put_u16(FORMAT_VERSION);
        f.put_u16(0);
        f.put_u64(payload.len() as u64);
        f.put_bytes(&payload);
        let sum = blake3::hash(f.as_slice());
        f.put_bytes(sum.as_bytes());
        assert!(matches!(
            decode::<TestConfig>(&f.into_inner()),
            Err(FormatError::Invalid { .. })
        ));
    }
}

//! The fragment store of one device: fragment files, written so that nothing half-written
//! is ever visible, read so that no corrupt byte is ever returned.
//!
//! Layout under the device directory:
//!
//! ```text
//! objects/<policy>/<partition>/<hash prefix>/<object hash>/<version>.<fragment index>          committed (durable)
//! objects/<policy>/<partition>/<hash prefix>/<object hash>/<version>.<fragment index>.pending  written, not committed
//! tmp/<write id>        being written
//! quarantine/<…>        failed verification; never served
//! ```
//!
//! `<object hash>` is the hex blake3 of the object path, `<hash prefix>` its first three hex
//! digits, `<version>` 16 hex digits. Every component is a number, a hash or a validated
//! policy name, so no request can name a path outside the device.
//!
//! Write protocol (two phases, as Swift's `.durable`): a [`FragmentWriter`] streams the
//! fragment into `tmp/` in aligned writes, fsyncs it, renames it to `….pending` and fsyncs the
//! directory: the data is durable but not yet part of the object. [`FragmentStore::commit`]
//! renames it to its final name and fsyncs the directory. A crash at any point leaves either
//! no file, a `tmp/` file (removed when the store opens), a `.pending` file (committed or
//! collected later) or the committed file — never a partial file under a final or pending
//! name.

mod reader;
mod summary;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::fragment::{FragmentError, FragmentHeader};
use nimbus_core::ids::{PartitionId, VersionId};

use crate::io::Engine;

pub use reader::FragmentReader;
pub use summary::PartitionSummary;
use summary::{Found, Summaries};
pub use writer::FragmentWriter;

/// Names one fragment of one object version on a device.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FragmentId {
    /// The storage policy's name (validated: `a-z 0-9 . _ + -`).
    pub policy: String,
    /// The ring partition of the object path.
    pub partition: PartitionId,
    /// `account/container/object`.
    pub object_path: String,
    /// The object version.
    pub version: VersionId,
    /// The fragment index (the slot).
    pub index: u8,
}

impl FragmentId {
    fn object_hash(&self) -> String {
        blake3::hash(self.object_path.as_bytes())
            .to_hex()
            .to_string()
    }

    fn object_dir(&self, root: &Path) -> PathBuf {
        let hash = self.object_hash();
        root.join("objects")
            .join(&self.policy)
            .join(self.partition.0.to_string())
            .join(&hash[..3])
            .join(hash)
    }

    fn file_name(&self) -> String {
        format!("{}.{}", self.version, self.index)
    }
}

/// A fragment found by a partition listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedFragment {
    /// Hex blake3 of the object path.
    pub object_hash: String,
    /// The version.
    pub version: VersionId,
    /// The fragment index.
    pub index: u8,
    /// Committed, or only written.
    pub durable: bool,
}

/// Settings of a device's fragment store.
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// Refuse new fragments while the file system has less than this free.
    pub reserve_bytes: u64,
    /// Block record size of new fragments (a multiple of 4096).
    pub block_record_bytes: u32,
    /// Write with O_DIRECT where the file system allows it.
    pub direct_io: bool,
    /// How long a partition's summary is trusted when nothing the store did changed the
    /// partition: how long a fragment removed behind the store's back may go unnoticed.
    pub summary_max_age: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            reserve_bytes: 1 << 30,
            block_record_bytes: nimbus_core::fragment::DEFAULT_BLOCK_RECORD_BYTES,
            direct_io: true,
            summary_max_age: Duration::from_secs(600),
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The device is full, or below its reserve: the caller should try a handoff (507).
    #[error("device full: {available} bytes free, reserve {reserve}")]
    Full {
        /// Bytes free.
        available: u64,
        /// The configured reserve.
        reserve: u64,
    },
    /// No such fragment (or no pending write to commit).
    #[error("fragment not found: {path}")]
    NotFound {
        /// What was looked for.
        path: PathBuf,
    },
    /// The fragment failed verification; it was moved to quarantine.
    #[error("fragment {path} is corrupt ({source}); quarantined")]
    Corrupt {
        /// Where it was.
        path: PathBuf,
        /// What failed.
        source: FragmentError,
    },
    /// The request is malformed (bad policy name, range outside the fragment, …).
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong.
        reason: String,
    },
    /// The disk failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: io::Error) -> StoreError {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return StoreError::Full {
                available: 0,
                reserve: 0,
            };
        }
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The fragment store of one device.
#[derive(Clone, Debug)]
pub struct FragmentStore {
    root: PathBuf,
    engine: Engine,
    config: StoreConfig,
    summaries: Arc<Summaries>,
}

impl FragmentStore {
    /// Opens the store in device directory `root`, creating its directories and removing
    /// leftovers of writes that a crash interrupted.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directories cannot be created or read.
    pub async fn open(
        root: &Path,
        engine: Engine,
        config: StoreConfig,
    ) -> Result<Self, StoreError> {
        nimbus_core::fragment::validate_block_record_bytes(config.block_record_bytes).map_err(
            |e| StoreError::BadRequest {
                reason: e.to_string(),
            },
        )?;
        for dir in ["objects", "tmp", "quarantine"] {
            let path = root.join(dir);
            engine
                .create_dir_all(&path)
                .await
                .map_err(|e| StoreError::io(&path, e))?;
        }
        let tmp = root.join("tmp");
        for name in engine
            .list_dir(&tmp)
            .await
            .map_err(|e| StoreError::io(&tmp, e))?
        {
            let path = tmp.join(name);
            engine
                .remove_file(&path)
                .await
                .map_err(|e| StoreError::io(&path, e))?;
        }
        Ok(FragmentStore {
            root: root.to_path_buf(),
            engine,
            config,
            summaries: Arc::new(Summaries::new(config.summary_max_age)),
        })
    }

    /// Returns the device directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns the engine.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn check_policy(policy: &str) -> Result<(), StoreError> {
        nimbus_core::policy::validate_name(policy).map_err(|e| StoreError::BadRequest {
            reason: e.to_string(),
        })
    }

    /// Fails with [`StoreError::Full`] when the file system is below the reserve.
    async fn check_space(&self) -> Result<(), StoreError> {
        let (available, _) = self
            .engine
            .space(&self.root)
            .await
            .map_err(|e| StoreError::io(&self.root, e))?;
        if available < self.config.reserve_bytes {
            return Err(StoreError::Full {
                available,
                reserve: self.config.reserve_bytes,
            });
        }
        Ok(())
    }

    /// Starts writing a fragment; see [`FragmentWriter`].
    ///
    /// # Errors
    /// [`StoreError::Full`] below the reserve, [`StoreError::BadRequest`] for a bad id or a
    /// header that does not match it, [`StoreError::Io`].
    pub async fn begin_write(
        &self,
        id: FragmentId,
        header: FragmentHeader,
    ) -> Result<FragmentWriter, StoreError> {
        Self::check_policy(&id.policy)?;
        if header.version != id.version
            || header.fragment_index != id.index
            || header.object_path != id.object_path
            || header.policy != id.policy
        {
            return Err(StoreError::BadRequest {
                reason: "fragment header does not match its id".into(),
            });
        }
        self.check_space().await?;
        FragmentWriter::start(self.clone(), id, header).await
    }

    /// Makes a written fragment durable: renames `….pending` to its final name. Committing a
    /// committed fragment again succeeds.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when nothing was written for `id`.
    pub async fn commit(&self, id: &FragmentId) -> Result<(), StoreError> {
        Self::check_policy(&id.policy)?;
        let dir = id.object_dir(&self.root);
        let done = dir.join(id.file_name());
        let pending = dir.join(format!("{}.pending", id.file_name()));
        let (from, to, synced) = (pending.clone(), done.clone(), dir.clone());
        // One trip off the async workers: the rename, then the directory sync.
        let found = self
            .engine
            .metadata(move || match std::fs::rename(&from, &to) {
                Ok(()) => writer::sync_dir(&synced).map(|()| true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => to.try_exists(),
                Err(e) => Err(e),
            })
            .await;
        self.summaries.changed(&id.policy, id.partition);
        match found {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::NotFound { path: pending }),
            Err(e) => Err(StoreError::io(&dir, e)),
        }
    }

    /// Opens a committed fragment for reading `range` of its data (clamped to its length).
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Corrupt`] (the file is quarantined),
    /// [`StoreError::Io`].
    pub async fn read(
        &self,
        id: &FragmentId,
        range: std::ops::Range<u64>,
    ) -> Result<FragmentReader, StoreError> {
        Self::check_policy(&id.policy)?;
        let path = id.object_dir(&self.root).join(id.file_name());
        FragmentReader::open(self.clone(), path, range).await
    }

    /// Opens a committed fragment file by its path (the auditor walks the directories),
    /// for reading all of it.
    ///
    /// # Errors
    /// As [`FragmentStore::read`].
    pub(crate) async fn open_path(&self, path: PathBuf) -> Result<FragmentReader, StoreError> {
        FragmentReader::open(self.clone(), path, 0..u64::MAX).await
    }

    /// Removes a fragment (committed or pending).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when neither exists.
    pub async fn delete(&self, id: &FragmentId) -> Result<(), StoreError> {
        Self::check_policy(&id.policy)?;
        let dir = id.object_dir(&self.root);
        let names = [id.file_name(), format!("{}.pending", id.file_name())];
        let at = dir.clone();
        // Both names, then the directory sync, in one trip off the async workers.
        let removed = self
            .engine
            .metadata(move || {
                let mut found = false;
                for name in names {
                    let path = at.join(name);
                    match std::fs::remove_file(&path) {
                        Ok(()) => found = true,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Ok(Err((path, e))),
                    }
                }
                if found && let Err(e) = writer::sync_dir(&at) {
                    return Ok(Err((at, e)));
                }
                Ok(Ok(found))
            })
            .await;
        self.summaries.changed(&id.policy, id.partition);
        match removed {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(StoreError::NotFound {
                path: dir.join(id.file_name()),
            }),
            Ok(Err((path, e))) => Err(StoreError::io(&path, e)),
            Err(e) => Err(StoreError::io(&dir, e)),
        }
    }

    /// Moves a file that failed verification into `quarantine/`, where nothing reads it.
    pub(crate) async fn quarantine(&self, path: &Path) {
        let name = path
            .strip_prefix(self.root.join("objects"))
            .map(|p| p.to_string_lossy().replace('/', "_"))
            .unwrap_or_else(|_| "unknown".into());
        let to = self.root.join("quarantine").join(name);
        let renamed = self.engine.rename(path, &to).await;
        match self.partition_of(path) {
            Some((policy, partition)) => self.summaries.changed(&policy, partition),
            None => self.summaries.all_changed(),
        }
        match renamed {
            Ok(()) => {
                tracing::warn!(from = %path.display(), to = %to.display(), "fragment quarantined")
            }
            Err(error) => tracing::error!(%error, path = %path.display(), "quarantine failed"),
        }
    }

    /// The directory of a partition of `policy`.
    fn partition_dir(&self, policy: &str, partition: PartitionId) -> PathBuf {
        self.root
            .join("objects")
            .join(policy)
            .join(partition.0.to_string())
    }

    /// The (policy, partition) a path under `objects/` lies in.
    fn partition_of(&self, path: &Path) -> Option<(String, PartitionId)> {
        let mut parts = path.strip_prefix(self.root.join("objects")).ok()?.iter();
        let policy = parts.next()?.to_str()?.to_owned();
        let partition = parts.next()?.to_str()?.parse().ok()?;
        Some((policy, PartitionId(partition)))
    }

    /// Lists the fragments of a partition, sorted (a walk of its directories, off the async
    /// workers in one trip).
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub async fn list_partition(
        &self,
        policy: &str,
        partition: PartitionId,
    ) -> Result<Vec<ListedFragment>, StoreError> {
        Self::check_policy(policy)?;
        let dir = self.partition_dir(policy, partition);
        let ask = self.summaries.ask(policy, partition);
        let walked = dir.clone();
        let (id, fragments) = self
            .engine
            .metadata(move || Ok((summary::dir_id(&walked)?, summary::walk(&walked)?)))
            .await
            .map_err(|e| StoreError::io(&dir, e))?;
        let summary = Arc::new(PartitionSummary::of(&fragments));
        self.summaries
            .keep(policy, partition, ask.generation, id, summary);
        Ok(fragments)
    }

    /// Returns what a partition holds committed here: kept between calls while the
    /// partition is unchanged (see `store/summary.rs`), walked otherwise.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub async fn partition_summary(
        &self,
        policy: &str,
        partition: PartitionId,
    ) -> Result<Arc<PartitionSummary>, StoreError> {
        let mut all = self.partition_summaries(policy, vec![partition]).await?;
        Ok(all.pop().map(|(_, s)| s).unwrap_or_default())
    }

    /// The summaries of `partitions` of `policy`, checked or walked in one trip off the async
    /// workers.
    async fn partition_summaries(
        &self,
        policy: &str,
        partitions: Vec<PartitionId>,
    ) -> Result<Vec<(PartitionId, Arc<PartitionSummary>)>, StoreError> {
        Self::check_policy(policy)?;
        let asks: Vec<_> = partitions
            .into_iter()
            .map(|p| {
                let ask = self.summaries.ask(policy, p);
                (p, self.partition_dir(policy, p), ask)
            })
            .collect();
        let found = self
            .engine
            .metadata(move || {
                asks.into_iter()
                    .map(|(p, dir, ask)| {
                        let found = summary::check_or_walk(&dir, ask.kept.as_ref())?;
                        Ok((p, ask.generation, found))
                    })
                    .collect::<io::Result<Vec<_>>>()
            })
            .await
            .map_err(|e| StoreError::io(&self.root.join("objects").join(policy), e))?;
        Ok(found
            .into_iter()
            .map(|(p, generation, found)| match found {
                Found::Kept(summary) => (p, summary),
                Found::Walked { dir, fragments } => {
                    let summary = Arc::new(PartitionSummary::of(&fragments));
                    self.summaries
                        .keep(policy, p, generation, dir, Arc::clone(&summary));
                    (p, summary)
                }
            })
            .collect())
    }

    /// Opens a fragment a partition listing found, for reading all of it: its header holds
    /// the object path the listing lacks.
    ///
    /// # Errors
    /// As [`FragmentStore::read`]; [`StoreError::NotFound`] for a pending fragment.
    pub async fn open_listed(
        &self,
        policy: &str,
        partition: PartitionId,
        fragment: &ListedFragment,
    ) -> Result<FragmentReader, StoreError> {
        Self::check_policy(policy)?;
        if fragment.object_hash.len() < 3
            || !fragment.object_hash.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(StoreError::BadRequest {
                reason: format!("object hash {:?}", fragment.object_hash),
            });
        }
        let path = self
            .root
            .join("objects")
            .join(policy)
            .join(partition.0.to_string())
            .join(&fragment.object_hash[..3])
            .join(&fragment.object_hash)
            .join(format!("{}.{}", fragment.version, fragment.index));
        FragmentReader::open(self.clone(), path, 0..u64::MAX).await
    }

    /// Returns, for every partition of `policy` with committed fragments on this device, the
    /// [`objects_digest`] of each fragment index found there: what another device compares
    /// its slots with, in one call per pass rather than one per partition.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub async fn policy_objects_digests(
        &self,
        policy: &str,
    ) -> Result<Vec<(PartitionId, Vec<(u8, [u8; 32])>)>, StoreError> {
        Self::check_policy(policy)?;
        let dir = self.root.join("objects").join(policy);
        let partitions = self
            .list(&dir)
            .await?
            .into_iter()
            .filter_map(|name| name.parse::<u32>().ok().map(PartitionId))
            .collect();
        Ok(self
            .partition_summaries(policy, partitions)
            .await?
            .into_iter()
            .filter(|(_, s)| !s.digests.is_empty())
            .map(|(p, s)| (p, s.digests.clone()))
            .collect())
    }

    /// Lists the (policy, partition) pairs that have a directory on this device.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub async fn partitions_on_disk(&self) -> Result<Vec<(String, PartitionId)>, StoreError> {
        let objects = self.root.join("objects");
        let mut out = Vec::new();
        let policies = match self.engine.list_dir(&objects).await {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StoreError::io(&objects, e)),
        };
        for policy in policies {
            if Self::check_policy(&policy).is_err() {
                continue;
            }
            for partition in self.list(&objects.join(&policy)).await? {
                if let Ok(p) = partition.parse::<u32>() {
                    out.push((policy.clone(), PartitionId(p)));
                }
            }
        }
        Ok(out)
    }

    async fn list(&self, dir: &Path) -> Result<Vec<String>, StoreError> {
        self.engine
            .list_dir(dir)
            .await
            .map_err(|e| StoreError::io(dir, e))
    }

    /// Returns a digest of a partition's listing, so that two devices compare a partition by
    /// exchanging 32 bytes.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub async fn partition_digest(
        &self,
        policy: &str,
        partition: PartitionId,
    ) -> Result<[u8; 32], StoreError> {
        Ok(listing_digest(
            &self.list_partition(policy, partition).await?,
        ))
    }
}

/// The digest [`FragmentStore::partition_digest`] returns, of a partition's listing (sorted,
/// as [`FragmentStore::list_partition`] returns it).
#[must_use]
pub fn listing_digest(fragments: &[ListedFragment]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for f in fragments {
        hasher.update(f.object_hash.as_bytes());
        hasher.update(&f.version.0.to_le_bytes());
        hasher.update(&[f.index, u8::from(f.durable)]);
    }
    *hasher.finalize().as_bytes()
}

/// Returns the digest of a partition's object versions: the blake3 of the distinct
/// (object hash, version) pairs, sorted, of the committed fragments `fragments` lists (sorted,
/// as [`FragmentStore::list_partition`] returns them), whatever their fragment index, or only
/// those of fragment index `index`. All slots of a healthy partition hold the same pairs, so
/// two devices compare a partition by exchanging 32 bytes.
#[must_use]
pub fn objects_digest(fragments: &[ListedFragment], index: Option<u8>) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    let mut last: Option<(&str, VersionId)> = None;
    for f in fragments
        .iter()
        .filter(|f| f.durable && index.is_none_or(|i| f.index == i))
    {
        let pair = (f.object_hash.as_str(), f.version);
        if last == Some(pair) {
            continue;
        }
        last = Some(pair);
        hasher.update(f.object_hash.as_bytes());
        hasher.update(&f.version.0.to_le_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// Parses `<version hex>.<index>[.pending]`.
pub(crate) fn parse_fragment_name(object_hash: &str, name: &str) -> Option<ListedFragment> {
    let (stem, durable) = match name.strip_suffix(".pending") {
        Some(stem) => (stem, false),
        None => (name, true),
    };
    let (version, index) = stem.split_once('.')?;
    if version.len() != 16 {
        return None;
    }
    Some(ListedFragment {
        object_hash: object_hash.to_owned(),
        version: VersionId(u64::from_str_radix(version, 16).ok()?),
        index: index.parse().ok()?,
        durable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(hash: &str, version: u64, index: u8, durable: bool) -> ListedFragment {
        ListedFragment {
            object_hash: hash.into(),
            version: VersionId(version),
            index,
            durable,
        }
    }

    #[test]
    fn the_objects_digest_ignores_the_index_and_pending_fragments() {
        let slot0 = [listed("aa", 1, 0, true), listed("bb", 2, 0, true)];
        let slot3 = [
            listed("aa", 1, 3, true),
            listed("bb", 2, 3, true),
            listed("cc", 3, 3, false), // a PUT under way
        ];
        assert_eq!(objects_digest(&slot0, None), objects_digest(&slot3, None));
        assert_eq!(
            objects_digest(&slot0, Some(0)),
            objects_digest(&slot3, Some(3))
        );
        assert_ne!(
            objects_digest(&slot0, Some(0)),
            objects_digest(&slot3, Some(0))
        );
        // A handoff holding two fragments of one version counts the version once.
        let both = [listed("aa", 1, 0, true), listed("aa", 1, 3, true)];
        assert_eq!(
            objects_digest(&both, None),
            objects_digest(&slot0[..1], None)
        );
        assert_ne!(
            objects_digest(&slot0[..1], None),
            objects_digest(&slot0, None)
        );
    }
}

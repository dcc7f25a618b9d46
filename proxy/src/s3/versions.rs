//! Bucket versioning (S3): `Enabled` keeps every version of a key, `Suspended` keeps those
//! it has and lets new writes replace the `null` version.
//!
//! The bucket's index still holds each key's current entry (so GET, HEAD and listings read
//! it as before). Once versioning has been turned on, every write is also recorded in the
//! bucket's `#versions` index container under `key NUL (u64::MAX - version)` in hex, so one
//! key's records sort together, newest first; the record is written before the current entry,
//! so an acknowledged version is always recorded. Delete markers are records with no bytes and
//! the `:delete-marker` pair (the current entry is then a tombstone). A version written while
//! versioning was `Enabled` carries the `:vid` pair and is named by its version; any other is
//! the `null` version. Objects written before versioning was turned on have no record until a
//! write replaces them; then they are recorded as the `null` version.
//!
//! The fragments of a deleted version are left to garbage collection, as an overwritten
//! object's are.

use nimbus_core::ids::VersionId;
use nimbus_core::index::{EntryData, IndexEntry, IndexRecord};
use nimbus_ring::map::{Bucket, MapCommand, MapError, Versioning};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3State;
use super::buckets::owned;
use super::error::to_s3;
use super::list::after_prefix;
use super::objects::{ReadConditions, check_key, etag_value, last_modified, write_new_entry};
use crate::index::{Condition, IndexClient};
use crate::meta_write;

/// Marks an entry written while versioning was `Enabled`: its version id is its version.
const VERSIONED: &str = ":vid";
/// Marks a record that is a delete marker.
const DELETE_MARKER: &str = ":delete-marker";
/// The version id of versions written while versioning was off or suspended.
pub const NULL: &str = "null";
/// The most records of one key read at once.
const PAGE: usize = 1000;
/// The most versions one listing answers, as in S3.
const MAX_KEYS: usize = 1000;

pub(crate) fn versions_container(bucket: &str) -> String {
    format!("{bucket}#versions")
}

fn record_key(key: &str, version: VersionId) -> String {
    format!("{key}\0{:016x}", u64::MAX - version.0)
}

/// The object key and version of a record key.
fn parse_record_key(record: &str) -> Option<(&str, VersionId)> {
    let (key, inverted) = record.rsplit_once('\0')?;
    let inverted = u64::from_str_radix(inverted, 16).ok()?;
    Some((key, VersionId(u64::MAX - inverted)))
}

fn has(entry: &IndexEntry, flag: &str) -> bool {
    entry.user_metadata.iter().any(|(k, _)| k == flag)
}

fn is_delete_marker(entry: &IndexEntry) -> bool {
    has(entry, DELETE_MARKER)
}

/// An entry's version id as S3 names it.
fn id_of(entry: &IndexEntry) -> String {
    if has(entry, VERSIONED) {
        entry.version.to_string()
    } else {
        NULL.to_owned()
    }
}

/// The version id a response reports for `entry` of `bucket`: none while versioning has
/// never been on.
pub(crate) fn version_id(entry: &IndexEntry, bucket: &Bucket) -> Option<String> {
    (bucket.versioning != Versioning::Unversioned).then(|| id_of(entry))
}

/// Reads a version id from a request: `null` or 16 hex digits.
fn parse_id(id: &str) -> S3Result<Option<VersionId>> {
    if id == NULL {
        return Ok(None);
    }
    let ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    match u64::from_str_radix(id, 16) {
        Ok(v) if ok => Ok(Some(VersionId(v))),
        _ => Err(s3_error!(InvalidArgument, "Invalid version id specified")),
    }
}

struct Records<'a> {
    state: &'a S3State,
    account: &'a str,
    container: String,
    shards: u16,
}

impl<'a> Records<'a> {
    fn of(state: &'a S3State, account: &'a str, name: &str, bucket: &Bucket) -> Self {
        Records {
            state,
            account,
            container: versions_container(name),
            shards: bucket.shards,
        }
    }

    async fn put(&self, key: &str, entry: &IndexEntry) -> S3Result<()> {
        let rk = record_key(key, entry.version);
        let shard = IndexClient::shard_of(self.account, &self.container, &rk, self.shards);
        self.state
            .index
            .write(&shard, &rk, entry, &Condition::None)
            .await
            .map(|_| ())
            .map_err(to_s3)
    }

    async fn remove(&self, key: &str, version: VersionId, policy: &str) -> S3Result<()> {
        let rk = record_key(key, version);
        let shard = IndexClient::shard_of(self.account, &self.container, &rk, self.shards);
        let tombstone = IndexEntry::tombstone(self.state.data.clock.next(), policy);
        self.state
            .index
            .write(&shard, &rk, &tombstone, &Condition::None)
            .await
            .map(|_| ())
            .map_err(to_s3)
    }

    async fn get(&self, key: &str, version: VersionId) -> S3Result<Option<IndexEntry>> {
        let rk = record_key(key, version);
        let shard = IndexClient::shard_of(self.account, &self.container, &rk, self.shards);
        let record = self.state.index.read(&shard, &rk).await.map_err(to_s3)?;
        Ok(record.map(|r| r.entry).filter(|e| !e.is_tombstone()))
    }

    /// The key's records, newest first (`limit` at most).
    async fn of_key(&self, key: &str, limit: usize) -> S3Result<Vec<IndexEntry>> {
        let records = self
            .state
            .index
            .list(
                self.account,
                &self.container,
                self.shards,
                &format!("{key}\0"),
                None,
                limit,
            )
            .await
            .map_err(to_s3)?;
        Ok(records
            .into_iter()
            .filter(|r| parse_record_key(&r.key).is_some_and(|(k, _)| k == key))
            .map(|r| r.entry)
            .collect())
    }
}

async fn current(
    state: &S3State,
    account: &str,
    name: &str,
    bucket: &Bucket,
    key: &str,
) -> S3Result<Option<IndexEntry>> {
    let shard = IndexClient::shard_of(account, name, key, bucket.shards);
    Ok(state
        .index
        .read(&shard, key)
        .await
        .map_err(to_s3)?
        .map(|r| r.entry))
}

/// Before a write replaces a key's current entry: records an entry written before versioning
/// was turned on (the `null` version); under `Suspended`, drops the `null` version the new
/// write replaces.
async fn before_write(
    records: &Records<'_>,
    current: Option<&IndexEntry>,
    key: &str,
    versioning: Versioning,
) -> S3Result<()> {
    if let Some(cur) = current.filter(|c| !c.is_tombstone())
        && records.get(key, cur.version).await?.is_none()
    {
        records.put(key, cur).await?;
    }
    if versioning == Versioning::Suspended {
        let mut after_all = records.of_key(key, PAGE).await?;
        after_all.retain(|e| !has(e, VERSIONED));
        for null in after_all {
            records.remove(key, null.version, &null.policy).await?;
        }
    }
    Ok(())
}

/// Writes `entry` as `key`'s current entry under `condition`, recording it first when the
/// bucket is versioned; returns the version id to report.
///
/// # Errors
/// As the index write; a record whose current entry could not be written is withdrawn.
pub(crate) async fn commit(
    state: &S3State,
    account: &str,
    name: &str,
    bucket: &Bucket,
    key: &str,
    mut entry: IndexEntry,
    condition: &Condition,
) -> S3Result<Option<String>> {
    // Pairs copied from another version are not this one's.
    entry
        .user_metadata
        .retain(|(k, _)| k != VERSIONED && k != DELETE_MARKER);
    let shard = IndexClient::shard_of(account, name, key, bucket.shards);
    if bucket.versioning == Versioning::Unversioned {
        write_new_entry(state, bucket, &shard, key, &entry, condition)
            .await
            .map_err(to_s3)?;
        queue_expiry(state, account, (name, bucket), key, &entry).await;
        return Ok(None);
    }
    if bucket.versioning == Versioning::Enabled {
        entry
            .user_metadata
            .push((VERSIONED.to_owned(), String::new()));
        entry
            .validate()
            .map_err(|e| s3_error!(MetadataTooLarge, "{e}"))?;
    }
    let records = Records::of(state, account, name, bucket);
    let cur = current(state, account, name, bucket, key).await?;
    before_write(&records, cur.as_ref(), key, bucket.versioning).await?;
    let mut record = entry.clone();
    if entry.is_tombstone() {
        // The record of a delete marker is a live entry, so that listings see it.
        record.data = EntryData::Inline(Vec::new());
        record
            .user_metadata
            .push((DELETE_MARKER.to_owned(), String::new()));
    }
    records.put(key, &record).await?;
    if let Err(e) = write_new_entry(state, bucket, &shard, key, &entry, condition).await {
        // Not acknowledged: the record goes too (if this fails as well, a version nobody
        // was told about stays listed, as after any write whose outcome was unknown).
        let _ = records.remove(key, entry.version, &entry.policy).await;
        return Err(to_s3(e));
    }
    queue_expiry(state, account, (name, bucket), key, &entry).await;
    Ok(Some(id_of(&entry)))
}

/// Queues an entry with an expiry for the expirer; failing costs little (the object still
/// expires on its first read after its time).
async fn queue_expiry(
    state: &S3State,
    account: &str,
    bucket: (&str, &Bucket),
    key: &str,
    entry: &IndexEntry,
) {
    if let Err(e) = crate::expirer::enqueue(state, account, bucket, key, entry).await {
        tracing::debug!(error = %e, "expiry not queued; the first read after it deletes");
    }
}

/// The entry GET or HEAD reads: the current one, or the version asked for; and the version
/// id to report.
///
/// # Errors
/// As [`readable`] and `objects::readable_entry`.
pub(crate) async fn read(
    state: &S3State,
    account: &str,
    name: &str,
    key: &str,
    id: Option<&str>,
    conditions: &ReadConditions<'_>,
) -> S3Result<(IndexEntry, Option<String>)> {
    let entry = match id {
        Some(id) => readable(state, account, name, key, id, conditions).await?,
        None => super::objects::readable_entry(state, account, name, key, conditions).await?,
    };
    let bucket = owned(state, account, name)?;
    let id = version_id(&entry, &bucket);
    Ok((entry, id))
}

/// The entry of a version (`versionId`), readable under `conditions`.
///
/// # Errors
/// `NoSuchVersion`, `MethodNotAllowed` for a delete marker, `InvalidArgument` for a
/// malformed id, and the conditions' errors.
pub(crate) async fn readable(
    state: &S3State,
    account: &str,
    name: &str,
    key: &str,
    id: &str,
    conditions: &ReadConditions<'_>,
) -> S3Result<IndexEntry> {
    let bucket = owned(state, account, name)?;
    check_key(key)?;
    let entry = find(state, account, name, &bucket, key, id)
        .await?
        .ok_or_else(|| s3_error!(NoSuchVersion))?;
    if is_delete_marker(&entry) || entry.is_tombstone() {
        return Err(s3_error!(
            MethodNotAllowed,
            "The specified method is not allowed against a delete marker"
        ));
    }
    conditions.check(&entry)?;
    Ok(entry)
}

/// Finds a version's entry: a record, or the current entry when it is the unrecorded `null`
/// version.
async fn find(
    state: &S3State,
    account: &str,
    name: &str,
    bucket: &Bucket,
    key: &str,
    id: &str,
) -> S3Result<Option<IndexEntry>> {
    let records = Records::of(state, account, name, bucket);
    match parse_id(id)? {
        Some(version) => Ok(records
            .get(key, version)
            .await?
            .filter(|e| has(e, VERSIONED))),
        None => {
            let recorded = records.of_key(key, PAGE).await?;
            if let Some(null) = recorded.into_iter().find(|e| !has(e, VERSIONED)) {
                return Ok(Some(null));
            }
            Ok(current(state, account, name, bucket, key)
                .await?
                .filter(|e| !e.is_tombstone() && !has(e, VERSIONED)))
        }
    }
}

/// Rewrites the metadata pairs of one version (`id`, or the current one) with `change`: its
/// record, and the current entry too when it is that version; same version, same data, each
/// under `IfVersion`, so a racing delete or newer write is never undone. Returns the version
/// as rewritten.
///
/// # Errors
/// `NoSuchKey`, `NoSuchVersion`, `MethodNotAllowed` for a delete marker, an index error, or
/// `OperationAborted` when the version went while it was rewritten.
pub(crate) async fn rewrite_version(
    state: &S3State,
    account: &str,
    (name, bucket): (&str, &Bucket),
    key: &str,
    id: Option<&str>,
    change: impl Fn(&mut Vec<(String, String)>),
) -> S3Result<IndexEntry> {
    check_key(key)?;
    let cur = current(state, account, name, bucket, key).await?;
    let target = match id {
        Some(id) => find(state, account, name, bucket, key, id)
            .await?
            .ok_or_else(|| s3_error!(NoSuchVersion))?,
        None => cur
            .clone()
            .filter(|c| !c.is_tombstone())
            .ok_or_else(|| s3_error!(NoSuchKey))?,
    };
    if is_delete_marker(&target) || target.is_tombstone() {
        return Err(s3_error!(
            MethodNotAllowed,
            "The specified method is not allowed against a delete marker"
        ));
    }
    let mut entry = target.clone();
    change(&mut entry.user_metadata);
    entry
        .validate()
        .map_err(|e| s3_error!(InvalidTag, "the tags do not fit the object: {e}"))?;
    let condition = Condition::IfVersion(target.version);
    let aborted = || {
        s3_error!(
            OperationAborted,
            "A conflicting operation is currently in progress against this resource. Please try again."
        )
    };
    let records = Records::of(state, account, name, bucket);
    if records.get(key, target.version).await?.is_some() {
        let rk = record_key(key, target.version);
        let shard = IndexClient::shard_of(account, &records.container, &rk, bucket.shards);
        match state.index.write(&shard, &rk, &entry, &condition).await {
            Ok(_) => {}
            Err(crate::error::DataError::PreconditionFailed) => return Err(aborted()),
            Err(e) => return Err(to_s3(e)),
        }
    }
    if cur.is_some_and(|c| c.version == target.version) {
        let shard = IndexClient::shard_of(account, name, key, bucket.shards);
        match state.index.write(&shard, key, &entry, &condition).await {
            // A newer write took the key: this version is no longer current.
            Ok(_) | Err(crate::error::DataError::PreconditionFailed) => {}
            Err(e) => return Err(to_s3(e)),
        }
    }
    Ok(entry)
}

/// The entry of a version (`id`) or the current one, tombstones and delete markers refused.
///
/// # Errors
/// `NoSuchKey`, `NoSuchVersion`, `MethodNotAllowed`.
pub(crate) async fn version_entry(
    state: &S3State,
    account: &str,
    (name, bucket): (&str, &Bucket),
    key: &str,
    id: Option<&str>,
) -> S3Result<IndexEntry> {
    check_key(key)?;
    let entry = match id {
        Some(id) => find(state, account, name, bucket, key, id)
            .await?
            .ok_or_else(|| s3_error!(NoSuchVersion))?,
        None => current(state, account, name, bucket, key)
            .await?
            .filter(|c| !c.is_tombstone())
            .ok_or_else(|| s3_error!(NoSuchKey))?,
    };
    if is_delete_marker(&entry) || entry.is_tombstone() {
        return Err(s3_error!(
            MethodNotAllowed,
            "The specified method is not allowed against a delete marker"
        ));
    }
    Ok(entry)
}

/// DeleteObject on a versioned bucket (or with a `versionId`): without a version, a delete
/// marker becomes the current version; with one, that version goes, and if it was current
/// the newest one left takes its place.
pub async fn delete(
    state: &S3State,
    account: &str,
    bucket: &Bucket,
    input: &DeleteObjectInput,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let (name, key) = (input.bucket.as_str(), input.key.as_str());
    let Some(id) = &input.version_id else {
        let marker = IndexEntry::tombstone(state.data.clock.next(), bucket.policy.clone());
        let version_id =
            commit(state, account, name, bucket, key, marker, &Condition::None).await?;
        return Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: Some(true),
            version_id,
            ..Default::default()
        }));
    };
    let Some(target) = find(state, account, name, bucket, key, id).await? else {
        // Deleting a version that is not there succeeds, as in S3.
        return Ok(S3Response::new(DeleteObjectOutput {
            version_id: Some(id.clone()),
            ..Default::default()
        }));
    };
    let records = Records::of(state, account, name, bucket);
    let cur = current(state, account, name, bucket, key).await?;
    // An unrecorded null version is recorded first, so that the steps below are the same.
    before_write(&records, cur.as_ref(), key, Versioning::Enabled).await?;
    records.remove(key, target.version, &target.policy).await?;
    if cur.as_ref().is_some_and(|c| c.version == target.version) {
        promote_newest(state, account, name, bucket, key, target.version).await?;
    }
    Ok(S3Response::new(DeleteObjectOutput {
        delete_marker: is_delete_marker(&target).then_some(true),
        version_id: Some(id.clone()),
        ..Default::default()
    }))
}

/// Makes the newest remaining version of `key` its current entry, in place of `replaced`;
/// with none left, a tombstone that no listing of versions shows.
async fn promote_newest(
    state: &S3State,
    account: &str,
    name: &str,
    bucket: &Bucket,
    key: &str,
    replaced: VersionId,
) -> S3Result<()> {
    let records = Records::of(state, account, name, bucket);
    let newest = records.of_key(key, 1).await?.into_iter().next();
    let entry = match newest {
        Some(mut e) if is_delete_marker(&e) => {
            e.data = EntryData::Tombstone;
            e.user_metadata.retain(|(k, _)| k != DELETE_MARKER);
            e
        }
        Some(e) => e,
        None => {
            let mut t = IndexEntry::tombstone(state.data.clock.next(), bucket.policy.clone());
            t.user_metadata.push((VERSIONED.to_owned(), String::new()));
            t
        }
    };
    let shard = IndexClient::shard_of(account, name, key, bucket.shards);
    match state
        .index
        .write(&shard, key, &entry, &Condition::IfVersion(replaced))
        .await
    {
        // A newer write took the key meanwhile: it is current, as it should be.
        Ok(_) | Err(crate::error::DataError::PreconditionFailed) => Ok(()),
        Err(e) => Err(to_s3(e)),
    }
}

pub async fn put_versioning(
    state: &S3State,
    account: &str,
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    let input = req.input;
    owned(state, account, &input.bucket)?;
    let status = input
        .versioning_configuration
        .status
        .as_ref()
        .map(BucketVersioningStatus::as_str);
    let wanted = match status {
        Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
        Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
        _ => {
            return Err(s3_error!(
                MalformedXML,
                "Status must be Enabled or Suspended"
            ));
        }
    };
    if input
        .versioning_configuration
        .mfa_delete
        .as_ref()
        .map(MFADelete::as_str)
        == Some(MFADelete::ENABLED)
    {
        return Err(s3_error!(NotImplemented, "MFA delete is not supported"));
    }
    let name = input.bucket.clone();
    let command = MapCommand::SetVersioning {
        name: name.clone(),
        state: wanted,
    };
    let shows = move |m: &nimbus_ring::map::ClusterMap| {
        m.bucket(&name).is_none_or(|b| b.versioning == wanted)
    };
    match meta_write::write(&state.cluster, &command, shows)
        .await
        .map_err(to_s3)?
    {
        Ok(_) => Ok(S3Response::new(PutBucketVersioningOutput {})),
        Err(MapError::NoSuchBucket { .. }) => Err(s3_error!(NoSuchBucket)),
        Err(e) => Err(s3_error!(InvalidRequest, "{e}")),
    }
}

pub fn get_versioning(
    state: &S3State,
    account: &str,
    req: &S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    let bucket = owned(state, account, &req.input.bucket)?;
    let status = match bucket.versioning {
        Versioning::Unversioned => None,
        Versioning::Enabled => Some(BucketVersioningStatus::from_static(
            BucketVersioningStatus::ENABLED,
        )),
        Versioning::Suspended => Some(BucketVersioningStatus::from_static(
            BucketVersioningStatus::SUSPENDED,
        )),
    };
    Ok(S3Response::new(GetBucketVersioningOutput {
        status,
        ..Default::default()
    }))
}

/// One item of a listing of versions.
enum Listed {
    Version(Box<Row>),
    Prefix(String),
}

/// One row of a listing of versions.
struct Row {
    key: String,
    entry: IndexEntry,
    latest: bool,
}

/// ListObjectVersions: the records merged with the current entries that have none (objects
/// from before versioning), key by key, newest first. Pages end on a whole version:
/// `NextKeyMarker` and `NextVersionIdMarker` resume after it.
pub async fn list(
    state: &S3State,
    account: &str,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let bucket = owned(state, account, &input.bucket)?;
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    let max_keys = match input.max_keys {
        Some(n) if n < 0 => return Err(s3_error!(InvalidArgument, "max-keys must be >= 0")),
        Some(n) => usize::try_from(n).unwrap_or(MAX_KEYS).min(MAX_KEYS),
        None => MAX_KEYS,
    };
    let prefix = input.prefix.clone().unwrap_or_default();
    let key_marker = input.key_marker.clone().filter(|k| !k.is_empty());
    let version_marker = match (&key_marker, input.version_id_marker.as_deref()) {
        (_, None | Some("")) => None,
        (None, Some(_)) => {
            return Err(s3_error!(
                InvalidArgument,
                "A version-id marker cannot be specified without a key marker."
            ));
        }
        (Some(_), Some(v)) => Some(v.to_owned()),
    };
    let name = input.bucket.as_str();
    let container = versions_container(name);
    // A key marker that is a common prefix resumes after every key under it.
    let marker_is_prefix = key_marker.as_ref().is_some_and(|k| {
        delimiter
            .as_ref()
            .is_some_and(|d| k.ends_with(d.as_str()) && k.starts_with(&prefix))
    });
    let currents_after = key_marker.as_ref().map(|k| {
        if marker_is_prefix {
            after_prefix(k)
        } else {
            k.clone()
        }
    });
    // Where the records resume: after the marker's version, or after all of the key's.
    let records_after = key_marker.as_ref().map(|k| match &version_marker {
        _ if marker_is_prefix => after_prefix(k),
        Some(v) if v != NULL => match parse_id(v) {
            Ok(Some(version)) => record_key(k, version),
            _ => format!("{k}\0\u{10FFFF}"),
        },
        _ => format!("{k}\0\u{10FFFF}"),
    });
    let want = max_keys + 1;
    let records = state
        .index
        .list(
            account,
            &container,
            bucket.shards,
            &prefix,
            records_after.as_deref(),
            want,
        )
        .await
        .map_err(to_s3)?;
    let currents = state
        .index
        .list(
            account,
            name,
            bucket.shards,
            &prefix,
            currents_after.as_deref(),
            want,
        )
        .await
        .map_err(to_s3)?;
    let resumed = version_marker.as_ref().and(key_marker.as_deref());
    let fold = delimiter.as_deref().map(|d| (prefix.as_str(), d));
    let (items, truncated) = merge(records, currents, want, max_keys, resumed, fold);
    let next = truncated
        .then(|| {
            items.last().map(|item| match item {
                Listed::Version(r) => (r.key.clone(), Some(id_of(&r.entry))),
                Listed::Prefix(p) => (p.clone(), None),
            })
        })
        .flatten();
    let mut versions = Vec::new();
    let mut markers = Vec::new();
    let mut prefixes = Vec::new();
    for item in items {
        let row = match item {
            Listed::Version(row) => *row,
            Listed::Prefix(p) => {
                prefixes.push(CommonPrefix { prefix: Some(p) });
                continue;
            }
        };
        let common = (
            Some(row.key.clone()),
            Some(last_modified(row.entry.version)),
            Some(id_of(&row.entry)),
            Some(row.latest),
        );
        if is_delete_marker(&row.entry) {
            markers.push(DeleteMarkerEntry {
                key: common.0,
                last_modified: common.1,
                version_id: common.2,
                is_latest: common.3,
                owner: None,
            });
        } else {
            versions.push(ObjectVersion {
                key: common.0,
                last_modified: common.1,
                version_id: common.2,
                is_latest: common.3,
                e_tag: Some(etag_value(&row.entry.etag)),
                size: Some(row.entry.size as i64),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                ..Default::default()
            });
        }
    }
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(input.bucket.clone()),
        prefix: Some(prefix),
        key_marker: input.key_marker.clone(),
        version_id_marker: input.version_id_marker.clone(),
        max_keys: Some(max_keys as i32),
        is_truncated: Some(next.is_some()),
        next_key_marker: next.as_ref().map(|(k, _)| k.clone()),
        next_version_id_marker: next.and_then(|(_, v)| v),
        versions: Some(versions),
        delete_markers: Some(markers),
        common_prefixes: Some(prefixes).filter(|p| !p.is_empty()),
        delimiter,
        ..Default::default()
    }))
}

/// Merges a page of records (`want` asked) with a page of current entries (`want` asked), key
/// by key, newest first: a current entry of a key with no records is its `null` version.
/// Rows of `resumed` (the key marker's key, resumed after one of its versions) are not the
/// latest. Stops at `max_keys` rows, or where a full page ends (the next page resumes after
/// the last row). Returns the rows and whether more may follow.
fn merge(
    records: Vec<IndexRecord>,
    currents: Vec<IndexRecord>,
    want: usize,
    max_keys: usize,
    resumed: Option<&str>,
    fold: Option<(&str, &str)>,
) -> (Vec<Listed>, bool) {
    let records_full = records.len() == want;
    let currents_full = currents.len() == want;
    let parsed: Vec<(String, IndexEntry)> = records
        .into_iter()
        .filter_map(|r| Some((parse_record_key(&r.key)?.0.to_owned(), r.entry)))
        .collect();
    let records_end = parsed.last().map(|(k, _)| k.clone());
    let currents_end = currents.last().map(|r| r.key.clone());
    let (mut rows, mut ri, mut ci) = (Vec::new(), 0, 0);
    loop {
        let key = match (parsed.get(ri), currents.get(ci)) {
            (None, None) => return (rows, false),
            (Some((r, _)), None) => r,
            (None, Some(c)) => &c.key,
            (Some((r, _)), Some(c)) => r.min(&c.key),
        }
        .clone();
        // Past the end of a full page, rows of this key may be on the next one.
        let past =
            |end: &Option<String>, full: bool| full && end.as_ref().is_some_and(|e| key > *e);
        if past(&records_end, records_full) || past(&currents_end, currents_full) {
            return (rows, true);
        }
        // Keys under a common prefix (a delimiter after the prefix) fold into it, once.
        let common = fold.and_then(|(prefix, d)| {
            let rest = key.get(prefix.len()..)?;
            rest.find(d)
                .map(|i| key[..prefix.len() + i + d.len()].to_owned())
        });
        if let Some(cp) = common {
            while parsed.get(ri).is_some_and(|(k, _)| k.starts_with(&cp)) {
                ri += 1;
            }
            while currents.get(ci).is_some_and(|c| c.key.starts_with(&cp)) {
                ci += 1;
            }
            if rows.len() == max_keys {
                return (rows, true);
            }
            let open = |end: &Option<String>, full: bool| {
                full && end.as_ref().is_some_and(|e| e.starts_with(&cp))
            };
            let cut = open(&records_end, records_full) || open(&currents_end, currents_full);
            rows.push(Listed::Prefix(cp));
            // A page that ended under the prefix: the next resumes after all of it.
            if cut {
                return (rows, true);
            }
            continue;
        }
        let mut group: Vec<IndexEntry> = Vec::new();
        while let Some((k, e)) = parsed.get(ri)
            && *k == key
        {
            group.push(e.clone());
            ri += 1;
        }
        if let Some(c) = currents.get(ci)
            && c.key == key
        {
            // Every write since versioning was turned on is recorded: a current entry of a
            // key without records is older than that, the null version.
            if group.is_empty() && !has(&c.entry, VERSIONED) {
                group.push(c.entry.clone());
            }
            ci += 1;
        }
        let resumed_here = resumed == Some(key.as_str());
        for (i, entry) in group.into_iter().enumerate() {
            if rows.len() == max_keys {
                return (rows, true);
            }
            rows.push(Listed::Version(Box::new(Row {
                key: key.clone(),
                entry,
                latest: i == 0 && !resumed_here,
            })));
        }
        // The records page may have ended inside this key's versions.
        if records_full && records_end.as_ref() == Some(&key) {
            return (rows, true);
        }
    }
}

//! Buckets: entries of the cluster map, created and deleted through the metadata leader.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus_ring::map::{Bucket, MapCommand, MapError};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3State;
use super::error::to_s3;
use crate::meta_write;

/// The header choosing a new bucket's storage policy (default: the cluster's).
pub const POLICY_HEADER: &str = "x-nimbus-storage-policy";

/// Returns the bucket if `account` owns it: `NoSuchBucket` if it does not exist,
/// `AccessDenied` if another account owns it.
pub fn owned(state: &S3State, account: &str, name: &str) -> S3Result<Bucket> {
    let map = state.cluster.map();
    match map.bucket(name) {
        None => Err(s3_error!(NoSuchBucket)),
        Some(b) if b.owner != account => Err(s3_error!(AccessDenied)),
        Some(b) => Ok(b.clone()),
    }
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

pub fn list(state: &S3State, account: &str) -> S3Result<S3Response<ListBucketsOutput>> {
    let map = state.cluster.map();
    let buckets = map
        .buckets_of(account)
        .map(|(name, b)| s3s::dto::Bucket {
            name: Some(name.to_owned()),
            creation_date: Some(timestamp(b.created_ms)),
            bucket_region: Some(state.region.clone()),
        })
        .collect();
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(Owner {
            display_name: Some(account.to_owned()),
            id: Some(account.to_owned()),
        }),
        ..Default::default()
    }))
}

pub async fn create(
    state: &S3State,
    account: &str,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let name = req.input.bucket.clone();
    if let Some(constraint) = req
        .input
        .create_bucket_configuration
        .as_ref()
        .and_then(|c| c.location_constraint.as_ref())
        && constraint.as_str() != state.region
    {
        return Err(s3_error!(
            InvalidLocationConstraint,
            "this endpoint serves region {}",
            state.region
        ));
    }
    let policy = match req.headers.get(POLICY_HEADER) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| s3_error!(InvalidArgument, "{POLICY_HEADER} is not text"))?
                .to_owned(),
        ),
        None => None,
    };
    create_named(state, account, &name, policy).await?;
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{name}")),
    }))
}

/// Creates bucket `name` for `account` with `policy` (or the cluster's default), waiting
/// until this proxy's map has it.
pub(crate) async fn create_named(
    state: &S3State,
    account: &str,
    name: &str,
    policy: Option<String>,
) -> S3Result<()> {
    if let Some(p) = &policy
        && state.cluster.map().policy(p).is_none()
    {
        return Err(s3_error!(InvalidArgument, "no storage policy {p}"));
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let command = MapCommand::CreateBucket {
        name: name.to_owned(),
        owner: account.to_owned(),
        policy,
        shards: None,
        now_ms,
    };
    let answer = meta_write::write(&state.cluster, &command, |m| m.bucket(name).is_some())
        .await
        .map_err(to_s3)?;
    match answer {
        Ok(_) => Ok(()),
        Err(MapError::BucketExists { owner, .. }) if owner == account => {
            Err(s3_error!(BucketAlreadyOwnedByYou))
        }
        Err(MapError::BucketExists { .. }) => Err(s3_error!(BucketAlreadyExists)),
        Err(MapError::Invalid { reason }) => Err(s3_error!(InvalidBucketName, "{reason}")),
        Err(MapError::NoSuchPolicy { name }) => {
            Err(s3_error!(InvalidArgument, "no storage policy {name}"))
        }
        Err(e) => Err(s3_error!(InvalidRequest, "{e}")),
    }
}

pub async fn delete(
    state: &S3State,
    account: &str,
    name: &str,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let bucket = owned(state, account, name)?;
    let empty = state
        .index
        .is_empty(account, name, bucket.shards)
        .await
        .map_err(to_s3)?;
    if !empty {
        return Err(s3_error!(BucketNotEmpty));
    }
    let command = MapCommand::DeleteBucket {
        name: name.to_owned(),
    };
    match meta_write::write(&state.cluster, &command, |m| m.bucket(name).is_none())
        .await
        .map_err(to_s3)?
    {
        Ok(_) | Err(MapError::NoSuchBucket { .. }) => Ok(S3Response::new(DeleteBucketOutput {})),
        Err(e) => Err(s3_error!(InvalidRequest, "{e}")),
    }
}

/// Sets (or with `None`, removes) attribute `attribute` of bucket `name` through the
/// metadata leader, waiting until this proxy's map shows the change.
pub(crate) async fn set_attribute(
    state: &S3State,
    name: &str,
    attribute: &str,
    value: Option<String>,
) -> S3Result<()> {
    let command = MapCommand::SetBucketAttributes {
        name: name.to_owned(),
        changes: [(attribute.to_owned(), value.clone())]
            .into_iter()
            .collect(),
    };
    let visible = |m: &nimbus_ring::map::ClusterMap| {
        m.bucket(name)
            .is_none_or(|b| b.attributes.get(attribute) == value.as_ref())
    };
    match meta_write::write(&state.cluster, &command, visible)
        .await
        .map_err(to_s3)?
    {
        Ok(_) => Ok(()),
        Err(MapError::NoSuchBucket { .. }) => Err(s3_error!(NoSuchBucket)),
        Err(MapError::Invalid { reason }) => Err(s3_error!(
            InvalidRequest,
            "the bucket's configuration is too large: {reason}"
        )),
        Err(e) => Err(s3_error!(InvalidRequest, "{e}")),
    }
}

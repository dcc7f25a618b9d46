//! Tags of objects and buckets. An object's tag set is kept among its index entry's metadata
//! pairs under [`TAGGING`], in the URL-encoded form `k=v&k2=v2` (the `x-amz-tagging` header's
//! form, with every byte but the unreserved ones percent-encoded); changing it rewrites the
//! entry with the same version and data, under [`Condition::IfVersion`], so a racing PUT or
//! DELETE is never undone. A bucket's tag set is the bucket attribute [`BUCKET_TAGGING`] of
//! the cluster map, in the same form.

use nimbus_core::index::IndexEntry;
use nimbus_ring::map::{Bucket, Versioning};
use s3s::dto::*;
use s3s::{S3Error, S3Request, S3Response, S3Result, s3_error};

use super::S3State;
use super::buckets::{owned, set_attribute};
use super::error::to_s3;
use super::objects::{check_key, live_entry};
use super::versions;
use crate::error::DataError;
use crate::index::{Condition, IndexClient};
use crate::node_client::encode_query;

/// The metadata pair holding an object's tags: a leading ':' never begins a user metadata
/// name, so it cannot clash with one.
pub(crate) const TAGGING: &str = ":tagging";
/// The bucket attribute holding a bucket's tags.
pub(crate) const BUCKET_TAGGING: &str = "s3:tagging";
/// The most tags of one object (S3's limit).
pub(crate) const MAX_OBJECT_TAGS: usize = 10;
/// The most tags of one bucket (S3's limit).
pub(crate) const MAX_BUCKET_TAGS: usize = 50;
/// The longest tag key, in characters.
const MAX_KEY_CHARS: usize = 128;
/// The longest tag value, in characters.
const MAX_VALUE_CHARS: usize = 256;

/// Why a tag set is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TagError {
    /// More tags than allowed.
    #[error("a tag set has at most {max} tags, not {count}")]
    TooMany { count: usize, max: usize },
    /// A key of the wrong length.
    #[error("a tag key has 1 to {MAX_KEY_CHARS} characters")]
    KeyLength,
    /// A value of the wrong length.
    #[error("a tag value has at most {MAX_VALUE_CHARS} characters")]
    ValueLength,
    /// A key given twice.
    #[error("the tag key {key:?} is given more than once")]
    Duplicate { key: String },
    /// A key in the reserved `aws:` namespace.
    #[error("the tag key {key:?} uses the reserved prefix aws:")]
    Reserved { key: String },
    /// The URL-encoded form does not decode.
    #[error("the tag set is not URL-encoded text: {0}")]
    Malformed(String),
}

impl From<TagError> for S3Error {
    fn from(e: TagError) -> S3Error {
        match e {
            TagError::Malformed(_) => s3_error!(InvalidArgument, "{e}"),
            _ => s3_error!(InvalidTag, "{e}"),
        }
    }
}

/// A checked tag set, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tags(Vec<(String, String)>);

impl Tags {
    /// Checks `pairs` against S3's rules with at most `max` tags.
    fn new(pairs: Vec<(String, String)>, max: usize) -> Result<Tags, TagError> {
        if pairs.len() > max {
            return Err(TagError::TooMany {
                count: pairs.len(),
                max,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for (key, value) in &pairs {
            if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
                return Err(TagError::KeyLength);
            }
            if value.chars().count() > MAX_VALUE_CHARS {
                return Err(TagError::ValueLength);
            }
            if key.starts_with("aws:") {
                return Err(TagError::Reserved { key: key.clone() });
            }
            if !seen.insert(key.as_str()) {
                return Err(TagError::Duplicate { key: key.clone() });
            }
        }
        Ok(Tags(pairs))
    }

    /// Reads the URL-encoded form (`x-amz-tagging`; `+` is a space), at most `max` tags.
    pub(crate) fn from_encoded(text: &str, max: usize) -> Result<Tags, TagError> {
        let pairs = text
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                Ok((form_decode(k)?, form_decode(v)?))
            })
            .collect::<Result<Vec<_>, TagError>>()?;
        Tags::new(pairs, max)
    }

    /// Reads a request's tag set, at most `max` tags.
    pub(crate) fn from_set(set: &TagSet, max: usize) -> Result<Tags, TagError> {
        let pairs = set
            .iter()
            .map(|t| {
                (
                    t.key.clone().unwrap_or_default(),
                    t.value.clone().unwrap_or_default(),
                )
            })
            .collect();
        Tags::new(pairs, max)
    }

    /// The canonical URL-encoded form.
    pub(crate) fn encode(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The tags as S3 answers them.
    pub(crate) fn to_set(&self) -> TagSet {
        self.0
            .iter()
            .map(|(k, v)| Tag {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Decodes one component of `application/x-www-form-urlencoded` text.
fn form_decode(text: &str) -> Result<String, TagError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| TagError::Malformed(format!("bad escape in {text:?}")))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| TagError::Malformed("not UTF-8".into()))
}

/// The number of tags in a stored tag set (for `x-amz-tagging-count`).
pub(crate) fn count(stored: &str) -> usize {
    stored.split('&').filter(|p| !p.is_empty()).count()
}

/// The metadata pair of an `x-amz-tagging` header, checked (none for an empty set).
pub(crate) fn pair_of_header(header: Option<&str>) -> S3Result<Option<(String, String)>> {
    let Some(text) = header else { return Ok(None) };
    let tags = Tags::from_encoded(text, MAX_OBJECT_TAGS)?;
    Ok((!tags.is_empty()).then(|| (TAGGING.to_owned(), tags.encode())))
}

/// Sets (or with `None`, removes) the tag pair among `pairs`.
pub(crate) fn replace_pair(pairs: &mut Vec<(String, String)>, tags: Option<(String, String)>) {
    pairs.retain(|(name, _)| name != TAGGING);
    pairs.extend(tags);
}

/// The stored tag pair of an entry, if any.
pub(crate) fn pair_of(entry: &IndexEntry) -> Option<(String, String)> {
    entry
        .user_metadata
        .iter()
        .find(|(name, _)| name == TAGGING)
        .cloned()
}

/// Rewrites the key's entry with the tag set `tags` (none: no tags): same version, same data,
/// under `IfVersion`. A racing write makes the first attempt fail; it is retried once on the
/// entry then current, and a second loss answers `OperationAborted`.
async fn rewrite_tags(
    state: &S3State,
    account: &str,
    name: &str,
    key: &str,
    tags: Option<&Tags>,
) -> S3Result<IndexEntry> {
    let bucket = owned(state, account, name)?;
    check_key(key)?;
    let shard = IndexClient::shard_of(account, name, key, bucket.shards);
    let pair = tags
        .filter(|t| !t.is_empty())
        .map(|t| (TAGGING.to_owned(), t.encode()));
    for _ in 0..2 {
        let mut entry = live_entry(state, account, &bucket, name, key).await?;
        let current = entry.version;
        replace_pair(&mut entry.user_metadata, pair.clone());
        entry
            .validate()
            .map_err(|e| s3_error!(InvalidTag, "the tags do not fit the object: {e}"))?;
        match state
            .index
            .write(&shard, key, &entry, &Condition::IfVersion(current))
            .await
        {
            Ok(_) => return Ok(entry),
            Err(DataError::PreconditionFailed) => {
                tracing::debug!("tag rewrite lost a race with a write, retrying");
            }
            Err(e) => return Err(to_s3(e)),
        }
    }
    Err(s3_error!(
        OperationAborted,
        "A conflicting operation is currently in progress against this resource. Please try again."
    ))
}

/// Whether tag operations go through the versions: a versioned bucket, or a version named.
fn versioned(bucket: &Bucket, version_id: Option<&String>) -> bool {
    version_id.is_some() || bucket.versioning != Versioning::Unversioned
}

/// Sets or removes the tags of a version (its record and, when current, the current entry).
async fn retag_version(
    state: &S3State,
    account: &str,
    (name, bucket): (&str, &Bucket),
    key: &str,
    id: Option<&str>,
    tags: Option<&Tags>,
) -> S3Result<Option<String>> {
    let pair = tags
        .filter(|t| !t.is_empty())
        .map(|t| (TAGGING.to_owned(), t.encode()));
    let entry = versions::rewrite_version(state, account, (name, bucket), key, id, |pairs| {
        replace_pair(pairs, pair.clone());
    })
    .await?;
    Ok(versions::version_id(&entry, bucket))
}

pub async fn put_object(
    state: &S3State,
    account: &str,
    req: S3Request<PutObjectTaggingInput>,
) -> S3Result<S3Response<PutObjectTaggingOutput>> {
    let input = req.input;
    let tags = Tags::from_set(&input.tagging.tag_set, MAX_OBJECT_TAGS)?;
    let bucket = owned(state, account, &input.bucket)?;
    if versioned(&bucket, input.version_id.as_ref()) {
        let b = (input.bucket.as_str(), &bucket);
        let id = input.version_id.as_deref();
        let version_id = retag_version(state, account, b, &input.key, id, Some(&tags)).await?;
        return Ok(S3Response::new(PutObjectTaggingOutput { version_id }));
    }
    rewrite_tags(state, account, &input.bucket, &input.key, Some(&tags)).await?;
    Ok(S3Response::new(PutObjectTaggingOutput::default()))
}

pub async fn get_object(
    state: &S3State,
    account: &str,
    req: S3Request<GetObjectTaggingInput>,
) -> S3Result<S3Response<GetObjectTaggingOutput>> {
    let input = req.input;
    let bucket = owned(state, account, &input.bucket)?;
    let entry = if versioned(&bucket, input.version_id.as_ref()) {
        let b = (input.bucket.as_str(), &bucket);
        let id = input.version_id.as_deref();
        versions::version_entry(state, account, b, &input.key, id).await?
    } else {
        live_entry(state, account, &bucket, &input.bucket, &input.key).await?
    };
    let tags = match pair_of(&entry) {
        // What was stored was checked; should it not decode, no tags are better than a 500.
        Some((_, v)) => Tags::from_encoded(&v, usize::MAX).unwrap_or_default(),
        None => Tags::default(),
    };
    Ok(S3Response::new(GetObjectTaggingOutput {
        tag_set: tags.to_set(),
        version_id: versions::version_id(&entry, &bucket),
    }))
}

pub async fn delete_object(
    state: &S3State,
    account: &str,
    req: S3Request<DeleteObjectTaggingInput>,
) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
    let input = req.input;
    let bucket = owned(state, account, &input.bucket)?;
    if versioned(&bucket, input.version_id.as_ref()) {
        let b = (input.bucket.as_str(), &bucket);
        let id = input.version_id.as_deref();
        let version_id = retag_version(state, account, b, &input.key, id, None).await?;
        return Ok(S3Response::with_status(
            DeleteObjectTaggingOutput { version_id },
            hyper::StatusCode::NO_CONTENT,
        ));
    }
    rewrite_tags(state, account, &input.bucket, &input.key, None).await?;
    Ok(S3Response::with_status(
        DeleteObjectTaggingOutput::default(),
        hyper::StatusCode::NO_CONTENT,
    ))
}

pub async fn put_bucket(
    state: &S3State,
    account: &str,
    req: S3Request<PutBucketTaggingInput>,
) -> S3Result<S3Response<PutBucketTaggingOutput>> {
    let input = req.input;
    owned(state, account, &input.bucket)?;
    let tags = Tags::from_set(&input.tagging.tag_set, MAX_BUCKET_TAGS)?;
    let value = (!tags.is_empty()).then(|| tags.encode());
    set_attribute(state, &input.bucket, BUCKET_TAGGING, value).await?;
    Ok(S3Response::new(PutBucketTaggingOutput::default()))
}

pub async fn get_bucket(
    state: &S3State,
    account: &str,
    req: S3Request<GetBucketTaggingInput>,
) -> S3Result<S3Response<GetBucketTaggingOutput>> {
    let bucket = owned(state, account, &req.input.bucket)?;
    let stored = bucket
        .attributes
        .get(BUCKET_TAGGING)
        .ok_or_else(|| s3_error!(NoSuchTagSet))?;
    let tags = Tags::from_encoded(stored, usize::MAX).unwrap_or_default();
    Ok(S3Response::new(GetBucketTaggingOutput {
        tag_set: tags.to_set(),
    }))
}

pub async fn delete_bucket(
    state: &S3State,
    account: &str,
    req: S3Request<DeleteBucketTaggingInput>,
) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
    owned(state, account, &req.input.bucket)?;
    set_attribute(state, &req.input.bucket, BUCKET_TAGGING, None).await?;
    Ok(S3Response::with_status(
        DeleteBucketTaggingOutput::default(),
        hyper::StatusCode::NO_CONTENT,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_form_decodes_and_encodes_canonically() {
        let tags = Tags::from_encoded("a=1&b+c=d%20e&empty=&f", 10).unwrap();
        assert_eq!(
            tags.0,
            [
                ("a".to_owned(), "1".to_owned()),
                ("b c".to_owned(), "d e".to_owned()),
                ("empty".to_owned(), String::new()),
                ("f".to_owned(), String::new()),
            ]
        );
        assert_eq!(tags.encode(), "a=1&b%20c=d%20e&empty=&f=");
        assert_eq!(Tags::from_encoded(&tags.encode(), 10).unwrap(), tags);
        assert_eq!(count(&tags.encode()), 4);
        assert_eq!(count(""), 0);
    }

    #[test]
    fn s3_limits_are_enforced() {
        let many: String = (0..11).map(|i| format!("k{i}=v&")).collect();
        assert_eq!(
            Tags::from_encoded(&many, 10),
            Err(TagError::TooMany { count: 11, max: 10 })
        );
        assert_eq!(Tags::from_encoded("=v", 10), Err(TagError::KeyLength));
        let long_key = "k".repeat(129);
        assert_eq!(
            Tags::from_encoded(&format!("{long_key}=v"), 10),
            Err(TagError::KeyLength)
        );
        let long_value = "é".repeat(257);
        assert_eq!(
            Tags::from_encoded(&format!("k={}", encode_query(&long_value)), 10),
            Err(TagError::ValueLength)
        );
        assert!(Tags::from_encoded(&format!("k={}", encode_query(&"é".repeat(256))), 10).is_ok());
        assert!(matches!(
            Tags::from_encoded("a=1&a=2", 10),
            Err(TagError::Duplicate { .. })
        ));
        assert!(matches!(
            Tags::from_encoded("aws:x=1", 10),
            Err(TagError::Reserved { .. })
        ));
        assert!(matches!(
            Tags::from_encoded("a=%zz", 10),
            Err(TagError::Malformed(_))
        ));
        assert!(matches!(
            Tags::from_encoded("a=%ff", 10),
            Err(TagError::Malformed(_))
        ));
        assert!(matches!(
            Tags::from_encoded("a=%f", 10),
            Err(TagError::Malformed(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn any_tag_set_round_trips_and_any_text_is_handled(
            pairs in proptest::collection::btree_map("\\PC{1,20}", "\\PC{0,30}", 0..10),
            junk in "\\PC{0,80}",
        ) {
            let pairs: Vec<_> = pairs.into_iter().filter(|(k, _)| !k.starts_with("aws:")).collect();
            let tags = Tags::new(pairs, 10).unwrap();
            proptest::prop_assert_eq!(Tags::from_encoded(&tags.encode(), 10).unwrap(), tags);
            let _ = Tags::from_encoded(&junk, 10);
        }
    }
}

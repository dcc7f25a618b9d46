//! ListObjects (V1 and V2): the container's index shards merged in key order, folded into
//! common prefixes at the delimiter, paginated by markers and continuation tokens.

use base64::Engine as _;
use nimbus_core::index::IndexRecord;
use s3s::dto::*;
use s3s::{S3Response, S3Result, s3_error};

use super::S3State;
use super::buckets::owned;
use super::error::to_s3;

/// The most keys one answer holds, as in S3.
const MAX_KEYS: usize = 1000;

/// Where a listing resumes: after a key, or after every key under a common prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    Key(String),
    Prefix(String),
}

impl Resume {
    fn token(&self) -> String {
        let raw = match self {
            Resume::Key(k) => format!("k{k}"),
            Resume::Prefix(p) => format!("p{p}"),
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    fn from_token(token: &str) -> S3Result<Resume> {
        let bad = || s3_error!(InvalidArgument, "the continuation token is not valid");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        match text.split_at_checked(1) {
            Some(("k", k)) => Ok(Resume::Key(k.to_owned())),
            Some(("p", p)) => Ok(Resume::Prefix(p.to_owned())),
            _ => Err(bad()),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Default)]
pub(crate) struct Page {
    pub objects: Vec<IndexRecord>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    /// Where the next page starts, when truncated.
    pub next: Option<Resume>,
}

/// The smallest key after every key that starts with `prefix` (keys are UTF-8, so no byte
/// is 0xFF, and U+10FFFF is the largest character).
pub(crate) fn after_prefix(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

/// What a listing asks for.
pub(crate) struct Query<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    pub resume: Option<Resume>,
    pub max_keys: usize,
}

pub(crate) async fn page(
    state: &S3State,
    account: &str,
    bucket: &str,
    shards: u16,
    query: Query<'_>,
) -> S3Result<Page> {
    let Query {
        prefix,
        delimiter,
        resume,
        max_keys,
    } = query;
    let mut page = Page::default();
    let mut after = match &resume {
        Some(Resume::Key(k)) => Some(k.clone()),
        Some(Resume::Prefix(p)) => Some(after_prefix(p)),
        None => None,
    };
    let mut last_prefix = match resume {
        Some(Resume::Prefix(p)) => Some(p),
        _ => None,
    };
    if max_keys == 0 {
        return Ok(page);
    }
    'fetch: loop {
        let want = (max_keys - page.objects.len() - page.prefixes.len() + 1).min(MAX_KEYS + 1);
        let batch = state
            .index
            .list(account, bucket, shards, prefix, after.as_deref(), want)
            .await
            .map_err(to_s3)?;
        let exhausted = batch.len() < want;
        let now = super::objects::unix_now();
        for record in batch {
            // An expired object is gone for listings too (its tombstone comes with the
            // next read of it).
            if super::objects::is_expired(&record.entry, now) {
                after = Some(record.key.clone());
                continue;
            }
            let common = delimiter.and_then(|d| {
                let rest = record.key.get(prefix.len()..)?;
                rest.find(d)
                    .map(|i| record.key[..prefix.len() + i + d.len()].to_owned())
            });
            if let Some(cp) = &common
                && last_prefix.as_ref() == Some(cp)
            {
                after = Some(after_prefix(cp));
                continue 'fetch;
            }
            if page.objects.len() + page.prefixes.len() == max_keys {
                page.truncated = true;
                return Ok(page);
            }
            match common {
                Some(cp) => {
                    page.next = Some(Resume::Prefix(cp.clone()));
                    after = Some(after_prefix(&cp));
                    page.prefixes.push(cp.clone());
                    last_prefix = Some(cp);
                    // Skip the rest of this prefix's keys with a fresh fetch.
                    continue 'fetch;
                }
                None => {
                    page.next = Some(Resume::Key(record.key.clone()));
                    after = Some(record.key.clone());
                    page.objects.push(record);
                }
            }
        }
        if exhausted {
            return Ok(page);
        }
    }
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Applies `encoding-type=url` when asked.
struct Encoder(bool);

impl Encoder {
    fn new(encoding: Option<&EncodingType>) -> S3Result<Encoder> {
        match encoding.map(EncodingType::as_str) {
            None => Ok(Encoder(false)),
            Some("url") => Ok(Encoder(true)),
            Some(other) => Err(s3_error!(
                InvalidArgument,
                "encoding-type {other} is not supported"
            )),
        }
    }

    fn apply(&self, s: &str) -> String {
        if self.0 { url_encode(s) } else { s.to_owned() }
    }
}

fn max_keys(requested: Option<i32>) -> S3Result<usize> {
    match requested {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok((n as usize).min(MAX_KEYS)),
    }
}

fn objects(page: &Page, enc: &Encoder, owner: Option<&str>) -> ObjectList {
    page.objects
        .iter()
        .map(|r| Object {
            key: Some(enc.apply(&r.key)),
            size: Some(super::objects::listed_size(&r.entry) as i64),
            e_tag: Some(ETag::Strong(r.entry.etag.clone())),
            last_modified: Some(Timestamp::from(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(r.entry.version.micros()),
            )),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            owner: owner.map(|o| Owner {
                display_name: Some(o.to_owned()),
                id: Some(o.to_owned()),
            }),
            ..Default::default()
        })
        .collect()
}

fn prefixes(page: &Page, enc: &Encoder) -> CommonPrefixList {
    page.prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(enc.apply(p)),
        })
        .collect()
}

pub async fn v2(
    state: &S3State,
    account: &str,
    input: ListObjectsV2Input,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let bucket = owned(state, account, &input.bucket)?;
    let enc = Encoder::new(input.encoding_type.as_ref())?;
    let max = max_keys(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    let resume = match (&input.continuation_token, &input.start_after) {
        (Some(t), _) => Some(Resume::from_token(t)?),
        (None, Some(s)) if !s.is_empty() => Some(Resume::Key(s.clone())),
        _ => None,
    };
    let query = Query {
        prefix: &prefix,
        delimiter: delimiter.as_deref(),
        resume,
        max_keys: max,
    };
    let page = page(state, account, &input.bucket, bucket.shards, query).await?;
    let owner = input.fetch_owner.unwrap_or(false).then_some(account);
    let contents = objects(&page, &enc, owner);
    let common = prefixes(&page, &enc);
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(input.bucket.clone()),
        prefix: Some(enc.apply(&prefix)),
        delimiter: delimiter.as_deref().map(|d| enc.apply(d)),
        max_keys: Some(max as i32),
        key_count: Some((contents.len() + common.len()) as i32),
        continuation_token: input.continuation_token.clone(),
        start_after: input.start_after.as_deref().map(|s| enc.apply(s)),
        is_truncated: Some(page.truncated),
        next_continuation_token: if page.truncated {
            page.next.as_ref().map(Resume::token)
        } else {
            None
        },
        contents: Some(contents),
        common_prefixes: Some(common),
        encoding_type: input.encoding_type.clone(),
        ..Default::default()
    }))
}

pub async fn v1(
    state: &S3State,
    account: &str,
    input: ListObjectsInput,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let bucket = owned(state, account, &input.bucket)?;
    let enc = Encoder::new(input.encoding_type.as_ref())?;
    let max = max_keys(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    // A marker that is a common prefix resumes after all of its keys, as S3 does.
    let resume = input
        .marker
        .clone()
        .filter(|m| !m.is_empty())
        .map(|m| match &delimiter {
            Some(d) if m.ends_with(d.as_str()) && m.starts_with(&prefix) => Resume::Prefix(m),
            _ => Resume::Key(m),
        });
    let query = Query {
        prefix: &prefix,
        delimiter: delimiter.as_deref(),
        resume,
        max_keys: max,
    };
    let page = page(state, account, &input.bucket, bucket.shards, query).await?;
    let next_marker = match (&delimiter, page.truncated, &page.next) {
        (Some(_), true, Some(Resume::Key(k) | Resume::Prefix(k))) => Some(enc.apply(k)),
        _ => None,
    };
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(input.bucket.clone()),
        prefix: Some(enc.apply(&prefix)),
        marker: Some(input.marker.clone().unwrap_or_default()),
        next_marker,
        delimiter: delimiter.as_deref().map(|d| enc.apply(d)),
        max_keys: Some(max as i32),
        is_truncated: Some(page.truncated),
        contents: Some(objects(&page, &enc, Some(account))),
        common_prefixes: Some(prefixes(&page, &enc)),
        encoding_type: input.encoding_type.clone(),
        ..Default::default()
    }))
}

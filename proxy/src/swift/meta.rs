//! Account and container metadata (`X-Account-Meta-*`, `X-Container-Meta-*`) and container
//! ACLs (`X-Container-Read`, `X-Container-Write`), kept as attributes of the account or
//! bucket in the cluster map: `meta:<name>` (lowercase) for metadata, `read-acl` and
//! `write-acl` for the ACLs. Swift's bounds apply: names up to 128 bytes, values up to 256,
//! at most 90 items and 4,096 bytes of metadata per account or container.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use nimbus_ring::map::{ClusterMap, MapCommand, MapError};

use crate::cluster::Cluster;
use crate::error::DataError;
use crate::meta_write;

/// Metadata attribute names begin with this.
pub const META: &str = "meta:";
/// The container read ACL attribute.
pub const READ_ACL: &str = "read-acl";
/// The container write ACL attribute.
pub const WRITE_ACL: &str = "write-acl";

/// The longest metadata name, in bytes.
pub const MAX_NAME: usize = 128;
/// The longest metadata value, in bytes.
pub const MAX_VALUE: usize = 256;
/// The most metadata items of one account or container.
pub const MAX_COUNT: usize = 90;
/// The most metadata bytes (names and values) of one account or container.
pub const MAX_OVERALL: usize = 4096;
/// The longest ACL, in bytes.
const MAX_ACL: usize = 4096;

/// Which resource the headers are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// `X-Account-…`.
    Account,
    /// `X-Container-…`.
    Container,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Account => "account",
            Level::Container => "container",
        }
    }
}

/// Why metadata headers were refused (Swift answers 400 with the text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadMetadata(pub String);

/// The attribute changes a request's headers ask for: `X-<Level>-Meta-Name: v` sets,
/// an empty value or `X-Remove-<Level>-Meta-Name` removes; for containers also
/// `X-Container-Read`/`X-Container-Write` (and their `X-Remove-` forms).
pub fn changes(
    headers: &HeaderMap,
    level: Level,
) -> Result<BTreeMap<String, Option<String>>, BadMetadata> {
    let set_prefix = format!("x-{}-meta-", level.word());
    let remove_prefix = format!("x-remove-{}-meta-", level.word());
    let mut changes = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        let value = || {
            value
                .to_str()
                .map(|v| v.trim().to_owned())
                .map_err(|_| BadMetadata(format!("{name}: the value is not text")))
        };
        if let Some(meta) = name.strip_prefix(&remove_prefix) {
            changes.insert(meta_name(meta)?, None);
        } else if let Some(meta) = name.strip_prefix(&set_prefix) {
            let v = value()?;
            if v.len() > MAX_VALUE {
                return Err(BadMetadata(format!(
                    "Metadata value longer than {MAX_VALUE}: {name}"
                )));
            }
            changes.insert(meta_name(meta)?, (!v.is_empty()).then_some(v));
        } else if level == Level::Container {
            let acl = match name {
                "x-container-read" => Some((READ_ACL, Some(value()?))),
                "x-container-write" => Some((WRITE_ACL, Some(value()?))),
                "x-remove-container-read" => Some((READ_ACL, None)),
                "x-remove-container-write" => Some((WRITE_ACL, None)),
                _ => None,
            };
            if let Some((attribute, v)) = acl {
                let v = v.filter(|v| !v.is_empty());
                if let Some(v) = &v {
                    if v.len() > MAX_ACL {
                        return Err(BadMetadata(format!("{name} longer than {MAX_ACL}")));
                    }
                    Acl::parse(v).map_err(BadMetadata)?;
                }
                changes.insert(attribute.to_owned(), v);
            }
        }
    }
    Ok(changes)
}

fn meta_name(suffix: &str) -> Result<String, BadMetadata> {
    if suffix.is_empty() || suffix.len() > MAX_NAME {
        return Err(BadMetadata(format!(
            "Metadata name must have 1 to {MAX_NAME} bytes"
        )));
    }
    Ok(format!("{META}{}", suffix.to_ascii_lowercase()))
}

/// Checks that `current` with `changes` made stays within Swift's metadata bounds.
pub fn check_bounds(
    current: &BTreeMap<String, String>,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<(), BadMetadata> {
    let mut next: BTreeMap<&str, &str> = current
        .iter()
        .filter(|(k, _)| k.starts_with(META))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (k, v) in changes {
        match v {
            Some(v) if k.starts_with(META) => next.insert(k, v),
            _ => next.remove(k.as_str()),
        };
    }
    if next.len() > MAX_COUNT {
        return Err(BadMetadata(format!(
            "Too many metadata items; max {MAX_COUNT}"
        )));
    }
    let bytes: usize = next
        .iter()
        .map(|(k, v)| k.len() - META.len() + v.len())
        .sum();
    if bytes > MAX_OVERALL {
        return Err(BadMetadata(format!(
            "Total metadata too large; max {MAX_OVERALL}"
        )));
    }
    Ok(())
}

/// The response headers for `attributes`: `X-<Level>-Meta-Name` for each metadata item, and
/// the container ACLs.
pub fn headers(attributes: &BTreeMap<String, String>, level: Level) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in attributes {
        if let Some(name) = k.strip_prefix(META) {
            out.push((format!("x-{}-meta-{name}", level.word()), v.clone()));
        } else if level == Level::Container && k == READ_ACL {
            out.push(("x-container-read".to_owned(), v.clone()));
        } else if level == Level::Container && k == WRITE_ACL {
            out.push(("x-container-write".to_owned(), v.clone()));
        }
    }
    out
}

/// Stores attribute changes of an account (`bucket: None`) or a bucket, then waits until
/// the proxy's map shows them.
///
/// # Errors
/// [`DataError::NoSuchBucket`] when the bucket is gone, [`DataError::BadRequest`] when the
/// map refuses the change, [`DataError::Unavailable`] when no leader answered.
pub async fn store(
    cluster: &Cluster,
    account: &str,
    bucket: Option<&str>,
    changes: BTreeMap<String, Option<String>>,
) -> Result<(), DataError> {
    if changes.is_empty() {
        return Ok(());
    }
    let command = match bucket {
        Some(name) => MapCommand::SetBucketAttributes {
            name: name.to_owned(),
            changes: changes.clone(),
        },
        None => MapCommand::SetAccountAttributes {
            name: account.to_owned(),
            changes: changes.clone(),
        },
    };
    let shows = move |map: &ClusterMap| {
        let attributes = match bucket {
            Some(name) => map.bucket(name).map(|b| &b.attributes),
            None => map.account(account).map(|a| &a.attributes),
        };
        attributes.is_some_and(|a| changes.iter().all(|(k, v)| a.get(k) == v.as_ref()))
    };
    match meta_write::write(cluster, &command, shows).await? {
        Ok(_) => Ok(()),
        Err(MapError::NoSuchBucket { .. }) => Err(DataError::NoSuchBucket),
        Err(e) => Err(DataError::BadRequest(e.to_string())),
    }
}

/// Who an ACL element grants.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Grant {
    /// `.r:*`: anyone, without a token (reads of objects).
    AnyReferrer,
    /// `.rlistings`: anyone granted by a referrer rule may also list.
    Listings,
    /// `account:user`, or `account` (every user of it), or `*:user`/`account:*`.
    User { account: String, user: String },
}

/// A parsed container ACL (tempauth's syntax: comma-separated elements).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    grants: Vec<Grant>,
}

impl Acl {
    /// Parses an ACL; refuses referrer rules other than `.r:*` (Nimbus does not check
    /// `Referer` headers, which any client can forge anyway).
    ///
    /// # Errors
    /// A text saying which element is not understood.
    pub fn parse(text: &str) -> Result<Acl, String> {
        let mut grants = Vec::new();
        for element in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let grant = match element {
                ".r:*" | ".referrer:*" => Grant::AnyReferrer,
                ".rlistings" => Grant::Listings,
                e if e.starts_with('.') => {
                    return Err(format!(
                        "ACL element {e:?} is not supported: use .r:*, .rlistings, account or account:user"
                    ));
                }
                e => {
                    let (account, user) = e.split_once(':').unwrap_or((e, "*"));
                    if account.is_empty() || user.is_empty() {
                        return Err(format!("ACL element {e:?} is not account[:user]"));
                    }
                    Grant::User {
                        account: account.to_owned(),
                        user: user.to_owned(),
                    }
                }
            };
            grants.push(grant);
        }
        Ok(Acl { grants })
    }

    /// Whether the ACL lets anonymous clients read objects.
    #[must_use]
    pub fn public_objects(&self) -> bool {
        self.grants.contains(&Grant::AnyReferrer)
    }

    /// Whether the ACL lets anonymous clients list the container.
    #[must_use]
    pub fn public_listings(&self) -> bool {
        self.public_objects() && self.grants.contains(&Grant::Listings)
    }

    /// Whether the ACL grants Swift user `account:user` (as it authenticated).
    #[must_use]
    pub fn grants_user(&self, account: &str, user: &str) -> bool {
        self.grants.iter().any(|g| match g {
            Grant::User {
                account: a,
                user: u,
            } => (a == "*" || a == account) && (u == "*" || u == user),
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn headers_become_changes_and_back() {
        let h = headers(&[
            ("x-container-meta-color", "blue"),
            ("x-container-meta-empty", ""),
            ("x-remove-container-meta-old", "x"),
            ("x-container-read", ".r:*,.rlistings"),
            ("x-remove-container-write", "1"),
            ("x-account-meta-ignored", "a"),
        ]);
        let c = changes(&h, Level::Container).unwrap();
        assert_eq!(
            c,
            BTreeMap::from([
                ("meta:color".to_owned(), Some("blue".to_owned())),
                ("meta:empty".to_owned(), None),
                ("meta:old".to_owned(), None),
                (READ_ACL.to_owned(), Some(".r:*,.rlistings".to_owned())),
                (WRITE_ACL.to_owned(), None),
            ])
        );
        let attributes = BTreeMap::from([
            ("meta:color".to_owned(), "blue".to_owned()),
            (READ_ACL.to_owned(), ".r:*".to_owned()),
            ("s3:cors".to_owned(), "{}".to_owned()),
        ]);
        assert_eq!(
            super::headers(&attributes, Level::Container),
            [
                ("x-container-meta-color".to_owned(), "blue".to_owned()),
                ("x-container-read".to_owned(), ".r:*".to_owned()),
            ]
        );
        assert_eq!(
            super::headers(&attributes, Level::Account),
            [("x-account-meta-color".to_owned(), "blue".to_owned())]
        );
    }

    #[test]
    fn bounds_are_swifts() {
        let long = "v".repeat(MAX_VALUE + 1);
        let h = headers(&[("x-account-meta-a", long.as_str())]);
        assert!(changes(&h, Level::Account).is_err());
        let h = headers(&[("x-container-read", ".r:example.com")]);
        assert!(changes(&h, Level::Container).is_err());
        let current: BTreeMap<String, String> = (0..MAX_COUNT)
            .map(|i| (format!("meta:k{i}"), "v".to_owned()))
            .collect();
        let one_more = BTreeMap::from([("meta:new".to_owned(), Some("v".to_owned()))]);
        assert!(check_bounds(&current, &one_more).is_err());
        let replace = BTreeMap::from([("meta:k1".to_owned(), Some("w".to_owned()))]);
        assert!(check_bounds(&current, &replace).is_ok());
        let big: BTreeMap<String, String> = (0..20)
            .map(|i| (format!("meta:k{i}"), "v".repeat(200)))
            .collect();
        let more = BTreeMap::from([("meta:x".to_owned(), Some("v".repeat(200)))]);
        assert!(check_bounds(&big, &more).is_err());
    }

    #[test]
    fn acls_grant_what_they_say() {
        let acl = Acl::parse(".r:*, .rlistings, other:bob, team").unwrap();
        assert!(acl.public_objects() && acl.public_listings());
        assert!(acl.grants_user("other", "bob"));
        assert!(!acl.grants_user("other", "eve"));
        assert!(acl.grants_user("team", "anyone"));
        let acl = Acl::parse(".rlistings").unwrap();
        assert!(!acl.public_listings());
        assert!(Acl::parse(".r:-evil.com").is_err());
        assert!(Acl::parse(":bob").is_err());
        assert_eq!(Acl::parse("").unwrap(), Acl::default());
    }

    proptest::proptest! {
        #[test]
        fn any_acl_text_parses_or_is_refused_without_panic(text in "\\PC{0,60}") {
            let _ = Acl::parse(&text);
        }
    }
}

//! The Swift API (v1) over the same accounts, containers (= buckets) and objects as S3:
//! `GET /auth/v1.0` (tempauth style: `X-Auth-User: account:user`, `X-Auth-Key`), then
//! `/v1/AUTH_<account>[/<container>[/<object>]]` with `X-Auth-Token`, and `/info`.
//!
//! Tokens are stateless: `AUTH_tk` + base64url of `"<expiry>\n<account:user>"` + `.` + a tag of
//! that with the cluster secret, so any proxy checks any token; a revoked credential's tokens
//! stop working at once (the credential is looked up on every request).
//!
//! Who may do what: a token of the account's own users may do anything; other Swift users
//! and anonymous clients only what the container's ACLs grant (`swift::meta`), and a
//! TempURL only the one method on the object (or prefix) it was signed for
//! (`swift::tempurl`).

mod bulk;
mod chunked;
pub(crate) mod large;
mod listing;
mod meta;
mod objects;
mod post;
mod ranges;
mod tempurl;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use nimbus_core::auth::ClusterSecret;
use nimbus_ring::map::CredentialKind;
use s3s::S3Error;

use crate::s3::S3State;

/// How long a token lasts.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The tag purpose of tokens.
const TOKEN_PURPOSE: &str = "swift-token";
/// The prefix of an account in storage URLs.
const ACCOUNT_PREFIX: &str = "AUTH_";

/// Tells whether a request is for the Swift API rather than S3: one of its paths, and not
/// signed the S3 way (a bucket may be called `info` or `v1`).
#[must_use]
pub fn is_swift(request: &Request) -> bool {
    let path = request.uri().path();
    let ours = path == "/info"
        || path == "/auth/v1.0"
        || path == "/auth/v1"
        || path.starts_with("/v1/AUTH_");
    let s3_signed = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.starts_with("AWS"))
        || request
            .uri()
            .query()
            .is_some_and(|q| q.contains("X-Amz-Signature") || q.contains("Signature="));
    ours && !s3_signed
}

/// An answer: a status and a plain-text body (Swift's errors are short texts).
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [("content-type", "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// An S3 error from the shared object code, as Swift answers it.
pub(crate) fn from_s3(e: &S3Error) -> Response {
    let status = e.status_code().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = match e.code().as_str() {
        "NoSuchKey" | "NoSuchBucket" => "Not Found".to_owned(),
        "BadDigest" => return text(StatusCode::UNPROCESSABLE_ENTITY, "Unprocessable Entity"),
        "InvalidRange" => {
            return text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "Requested Range Not Satisfiable",
            );
        }
        "BucketNotEmpty" => "There was a conflict when trying to complete your request.".to_owned(),
        _ => e.message().unwrap_or(e.code().as_str()).to_owned(),
    };
    if status.is_server_error() {
        tracing::warn!(code = e.code().as_str(), message = ?e.message(), "Swift request failed");
    }
    text(status, message)
}

/// Serves one Swift request.
pub async fn handle(state: Arc<S3State>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/info" {
        return info(&state);
    }
    if path.starts_with("/auth/") {
        return auth(&state, request.headers());
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return text(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut parts = rest.splitn(3, '/');
    let account_part = parts.next().unwrap_or_default();
    let container = parts.next().map(decode).transpose();
    let object = parts.next().map(decode).transpose();
    let (Ok(container), Ok(object)) = (container, object) else {
        return text(StatusCode::BAD_REQUEST, "Invalid UTF8 or contains NULL");
    };
    let Some(account) = account_part.strip_prefix(ACCOUNT_PREFIX).map(str::to_owned) else {
        return text(StatusCode::NOT_FOUND, "Not Found");
    };
    let container = container.filter(|c| !c.is_empty());
    let object = object.filter(|o| !o.is_empty());
    let caller = match authorize(
        &state,
        &request,
        &account,
        container.as_deref(),
        object.as_deref(),
    ) {
        Ok(caller) => caller,
        Err(refused) => return text(refused.0, refused.1),
    };
    match (container, object) {
        (None, _) => listing::account(&state, &account, request).await,
        (Some(c), None) => {
            listing::container(&state, &account, &c, request, caller == Caller::Owner).await
        }
        (Some(c), Some(o)) => {
            let mut response = objects::object(&state, &account, &c, &o, request).await;
            if let Caller::TempUrl {
                disposition: Some(d),
            } = caller
                && response.status().is_success()
                && let Ok(v) = HeaderValue::from_str(&d)
            {
                response.headers_mut().insert("content-disposition", v);
            }
            response
        }
    }
}

/// A refused request: its status and text.
#[derive(Debug)]
struct Refused(StatusCode, &'static str);

const UNAUTHORIZED: Refused = Refused(StatusCode::UNAUTHORIZED, "Unauthorized");

/// Who a request acts as, once admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Caller {
    /// A user of the account.
    Owner,
    /// Another Swift user, or an anonymous client, admitted by a container ACL.
    Granted,
    /// A TempURL; a GET answers with this `Content-Disposition`.
    TempUrl { disposition: Option<String> },
}

/// Decides whether a request may proceed, and as whom; refused requests get 401 (no valid
/// token, a bad TempURL) or 403 (a valid token the ACLs do not admit).
fn authorize(
    state: &S3State,
    request: &Request,
    account: &str,
    container: Option<&str>,
    object: Option<&str>,
) -> Result<Caller, Refused> {
    let method = request.method();
    let pairs = listing::query_pairs(request);
    if let (Some(c), Some(o), Some(url)) = (container, object, tempurl::TempUrl::from_query(&pairs))
    {
        let invalid = || Refused(StatusCode::UNAUTHORIZED, "Unauthorized: Temp URL invalid");
        let url = url.map_err(|_| invalid())?;
        let map = state.cluster.map();
        let bucket = map.bucket(c).filter(|b| b.owner == account);
        let keys = tempurl::keys(
            map.account(account).map(|a| &a.attributes),
            bucket.map(|b| &b.attributes),
        );
        let path = format!("/v1/{ACCOUNT_PREFIX}{account}/{c}/{o}");
        let allowed = tempurl::METHODS.contains(&method.as_str())
            && url.admits(method.as_str(), &path, o, &keys, now_secs());
        if !allowed {
            return Err(invalid());
        }
        let disposition = if method == Method::GET {
            tempurl::disposition(&url, o)
        } else {
            None
        };
        return Ok(Caller::TempUrl { disposition });
    }
    let token = request
        .headers()
        .get("x-auth-token")
        .or_else(|| request.headers().get("x-storage-token"));
    let user = match token {
        Some(t) => Some(identity(state, t.to_str().unwrap_or_default())?),
        None => None,
    };
    if let Some((a, _)) = &user
        && a == account
    {
        return Ok(Caller::Owner);
    }
    // Anyone else gets what the container's ACLs grant, on its objects and listing only.
    let refuse = || match user {
        Some(_) => Refused(StatusCode::FORBIDDEN, "Forbidden"),
        None => UNAUTHORIZED,
    };
    let Some(c) = container else {
        return Err(refuse());
    };
    let map = state.cluster.map();
    let Some(bucket) = map.bucket(c).filter(|b| b.owner == account) else {
        return Err(refuse());
    };
    let acl = |name: &str| {
        bucket
            .attributes
            .get(name)
            .and_then(|text| meta::Acl::parse(text).ok())
            .unwrap_or_default()
    };
    let granted_user = |acl: &meta::Acl| user.as_ref().is_some_and(|(a, u)| acl.grants_user(a, u));
    let read = *method == Method::GET || *method == Method::HEAD;
    let copy = method.as_str() == "COPY" || request.headers().contains_key("x-copy-from");
    let granted = match (object.is_some(), read) {
        (true, true) => {
            let read_acl = acl(meta::READ_ACL);
            read_acl.public_objects() || granted_user(&read_acl)
        }
        (false, true) => {
            let read_acl = acl(meta::READ_ACL);
            read_acl.public_listings() || granted_user(&read_acl)
        }
        // Writes to objects (not server-side copies, whose source the ACL does not cover).
        (true, false) => {
            matches!(*method, Method::PUT | Method::POST | Method::DELETE)
                && !copy
                && granted_user(&acl(meta::WRITE_ACL))
        }
        (false, false) => false,
    };
    if granted {
        Ok(Caller::Granted)
    } else {
        Err(refuse())
    }
}

/// Percent-decodes a path segment.
fn decode(segment: &str) -> Result<String, ()> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).map_err(|_| ())?;
    if text.contains('\0') {
        return Err(());
    }
    Ok(text)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Makes a token for credential `id` (`account:user`) lasting until `expiry`.
fn make_token(secret: &ClusterSecret, id: &str, expiry: u64) -> String {
    let payload = format!("{expiry}\n{id}");
    let tag = secret.tag(TOKEN_PURPOSE, payload.as_bytes());
    format!(
        "AUTH_tk{}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload),
        hex::encode(tag)
    )
}

/// Reads a token: its credential id and expiry, if its tag checks.
fn read_token(secret: &ClusterSecret, token: &str) -> Option<(String, u64)> {
    let (payload, tag) = token.strip_prefix("AUTH_tk")?.split_once('.')?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let tag = hex::decode(tag).ok()?;
    if !secret.check_tag(TOKEN_PURPOSE, &payload, &tag) {
        return None;
    }
    let text = String::from_utf8(payload).ok()?;
    let (expiry, id) = text.split_once('\n')?;
    Some((id.to_owned(), expiry.parse().ok()?))
}

/// Compares secrets without leaking where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// `GET /auth/v1.0`: a token and the storage URL for a Swift user's key.
fn auth(state: &S3State, headers: &HeaderMap) -> Response {
    let header = |a: &str, b: &str| {
        headers
            .get(a)
            .or_else(|| headers.get(b))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(user), Some(key)) = (
        header("x-auth-user", "x-storage-user"),
        header("x-auth-key", "x-storage-pass"),
    ) else {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let map = state.cluster.map();
    let credential = match map.credential(&user) {
        Some(c) if c.kind == CredentialKind::Swift && same_secret(&c.secret, &key) => c,
        _ => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
    };
    let expiry = now_secs() + TOKEN_LIFETIME.as_secs();
    let token = make_token(&state.secret, &user, expiry);
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let url = format!("http://{host}/v1/{ACCOUNT_PREFIX}{}", credential.account);
    let mut response = text(StatusCode::OK, "");
    let h = response.headers_mut();
    for (name, value) in [
        ("x-auth-token", token.clone()),
        ("x-storage-token", token),
        ("x-storage-url", url),
        ("x-auth-token-expires", TOKEN_LIFETIME.as_secs().to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    response
}

/// The Swift user (`account`, `user`) a token stands for, if it is valid, unexpired and its
/// credential still exists; 401 otherwise.
fn identity(state: &S3State, token: &str) -> Result<(String, String), Refused> {
    let (id, expiry) = read_token(&state.secret, token).ok_or(UNAUTHORIZED)?;
    let map = state.cluster.map();
    let live = map
        .credential(&id)
        .is_some_and(|c| c.kind == CredentialKind::Swift);
    if expiry < now_secs() || !live {
        return Err(UNAUTHORIZED);
    }
    let (account, user) = id.split_once(':').ok_or(UNAUTHORIZED)?;
    Ok((account.to_owned(), user.to_owned()))
}

/// `GET /info`: what this cluster serves.
fn info(state: &S3State) -> Response {
    let map = state.cluster.map();
    let policies: Vec<_> = map
        .policy_names()
        .map(|name| {
            serde_json::json!({
                "name": name,
                "default": map.default_policy() == Some(name),
            })
        })
        .collect();
    let body = serde_json::json!({
        "swift": {
            "version": concat!("nimbus-", env!("CARGO_PKG_VERSION")),
            "max_object_name_length": nimbus_core::index::MAX_KEY_BYTES,
            "max_meta_name_length": 128,
            "max_meta_value_length": 256,
            "max_meta_count": nimbus_core::index::MAX_USER_METADATA_PAIRS,
            "max_meta_overall_size": meta::MAX_OVERALL,
            "container_listing_limit": listing::MAX_LIMIT,
            "account_listing_limit": listing::MAX_LIMIT,
            "policies": policies,
            "strict_cors_mode": true,
            "max_account_name_length": nimbus_core::index::MAX_NAME_BYTES,
            "max_container_name_length": 63,
        },
        "tempauth": { "account_acls": false },
        "tempurl": {
            "methods": tempurl::METHODS,
            "allowed_digests": tempurl::DIGESTS,
            "incoming_remove_headers": [],
            "outgoing_remove_headers": [],
        },
        "bulk_delete": {
            "max_deletes_per_request": bulk::MAX_DELETES,
            "max_failed_deletes": bulk::MAX_DELETES,
        },
        "slo": {
            "max_manifest_segments": large::MAX_MANIFEST_SEGMENTS,
            "max_manifest_size": large::MAX_MANIFEST_BYTES,
            "min_segment_size": 1,
        },
        "dlo": { "max_segments": large::MAX_DLO_SEGMENTS },
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Error"))
}

/// Answers a method the resource does not serve yet.
pub(crate) fn not_implemented(method: &Method) -> Response {
    text(
        StatusCode::NOT_IMPLEMENTED,
        format!("{method} is not implemented here yet"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_and_cannot_be_altered() {
        let secret = ClusterSecret::new([7; 32]);
        let token = make_token(&secret, "dev:admin", 123);
        assert_eq!(
            read_token(&secret, &token),
            Some(("dev:admin".to_owned(), 123))
        );
        let other = ClusterSecret::new([8; 32]);
        assert_eq!(read_token(&other, &token), None);
        let forged = make_token(&other, "dev:admin", 999);
        assert_eq!(read_token(&secret, &forged), None);
        let (payload, tag) = token.split_once('.').unwrap();
        let altered = format!("{payload}A.{tag}");
        assert_eq!(read_token(&secret, &altered), None);
    }

    proptest::proptest! {
        #[test]
        fn any_token_round_trips_and_any_text_is_refused_without_panic(
            id in "[a-z0-9_-]{1,20}:[a-z0-9._-]{1,20}",
            expiry: u64,
            junk in "\\PC{0,80}",
        ) {
            let secret = ClusterSecret::new([3; 32]);
            let token = make_token(&secret, &id, expiry);
            proptest::prop_assert_eq!(read_token(&secret, &token), Some((id, expiry)));
            proptest::prop_assert_eq!(read_token(&secret, &junk), None);
            let _ = decode(&junk);
        }
    }

    #[test]
    fn path_segments_decode() {
        assert_eq!(decode("a%20b%2Fc").unwrap(), "a b/c");
        assert!(decode("%ff").is_err());
        assert!(decode("a%00").is_err());
        assert_eq!(decode("%").unwrap(), "%");
    }
}

//! Authentication of internal requests (proxy → storage node, node → node) with the cluster
//! secret: HMAC-SHA256 over the method, path and query, date and ring epoch.
//!
//! ```text
//! x-nimbus-date:  <unix seconds>
//! x-nimbus-epoch: <sender's ring epoch>
//! authorization:  NIMBUS-HMAC-SHA256 <hex of HMAC-SHA256(secret, string to sign)>
//! string to sign: "<METHOD>\n<path?query>\n<date>\n<epoch>"
//! ```
//!
//! Bodies are not signed (they stream); their integrity is end to end: fragments carry block
//! CRCs and a blake3 that the receiver reports back. Check a request by hand with
//! `printf 'GET\n/health\n1700000000\n1' | openssl dgst -sha256 -mac HMAC -macopt hexkey:<secret>`.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `authorization` scheme.
pub const SCHEME: &str = "NIMBUS-HMAC-SHA256";
/// Header carrying the request time, in Unix seconds.
pub const DATE_HEADER: &str = "x-nimbus-date";
/// Header carrying the sender's ring epoch.
pub const EPOCH_HEADER: &str = "x-nimbus-epoch";
/// How far a request's date may be from the receiver's clock.
pub const MAX_SKEW_SECS: u64 = 300;

/// The cluster secret: 32 random bytes shared by every node and proxy. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; 32]);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// Wraps 32 secret bytes.
    #[must_use]
    pub fn new(bytes: [u8; 32]) -> Self {
        ClusterSecret(bytes)
    }

    /// Parses 64 hex digits (surrounding whitespace ignored, as in a secret file).
    ///
    /// # Errors
    /// [`AuthError::BadSecret`].
    pub fn from_hex(hex_text: &str) -> Result<Self, AuthError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_text.trim(), &mut bytes).map_err(|_| AuthError::BadSecret)?;
        Ok(ClusterSecret(bytes))
    }

    /// Returns the secret as 64 hex digits (for writing a secret file).
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn mac(&self, method: &str, path_and_query: &str, date: u64, epoch: u64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(format!("{method}\n{path_and_query}\n{date}\n{epoch}").as_bytes());
        mac
    }

    /// Returns an HMAC-SHA256 of `message` for `purpose` (a fixed name such as
    /// `"swift-token"`): a tag any holder of the secret can check, and that no internal
    /// request signature can stand in for (their messages start with an HTTP method).
    #[must_use]
    pub fn tag(&self, purpose: &str, message: &[u8]) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(b"nimbus-tag\n");
        mac.update(purpose.as_bytes());
        mac.update(b"\n");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// Checks a [`ClusterSecret::tag`] in constant time.
    #[must_use]
    pub fn check_tag(&self, purpose: &str, message: &[u8], tag: &[u8]) -> bool {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(b"nimbus-tag\n");
        mac.update(purpose.as_bytes());
        mac.update(b"\n");
        mac.update(message);
        mac.verify_slice(tag).is_ok()
    }

    /// Returns the `authorization` header value for a request.
    #[must_use]
    pub fn sign(&self, method: &str, path_and_query: &str, date: u64, epoch: u64) -> String {
        let tag = self
            .mac(method, path_and_query, date, epoch)
            .finalize()
            .into_bytes();
        format!("{SCHEME} {}", hex::encode(tag))
    }

    /// Checks an `authorization` header value (in constant time).
    ///
    /// # Errors
    /// [`AuthError::Malformed`] or [`AuthError::BadSignature`].
    pub fn verify(
        &self,
        authorization: &str,
        method: &str,
        path_and_query: &str,
        date: u64,
        epoch: u64,
    ) -> Result<(), AuthError> {
        let tag = authorization
            .strip_prefix(SCHEME)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or(AuthError::Malformed)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(tag, &mut bytes).map_err(|_| AuthError::Malformed)?;
        self.mac(method, path_and_query, date, epoch)
            .verify_slice(&bytes)
            .map_err(|_| AuthError::BadSignature)
    }
}

/// The credential headers of a request, as received.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestCredentials<'a> {
    /// `authorization`.
    pub authorization: Option<&'a str>,
    /// [`DATE_HEADER`].
    pub date: Option<&'a str>,
    /// [`EPOCH_HEADER`].
    pub epoch: Option<&'a str>,
}

/// Why a request was refused, and how to answer: missing credentials are a 401, wrong ones
/// a 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    /// A credential header is missing (401).
    #[error("authentication required")]
    Missing,
    /// Credentials are malformed, do not verify, or the date is too far off (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
}

impl ClusterSecret {
    /// Checks a request's credentials against its method, path and query, and the receiver's
    /// clock (`now_secs`); returns the sender's epoch.
    ///
    /// # Errors
    /// [`RequestAuthError::Missing`] without all three headers; [`RequestAuthError::Forbidden`]
    /// for malformed values, a bad signature, or a date more than [`MAX_SKEW_SECS`] away.
    pub fn check_request(
        &self,
        credentials: RequestCredentials<'_>,
        method: &str,
        path_and_query: &str,
        now_secs: u64,
    ) -> Result<u64, RequestAuthError> {
        let (Some(authorization), Some(date), Some(epoch)) = (
            credentials.authorization,
            credentials.date,
            credentials.epoch,
        ) else {
            return Err(RequestAuthError::Missing);
        };
        let malformed = |what: &str| RequestAuthError::Forbidden(format!("malformed {what}"));
        let date: u64 = date.parse().map_err(|_| malformed(DATE_HEADER))?;
        let epoch: u64 = epoch.parse().map_err(|_| malformed(EPOCH_HEADER))?;
        self.verify(authorization, method, path_and_query, date, epoch)
            .map_err(|e| RequestAuthError::Forbidden(e.to_string()))?;
        if now_secs.abs_diff(date) > MAX_SKEW_SECS {
            return Err(RequestAuthError::Forbidden(format!(
                "request date {date} is more than {MAX_SKEW_SECS} s from the receiver's clock"
            )));
        }
        Ok(epoch)
    }
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The secret is not 64 hex digits.
    #[error("the cluster secret must be 64 hex digits")]
    BadSecret,
    /// The header is not `NIMBUS-HMAC-SHA256 <64 hex digits>`.
    #[error("malformed authorization header")]
    Malformed,
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_what_was_signed() {
        let secret = ClusterSecret::new([7; 32]);
        let auth = secret.sign("PUT", "/v1/x?path=a%2Fb%2Fc", 1_700_000_000, 3);
        assert!(auth.starts_with("NIMBUS-HMAC-SHA256 "));
        assert!(
            secret
                .verify(&auth, "PUT", "/v1/x?path=a%2Fb%2Fc", 1_700_000_000, 3)
                .is_ok()
        );
        for (m, p, d, e) in [
            ("GET", "/v1/x?path=a%2Fb%2Fc", 1_700_000_000, 3),
            ("PUT", "/v1/x?path=a%2Fb%2Fd", 1_700_000_000, 3),
            ("PUT", "/v1/x?path=a%2Fb%2Fc", 1_700_000_001, 3),
            ("PUT", "/v1/x?path=a%2Fb%2Fc", 1_700_000_000, 4),
        ] {
            assert_eq!(
                secret.verify(&auth, m, p, d, e),
                Err(AuthError::BadSignature)
            );
        }
        let other = ClusterSecret::new([8; 32]);
        assert_eq!(
            other.verify(&auth, "PUT", "/v1/x?path=a%2Fb%2Fc", 1_700_000_000, 3),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            secret.verify("Bearer x", "PUT", "/", 0, 0),
            Err(AuthError::Malformed)
        );
        assert_eq!(format!("{secret:?}"), "ClusterSecret(..)");
        assert_eq!(ClusterSecret::from_hex(&secret.to_hex()).unwrap(), secret);
        assert!(ClusterSecret::from_hex("abc").is_err());
    }

    #[test]
    fn requests_are_checked_for_presence_signature_and_date() {
        let secret = ClusterSecret::new([3; 32]);
        let now = 1_700_000_000;
        let auth = secret.sign("GET", "/x", now, 7);
        let date = now.to_string();
        let creds = RequestCredentials {
            authorization: Some(&auth),
            date: Some(&date),
            epoch: Some("7"),
        };
        assert_eq!(secret.check_request(creds, "GET", "/x", now + 10), Ok(7));
        let missing = RequestCredentials {
            epoch: None,
            ..creds
        };
        assert_eq!(
            secret.check_request(missing, "GET", "/x", now),
            Err(RequestAuthError::Missing)
        );
        assert!(matches!(
            secret.check_request(creds, "GET", "/x", now + 3600),
            Err(RequestAuthError::Forbidden(_))
        ));
        assert!(matches!(
            secret.check_request(creds, "GET", "/y", now),
            Err(RequestAuthError::Forbidden(_))
        ));
        let garbled = RequestCredentials {
            date: Some("soon"),
            ..creds
        };
        assert!(matches!(
            secret.check_request(garbled, "GET", "/x", now),
            Err(RequestAuthError::Forbidden(_))
        ));
    }
}

//! What the HTTP drivers (Swift, and S3 without the SDK) share: reading answers, and
//! percent-encoding names.

use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::header::{CONTENT_LENGTH, CONTENT_RANGE};

use crate::driver::{ByteRange, ErrorKind, GetOutcome, OpError, outcome};
use crate::payload::{self, Verifier};

/// Reads a GET's answer to its end, checking the content as it arrives when `verify`;
/// returns the bytes received and the object's whole size.
///
/// # Errors
///
/// [`ErrorKind::Connection`] for a body cut short, [`ErrorKind::Verify`] for a wrong byte or
/// length, [`ErrorKind::Other`] for a 206 without `Content-Range`.
pub(crate) async fn read_object(
    key: &str,
    response: hyper::Response<hyper::body::Incoming>,
    range: Option<ByteRange>,
    verify: bool,
) -> Result<GetOutcome, OpError> {
    let length = header_u64(&response, CONTENT_LENGTH.as_str()).unwrap_or(0);
    let object_size = match range {
        Some(_) if response.status() == StatusCode::PARTIAL_CONTENT => response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(payload::size_from_content_range)
            .ok_or_else(|| OpError::new(ErrorKind::Other, "206 without Content-Range"))?,
        _ => length,
    };
    let offset = range.map_or(0, |r| r.offset);
    let mut verifier = verify.then(|| Verifier::new(key, object_size, offset));
    let mut body = response.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| OpError::new(ErrorKind::Connection, format!("body: {e}")))?;
        if let Some(chunk) = frame.data_ref() {
            bytes += chunk.len() as u64;
            if let Some(v) = verifier.as_mut() {
                v.feed(chunk);
            }
        }
    }
    outcome(key, verifier, bytes, range, object_size)
}

/// Reads a response body to its end; returns its length.
///
/// # Errors
///
/// [`ErrorKind::Connection`] for a body cut short.
pub(crate) async fn drain(
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<u64, OpError> {
    let mut body = response.into_body();
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| OpError::new(ErrorKind::Connection, format!("body: {e}")))?;
        if let Some(chunk) = frame.data_ref() {
            bytes += chunk.len() as u64;
        }
    }
    Ok(bytes)
}

/// A header's value as a number.
pub(crate) fn header_u64<B>(response: &hyper::Response<B>, name: &str) -> Option<u64> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Percent-encodes a path (object name), keeping `/` and unreserved characters: Swift's
/// object URLs, and S3's canonical URI (RFC 3986 unreserved characters, as SigV4 wants).
pub(crate) fn encode_path(s: &str) -> String {
    encode(s, |b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b))
}

/// Percent-encodes a query value.
pub(crate) fn encode_query(s: &str) -> String {
    encode(s, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn encode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded_except_slashes() {
        assert_eq!(encode_path("nb/a b+c"), "nb/a%20b%2Bc");
        assert_eq!(encode_query("nb/x"), "nb%2Fx");
    }
}

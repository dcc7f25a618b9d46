//! TempURL: an object URL signed with a key the account or container keeps
//! (`X-Account-Meta-Temp-URL-Key[-2]`, `X-Container-Meta-Temp-URL-Key[-2]`), usable without a
//! token until it expires, for the one method it was signed for (a HEAD with any of GET,
//! HEAD or PUT).
//!
//! The signature is an HMAC over `"<METHOD>\n<expires>\n<path>"` (or
//! `"<METHOD>\n<expires>\nprefix:<path prefix>"` with `temp_url_prefix`), as hex (SHA-1,
//! SHA-256 or SHA-512, told apart by length) or `<digest>:<base64>`.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};

/// The methods a TempURL may be signed for.
pub const METHODS: [&str; 5] = ["GET", "HEAD", "PUT", "POST", "DELETE"];
/// The digests accepted.
pub const DIGESTS: [&str; 3] = ["sha1", "sha256", "sha512"];
/// The attribute names (account or container) holding keys.
pub const KEY_ATTRIBUTES: [&str; 2] = ["meta:temp-url-key", "meta:temp-url-key-2"];

/// A TempURL's query parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TempUrl {
    /// `temp_url_sig`.
    pub signature: String,
    /// `temp_url_expires`, as unix seconds.
    pub expires: u64,
    /// `temp_url_prefix`: the signature covers every object under it.
    pub prefix: Option<String>,
    /// `filename`: served as an attachment with this name.
    pub filename: Option<String>,
    /// `inline`: served inline.
    pub inline: bool,
}

impl TempUrl {
    /// Reads the TempURL parameters of a query, if it has a signature.
    ///
    /// # Errors
    /// A text for a signature without a valid expiry.
    pub fn from_query(pairs: &[(String, String)]) -> Option<Result<TempUrl, &'static str>> {
        let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let signature = get("temp_url_sig")?.clone();
        let Some(expires) = get("temp_url_expires").and_then(|e| parse_expires(e)) else {
            return Some(Err("temp_url_expires is missing or not a time"));
        };
        Some(Ok(TempUrl {
            signature,
            expires,
            prefix: get("temp_url_prefix").cloned(),
            filename: get("filename").cloned(),
            inline: get("inline").is_some(),
        }))
    }

    /// Checks the signature for `method` on `path` (`/v1/AUTH_a/c/o`, decoded) at `now`,
    /// against the keys. `object` is the object's name (for the prefix form).
    #[must_use]
    pub fn admits(&self, method: &str, path: &str, object: &str, keys: &[&str], now: u64) -> bool {
        if now >= self.expires || keys.is_empty() {
            return false;
        }
        let covered = match &self.prefix {
            Some(prefix) if object.starts_with(prefix.as_str()) => {
                match path.strip_suffix(object) {
                    Some(container_path) => format!("prefix:{container_path}{prefix}"),
                    None => return false,
                }
            }
            Some(_) => return false,
            None => path.to_owned(),
        };
        // A HEAD may use a signature made for GET, HEAD or PUT.
        let methods: &[&str] = if method == "HEAD" {
            &["HEAD", "GET", "PUT"]
        } else {
            &[method]
        };
        let Some((digest, signature)) = decode_signature(&self.signature) else {
            return false;
        };
        methods.iter().any(|m| {
            let message = format!("{m}\n{}\n{covered}", self.expires);
            keys.iter()
                .any(|key| verify(digest, key.as_bytes(), message.as_bytes(), &signature))
        })
    }
}

/// Unix seconds, or ISO 8601 `YYYY-MM-DDThh:mm:ssZ`.
fn parse_expires(text: &str) -> Option<u64> {
    if let Ok(secs) = text.parse() {
        return Some(secs);
    }
    let b = text.as_bytes();
    let shape = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    if !shape {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<u16>().ok();
    let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::from(num(0..4)?),
        month,
        u8::try_from(num(8..10)?).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(14..16)?).ok()?,
        u8::try_from(num(17..19)?).ok()?,
    )
    .ok()?;
    u64::try_from(date.with_time(clock).assume_utc().unix_timestamp()).ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digest {
    Sha1,
    Sha256,
    Sha512,
}

/// The digest and the raw signature bytes.
fn decode_signature(text: &str) -> Option<(Digest, Vec<u8>)> {
    if let Some((name, b64)) = text.split_once(':') {
        let digest = match name {
            "sha1" => Digest::Sha1,
            "sha256" => Digest::Sha256,
            "sha512" => Digest::Sha512,
            _ => return None,
        };
        let b64 = b64.trim_end_matches('=');
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
            .ok()?;
        return Some((digest, bytes));
    }
    let digest = match text.len() {
        40 => Digest::Sha1,
        64 => Digest::Sha256,
        128 => Digest::Sha512,
        _ => return None,
    };
    Some((digest, hex::decode(text).ok()?))
}

fn verify(digest: Digest, key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    // `verify_slice` compares in constant time.
    match digest {
        Digest::Sha1 => Hmac::<sha1::Sha1>::new_from_slice(key).is_ok_and(|mut m| {
            m.update(message);
            m.verify_slice(signature).is_ok()
        }),
        Digest::Sha256 => Hmac::<sha2::Sha256>::new_from_slice(key).is_ok_and(|mut m| {
            m.update(message);
            m.verify_slice(signature).is_ok()
        }),
        Digest::Sha512 => Hmac::<sha2::Sha512>::new_from_slice(key).is_ok_and(|mut m| {
            m.update(message);
            m.verify_slice(signature).is_ok()
        }),
    }
}

/// The keys among account and container attributes.
#[must_use]
pub fn keys<'a>(
    account: Option<&'a BTreeMap<String, String>>,
    container: Option<&'a BTreeMap<String, String>>,
) -> Vec<&'a str> {
    [account, container]
        .into_iter()
        .flatten()
        .flat_map(|a| KEY_ATTRIBUTES.iter().filter_map(|k| a.get(*k)))
        .map(String::as_str)
        .filter(|k| !k.is_empty())
        .collect()
}

/// The `Content-Disposition` a TempURL GET answers with, if it asks for one.
#[must_use]
pub fn disposition(url: &TempUrl, object: &str) -> Option<String> {
    let quoted = |name: &str| name.replace(['"', '\\'], "_");
    match (&url.filename, url.inline) {
        (Some(name), true) => Some(format!("inline; filename=\"{}\"", quoted(name))),
        (None, true) => Some("inline".to_owned()),
        (Some(name), false) => Some(format!("attachment; filename=\"{}\"", quoted(name))),
        (None, false) => {
            let base = object.rsplit('/').next().unwrap_or(object);
            Some(format!("attachment; filename=\"{}\"", quoted(base)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_hex(key: &str, message: &str) -> String {
        let mut m = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
        m.update(message.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    fn sign_256_b64(key: &str, message: &str) -> String {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        m.update(message.as_bytes());
        format!(
            "sha256:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        )
    }

    fn url(signature: String, expires: u64, prefix: Option<&str>) -> TempUrl {
        TempUrl {
            signature,
            expires,
            prefix: prefix.map(str::to_owned),
            filename: None,
            inline: false,
        }
    }

    #[test]
    fn signatures_check_for_their_method_path_and_time() {
        let path = "/v1/AUTH_dev/c/photos/a.jpg";
        let u = url(sign_hex("k1", &format!("GET\n100\n{path}")), 100, None);
        assert!(u.admits("GET", path, "photos/a.jpg", &["other", "k1"], 99));
        assert!(u.admits("HEAD", path, "photos/a.jpg", &["k1"], 99));
        assert!(
            !u.admits("GET", path, "photos/a.jpg", &["k1"], 100),
            "expired"
        );
        assert!(
            !u.admits("PUT", path, "photos/a.jpg", &["k1"], 99),
            "method"
        );
        assert!(
            !u.admits("GET", "/v1/AUTH_dev/c/b", "b", &["k1"], 99),
            "path"
        );
        assert!(!u.admits("GET", path, "photos/a.jpg", &["k2"], 99), "key");
        assert!(!u.admits("GET", path, "photos/a.jpg", &[], 99), "no key");

        let u = url(
            sign_256_b64("k1", "PUT\n100\nprefix:/v1/AUTH_dev/c/photos/"),
            100,
            Some("photos/"),
        );
        assert!(u.admits("PUT", path, "photos/a.jpg", &["k1"], 1));
        assert!(!u.admits("PUT", "/v1/AUTH_dev/c/x", "x", &["k1"], 1));
    }

    #[test]
    fn queries_parse() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(TempUrl::from_query(&q(&[("format", "json")])).is_none());
        assert!(
            TempUrl::from_query(&q(&[("temp_url_sig", "x")]))
                .unwrap()
                .is_err()
        );
        let u = TempUrl::from_query(&q(&[
            ("temp_url_sig", "x"),
            ("temp_url_expires", "2030-01-01T00:00:00Z"),
            ("inline", ""),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(u.expires, 1_893_456_000);
        assert!(u.inline);
    }

    proptest::proptest! {
        #[test]
        fn any_signature_text_is_refused_without_panic(sig in "\\PC{0,140}", exp in "\\PC{0,30}") {
            let _ = parse_expires(&exp);
            let u = url(sig, u64::MAX, None);
            proptest::prop_assert!(!u.admits("GET", "/v1/AUTH_a/c/o", "o", &["k"], 0));
        }
    }
}

//! S3's bucket naming rules, which Nimbus applies to every bucket (= container reached
//! through S3), so that any bucket works with virtual-host-style addressing and every SDK.

/// Why a bucket name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bucket name {name:?}: {reason}")]
pub struct InvalidBucketName {
    /// The name given.
    pub name: String,
    /// Which rule it breaks.
    pub reason: &'static str,
}

/// Checks a bucket name against S3's rules: 3 to 63 characters of `a-z 0-9 . -`, starting and
/// ending with a letter or digit, no `..`, not an IPv4 address, none of the reserved prefixes
/// (`xn--`, `sthree-`, `amzn-s3-demo-`) or suffixes (`-s3alias`, `--ol-s3`, `.mrap`,
/// `--x-s3`).
///
/// # Errors
/// [`InvalidBucketName`] naming the rule.
pub fn validate_bucket_name(name: &str) -> Result<(), InvalidBucketName> {
    let fail = |reason| {
        Err(InvalidBucketName {
            name: name.to_owned(),
            reason,
        })
    };
    if !(3..=63).contains(&name.len()) {
        return fail("use 3 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return fail("use only lowercase letters, digits, '.' and '-'");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return fail("start and end with a letter or digit");
    }
    if name.contains("..") {
        return fail("no two adjacent periods");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return fail("must not look like an IP address");
    }
    if ["xn--", "sthree-", "amzn-s3-demo-"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return fail("starts with a reserved prefix");
    }
    if ["-s3alias", "--ol-s3", ".mrap", "--x-s3"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        return fail("ends with a reserved suffix");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn s3_rules_hold() {
        for good in ["abc", "my-bucket", "my.bucket.2024", "a1b", &"a".repeat(63)] {
            assert!(validate_bucket_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "My-Bucket",
            "my_bucket",
            "-abc",
            "abc-",
            ".abc",
            "a..b",
            "192.168.1.1",
            "xn--abc",
            "sthree-abc",
            "amzn-s3-demo-x",
            "abc-s3alias",
            "abc--ol-s3",
            "abc.mrap",
            "abc--x-s3",
            "ab c",
            "abç",
        ] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn the_checker_never_panics(name in "\\PC{0,80}") {
            let _ = validate_bucket_name(&name);
        }

        #[test]
        fn plain_names_are_accepted(name in "[a-z0-9][a-z0-9-]{1,61}[a-z0-9]") {
            prop_assume!(!name.starts_with("xn--") && !name.starts_with("sthree-"));
            prop_assume!(!name.ends_with("-s3alias") && !name.ends_with("--x-s3") && !name.ends_with("--ol-s3"));
            prop_assume!(!name.starts_with("amzn-s3-demo-"));
            prop_assert!(validate_bucket_name(&name).is_ok());
        }
    }
}

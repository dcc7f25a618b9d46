//! Which bucket a request's `Host` names (virtual-host style): `bucket.<domain>[:port]` for
//! one of the configured domains. Any other host (an IP address, a name that is not ours)
//! means path style, so the endpoint works by address as well as by name.

use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

/// The configured S3 domains.
#[derive(Debug)]
pub struct Domains(Vec<String>);

impl Domains {
    /// Returns the domains, lowercased.
    #[must_use]
    pub fn new(domains: &[String]) -> Domains {
        Domains(domains.iter().map(|d| d.to_ascii_lowercase()).collect())
    }

    /// Returns the bucket `host` names, if any.
    pub(crate) fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        // Without the port; an IPv6 literal keeps its brackets and names no bucket.
        let name = match host.rsplit_once(':') {
            Some((name, port))
                if !name.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        };
        self.0.iter().find_map(|domain| {
            let at = name.len().checked_sub(domain.len() + 1)?;
            // `get` rather than indexing: a host with multi-byte characters never panics.
            let (bucket, rest) = (name.get(..at)?, name.get(at..)?);
            let under_domain = rest.strip_prefix('.')?.eq_ignore_ascii_case(domain);
            (under_domain && !bucket.is_empty()).then_some(bucket)
        })
    }
}

impl S3Host for Domains {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_of(host) {
            Some(bucket) => VirtualHost::new(host).with_bucket(bucket),
            None => VirtualHost::new(host),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn a_bucket_under_the_domain_is_found_and_nothing_panics(
            bucket in "[a-z0-9][a-z0-9.-]{1,40}[a-z0-9]",
            port in proptest::option::of(1u16..),
            junk in "\\PC{0,60}",
        ) {
            let d = Domains::new(&["s3.example.com".to_owned()]);
            let host = match port {
                Some(p) => format!("{bucket}.s3.example.com:{p}"),
                None => format!("{bucket}.S3.Example.com"),
            };
            proptest::prop_assert_eq!(d.bucket_of(&host), Some(bucket.as_str()));
            let _ = d.bucket_of(&junk);
        }
    }

    #[test]
    fn a_bucket_only_under_a_configured_domain() {
        let d = Domains::new(&["s3.example.com".to_owned(), "localhost".to_owned()]);
        assert_eq!(d.bucket_of("photos.s3.example.com"), Some("photos"));
        assert_eq!(d.bucket_of("photos.s3.example.com:9000"), Some("photos"));
        assert_eq!(
            d.bucket_of("my.dotted.bucket.localhost:80"),
            Some("my.dotted.bucket")
        );
        assert_eq!(d.bucket_of("s3.example.com"), None);
        assert_eq!(d.bucket_of("localhost:9000"), None);
        assert_eq!(d.bucket_of("127.0.0.1:9000"), None);
        assert_eq!(d.bucket_of("[::1]:9000"), None);
        assert_eq!(d.bucket_of("evil-localhost"), None);
        assert_eq!(d.bucket_of(".localhost"), None);
        assert_eq!(d.bucket_of("é.localhost"), Some("é"));
        assert_eq!(d.bucket_of("xé"), None);
    }
}

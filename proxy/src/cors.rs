//! Cross-origin resource sharing for both APIs, from the bucket's attributes in the cluster
//! map: S3 rules (PutBucketCors) in [`S3_CORS`], Swift's container metadata in
//! [`SWIFT_ALLOW_ORIGIN`], [`SWIFT_MAX_AGE`] and [`SWIFT_EXPOSE_HEADERS`].
//!
//! The decisions are pure functions from those attributes and the request's headers to the
//! response's headers ([`s3_preflight`], [`s3_actual`], [`swift_preflight`],
//! [`swift_actual`]); [`Cors`] (`cors/http.rs`) does the HTTP around them for `server`: it answers preflight
//! `OPTIONS` requests (unauthenticated, as in S3 and Swift) and adds the headers to the
//! answers of requests that carry `Origin`, errors included.
//!
//! Invariant: nothing here does I/O; the map is read once per request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod http;

pub use http::Cors;

/// The bucket attribute holding the S3 CORS rules, as JSON (a list of [`Rule`]).
pub const S3_CORS: &str = "s3:cors";
/// Swift's `X-Container-Meta-Access-Control-Allow-Origin`: origins separated by spaces, or `*`.
pub const SWIFT_ALLOW_ORIGIN: &str = "meta:access-control-allow-origin";
/// Swift's `X-Container-Meta-Access-Control-Max-Age`, in seconds.
pub const SWIFT_MAX_AGE: &str = "meta:access-control-max-age";
/// Swift's `X-Container-Meta-Access-Control-Expose-Headers`, separated by spaces or commas.
pub const SWIFT_EXPOSE_HEADERS: &str = "meta:access-control-expose-headers";
/// The most rules of one bucket (S3's limit).
pub const MAX_RULES: usize = 100;
/// The methods an S3 rule may allow.
pub const S3_METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];
/// The methods Swift's preflight answers allow (those of an object).
const SWIFT_METHODS: &str = "HEAD, GET, PUT, POST, COPY, OPTIONS, DELETE";
/// The headers Swift always exposes to a permitted origin.
const SWIFT_DEFAULT_EXPOSE: &str = "cache-control, content-language, content-type, expires, \
    last-modified, pragma, etag, x-timestamp, x-trans-id, x-openstack-request-id";

/// One S3 CORS rule, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `AllowedOrigin`s, each with at most one `*`.
    pub origins: Vec<String>,
    /// `AllowedMethod`s, among [`S3_METHODS`].
    pub methods: Vec<String>,
    /// `AllowedHeader`s (case-insensitive), each with at most one `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// `ExposeHeader`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// `MaxAgeSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
    /// `ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Why a CORS configuration is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// No rules, or more than [`MAX_RULES`].
    #[error("a CORS configuration has 1 to {MAX_RULES} rules, not {0}")]
    Count(usize),
    /// A rule without origins or methods.
    #[error("every CORS rule needs an AllowedOrigin and an AllowedMethod")]
    Incomplete,
    /// A method S3 does not allow in a rule.
    #[error("Found unsupported HTTP method in CORS config. Unsupported method is {0}")]
    Method(String),
    /// More than one wildcard in an origin or header.
    #[error("{kind} \"{value}\" can not have more than one wildcard.")]
    Wildcards {
        /// `AllowedOrigin` or `AllowedHeader`.
        kind: &'static str,
        /// The value.
        value: String,
    },
    /// A negative `MaxAgeSeconds`, or an `ID` over 255 characters.
    #[error("{0}")]
    Invalid(String),
}

impl RulesError {
    /// Whether S3 calls this malformed XML (rather than an invalid request).
    #[must_use]
    pub fn is_malformed(&self) -> bool {
        matches!(self, RulesError::Count(_) | RulesError::Incomplete)
    }
}

/// Checks rules against S3's limits.
///
/// # Errors
/// The first [`RulesError`] found.
pub fn validate(rules: &[Rule]) -> Result<(), RulesError> {
    if rules.is_empty() || rules.len() > MAX_RULES {
        return Err(RulesError::Count(rules.len()));
    }
    for rule in rules {
        if rule.origins.is_empty() || rule.methods.is_empty() {
            return Err(RulesError::Incomplete);
        }
        if let Some(m) = rule
            .methods
            .iter()
            .find(|m| !S3_METHODS.contains(&m.as_str()))
        {
            return Err(RulesError::Method(m.clone()));
        }
        for (kind, values) in [
            ("AllowedOrigin", &rule.origins),
            ("AllowedHeader", &rule.headers),
        ] {
            if let Some(v) = values.iter().find(|v| v.matches('*').count() > 1) {
                return Err(RulesError::Wildcards {
                    kind,
                    value: v.clone(),
                });
            }
        }
        if rule.max_age_seconds.is_some_and(|a| a < 0) {
            return Err(RulesError::Invalid(
                "MaxAgeSeconds may not be negative".into(),
            ));
        }
        if rule.id.as_ref().is_some_and(|id| id.chars().count() > 255) {
            return Err(RulesError::Invalid(
                "a rule ID has at most 255 characters".into(),
            ));
        }
    }
    Ok(())
}

/// Reads the stored rules of a bucket; `None` when it has none (or they do not decode, which
/// only a bug makes happen: they were checked before they were stored).
#[must_use]
pub fn rules_of(attributes: &BTreeMap<String, String>) -> Option<Vec<Rule>> {
    let text = attributes.get(S3_CORS)?;
    match serde_json::from_str(text) {
        Ok(rules) => Some(rules),
        Err(e) => {
            tracing::warn!(error = %e, "stored CORS rules do not decode");
            None
        }
    }
}

/// Tells whether `text` matches `pattern`, where each `*` stands for any run of characters.
#[must_use]
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*`: the whole text is the pattern.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A preflight request's questions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preflight {
    /// `Origin`.
    pub origin: String,
    /// `Access-Control-Request-Method`.
    pub method: String,
    /// `Access-Control-Request-Headers`, lowercased.
    pub headers: Vec<String>,
}

/// Response headers, in order.
pub type Headers = Vec<(&'static str, String)>;

fn origin_rule<'r>(rules: &'r [Rule], origin: &str, method: &str) -> Option<(&'r Rule, bool)> {
    rules.iter().find_map(|rule| {
        let matched = rule.origins.iter().find(|o| wildcard_match(o, origin))?;
        rule.methods
            .iter()
            .any(|m| m == method)
            .then_some((rule, matched == "*"))
    })
}

fn common_headers(rule: &Rule, origin: &str, any_origin: bool, out: &mut Headers) {
    out.push((
        "access-control-allow-origin",
        if any_origin {
            "*".to_owned()
        } else {
            origin.to_owned()
        },
    ));
    out.push(("access-control-allow-methods", rule.methods.join(", ")));
    if !rule.expose.is_empty() {
        out.push(("access-control-expose-headers", rule.expose.join(", ")));
    }
    if let Some(age) = rule.max_age_seconds {
        out.push(("access-control-max-age", age.to_string()));
    }
    if !any_origin {
        out.push(("access-control-allow-credentials", "true".to_owned()));
    }
    out.push((
        "vary",
        "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".to_owned(),
    ));
}

/// The headers of an S3 preflight answer from the first rule allowing the origin, the method
/// and every requested header; `None` when no rule does.
#[must_use]
pub fn s3_preflight(rules: &[Rule], request: &Preflight) -> Option<Headers> {
    let (rule, any_origin) = rules.iter().find_map(|rule| {
        let (found, any) =
            origin_rule(std::slice::from_ref(rule), &request.origin, &request.method)?;
        let headers_allowed = request.headers.iter().all(|h| {
            found
                .headers
                .iter()
                .any(|allowed| wildcard_match(&allowed.to_ascii_lowercase(), h))
        });
        headers_allowed.then_some((found, any))
    })?;
    let mut out = Headers::new();
    common_headers(rule, &request.origin, any_origin, &mut out);
    if !request.headers.is_empty() {
        out.push(("access-control-allow-headers", request.headers.join(", ")));
    }
    Some(out)
}

/// The headers S3 adds to the answer of a `method` request from `origin`: those of the first
/// rule allowing both; `None` when no rule does.
#[must_use]
pub fn s3_actual(rules: &[Rule], origin: &str, method: &str) -> Option<Headers> {
    let (rule, any_origin) = origin_rule(rules, origin, method)?;
    let mut out = Headers::new();
    common_headers(rule, origin, any_origin, &mut out);
    Some(out)
}

/// A container's Swift CORS metadata.
struct SwiftCors<'a> {
    origins: Vec<&'a str>,
    max_age: Option<&'a str>,
    expose: Vec<&'a str>,
}

impl<'a> SwiftCors<'a> {
    fn of(attributes: &'a BTreeMap<String, String>) -> Option<SwiftCors<'a>> {
        let origins: Vec<&str> = attributes
            .get(SWIFT_ALLOW_ORIGIN)?
            .split_whitespace()
            .collect();
        Some(SwiftCors {
            origins,
            max_age: attributes.get(SWIFT_MAX_AGE).map(|a| a.trim()),
            expose: attributes
                .get(SWIFT_EXPOSE_HEADERS)
                .map(|e| {
                    e.split(|c: char| c == ',' || c.is_whitespace())
                        .filter(|h| !h.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
    fn allow_origin(&self, origin: &str) -> Option<String> {
        if self.origins == ["*"] {
            Some("*".to_owned())
        } else if self.origins.iter().any(|o| *o == "*" || *o == origin) {
            Some(origin.to_owned())
        } else {
            None
        }
    }
}

/// The headers of a Swift preflight answer, from the container's metadata; `None` when the
/// origin is not allowed (Swift then answers 401).
#[must_use]
pub fn swift_preflight(
    attributes: &BTreeMap<String, String>,
    request: &Preflight,
) -> Option<Headers> {
    let cors = SwiftCors::of(attributes)?;
    let allow = cors.allow_origin(&request.origin)?;
    if !SWIFT_METHODS.split(", ").any(|m| m == request.method) {
        return None;
    }
    let mut out: Headers = vec![
        ("access-control-allow-origin", allow),
        ("access-control-allow-methods", SWIFT_METHODS.to_owned()),
    ];
    if !request.headers.is_empty() {
        out.push(("access-control-allow-headers", request.headers.join(", ")));
    }
    if let Some(age) = cors.max_age.filter(|a| a.parse::<u32>().is_ok()) {
        out.push(("access-control-max-age", age.to_owned()));
    }
    Some(out)
}

/// The headers Swift adds to the answer of a request from `origin` (strict mode: only when
/// the container allows the origin).
#[must_use]
pub fn swift_actual(attributes: &BTreeMap<String, String>, origin: &str) -> Option<Headers> {
    let cors = SwiftCors::of(attributes)?;
    let allow = cors.allow_origin(origin)?;
    let mut expose = SWIFT_DEFAULT_EXPOSE.to_owned();
    for h in &cors.expose {
        expose.push_str(", ");
        expose.push_str(h);
    }
    Some(vec![
        ("access-control-allow-origin", allow),
        ("access-control-expose-headers", expose),
        ("vary", "Origin".to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> Rule {
        Rule {
            origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            methods: methods.iter().map(|s| (*s).to_owned()).collect(),
            headers: headers.iter().map(|s| (*s).to_owned()).collect(),
            expose: vec!["ETag".to_owned()],
            max_age_seconds: Some(600),
            id: None,
        }
    }

    fn preflight(origin: &str, method: &str, headers: &[&str]) -> Preflight {
        Preflight {
            origin: origin.to_owned(),
            method: method.to_owned(),
            headers: headers.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn get<'h>(headers: &'h Headers, name: &str) -> Option<&'h str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn wildcards_stand_for_any_run() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*", "https://a.example"));
        assert!(wildcard_match(
            "https://*.example.com",
            "https://app.example.com"
        ));
        assert!(!wildcard_match(
            "https://*.example.com",
            "https://example.com"
        ));
        assert!(!wildcard_match(
            "https://*.example.com",
            "http://app.example.com"
        ));
        assert!(wildcard_match("http://a.example", "http://a.example"));
        assert!(!wildcard_match("http://a.example", "http://a.example.evil"));
        assert!(wildcard_match("x-amz-*", "x-amz-date"));
        assert!(!wildcard_match("ab*ba", "aba"));
    }

    #[test]
    fn the_first_rule_allowing_origin_method_and_headers_answers() {
        let rules = vec![
            rule(&["https://*.example.com"], &["GET"], &[]),
            rule(
                &["https://app.example.com"],
                &["PUT", "GET"],
                &["x-amz-*", "Content-Type"],
            ),
            rule(&["*"], &["GET"], &["*"]),
        ];
        let h = s3_preflight(&rules, &preflight("https://app.example.com", "GET", &[])).unwrap();
        assert_eq!(get(&h, "access-control-allow-methods"), Some("GET"));
        assert_eq!(
            get(&h, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(get(&h, "access-control-max-age"), Some("600"));
        assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
        let h = s3_preflight(
            &rules,
            &preflight(
                "https://app.example.com",
                "PUT",
                &["x-amz-date", "content-type"],
            ),
        )
        .unwrap();
        assert_eq!(get(&h, "access-control-allow-methods"), Some("PUT, GET"));
        assert_eq!(
            get(&h, "access-control-allow-headers"),
            Some("x-amz-date, content-type")
        );
        assert!(
            s3_preflight(
                &rules,
                &preflight("https://app.example.com", "PUT", &["x-other"])
            )
            .is_none()
        );
        let h = s3_preflight(&rules, &preflight("http://anyone", "GET", &["x-other"])).unwrap();
        assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
        assert_eq!(get(&h, "access-control-allow-credentials"), None);
        assert!(s3_preflight(&rules, &preflight("http://anyone", "DELETE", &[])).is_none());
        let h = s3_actual(&rules, "https://app.example.com", "PUT").unwrap();
        assert_eq!(get(&h, "access-control-expose-headers"), Some("ETag"));
        assert!(s3_actual(&rules, "http://anyone", "PUT").is_none());
    }

    #[test]
    fn configurations_are_checked() {
        assert_eq!(validate(&[]), Err(RulesError::Count(0)));
        let many = vec![rule(&["*"], &["GET"], &[]); 101];
        assert_eq!(validate(&many), Err(RulesError::Count(101)));
        assert!(validate(&many[..100]).is_ok());
        assert_eq!(
            validate(&[rule(&["*"], &["PATCH"], &[])]),
            Err(RulesError::Method("PATCH".into()))
        );
        assert_eq!(
            validate(&[rule(&[], &["GET"], &[])]),
            Err(RulesError::Incomplete)
        );
        assert!(matches!(
            validate(&[rule(&["http://*.*.example"], &["GET"], &[])]),
            Err(RulesError::Wildcards { .. })
        ));
        assert!(matches!(
            validate(&[rule(&["*"], &["GET"], &["x-*-*"])]),
            Err(RulesError::Wildcards { .. })
        ));
    }

    #[test]
    fn swift_containers_allow_listed_origins() {
        let mut attributes = BTreeMap::new();
        assert!(swift_actual(&attributes, "http://a.example").is_none());
        attributes.insert(
            SWIFT_ALLOW_ORIGIN.to_owned(),
            "http://a.example  https://b.example".to_owned(),
        );
        attributes.insert(SWIFT_MAX_AGE.to_owned(), "30".to_owned());
        attributes.insert(
            SWIFT_EXPOSE_HEADERS.to_owned(),
            "x-object-meta-color".to_owned(),
        );
        let h = swift_preflight(
            &attributes,
            &preflight("https://b.example", "PUT", &["x-auth-token"]),
        )
        .unwrap();
        assert_eq!(
            get(&h, "access-control-allow-origin"),
            Some("https://b.example")
        );
        assert_eq!(get(&h, "access-control-max-age"), Some("30"));
        assert_eq!(
            get(&h, "access-control-allow-headers"),
            Some("x-auth-token")
        );
        assert!(swift_preflight(&attributes, &preflight("http://c.example", "GET", &[])).is_none());
        assert!(
            swift_preflight(&attributes, &preflight("http://a.example", "TRACE", &[])).is_none()
        );
        let h = swift_actual(&attributes, "http://a.example").unwrap();
        assert!(
            get(&h, "access-control-expose-headers")
                .unwrap()
                .ends_with("x-object-meta-color")
        );
        attributes.insert(SWIFT_ALLOW_ORIGIN.to_owned(), "*".to_owned());
        let h = swift_actual(&attributes, "http://c.example").unwrap();
        assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
    }

    #[test]
    fn stored_rules_round_trip() {
        let rules = vec![rule(&["*"], &["GET", "HEAD"], &["*"])];
        let mut attributes = BTreeMap::new();
        attributes.insert(S3_CORS.to_owned(), serde_json::to_string(&rules).unwrap());
        assert_eq!(rules_of(&attributes), Some(rules));
        attributes.insert(S3_CORS.to_owned(), "not json".to_owned());
        assert_eq!(rules_of(&attributes), None);
    }

    proptest::proptest! {
        #[test]
        fn a_pattern_cut_from_the_text_matches_it_and_nothing_panics(
            text in "\\PC{0,40}",
            cut in (0usize..40, 0usize..40),
            junk_pattern in "[a-c*]{0,8}",
            junk_text in "[a-c]{0,12}",
        ) {
            let chars: Vec<char> = text.chars().collect();
            let (a, b) = (cut.0.min(chars.len()), cut.1.min(chars.len()));
            let (lo, hi) = (a.min(b), a.max(b));
            let pattern: String = chars[..lo].iter().chain(['*'].iter()).chain(chars[hi..].iter()).collect();
            proptest::prop_assert!(wildcard_match(&pattern, &text));
            proptest::prop_assert!(wildcard_match(&text.replace('*', ""), &text.replace('*', "")));
            // Agrees with a plain backtracking matcher.
            proptest::prop_assert_eq!(
                wildcard_match(&junk_pattern, &junk_text),
                reference(junk_pattern.as_bytes(), junk_text.as_bytes())
            );
        }
    }

    fn reference(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|i| reference(rest, &text[i..])),
            Some((c, rest)) => text.first() == Some(c) && reference(rest, &text[1..]),
        }
    }
}

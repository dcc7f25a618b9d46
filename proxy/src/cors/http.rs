//! The HTTP side of CORS for `server`: which bucket a request addresses, the preflight
//! answers, and the headers added to other answers.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::{
    Preflight, SWIFT_METHODS, rules_of, s3_actual, s3_preflight, swift_actual, swift_preflight,
};
use crate::s3::{Domains, S3State};

/// S3's answer to a preflight that no rule allows.
const NOT_ALLOWED: &str = "CORSResponse: This CORS request is not allowed. This is usually \
    because the evalution of Origin, request method / Access-Control-Request-Method or \
    Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.";
/// S3's answer to a preflight on a bucket without rules.
const NOT_ENABLED: &str = "CORSResponse: CORS is not enabled for this bucket.";

/// Which bucket's CORS settings a request falls under.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// An S3 request on a bucket (path or virtual-host style).
    S3 { bucket: String },
    /// A Swift request on a container of an account.
    Swift { account: String, container: String },
}

fn target_of(request: &Request, domains: &Domains) -> Option<Target> {
    let path = request.uri().path();
    if crate::swift::is_swift(request) {
        let mut parts = path.strip_prefix("/v1/")?.splitn(3, '/');
        let account = parts.next()?.strip_prefix("AUTH_")?.to_owned();
        let container = parts.next().filter(|c| !c.is_empty())?.to_owned();
        return Some(Target::Swift { account, container });
    }
    let host = request
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host());
    if let Some(bucket) = host.and_then(|h| domains.bucket_of(h)) {
        return Some(Target::S3 {
            bucket: bucket.to_owned(),
        });
    }
    let bucket = path.trim_start_matches('/').split('/').next()?;
    (!bucket.is_empty()).then(|| Target::S3 {
        bucket: bucket.to_owned(),
    })
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A request's CORS context, taken before the request is served.
#[derive(Debug)]
pub struct Cors {
    /// Whether the request is on Swift's paths (which answer preflights the Swift way).
    swift: bool,
    target: Option<Target>,
    origin: Option<String>,
    method: Method,
}

impl Cors {
    /// Reads the request's origin and the bucket it addresses.
    #[must_use]
    pub fn of(request: &Request, domains: &Domains) -> Cors {
        Cors {
            swift: crate::swift::is_swift(request),
            target: target_of(request, domains),
            origin: header(request.headers(), "origin").map(str::to_owned),
            method: request.method().clone(),
        }
    }

    /// Whether the request is a preflight this module answers.
    #[must_use]
    pub fn is_preflight(&self) -> bool {
        self.method == Method::OPTIONS
    }

    /// Answers a preflight `OPTIONS` request.
    #[must_use]
    pub fn preflight(&self, state: &S3State, headers: &HeaderMap) -> Response {
        let swift = self.swift;
        let method = header(headers, "access-control-request-method");
        let (Some(origin), Some(method)) = (self.origin.as_deref(), method) else {
            if swift {
                // Not a CORS preflight: Swift answers which methods there are.
                return answer(StatusCode::OK, &[("allow", SWIFT_METHODS.to_owned())], "");
            }
            return s3_error_answer(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Insufficient information. Origin request header needed.",
            );
        };
        let request = Preflight {
            origin: origin.to_owned(),
            method: method.trim().to_owned(),
            headers: header(headers, "access-control-request-headers")
                .map(|h| {
                    h.split(',')
                        .map(|s| s.trim().to_ascii_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        };
        let map = state.cluster.map();
        match &self.target {
            Some(Target::Swift { account, container }) => {
                let allowed = map
                    .bucket(container)
                    .filter(|b| b.owner == *account)
                    .and_then(|b| swift_preflight(&b.attributes, &request));
                match allowed {
                    Some(h) => answer(StatusCode::OK, &h, ""),
                    None => answer(StatusCode::UNAUTHORIZED, &[], "Unauthorized"),
                }
            }
            Some(Target::S3 { bucket }) => {
                match map.bucket(bucket).and_then(|b| rules_of(&b.attributes)) {
                    None => s3_error_answer(StatusCode::FORBIDDEN, "AccessForbidden", NOT_ENABLED),
                    Some(rules) => match s3_preflight(&rules, &request) {
                        Some(h) => answer(StatusCode::OK, &h, ""),
                        None => {
                            s3_error_answer(StatusCode::FORBIDDEN, "AccessForbidden", NOT_ALLOWED)
                        }
                    },
                }
            }
            // Swift's accounts, `/info` and `/auth` have no CORS settings of their own.
            None if swift => answer(StatusCode::UNAUTHORIZED, &[], "Unauthorized"),
            None => s3_error_answer(StatusCode::FORBIDDEN, "AccessForbidden", NOT_ENABLED),
        }
    }

    /// Adds the CORS headers the bucket's settings give a request from an origin to its
    /// answer (an error answer too).
    pub fn decorate(&self, state: &S3State, response: &mut Response) {
        let (Some(origin), Some(target)) = (&self.origin, &self.target) else {
            return;
        };
        let map = state.cluster.map();
        let headers = match target {
            Target::Swift { account, container } => map
                .bucket(container)
                .filter(|b| b.owner == *account)
                .and_then(|b| swift_actual(&b.attributes, origin)),
            Target::S3 { bucket } => map
                .bucket(bucket)
                .and_then(|b| rules_of(&b.attributes))
                .and_then(|rules| s3_actual(&rules, origin, self.method.as_str())),
        };
        for (name, value) in headers.into_iter().flatten() {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(name), v);
            }
        }
    }
}

fn answer(status: StatusCode, headers: &[(&'static str, String)], body: &str) -> Response {
    let mut response = Response::new(Body::from(body.to_owned()));
    *response.status_mut() = status;
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), v);
        }
    }
    response
}

fn s3_error_answer(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut response = answer(status, &[], &body);
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    response
}

//! S3's object requests (PUT, GET, HEAD, DELETE) without the SDK: signed with SigV4 by
//! `aws-sigv4` (the SDK's own signer: headers, signed payload hash, as the SDK signs over
//! plain HTTP) and sent on a pooled hyper client, as the Swift driver sends its requests.
//! The SDK spends about four times the Swift driver's CPU on a 4 KiB GET; on a machine the
//! load generator shares with the system measured, that CPU comes off the system's figures.

use std::time::SystemTime;

use aws_sdk_s3::config::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http_body_util::BodyExt;
use hyper::header::{CONTENT_LENGTH, RANGE};
use hyper::{Method, Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::driver::http::{drain, encode_path, header_u64, read_object};
use crate::driver::s3::S3Settings;
use crate::driver::{ByteRange, ErrorKind, GetOutcome, OpError};
use crate::payload::{Payload, PayloadBody};

/// The largest error body read for its S3 error code.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Signed object requests to one bucket over plain HTTP.
#[derive(Debug, Clone)]
pub(crate) struct S3Http {
    client: Client<HttpConnector, PayloadBody>,
    /// `http://host:port/bucket` (path style) or `http://bucket.host:port` (virtual host).
    bucket_url: String,
    identity: Identity,
    region: String,
}

impl S3Http {
    /// Returns the requester for `settings`, or `None` when the endpoint is not plain
    /// `http://` (the SDK then sends every request).
    pub(crate) fn new(settings: &S3Settings) -> Option<S3Http> {
        let uri: Uri = settings.endpoint.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let authority = uri.authority()?.as_str();
        // As the SDK: path style for an IP address, which has no subdomains.
        let ip = uri
            .host()?
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok();
        let bucket_url = if settings.path_style || ip {
            format!("http://{authority}/{}", settings.bucket)
        } else {
            format!("http://{}.{authority}", settings.bucket)
        };
        let identity = Credentials::new(
            &settings.access_key,
            &settings.secret_key,
            None,
            None,
            "nimbus-bench",
        )
        .into();
        Some(S3Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            bucket_url,
            identity,
            region: settings.region.clone(),
        })
    }

    /// Signs and sends one request for `key` (with `payload` as its body); returns the
    /// answer when it is a 2xx.
    async fn send(
        &self,
        method: Method,
        key: &str,
        payload: Option<&Payload>,
        range: Option<ByteRange>,
    ) -> Result<Response<hyper::body::Incoming>, OpError> {
        let url = format!("{}/{}", self.bucket_url, encode_path(key));
        let range = range.map(|r| r.header());
        let headers: Vec<(&str, &str)> = range.iter().map(|r| ("range", r.as_str())).collect();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let other = |e: &dyn std::fmt::Display| OpError::new(ErrorKind::Other, e.to_string());
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| other(&e))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            &url,
            headers.iter().copied(),
            payload.map_or(SignableBody::Bytes(&[]), |p| {
                SignableBody::Precomputed(p.sha256_hex())
            }),
        )
        .map_err(|e| other(&e))?;
        let (instructions, _) = sign(signable, &params).map_err(|e| other(&e))?.into_parts();
        let mut request = Request::builder().method(method).uri(&url);
        if let Some(range) = &range {
            request = request.header(RANGE, range);
        }
        let body = payload.map_or_else(PayloadBody::empty, Payload::body);
        if body.remaining() > 0 {
            request = request.header(CONTENT_LENGTH, body.remaining());
        }
        let mut request = request.body(body).map_err(|e| other(&e))?;
        instructions.apply_to_request_http1x(&mut request);
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| OpError::new(ErrorKind::Connection, e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        Err(OpError::new(
            ErrorKind::Status {
                status: status.as_u16(),
                code: error_code(&text),
            },
            format!("{status}: {}", text.trim()),
        ))
    }

    /// PutObject.
    pub(crate) async fn put(&self, key: &str, payload: &Payload) -> Result<(), OpError> {
        let response = self.send(Method::PUT, key, Some(payload), None).await?;
        drain(response).await.map(|_| ())
    }

    /// GetObject (of `range`), checked as it arrives when `verify`.
    pub(crate) async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
        verify: bool,
    ) -> Result<GetOutcome, OpError> {
        let response = self.send(Method::GET, key, None, range).await?;
        read_object(key, response, range, verify).await
    }

    /// HeadObject; returns the object's size.
    pub(crate) async fn head(&self, key: &str) -> Result<u64, OpError> {
        let response = self.send(Method::HEAD, key, None, None).await?;
        Ok(header_u64(&response, CONTENT_LENGTH.as_str()).unwrap_or(0))
    }

    /// DeleteObject.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), OpError> {
        let response = self.send(Method::DELETE, key, None, None).await?;
        drain(response).await.map(|_| ())
    }
}

/// The `<Code>` of an S3 error body, if it has one.
fn error_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let len = body[start..].find("</Code>")?;
    Some(body[start..start + len].to_owned()).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: &str, path_style: bool) -> S3Settings {
        S3Settings {
            endpoint: endpoint.to_owned(),
            access_key: "AKID".to_owned(),
            secret_key: "secret".to_owned(),
            region: "us-east-1".to_owned(),
            path_style,
            bucket: "b1".to_owned(),
            client: crate::driver::s3::S3Client::Http,
        }
    }

    #[test]
    fn plain_http_endpoints_only_in_either_style() {
        let path = S3Http::new(&settings("http://127.0.0.1:9000", true)).unwrap();
        assert_eq!(path.bucket_url, "http://127.0.0.1:9000/b1");
        let host = S3Http::new(&settings("http://localhost:9000/", false)).unwrap();
        assert_eq!(host.bucket_url, "http://b1.localhost:9000");
        let ip = S3Http::new(&settings("http://127.0.0.1:9000", false)).unwrap();
        assert_eq!(
            ip.bucket_url, "http://127.0.0.1:9000/b1",
            "no subdomains of an IP"
        );
        assert!(S3Http::new(&settings("https://s3.example.com", true)).is_none());
    }

    #[test]
    fn error_codes_come_from_the_xml_body() {
        let body =
            "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>x</Message></Error>";
        assert_eq!(error_code(body).as_deref(), Some("NoSuchKey"));
        assert_eq!(error_code("<Error><Code></Code></Error>"), None);
        assert_eq!(error_code("not xml"), None);
    }
}

//! The S3 driver: the AWS SDK for Rust (SigV4 in headers), path or virtual-host style, on
//! the SDK's hyper client. Retries, stalled-stream protection and the SDK's default
//! request checksums are off, so that each figure is one request as the server served it.
//! By default ([`S3Client::Http`]) the object requests (PUT, GET, HEAD, DELETE) to a plain
//! `http://` endpoint skip the SDK: signed by its signer, sent on a plain hyper client
//! (`driver::s3_http`).

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use crate::driver::s3_http::S3Http;
use crate::driver::{ByteRange, ErrorKind, GetOutcome, OpError, outcome};
use crate::error::SetupError;
use crate::payload::{self, Payload, Verifier};

/// Where and as whom the S3 driver connects.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// The endpoint URL, e.g. `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// The access key id.
    pub access_key: String,
    /// The secret key.
    pub secret_key: String,
    /// The region signed for.
    pub region: String,
    /// Path style (`endpoint/bucket/key`) instead of virtual-host style
    /// (`bucket.endpoint/key`).
    pub path_style: bool,
    /// The bucket the run uses.
    pub bucket: String,
    /// How object requests are sent.
    pub client: S3Client,
}

/// How the S3 driver sends object requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum S3Client {
    /// PUT, GET, HEAD and DELETE signed with the SDK's SigV4 signer and sent on a plain
    /// hyper client (plain `http://` endpoints; the SDK sends the rest).
    Http,
    /// Every request through the AWS SDK.
    Sdk,
}

impl S3Client {
    /// Its name, as given on the command line and recorded in results.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            S3Client::Http => "http",
            S3Client::Sdk => "sdk",
        }
    }
}

/// The S3 driver: an SDK client, the plain HTTP requester, and the run's bucket.
#[derive(Debug, Clone)]
pub struct S3Driver {
    client: Client,
    http: Option<S3Http>,
    bucket: String,
}

impl S3Driver {
    /// Builds the client (no request is sent).
    ///
    /// # Errors
    ///
    /// [`SetupError::Url`] for an endpoint that is not http(s).
    pub fn new(settings: &S3Settings) -> Result<S3Driver, SetupError> {
        if !(settings.endpoint.starts_with("http://") || settings.endpoint.starts_with("https://"))
        {
            return Err(SetupError::Url {
                url: settings.endpoint.clone(),
                reason: "the S3 endpoint must start with http:// or https://".to_owned(),
            });
        }
        let config = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .endpoint_url(&settings.endpoint)
            .region(Region::new(settings.region.clone()))
            .credentials_provider(Credentials::new(
                &settings.access_key,
                &settings.secret_key,
                None,
                None,
                "nimbus-bench",
            ))
            .force_path_style(settings.path_style)
            .retry_config(RetryConfig::disabled())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        let http = match settings.client {
            S3Client::Http => S3Http::new(settings),
            S3Client::Sdk => None,
        };
        Ok(S3Driver {
            client: Client::from_conf(config),
            http,
            bucket: settings.bucket.clone(),
        })
    }

    /// How its object requests go: [`S3Client::Http`] only when asked for and the endpoint
    /// is plain `http://`.
    #[must_use]
    pub fn client(&self) -> S3Client {
        if self.http.is_some() {
            S3Client::Http
        } else {
            S3Client::Sdk
        }
    }

    /// Creates the bucket unless the caller already owns it.
    ///
    /// # Errors
    ///
    /// [`SetupError::Bucket`] for any other answer.
    pub async fn ensure_bucket(&self) -> Result<(), SetupError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => {
                let e = classify(&e);
                Err(SetupError::Bucket {
                    bucket: self.bucket.clone(),
                    reason: e.to_string(),
                })
            }
        }
    }

    /// PutObject.
    ///
    /// # Errors
    ///
    /// The classified failure.
    pub async fn put(&self, key: &str, payload: &Payload) -> Result<(), OpError> {
        if let Some(http) = &self.http {
            return http.put(key, payload).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(payload.bytes()))
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    /// CreateMultipartUpload, UploadPart for each part in turn, CompleteMultipartUpload;
    /// AbortMultipartUpload (best effort) when a step fails.
    ///
    /// # Errors
    ///
    /// The classified failure of the step that failed.
    pub async fn multipart(&self, key: &str, size: u64, part_size: u64) -> Result<(), OpError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let Some(upload_id) = created.upload_id() else {
            return Err(OpError::new(ErrorKind::Other, "no UploadId in the answer"));
        };
        let result = self.multipart_parts(key, upload_id, size, part_size).await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await;
        }
        result
    }

    async fn multipart_parts(
        &self,
        key: &str,
        upload_id: &str,
        size: u64,
        part_size: u64,
    ) -> Result<(), OpError> {
        let seed = payload::content_seed(key, size);
        let part_size = part_size.max(1);
        let parts = size.div_ceil(part_size).max(1);
        let mut completed = Vec::new();
        for i in 0..parts {
            let offset = i * part_size;
            let len = part_size.min(size - offset);
            let number = i32::try_from(i + 1)
                .map_err(|_| OpError::new(ErrorKind::Other, "more than 2^31 parts"))?;
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(payload::body(seed, offset, len)))
                .send()
                .await
                .map_err(|e| classify(&e))?;
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    /// GetObject, streaming the body (checked as it arrives when `verify`).
    ///
    /// # Errors
    ///
    /// The classified failure; [`ErrorKind::Verify`] for a wrong byte or length.
    pub async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
        verify: bool,
    ) -> Result<GetOutcome, OpError> {
        if let Some(http) = &self.http {
            return http.get(key, range, verify).await;
        }
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(range) = range {
            request = request.range(range.header());
        }
        let output = request.send().await.map_err(|e| classify(&e))?;
        let length = output
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or(0);
        let object_size = match (range, output.content_range()) {
            (Some(_), Some(content_range)) => payload::size_from_content_range(content_range)
                .ok_or_else(|| {
                    OpError::new(
                        ErrorKind::Other,
                        format!("bad Content-Range {content_range:?}"),
                    )
                })?,
            _ => length,
        };
        let offset = range.map_or(0, |r| r.offset);
        let mut verifier = verify.then(|| Verifier::new(key, object_size, offset));
        let mut body = output.body;
        let mut bytes = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| OpError::new(ErrorKind::Connection, format!("body: {e}")))?;
            bytes += chunk.len() as u64;
            if let Some(v) = verifier.as_mut() {
                v.feed(&chunk);
            }
        }
        outcome(key, verifier, bytes, range, object_size)
    }

    /// HeadObject; returns the object's size.
    ///
    /// # Errors
    ///
    /// The classified failure.
    pub async fn head(&self, key: &str) -> Result<u64, OpError> {
        if let Some(http) = &self.http {
            return http.head(key).await;
        }
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(output
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or(0))
    }

    /// DeleteObject.
    ///
    /// # Errors
    ///
    /// The classified failure.
    pub async fn delete(&self, key: &str) -> Result<(), OpError> {
        if let Some(http) = &self.http {
            return http.delete(key).await;
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    /// ListObjectsV2, one page.
    ///
    /// # Errors
    ///
    /// The classified failure.
    pub async fn list(&self, prefix: &str, max_keys: u32) -> Result<u64, OpError> {
        let output = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(i32::try_from(max_keys).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(output.contents().len() as u64)
    }
}

/// Classifies an SDK error: service errors by status and S3 code, dispatch failures as
/// timeouts or connection errors.
fn classify<E>(error: &SdkError<E>) -> OpError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut detail = aws_sdk_s3::error::DisplayErrorContext(error).to_string();
    let kind = match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().map(str::to_owned);
            // The SDK's full context dumps the raw response; status, code and message
            // say what a reader needs.
            detail = format!(
                "{status} {} {}",
                code.as_deref().unwrap_or("(no code)"),
                service.err().message().unwrap_or("")
            )
            .trim_end()
            .to_owned();
            ErrorKind::Status { status, code }
        }
        SdkError::TimeoutError(_) => ErrorKind::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_timeout() => ErrorKind::Timeout,
        SdkError::DispatchFailure(_) => ErrorKind::Connection,
        _ => ErrorKind::Other,
    };
    OpError::new(kind, detail)
}

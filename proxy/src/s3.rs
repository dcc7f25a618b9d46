//! The S3 API: `s3s` parses requests, checks SigV4 (headers, presigned, and the streaming
//! `aws-chunked` forms) and writes the XML; this module answers each operation from the
//! cluster map (buckets), the index (keys) and the data path (bytes).

pub(crate) mod buckets;
mod cors;
mod error;
mod host;
pub(crate) mod list;
pub(crate) mod multipart;
pub(crate) mod objects;
mod tagging;
pub(crate) mod versions;

use std::sync::Arc;

use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

use crate::cluster::Cluster;
use crate::data::DataPath;
use crate::index::IndexClient;

pub use error::to_s3;
pub use host::Domains;

/// What every S3 operation shares.
#[derive(Debug)]
pub struct S3State {
    /// The newest cluster map.
    pub cluster: Cluster,
    /// The index.
    pub index: IndexClient,
    /// The data path.
    pub data: DataPath,
    /// The region answered.
    pub region: String,
    /// Objects up to this size are stored inline.
    pub inline_max: u64,
    /// The cluster secret (Swift tokens are tagged with it).
    pub secret: nimbus_core::auth::ClusterSecret,
}

/// The S3 service: a cheap handle on the shared state.
#[derive(Clone, Debug)]
pub struct NimbusS3(pub Arc<S3State>);

/// SigV4 secrets from the cluster map's S3 credentials.
#[derive(Debug)]
pub struct MapAuth(pub Cluster);

#[async_trait::async_trait]
impl S3Auth for MapAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let map = self.0.map();
        match map.credential(access_key) {
            Some(c) if c.kind == nimbus_ring::map::CredentialKind::S3 => {
                Ok(SecretKey::from(c.secret.clone()))
            }
            _ => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// Returns the account the request's credentials act for.
fn account_of<T>(state: &S3State, req: &S3Request<T>) -> S3Result<String> {
    let Some(credentials) = &req.credentials else {
        return Err(s3_error!(
            AccessDenied,
            "anonymous requests are not allowed"
        ));
    };
    let map = state.cluster.map();
    map.credential(&credentials.access_key)
        .map(|c| c.account.clone())
        .ok_or_else(|| s3_error!(InvalidAccessKeyId))
}

#[async_trait::async_trait]
impl S3 for NimbusS3 {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let account = account_of(&self.0, &req)?;
        buckets::list(&self.0, &account)
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let account = account_of(&self.0, &req)?;
        buckets::create(&self.0, &account, req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let account = account_of(&self.0, &req)?;
        buckets::owned(&self.0, &account, &req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.0.region.clone()),
            ..Default::default()
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let account = account_of(&self.0, &req)?;
        buckets::delete(&self.0, &account, &req.input.bucket).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let account = account_of(&self.0, &req)?;
        buckets::owned(&self.0, &account, &req.input.bucket)?;
        // us-east-1 is spelled as no constraint, as S3 does.
        let constraint = (self.0.region != "us-east-1")
            .then(|| BucketLocationConstraint::from(self.0.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: constraint,
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let account = account_of(&self.0, &req)?;
        objects::put(&self.0, &account, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let account = account_of(&self.0, &req)?;
        objects::get(&self.0, &account, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let account = account_of(&self.0, &req)?;
        objects::head(&self.0, &account, req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let account = account_of(&self.0, &req)?;
        objects::copy(&self.0, &account, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let account = account_of(&self.0, &req)?;
        objects::delete_many(&self.0, &account, req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let account = account_of(&self.0, &req)?;
        versions::put_versioning(&self.0, &account, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let account = account_of(&self.0, &req)?;
        versions::get_versioning(&self.0, &account, &req)
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let account = account_of(&self.0, &req)?;
        versions::list(&self.0, &account, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let account = account_of(&self.0, &req)?;
        objects::delete(&self.0, &account, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let account = account_of(&self.0, &req)?;
        list::v2(&self.0, &account, req.input).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let account = account_of(&self.0, &req)?;
        multipart::create(&self.0, &account, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let account = account_of(&self.0, &req)?;
        multipart::upload_part(&self.0, &account, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let account = account_of(&self.0, &req)?;
        multipart::upload_part_copy(&self.0, &account, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let account = account_of(&self.0, &req)?;
        multipart::complete(&self.0, &account, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let account = account_of(&self.0, &req)?;
        multipart::abort(&self.0, &account, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let account = account_of(&self.0, &req)?;
        multipart::list_parts(&self.0, &account, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let account = account_of(&self.0, &req)?;
        multipart::list_uploads(&self.0, &account, req).await
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let account = account_of(&self.0, &req)?;
        tagging::put_object(&self.0, &account, req).await
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let account = account_of(&self.0, &req)?;
        tagging::get_object(&self.0, &account, req).await
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let account = account_of(&self.0, &req)?;
        tagging::delete_object(&self.0, &account, req).await
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let account = account_of(&self.0, &req)?;
        tagging::put_bucket(&self.0, &account, req).await
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let account = account_of(&self.0, &req)?;
        tagging::get_bucket(&self.0, &account, req).await
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        let account = account_of(&self.0, &req)?;
        tagging::delete_bucket(&self.0, &account, req).await
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let account = account_of(&self.0, &req)?;
        cors::put(&self.0, &account, req).await
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let account = account_of(&self.0, &req)?;
        cors::get(&self.0, &account, req).await
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        let account = account_of(&self.0, &req)?;
        cors::delete(&self.0, &account, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let account = account_of(&self.0, &req)?;
        list::v1(&self.0, &account, req.input).await
    }
}

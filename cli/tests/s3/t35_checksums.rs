//! Client checksums (`x-amz-checksum-*`): computed by the SDK (sent as headers or as
//! trailers of an `aws-chunked` body), verified on upload, stored, returned on request.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm as SdkAlgorithm, ChecksumMode};
use nimbus_core::checksum::{ChecksumAlgorithm, to_base64};

use crate::cluster::{Cluster, bytes, runtime};

fn expected(algorithm: ChecksumAlgorithm, data: &[u8]) -> String {
    let mut c = algorithm.checksummer();
    c.update(data);
    to_base64(&c.finish())
}

#[test]
fn checksums_are_verified_stored_and_returned() {
    let cluster = Cluster::start();
    let s3 = cluster.client_no_retry();
    runtime().block_on(async {
        s3.create_bucket().bucket("sums").send().await.unwrap();
        let cases = [
            (SdkAlgorithm::Crc32, ChecksumAlgorithm::Crc32),
            (SdkAlgorithm::Crc32C, ChecksumAlgorithm::Crc32c),
            (SdkAlgorithm::Crc64Nvme, ChecksumAlgorithm::Crc64Nvme),
            (SdkAlgorithm::Sha1, ChecksumAlgorithm::Sha1),
            (SdkAlgorithm::Sha256, ChecksumAlgorithm::Sha256),
        ];
        for (i, (sdk, ours)) in cases.into_iter().enumerate() {
            for size in [100, 2 << 20] {
                let data = bytes(size, 300 + i as u64);
                let key = format!("{}-{size}", ours.s3_name());
                let put = s3
                    .put_object()
                    .bucket("sums")
                    .key(&key)
                    .checksum_algorithm(sdk.clone())
                    .body(ByteStream::from(data.clone()))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("PUT {key}: {e:?}"));
                let want = expected(ours, &data);
                let head = s3
                    .head_object()
                    .bucket("sums")
                    .key(&key)
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
                    .await
                    .unwrap();
                let (got_put, got_head) = match ours {
                    ChecksumAlgorithm::Crc32 => (put.checksum_crc32(), head.checksum_crc32()),
                    ChecksumAlgorithm::Crc32c => (put.checksum_crc32_c(), head.checksum_crc32_c()),
                    ChecksumAlgorithm::Crc64Nvme => {
                        (put.checksum_crc64_nvme(), head.checksum_crc64_nvme())
                    }
                    ChecksumAlgorithm::Sha1 => (put.checksum_sha1(), head.checksum_sha1()),
                    ChecksumAlgorithm::Sha256 => (put.checksum_sha256(), head.checksum_sha256()),
                };
                assert_eq!(got_put, Some(want.as_str()), "PUT answer for {key}");
                assert_eq!(got_head, Some(want.as_str()), "HEAD for {key}");
                // The SDK validates the checksum GET returns against the body.
                let got = s3
                    .get_object()
                    .bucket("sums")
                    .key(&key)
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
                    .await
                    .unwrap();
                let body = got.body.collect().await.unwrap().into_bytes();
                assert!(body.as_ref() == data.as_slice());
            }
        }
        // A wrong checksum: BadDigest, nothing stored.
        for size in [100, 2 << 20] {
            let err = s3
                .put_object()
                .bucket("sums")
                .key("wrong")
                .checksum_crc32_c("AAAAAA==")
                .body(ByteStream::from(bytes(size, 9)))
                .send()
                .await
                .unwrap_err();
            let code = err
                .as_service_error()
                .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
                .map(str::to_owned);
            assert_eq!(code.as_deref(), Some("BadDigest"), "{err:?}");
            let err = s3
                .head_object()
                .bucket("sums")
                .key("wrong")
                .send()
                .await
                .unwrap_err();
            assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
        }
    });
}

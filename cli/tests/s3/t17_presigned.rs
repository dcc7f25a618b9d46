//! Presigned URLs (SigV4 in the query string): a GET and a PUT made by a plain HTTP client
//! with no credentials of its own, and one whose signature was altered.

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;

use crate::cluster::{Cluster, runtime};

fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = out.stdout;
    let cut = text.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&text[cut + 1..])
        .trim()
        .parse()
        .unwrap_or(0);
    (status, text[..cut].to_vec())
}

#[test]
fn presigned_urls_read_and_write_without_credentials() {
    let cluster = Cluster::start();
    let s3 = cluster.client();
    runtime().block_on(async {
        s3.create_bucket().bucket("shared").send().await.unwrap();
        s3.put_object()
            .bucket("shared")
            .key("doc.txt")
            .body(ByteStream::from_static(b"presigned body"))
            .send()
            .await
            .unwrap();
        let config = PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
        let get = s3
            .get_object()
            .bucket("shared")
            .key("doc.txt")
            .presigned(config.clone())
            .await
            .unwrap();
        let (status, body) = curl(&[get.uri()]);
        assert_eq!(status, 200);
        assert_eq!(body, b"presigned body");
        // One changed character of the signature: refused.
        let uri = get.uri().to_owned();
        let at = uri.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
        let flipped = if &uri[at..=at] == "0" { "1" } else { "0" };
        let bad = format!("{}{flipped}{}", &uri[..at], &uri[at + 1..]);
        assert_eq!(curl(&[&bad]).0, 403);

        let put = s3
            .put_object()
            .bucket("shared")
            .key("upload.txt")
            .presigned(config)
            .await
            .unwrap();
        let (status, _) = curl(&["-X", "PUT", "--data-binary", "sent by a browser", put.uri()]);
        assert_eq!(status, 200);
        let got = s3
            .get_object()
            .bucket("shared")
            .key("upload.txt")
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            b"sent by a browser"
        );
    });
}

//! The Swift API on the same accounts, containers and objects as S3: tempauth-style tokens,
//! containers, objects with metadata, listings in three formats, and objects written by one
//! API read through the other with the same bytes, ETag, type and metadata.

use aws_sdk_s3::primitives::ByteStream;

use crate::cluster::{Cluster, bytes, runtime};
use crate::swift_http::{credentials, curl, header};

#[test]
fn swift_and_s3_reach_the_same_objects() {
    let cluster = Cluster::start();
    let (auth, user, key) = credentials(&cluster);

    // Wrong key: 401; right key: a token and the storage URL.
    let (status, _, _) = curl(&[
        "-H",
        &format!("X-Auth-User: {user}"),
        "-H",
        "X-Auth-Key: wrong-key-123",
        &auth,
    ]);
    assert_eq!(status, 401);
    let (status, headers, _) = curl(&[
        "-H",
        &format!("X-Auth-User: {user}"),
        "-H",
        &format!("X-Auth-Key: {key}"),
        &auth,
    ]);
    assert_eq!(status, 200);
    let token = header(&headers, "x-auth-token").unwrap();
    let url = header(&headers, "x-storage-url").unwrap();
    let t = format!("X-Auth-Token: {token}");
    let (status, _, _) = curl(&["-H", "X-Auth-Token: AUTH_tkforged.00", &url]);
    assert_eq!(status, 401);
    let (status, _, body) = curl(&[&format!("{}/info", cluster.endpoint)]);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"swift\""));

    // A container, an object with metadata, and a big one.
    assert_eq!(
        curl(&["-X", "PUT", "-H", &t, &format!("{url}/shared")]).0,
        201
    );
    assert_eq!(
        curl(&["-X", "PUT", "-H", &t, &format!("{url}/shared")]).0,
        202
    );
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, b"hello from swift").unwrap();
    let (status, headers, _) = curl(&[
        "-X",
        "PUT",
        "-H",
        &t,
        "-H",
        "X-Object-Meta-Color: blue",
        "-H",
        "Content-Type: text/x-test",
        "--data-binary",
        &format!("@{}", small.display()),
        &format!("{url}/shared/notes/hello.txt"),
    ]);
    assert_eq!(status, 201);
    let swift_etag = header(&headers, "etag").unwrap();
    // A wrong ETag is refused and stores nothing.
    let (status, _, _) = curl(&[
        "-X",
        "PUT",
        "-H",
        &t,
        "-H",
        "ETag: 00000000000000000000000000000000",
        "--data-binary",
        "x",
        &format!("{url}/shared/bad"),
    ]);
    assert_eq!(status, 422);
    let (status, _, body) = curl(&["-H", &t, &format!("{url}/shared?format=json")]);
    assert_eq!(status, 200);
    let listing: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listing.as_array().unwrap().len(), 1);
    assert_eq!(listing[0]["name"], "notes/hello.txt");
    assert_eq!(listing[0]["hash"], swift_etag.as_str());
    let (_, _, body) = curl(&["-H", &t, &format!("{url}/shared?delimiter=/")]);
    assert_eq!(String::from_utf8_lossy(&body), "notes/\n");
    let (_, _, body) = curl(&["-H", &t, &format!("{url}/shared?format=xml")]);
    assert!(String::from_utf8_lossy(&body).contains("<name>notes/hello.txt</name>"));

    let s3 = cluster.client();
    runtime().block_on(async {
        // Swift wrote it; S3 reads the same bytes, ETag, type and metadata.
        let got = s3
            .get_object()
            .bucket("shared")
            .key("notes/hello.txt")
            .send()
            .await
            .unwrap();
        assert_eq!(got.e_tag(), Some(format!("\"{swift_etag}\"").as_str()));
        assert_eq!(got.content_type(), Some("text/x-test"));
        assert_eq!(
            got.metadata()
                .and_then(|m| m.get("color"))
                .map(String::as_str),
            Some("blue")
        );
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            b"hello from swift"
        );
        // S3 writes (one object in one part, one in two); Swift reads them.
        let data = bytes(3 << 20, 42);
        s3.put_object()
            .bucket("shared")
            .key("from-s3")
            .metadata("origin", "s3")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        let big = bytes(5 << 20, 43);
        let up = s3
            .create_multipart_upload()
            .bucket("shared")
            .key("parts")
            .send()
            .await
            .unwrap();
        let id = up.upload_id().unwrap();
        let mut done = Vec::new();
        for (n, chunk) in [(1, &big[..]), (2, &data[..100])] {
            let p = s3
                .upload_part()
                .bucket("shared")
                .key("parts")
                .upload_id(id)
                .part_number(n)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await
                .unwrap();
            done.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(n)
                    .e_tag(p.e_tag().unwrap())
                    .build(),
            );
        }
        let completed = aws_sdk_s3::types::CompletedMultipartUpload::builder()
            .set_parts(Some(done))
            .build();
        s3.complete_multipart_upload()
            .bucket("shared")
            .key("parts")
            .upload_id(id)
            .multipart_upload(completed)
            .send()
            .await
            .unwrap();
        let (status, _, body) = curl(&["-H", &t, &format!("{url}/shared/parts")]);
        assert_eq!(status, 200);
        assert!(
            body == [&big[..], &data[..100]].concat(),
            "Swift GET of an S3 multipart object differs"
        );
        let (status, headers, body) = curl(&["-H", &t, &format!("{url}/shared/from-s3")]);
        assert_eq!(status, 200);
        assert!(body == data, "Swift GET of an S3 object differs");
        assert_eq!(
            header(&headers, "x-object-meta-origin").as_deref(),
            Some("s3")
        );
        let (status, _, body) = curl(&[
            "-H",
            &t,
            "-H",
            "Range: bytes=10-19",
            &format!("{url}/shared/from-s3"),
        ]);
        assert_eq!(status, 206);
        assert_eq!(body, &data[10..20]);
        let (status, _, _) = curl(&[
            "-H",
            &t,
            "-H",
            &format!("If-None-Match: {swift_etag}"),
            &format!("{url}/shared/notes/hello.txt"),
        ]);
        assert_eq!(status, 304);
    });

    // Server-side copies: X-Copy-From keeps the source's metadata and adds the request's;
    // COPY with a Destination.
    let (status, _, _) = curl(&[
        "-X",
        "PUT",
        "-H",
        &t,
        "-H",
        "X-Copy-From: /shared/notes/hello.txt",
        "-H",
        "X-Object-Meta-Extra: yes",
        "-H",
        "Content-Length: 0",
        &format!("{url}/shared/copy1"),
    ]);
    assert_eq!(status, 201);
    let (_, headers, body) = curl(&["-H", &t, &format!("{url}/shared/copy1")]);
    assert_eq!(body, b"hello from swift");
    assert_eq!(
        header(&headers, "x-object-meta-color").as_deref(),
        Some("blue")
    );
    assert_eq!(
        header(&headers, "x-object-meta-extra").as_deref(),
        Some("yes")
    );
    let (status, _, _) = curl(&[
        "-X",
        "COPY",
        "-H",
        &t,
        "-H",
        "Destination: shared/copy2",
        &format!("{url}/shared/copy1"),
    ]);
    assert_eq!(status, 201);
    let (_, _, body) = curl(&["-H", &t, &format!("{url}/shared/copy2")]);
    assert_eq!(body, b"hello from swift");
    assert_eq!(
        curl(&["-X", "DELETE", "-H", &t, &format!("{url}/shared/copy1")]).0,
        204
    );
    assert_eq!(
        curl(&["-X", "DELETE", "-H", &t, &format!("{url}/shared/copy2")]).0,
        204
    );

    // Account and container figures, then deletes.
    let (status, headers, _) = curl(&["-I", "-H", &t, &url]);
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "x-account-object-count").as_deref(),
        Some("3")
    );
    assert_eq!(
        curl(&["-X", "DELETE", "-H", &t, &format!("{url}/shared")]).0,
        409
    );
    assert_eq!(
        curl(&[
            "-X",
            "DELETE",
            "-H",
            &t,
            &format!("{url}/shared/notes/hello.txt")
        ])
        .0,
        204
    );
    assert_eq!(
        curl(&[
            "-X",
            "DELETE",
            "-H",
            &t,
            &format!("{url}/shared/notes/hello.txt")
        ])
        .0,
        404
    );
    assert_eq!(
        curl(&["-X", "DELETE", "-H", &t, &format!("{url}/shared/from-s3")]).0,
        204
    );
    assert_eq!(
        curl(&["-X", "DELETE", "-H", &t, &format!("{url}/shared/parts")]).0,
        204
    );
    assert_eq!(
        curl(&["-X", "DELETE", "-H", &t, &format!("{url}/shared")]).0,
        204
    );
    assert_eq!(curl(&["-H", &t, &format!("{url}/shared")]).0, 404);
}

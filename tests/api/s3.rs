//! Uploads on S3-compatible object storage (`TROUPE_STORAGE=s3://BUCKET/PREFIX`) against a
//! real S3 server: moto on both databases, and once more (on SQLite) SeaweedFS, a real
//! distributed store that checks every request's signature, where moto checks none. What a
//! client sees is what it sees with files, and the bucket, read through the S3 API, holds
//! exactly the complete uploads.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;

use crate::on_each_store;

use crate::helpers::{
    content_type, framing, header, sha256_hex, spawn_app, Backend, Noise, S3Kind, S3Server, TestApp,
};

async fn assert_no_uploads_listed(app: &TestApp) {
    let (status, _, body) = app.list_uploads("").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uploads"].as_array().unwrap().len(), 0, "{body}");
}

async fn form_uploads_are_objects_read_back_identical(backend: Backend, kind: S3Kind) {
    let Some(store) = S3Server::start_kind(kind).await else {
        return;
    };
    let Some(app) = store.app(backend, &[]).await else {
        return;
    };
    // Three parts and a tail; exactly one part (one PUT); small; empty.
    let big = Noise::new(3).chunk((20 << 20) + 12_345);
    let one_part = Noise::new(4).chunk(8 << 20);
    let small = Noise::new(5).chunk(70_000);
    let mut kept = Vec::new();
    for data in [&big[..], &one_part[..], &small[..], b"".as_slice()] {
        let (status, _, body) = app.post_upload("data.bin", data).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["size"], data.len());
        assert_eq!(body["sha256"], sha256_hex(data));
        let id = body["id"].as_str().unwrap().to_owned();

        // In the bucket under the prefix, byte for byte, read through S3 itself.
        let key = S3Server::key_of(&id);
        assert_eq!(store.object(&key).await.as_deref(), Some(data), "{key}");
        kept.push(key);

        let (status, headers, content) = app.get_content(&id, None).await;
        assert_eq!(status, 200);
        assert_eq!(content.len(), data.len());
        assert!(content == data, "the content differs");
        assert_eq!(
            header(&headers, "content-length"),
            data.len().to_string().as_str()
        );
        assert_eq!(header(&headers, "accept-ranges"), "bytes");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    }
    // Nothing else: no stray object, no multipart upload left open.
    store.assert_left_only(&kept).await;
    let (_, _, list) = app.list_uploads("").await;
    assert_eq!(list["uploads"].as_array().unwrap().len(), 4, "{list}");
}

/// The same requests on content stored as a file and as an object get the same answers.
async fn ranges_and_conditions_answer_as_for_a_file(backend: Backend, kind: S3Kind) {
    let Some(store) = S3Server::start_kind(kind).await else {
        return;
    };
    let Some(on_s3) = store.app(backend, &[]).await else {
        return;
    };
    let Some(on_files) = spawn_app(backend).await else {
        return;
    };
    let data = Noise::new(11).chunk(100_000);
    let mut answers = Vec::new();
    for app in [&on_files, &on_s3] {
        let (status, _, body) = app.post_upload("notes.txt", &data).await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let (_, whole, _) = app.get_content(&id, None).await;
        let etag = header(&whole, "etag").to_owned();
        let last_modified = header(&whole, "last-modified").to_owned();
        let url = app.url(&format!("/uploads/{id}/content"));
        let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
            ("GET", vec![]),
            ("HEAD", vec![]),
            ("GET", vec![("range", "bytes=10-19".into())]),
            ("GET", vec![("range", "bytes=-7".into())]),
            ("GET", vec![("range", "bytes=99990-".into())]),
            ("GET", vec![("range", "bytes=100000-".into())]),
            ("GET", vec![("range", "bytes=5-2".into())]),
            ("GET", vec![("range", "bytes=0-1,5-6".into())]),
            ("HEAD", vec![("range", "bytes=10-19".into())]),
            ("GET", vec![("if-none-match", etag.clone())]),
            ("GET", vec![("if-match", "\"not-it\"".into())]),
            ("GET", vec![("if-match", etag.clone())]),
            ("GET", vec![("if-modified-since", last_modified.clone())]),
            (
                "GET",
                vec![(
                    "if-unmodified-since",
                    "Mon, 01 Jan 2001 00:00:00 GMT".into(),
                )],
            ),
            (
                "GET",
                vec![
                    ("range", "bytes=10-19".into()),
                    ("if-range", "\"other\"".into()),
                ],
            ),
            (
                "GET",
                vec![("range", "bytes=10-19".into()), ("if-range", etag.clone())],
            ),
        ];
        let mut seen = Vec::new();
        for (method, headers) in cases {
            let mut req = app
                .client
                .request(method.parse().unwrap(), &url)
                .insert_header(("accept-encoding", "identity"));
            for (name, value) in &headers {
                req = req.insert_header((*name, value.as_str()));
            }
            let mut res = req.send().await.expect("request failed");
            let body = res.body().limit(1 << 20).await.expect("body");
            let status = res.status().as_u16();
            let keep = [
                "content-type",
                "content-disposition",
                "content-range",
                "content-length",
                "accept-ranges",
                "x-content-type-options",
                "content-security-policy",
            ];
            let shown: Vec<String> = keep
                .iter()
                .filter_map(|h| res.headers().get(*h))
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            let payload = if status < 300 {
                body.to_vec()
            } else {
                // An error's JSON names its request: compare its code only.
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                json["error"]["code"].to_string().into_bytes()
            };
            seen.push((method, headers.len(), status, shown, payload));
        }
        answers.push(seen);
    }
    for (file, object) in answers[0].iter().zip(&answers[1]) {
        assert_eq!(file, object, "file and object answers differ");
    }
    let statuses: Vec<u16> = answers[1].iter().map(|a| a.2).collect();
    assert_eq!(
        statuses,
        [200, 200, 206, 206, 206, 416, 200, 200, 200, 304, 412, 200, 304, 412, 200, 206]
    );
}

async fn delete_removes_the_object(backend: Backend, kind: S3Kind) {
    let Some(store) = S3Server::start_kind(kind).await else {
        return;
    };
    let Some(app) = store.app(backend, &[]).await else {
        return;
    };
    let data = Noise::new(8).chunk(9 << 20);
    let (status, _, body) = app.post_upload("gone.bin", &data).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(store.objects().await, [S3Server::key_of(&id)]);

    let (status, _, body) = app.delete_upload(&id).await;
    assert_eq!(status, 204, "{body}");
    assert!(store.objects().await.is_empty(), "the object stayed");
    let (status, _, _) = app.get_content(&id, None).await;
    assert_eq!(status, 404);
    let (status, _, _) = app.delete_upload(&id).await;
    assert_eq!(status, 404);
    assert_no_uploads_listed(&app).await;
}

async fn an_upload_over_the_limit_leaves_no_object(backend: Backend, kind: S3Kind) {
    let Some(store) = S3Server::start_kind(kind).await else {
        return;
    };
    let limit = (10u64 << 20).to_string();
    let Some(app) = store
        .app(backend, &[("TROUPE_MAX_UPLOAD_BYTES", &limit)])
        .await
    else {
        return;
    };
    // One byte over, read to its end: a part went out before the limit was crossed, so a
    // multipart upload was begun.
    let data = Noise::new(6).chunk((10 << 20) + 1);
    let (status, _, body) = app.post_upload("big.bin", &data).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    store.assert_left_only(&[]).await;
    assert_no_uploads_listed(&app).await;
}

/// Sends the head of a form upload that announces `len` bytes, then `sent` bytes of its
/// file, and waits until troupe has begun a multipart upload; answers the open socket.
async fn upload_until_a_part_went_out(
    app: &TestApp,
    store: &S3Server,
    len: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (head, _) = framing("cut.bin", "application/octet-stream");
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {}\r\nContent-Length: {len}\r\n\r\n",
        content_type(),
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&head).await.unwrap();
    let mut noise = Noise::new(9);
    for _ in 0..sent / (64 * 1024) {
        stream.write_all(&noise.chunk(64 * 1024)).await.unwrap();
    }
    stream.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.unfinished_multipart_uploads().await.is_empty() {
        assert!(Instant::now() < deadline, "no part was ever sent");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    stream
}

async fn a_client_gone_mid_body_leaves_no_object(backend: Backend, kind: S3Kind) {
    let Some(store) = S3Server::start_kind(kind).await else {
        return;
    };
    let Some(app) = store.app(backend, &[]).await else {
        return;
    };
    let stream = upload_until_a_part_went_out(&app, &store, 30 << 20, 12 << 20).await;
    drop(stream);
    store.assert_left_only(&[]).await;
    assert_no_uploads_listed(&app).await;
    let (status, _, body) = app.post_upload("after.txt", b"still here").await;
    assert_eq!(status, 201, "{body}");
}

async fn a_body_that_stalls_leaves_no_object(backend: Backend, kind: S3Kind) {
    let Some(store) = S3Server::start_kind(kind).await else {
        return;
    };
    let Some(app) = store
        .app(backend, &[("TROUPE_BODY_TIMEOUT_MS", "500")])
        .await
    else {
        return;
    };
    let mut stream = upload_until_a_part_went_out(&app, &store, 30 << 20, 12 << 20).await;
    // Silent past the body timeout: troupe answers 408 and aborts what it began.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt as _;
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a stalled body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    store.assert_left_only(&[]).await;
    assert_no_uploads_listed(&app).await;
}

async fn a_store_that_is_down_is_503_storage_unavailable_until_it_is_back(
    backend: Backend,
    kind: S3Kind,
) {
    let Some(mut store) = S3Server::start_kind(kind).await else {
        return;
    };
    let Some(app) = store.app(backend, &[]).await else {
        return;
    };
    let (status, _, body) = app.post_upload("before.txt", b"kept").await;
    assert_eq!(status, 201, "{body}");
    let before = body["id"].as_str().unwrap().to_owned();
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["components"]["storage"]["state"], "up");
    assert_eq!(body["components"]["storage"]["backend"], "s3");

    store.kill();
    let (status, headers, body) = app.post_upload("during.txt", b"refused").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable");
    assert_eq!(header(&headers, "retry-after"), "1");
    let (status, headers, _) = app.get_content(&before, None).await;
    assert_eq!(status, 503);
    assert_eq!(header(&headers, "retry-after"), "1");
    let (status, _, body) = app.delete_upload(&before).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable");
    let (status, headers, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["components"]["storage"]["state"], "down");
    assert_eq!(body["components"]["storage"]["code"], "storage_unavailable");
    assert_eq!(header(&headers, "retry-after"), "1");
    assert_no_stray_rows(&app, &[&before]).await;

    store.restart().await;
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = app.post_upload("after.txt", b"back").await;
    assert_eq!(status, 201, "{body}");
    let after = body["id"].as_str().unwrap().to_owned();
    let (status, _, content) = app.get_content(&after, None).await;
    assert_eq!(status, 200);
    assert_eq!(content, b"back");
}

/// The uploads listed are exactly `ids`.
async fn assert_no_stray_rows(app: &TestApp, ids: &[&str]) {
    let (_, _, list) = app.list_uploads("").await;
    let listed: Vec<&str> = list["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids, "{list}");
}

on_each_store! {
    form_upload => form_uploads_are_objects_read_back_identical,
    ranges_and_conditions => ranges_and_conditions_answer_as_for_a_file,
    delete => delete_removes_the_object,
    over_the_limit => an_upload_over_the_limit_leaves_no_object,
    client_gone => a_client_gone_mid_body_leaves_no_object,
    body_stalls => a_body_that_stalls_leaves_no_object,
    store_down => a_store_that_is_down_is_503_storage_unavailable_until_it_is_back,
}

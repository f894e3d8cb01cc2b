//! `POST /upload` and `/uploads`: real files through the real server, on both databases.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use awc::http::Method;

use crate::both_backends;
use crate::helpers::{
    app_on_small_disk, assert_no_files_left, content_type, files_under, form, framing, header, hex,
    read_json, sha256_hex, spawn_app, spawn_app_with, Backend, Noise, TestApp, TestDb, BOUNDARY,
};

async fn assert_no_uploads_listed(app: &TestApp) {
    let (status, _, body) = app.list_uploads("").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uploads"].as_array().unwrap().len(), 0, "{body}");
}

async fn small_and_empty_files_round_trip_with_their_sha256(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let small: Vec<u8> = Noise::new(7).chunk(70_000);
    for data in [
        small.as_slice(),
        b"".as_slice(),
        b"\r\n--not-the-boundary\r\n".as_slice(),
    ] {
        let (status, headers, body) = app.post_upload("report.pdf", data).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "uploaded");
        assert_eq!(body["filename"], "report.pdf");
        assert_eq!(body["size"], data.len());
        assert_eq!(body["sha256"], sha256_hex(data));
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(
            header(&headers, "location"),
            format!("/uploads/{id}").as_str()
        );

        // Stored under its id, byte for byte.
        let on_disk = std::fs::read(app.dir.path().join("uploads").join(&id)).unwrap();
        assert_eq!(on_disk, data);

        let (status, _, meta) = app.get_upload(&id).await;
        assert_eq!(status, 200, "{meta}");
        assert_eq!(meta["sha256"], sha256_hex(data));
        assert_eq!(meta["size"], data.len());

        let (status, headers, content) = app.get_content(id, None).await;
        assert_eq!(status, 200);
        assert_eq!(content, data);
        assert_eq!(
            header(&headers, "content-length"),
            data.len().to_string().as_str()
        );
        assert_eq!(header(&headers, "content-type"), "application/octet-stream");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        let disposition = header(&headers, "content-disposition");
        assert!(disposition.starts_with("attachment"), "{disposition}");
        assert!(disposition.contains("report.pdf"), "{disposition}");
    }
    let (_, _, list) = app.list_uploads("").await;
    assert_eq!(list["uploads"].as_array().unwrap().len(), 3, "{list}");
    // Nothing is left in the temp area.
    assert!(files_under(&app.dir.path().join("uploads/.tmp")).is_empty());
}

/// 128 MiB, generated while it is sent and hashed while it is read back: neither side holds it.
async fn a_large_file_streams_in_and_out_with_its_sha256(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 512;
    let mut expected = Sha256::new();
    let mut noise = Noise::new(42);
    for _ in 0..CHUNKS {
        expected.update(noise.chunk(CHUNK));
    }
    let expected = hex(&expected.finalize());

    let (head, tail) = framing("big.bin", "application/x-big");
    let mut noise = Noise::new(42);
    let parts = futures::stream::iter(0..CHUNKS + 2).map(move |i| {
        let bytes = match i {
            0 => head.clone(),
            i if i == CHUNKS + 1 => tail.clone(),
            _ => noise.chunk(CHUNK),
        };
        Ok::<_, std::io::Error>(Bytes::from(bytes))
    });
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(300))
        .finish();
    let res = client
        .post(app.url("/upload"))
        .insert_header(("content-type", content_type()))
        .send_stream(parts)
        .await
        .expect("upload failed");
    let (status, _, body) = read_json(res).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["size"], CHUNK * CHUNKS);
    assert_eq!(body["sha256"], expected.as_str());
    let id = body["id"].as_str().unwrap();

    let mut res = client
        .get(app.url(&format!("/uploads/{id}/content")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut got = Sha256::new();
    let mut len = 0;
    while let Some(chunk) = res.next().await {
        let chunk = chunk.unwrap();
        len += chunk.len();
        got.update(&chunk);
    }
    assert_eq!(len, CHUNK * CHUNKS);
    assert_eq!(hex(&got.finalize()), expected);
}

async fn an_upload_over_the_limit_is_413_and_keeps_nothing(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[("TROUPE_MAX_UPLOAD_BYTES", "1048576")]).await else {
        return;
    };
    // At the limit: taken.
    let exact = Noise::new(1).chunk(1 << 20);
    let (status, _, body) = app.post_upload("exact.bin", &exact).await;
    assert_eq!(status, 201, "{body}");
    let (status, _, _) = app.delete_upload(body["id"].as_str().unwrap()).await;
    assert_eq!(status, 204);

    // One byte over, with a Content-Length small enough to be read: 413 once crossed.
    let over = Noise::new(2).chunk((1 << 20) + 1);
    let (status, _, body) = app.post_upload("over.bin", &over).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_no_uploads_listed(&app).await;
    assert_no_files_left(&app).await;

    // A declared length far over the limit: 413 before the body is read.
    let (status, body) = raw_upload(&app, 1 << 30, 64 * 1024).await;
    assert_eq!(status, Some(413), "{body}");

    // A chunked body with no length: 413 as soon as the limit is crossed, long before it ends.
    let (status, body) = raw_upload(&app, 0, 8 << 20).await;
    assert_eq!(status, Some(413), "{body}");
    assert_no_uploads_listed(&app).await;
    assert_no_files_left(&app).await;
}

/// Sends a multipart upload over a raw socket: with `Content-Length: declared` (or chunked
/// when 0) and `send` bytes of file content, never the end of the form. Returns the status
/// the server answered with, if any, and the raw response.
async fn raw_upload(app: &TestApp, declared: u64, send: usize) -> (Option<u16>, String) {
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (head, _) = framing("raw.bin", "application/octet-stream");
    let length = if declared > 0 {
        format!("Content-Length: {declared}\r\n")
    } else {
        "Transfer-Encoding: chunked\r\n".into()
    };
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {}\r\n{length}\r\n",
        content_type()
    );
    let (mut reader, mut writer) = stream.split();
    let write = async {
        writer.write_all(request.as_bytes()).await?;
        let mut noise = Noise::new(3);
        let mut body = head.clone();
        let mut sent = 0;
        while sent < send {
            let n = (send - sent).min(64 * 1024);
            body.extend_from_slice(&noise.chunk(n));
            sent += n;
            if declared > 0 {
                writer.write_all(&body).await?;
            } else {
                writer
                    .write_all(format!("{:x}\r\n", body.len()).as_bytes())
                    .await?;
                writer.write_all(&body).await?;
                writer.write_all(b"\r\n").await?;
            }
            body.clear();
        }
        std::io::Result::Ok(())
    };
    let read = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
        got
    };
    let (_, got) = futures::join!(write, read);
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    (status, text)
}

async fn a_client_that_disconnects_mid_upload_leaves_no_file_and_no_row(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let addr = app.address.trim_start_matches("http://").to_owned();
    {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (head, _) = framing("cut.bin", "application/octet-stream");
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            content_type(),
            10 << 20
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.write_all(&head).await.unwrap();
        let mut noise = Noise::new(9);
        for _ in 0..48 {
            stream.write_all(&noise.chunk(64 * 1024)).await.unwrap();
        }
        // Let the server write some of it to disk before the client vanishes.
        let deadline = Instant::now() + Duration::from_secs(5);
        while files_under(&app.dir.path().join("uploads/.tmp")).is_empty()
            && Instant::now() < deadline
        {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !files_under(&app.dir.path().join("uploads/.tmp")).is_empty(),
            "the upload never started"
        );
    }
    assert_no_files_left(&app).await;
    assert_no_uploads_listed(&app).await;
    // The server still serves uploads.
    let (status, _, body) = app.post_upload("after.txt", b"still here").await;
    assert_eq!(status, 201, "{body}");
}

async fn hostile_filenames_are_only_sanitised_metadata(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    for (raw, want) in [
        ("../../etc/passwd", "passwd"),
        ("a/b", "b"),
        ("..\\\\x", "x"),
        ("..", "upload"),
        ("\u{202e}gnp.exe", "gnp.exe"),
    ] {
        let (status, _, body) = app.post_upload(raw, b"x").await;
        assert_eq!(status, 201, "{raw:?}: {body}");
        assert_eq!(body["filename"], want, "{raw:?}");
        let id = body["id"].as_str().unwrap();
        let (_, headers, _) = app.get_content(id, None).await;
        let disposition = header(&headers, "content-disposition");
        assert!(
            !disposition.contains('/') && !disposition.contains(".."),
            "{disposition}"
        );
    }
    // NUL and control characters in the part's headers: refused or cleaned, never a path.
    for raw in ["nul\0.txt", "bell\x07.txt", "cr\rlf.txt"] {
        let (status, _, body) = app.post_upload(raw, b"x").await;
        assert!(status == 201 || status == 400, "{raw:?}: {status} {body}");
        if status == 201 {
            let name = body["filename"].as_str().unwrap();
            assert!(!name.chars().any(char::is_control), "{name:?}");
        } else {
            assert_eq!(body["error"]["code"], "bad_request");
        }
    }
    // Every stored file is named by a UUID directly under the upload dir; nothing escaped it.
    let root = app.dir.path().join("uploads");
    for file in files_under(app.dir.path()) {
        if file.starts_with(&root) {
            let name = file.file_name().unwrap().to_str().unwrap();
            assert!(uuid::Uuid::parse_str(name).is_ok(), "{file:?}");
            assert_eq!(file.parent().unwrap(), root);
        }
    }
    assert!(!app.dir.path().join("etc").exists());
}

async fn malformed_forms_get_truthful_errors(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    // Not multipart.
    let (status, _, body) = app.post_upload_as("application/json", b"{}".to_vec()).await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_media_type");

    // No `file` field.
    let other = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{BOUNDARY}--\r\n"
    );
    let (status, _, body) = app.post_form(other.into_bytes()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "file");

    // Too many parts.
    let mut many = String::new();
    for i in 0..40 {
        many.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nx\r\n"
        ));
    }
    many.push_str(&format!("--{BOUNDARY}--\r\n"));
    let (status, _, body) = app.post_form(many.into_bytes()).await;
    assert_eq!(status, 400, "{body}");

    // Two files.
    let (mut two, _) = framing("a.txt", "text/plain");
    two.extend_from_slice(b"a\r\n");
    two.extend_from_slice(&form("b.txt", b"b"));
    let (status, _, body) = app.post_form(two).await;
    assert_eq!(status, 400, "{body}");

    // Truncated body (no closing boundary).
    let mut cut = form("cut.txt", b"abc");
    cut.truncate(cut.len() - 10);
    let (status, _, body) = app.post_form(cut).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");

    assert_no_uploads_listed(&app).await;
    assert_no_files_left(&app).await;
}

async fn a_browser_form_with_fields_around_the_file_is_stored(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
    let data = Noise::new(5).chunk(300_000);
    let mut body = format!(
        "preamble\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nMy report\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"resume.pdf\"; \
         filename*=UTF-8''r%C3%A9sum%C3%A9.pdf\r\nContent-Type: application/pdf\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&data);
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"tags\"\r\n\r\na,b\r\n--{boundary}--\r\n"
        )
        .as_bytes(),
    );
    let content_type = format!("multipart/form-data; boundary=\"{boundary}\"");
    let (status, _, body) = app.post_upload_as(&content_type, body).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["filename"], "résumé.pdf");
    assert_eq!(body["content_type"], "application/pdf");
    assert_eq!(body["size"], data.len());
    assert_eq!(body["sha256"], sha256_hex(&data));
    let on_disk = std::fs::read(
        app.dir
            .path()
            .join("uploads")
            .join(body["id"].as_str().unwrap()),
    )
    .unwrap();
    assert!(on_disk == data);
}

async fn framing_over_its_limits_is_400(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    // A boundary longer than RFC 2046's 70 characters.
    let long = "b".repeat(71);
    let body =
        format!("--{long}\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--{long}--");
    let content_type = format!("multipart/form-data; boundary={long}");
    let (status, _, body) = app.post_upload_as(&content_type, body.into_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");

    // No boundary at all.
    let (status, _, body) = app
        .post_upload_as("multipart/form-data", form("a", b"x"))
        .await;
    assert_eq!(status, 400, "{body}");

    // A part with more than 16 headers, or more than 8 KiB of them.
    let (head, tail) = framing("h.txt", "text/plain");
    let (start, rest) = head.split_at(head.len() - 2);
    for extra in [
        (0..16).map(|i| format!("X-{i}: y\r\n")).collect::<String>(),
        format!("X-Filler: {}\r\n", "a".repeat(8 * 1024)),
    ] {
        let mut body = start.to_vec();
        body.extend_from_slice(extra.as_bytes());
        body.extend_from_slice(rest);
        body.extend_from_slice(b"x");
        body.extend_from_slice(&tail);
        let (status, _, body) = app.post_form(body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    assert_no_uploads_listed(&app).await;
    assert_no_files_left(&app).await;
}

async fn content_serves_single_ranges_and_refuses_unsatisfiable_ones(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let data: Vec<u8> = (0..100u8).collect();
    let (_, _, body) = app.post_upload("range.bin", &data).await;
    let id = body["id"].as_str().unwrap();

    let (status, headers, part) = app.get_content(id, Some("bytes=10-19")).await;
    assert_eq!(status, 206);
    assert_eq!(part, &data[10..20]);
    assert_eq!(header(&headers, "content-range"), "bytes 10-19/100");

    let (status, _, part) = app.get_content(id, Some("bytes=-5")).await;
    assert_eq!(status, 206);
    assert_eq!(part, &data[95..]);

    let (status, headers, body) = app.get_content(id, Some("bytes=500-600")).await;
    assert_eq!(status, 416);
    assert_eq!(header(&headers, "content-range"), "bytes */100");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "range_not_satisfiable");
}

async fn listing_pages_and_deleting_removes_row_and_file(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, _, body) = app.post_upload(&format!("f{i}.txt"), b"data").await;
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    let (status, _, page) = app.list_uploads("limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["uploads"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_after"], ids[1].as_str());
    let (_, _, rest) = app.list_uploads(&format!("limit=2&after={}", ids[1])).await;
    assert_eq!(rest["uploads"][0]["id"], ids[2].as_str());
    assert!(rest["next_after"].is_null());

    let (status, _, _) = app.delete_upload(&ids[0]).await;
    assert_eq!(status, 204);
    assert!(!app.dir.path().join("uploads").join(&ids[0]).exists());
    let (status, _, body) = app.get_upload(&ids[0]).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _, _) = app.get_content(&ids[0], None).await;
    assert_eq!(status, 404);
    let (status, _, _) = app.delete_upload(&ids[0]).await;
    assert_eq!(status, 404);
    // Not a UUID: no such upload, and nothing about paths in the answer.
    let (status, _, body) = app.get_json("/uploads/..%2F..%2Fetc%2Fpasswd").await;
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = app.list_uploads("limit=0").await;
    assert_eq!(status, 422);
}

/// Uploads are listed in the order they were begun (their ids are UUIDv7), whether they came
/// as a form or through tus (which finishes later than it begins); an upload stored under an
/// id of the random kind troupe made before is still listed, read and deleted.
async fn uploads_are_listed_in_the_order_they_were_made(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut made = Vec::new();
    let form_upload = |name: String| {
        let app = &app;
        async move {
            let (status, _, body) = app.post_upload(&name, b"data").await;
            assert_eq!(status, 201, "{body}");
            body["id"].as_str().unwrap().to_owned()
        }
    };
    made.push(form_upload("first.txt".into()).await);
    // A tus upload begun now, finished after the next two forms.
    let (status, headers, body) = app.tus_create(4, &[]).await;
    assert_eq!(status, 201, "{body}");
    let location = header(&headers, "location").to_owned();
    made.push(location.trim_start_matches("/files/").to_owned());
    for i in 0..2 {
        made.push(form_upload(format!("form{i}.txt")).await);
    }
    let (status, _, body) = app.tus_patch(&location, 0, b"tus!", &[]).await;
    assert_eq!(status, 204, "{body}");
    for i in 2..8 {
        made.push(form_upload(format!("form{i}.txt")).await);
    }
    let listed = |query: &'static str| {
        let app = &app;
        async move {
            let (status, _, page) = app.list_uploads(query).await;
            assert_eq!(status, 200, "{page}");
            page["uploads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("").await, made);

    // An id of the kind made before UUIDv7: its row and file, as an older troupe left them.
    let old = "1b4e28ba-2fa1-4d2e-883f-0016d3cca427";
    let insert = format!(
        "INSERT INTO uploads (id, filename, content_type, size, upload_offset, sha256, \
         complete, created_at, updated_at) VALUES ('{old}', 'old.txt', 'text/plain', 3, 3, \
         '{}', TRUE, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        sha256_hex(b"old")
    );
    match &app.db {
        TestDb::Postgres(pg) => pg.client().await.batch_execute(&insert).await.unwrap(),
        TestDb::Sqlite(path) => {
            use diesel::{Connection as _, RunQueryDsl as _};
            let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy()).unwrap();
            diesel::sql_query(&insert).execute(&mut conn).unwrap();
        }
    }
    std::fs::write(app.dir.path().join("uploads").join(old), b"old").unwrap();
    let mut with_old = made.clone();
    with_old.push(old.to_owned());
    with_old.sort();
    assert_eq!(listed("limit=1000").await, with_old);
    let (status, _, body) = app.get_upload(old).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, bytes) = app.get_content(old, None).await;
    assert_eq!((status, bytes.as_slice()), (200, b"old".as_slice()));
    let (status, _, _) = app.delete_upload(old).await;
    assert_eq!(status, 204);
    assert_eq!(listed("").await, made);
}

/// File bytes go out as stored, and say nothing of a content coding: RFC 9110 §8.4.1 has no
/// `identity` to send, whatever the client accepts and whether or not it asks for a range.
async fn content_carries_no_content_encoding(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let data: Vec<u8> = (0..100u8).collect();
    let (_, _, body) = app.post_upload("plain.txt", &data).await;
    let id = body["id"].as_str().unwrap();
    let path = format!("/uploads/{id}/content");
    for method in [Method::GET, Method::HEAD] {
        for range in [None, Some("bytes=10-19")] {
            let mut req = app
                .client
                .request(method.clone(), app.url(&path))
                .insert_header(("Accept-Encoding", "gzip, br, identity"));
            if let Some(range) = range {
                req = req.insert_header(("Range", range));
            }
            let mut res = req.send().await.unwrap();
            let bytes = res.body().await.unwrap();
            let ranged = range.is_some() && method == Method::GET;
            assert_eq!(
                res.status(),
                if ranged { 206 } else { 200 },
                "{method} {range:?}"
            );
            assert!(
                res.headers().get("content-encoding").is_none(),
                "{method} {range:?}: {:?}",
                res.headers()
            );
            if method == Method::GET {
                let want = if ranged { &data[10..20] } else { &data[..] };
                assert_eq!(&bytes[..], want, "{range:?}");
            }
        }
    }
}

both_backends!(
    listed_in_creation_order => uploads_are_listed_in_the_order_they_were_made,
    no_content_encoding => content_carries_no_content_encoding,
    small_and_empty_round_trip => small_and_empty_files_round_trip_with_their_sha256,
    large_round_trip => a_large_file_streams_in_and_out_with_its_sha256,
    over_the_limit => an_upload_over_the_limit_is_413_and_keeps_nothing,
    disconnect_mid_upload => a_client_that_disconnects_mid_upload_leaves_no_file_and_no_row,
    hostile_filenames => hostile_filenames_are_only_sanitised_metadata,
    malformed_forms => malformed_forms_get_truthful_errors,
    browser_form => a_browser_form_with_fields_around_the_file_is_stored,
    framing_limits => framing_over_its_limits_is_400,
    ranges => content_serves_single_ranges_and_refuses_unsatisfiable_ones,
    list_and_delete => listing_pages_and_deleting_removes_row_and_file,
);

/// With every CPU place taken, a new upload waits its 2 s for one and then gets 503 +
/// `Retry-After`, keeping nothing; the uploads already admitted finish once the CPU frees.
#[actix_web::test]
async fn a_saturated_cpu_pool_turns_a_new_upload_away_with_503() {
    let app = spawn_app_with(Backend::Sqlite, &[("TROUPE_CPU_THREADS", "1")])
        .await
        .unwrap();
    // The only CPU thread is busy for 5 s; one thread has two places.
    let blocker = {
        let req = app.client.post(app.url("/_test/fault/cpu/block_5s"));
        actix_web::rt::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
    };
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let admitted: Vec<_> = (0..2u8)
        .map(|i| {
            let body = form(&format!("held-{i}.bin"), &[i; 1000]);
            let req = app
                .client
                .post(app.url("/upload"))
                .insert_header(("content-type", content_type()))
                .timeout(Duration::from_secs(60));
            actix_web::rt::spawn(async move {
                let res = req.send_body(body).await.expect("request failed");
                read_json(res).await
            })
        })
        .collect();
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    let (status, headers, body) = app.post_upload("turned-away.bin", b"late").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    assert!(!header(&headers, "retry-after").is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "it waited for a place first"
    );

    for handle in admitted {
        let (status, _, body) = handle.await.unwrap();
        assert_eq!(status, 201, "{body}");
    }
    assert_eq!(blocker.await.unwrap().unwrap(), 204);
    let (_, _, page) = app.list_uploads("").await;
    let names: Vec<_> = page["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["filename"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!names.contains(&"turned-away.bin".to_owned()), "{names:?}");
}

/// While other requests are being served, each upload goes at most
/// `TROUPE_UPLOAD_SHARED_RATE_MIB`: 6 MiB at 2 MiB/s beside a stream of `/ping`s takes
/// at least 2 s (five 0.5 s pauses between its 1 MiB batches), and arrives whole.
#[actix_web::test]
async fn uploads_yield_to_interactive_requests() {
    let app = spawn_app_with(Backend::Sqlite, &[("TROUPE_UPLOAD_SHARED_RATE_MIB", "2")])
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let (client, url, stop) = (app.client.clone(), app.url("/ping"), stop.clone());
        actix_web::rt::spawn(async move {
            let mut pings = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = client.get(&url).send().await.expect("ping failed");
                assert_eq!(res.status().as_u16(), 200);
                pings += 1;
                actix_web::rt::time::sleep(Duration::from_millis(10)).await;
            }
            pings
        })
    };
    let data = Noise::new(9).chunk(6 << 20);
    let started = Instant::now();
    let (status, _, body) = app.post_upload("paced.bin", &data).await;
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sha256"], sha256_hex(&data));
    assert!(pinger.await.unwrap() > 10, "pings ran alongside");
    assert!(took >= Duration::from_secs(2), "paced: {took:?}");
}

/// A full disk fails the upload that meets it with 507 `insufficient_storage`, keeps none
/// of it, and the next upload that fits is stored.
#[actix_web::test]
async fn a_full_disk_is_507_and_keeps_nothing() {
    let Some(small) = app_on_small_disk().await else {
        return;
    };
    let (app, uploads) = (&small.app, &small.uploads);
    let (status, _, body) = app
        .post_upload("big.bin", &Noise::new(5).chunk(8 << 20))
        .await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage");
    assert!(
        !body.to_string().contains("No space"),
        "no internals: {body}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !files_under(uploads).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            files_under(uploads)
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }

    let small = Noise::new(6).chunk(100_000);
    let (status, _, body) = app.post_upload("small.bin", &small).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sha256"], sha256_hex(&small));
}

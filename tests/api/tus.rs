//! tus 1.0 at `/files/`: the protocol over HTTP against the real server, on both databases,
//! across restarts, and driven by a real third-party client (tuspy).

use std::time::{Duration, Instant};

use awc::http::Method;
use base64::Engine as _;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;

use crate::both_backends;
use crate::helpers::{
    app_on_small_disk, client_source, files_under, header, hex, read_json, run_client, sha256_hex,
    spawn_app, spawn_app_with, start, tuspy_python, Access, Backend, Noise, Reply, TestApp,
    OTHER_KEY,
};

type Headers = awc::http::header::HeaderMap;

async fn create(app: &TestApp, length: usize, metadata: Option<&str>) -> String {
    let metadata: Vec<_> = metadata
        .map(|m| ("Upload-Metadata", m))
        .into_iter()
        .collect();
    let (status, h, body) = app.tus_create(length, &metadata).await;
    assert_eq!(status, 201, "{body}");
    let location = header(&h, "location").to_owned();
    assert!(location.starts_with("/files/"), "{location}");
    // An unfinished upload says when it expires; an empty one is finished at once.
    assert_eq!(header(&h, "upload-expires").is_empty(), length == 0);
    location
}

async fn offset_of(app: &TestApp, location: &str) -> (u16, Option<usize>, Headers) {
    let (status, h, _) = app.tus_head(location).await;
    let offset = header(&h, "upload-offset").parse().ok();
    (status, offset, h)
}

/// A PATCH over a raw socket that sends `data` of a longer declared body, then holds the
/// connection open until the returned stream is dropped.
async fn start_patch(
    app: &TestApp,
    location: &str,
    offset: usize,
    declared: usize,
    data: &[u8],
) -> tokio::net::TcpStream {
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {{addr}}\r\nTus-Resumable: 1.0.0\r\n\
         Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    app.send_partial(&head, data).await
}

/// Polls `HEAD` until the offset is `want` (the server records an interrupted PATCH after
/// the connection is gone).
async fn wait_for_offset(app: &TestApp, location: &str, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, offset, _) = offset_of(app, location).await;
        if offset == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "offset stuck at {offset:?}, want {want}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// PATCHes, retrying while an ended PATCH still holds the upload (423, briefly).
async fn patch_when_free(app: &TestApp, location: &str, offset: usize, data: &[u8]) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = app.tus_patch(location, offset, data, &[]).await;
        if answer.0 != 423 || Instant::now() > deadline {
            return answer;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn options_advertises_the_protocol_and_cors_preflight() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("TROUPE_MAX_UPLOAD_BYTES", "5000"),
            ("TROUPE_CORS_ORIGINS", "*"),
        ],
    )
    .await
    .unwrap();
    let res = app
        .client
        .request(Method::OPTIONS, app.url("/files/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let h = res.headers();
    assert_eq!(header(h, "tus-version"), "1.0.0");
    assert_eq!(header(h, "tus-resumable"), "1.0.0");
    assert_eq!(header(h, "tus-max-size"), "5000");
    assert_eq!(header(h, "tus-checksum-algorithm"), "sha1,sha256");
    for ext in [
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    ] {
        assert!(
            header(h, "tus-extension").split(',').any(|e| e == ext),
            "{ext}"
        );
    }
    // A browser's preflight is the CORS layer's answer.
    let res = app
        .client
        .request(Method::OPTIONS, app.url("/files/"))
        .insert_header(("Origin", "https://example.com"))
        .insert_header(("Access-Control-Request-Method", "PATCH"))
        .insert_header((
            "Access-Control-Request-Headers",
            "tus-resumable, upload-offset, content-type",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let h = res.headers();
    assert_eq!(header(h, "access-control-allow-origin"), "*");
    assert!(header(h, "access-control-allow-methods").contains("PATCH"));
    assert!(header(h, "access-control-allow-headers")
        .to_ascii_lowercase()
        .contains("upload-offset"));
    // Every other answer lets a browser read the tus headers.
    let (status, h, _) = app
        .tus_create(10, &[("Origin", "https://example.com")])
        .await;
    assert_eq!(status, 201);
    assert_eq!(header(&h, "access-control-allow-origin"), "*");
    let exposed = header(&h, "access-control-expose-headers").to_ascii_lowercase();
    for name in [
        "location",
        "upload-offset",
        "upload-length",
        "tus-resumable",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
}

#[actix_web::test]
async fn requests_without_tus_resumable_1_0_0_are_412() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    for version in [None, Some("0.2.2")] {
        let mut req = app
            .client
            .post(app.url("/files/"))
            .insert_header(("Upload-Length", "10"));
        if let Some(v) = version {
            req = req.insert_header(("Tus-Resumable", v));
        }
        let (status, h, body) = read_json(req.send().await.unwrap()).await;
        assert_eq!(status, 412, "{body}");
        assert_eq!(body["error"]["code"], "unsupported_tus_version");
        assert_eq!(header(&h, "tus-version"), "1.0.0");
        assert_eq!(header(&h, "tus-resumable"), "1.0.0");
    }
}

/// A body past `Upload-Length` appends nothing: refused at once when its `Content-Length`
/// says so, and when it is chunked, as soon as it crosses the length.
async fn a_body_past_the_length_is_413_and_appends_nothing(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let location = create(&app, 10, None).await;
    let patch = [
        ("Upload-Offset", "0"),
        ("Content-Type", "application/offset+octet-stream"),
    ];
    let (status, _, body) = app.tus_patch(&location, 0, &[7; 11], &[]).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(offset_of(&app, &location).await.1, Some(0));

    let chunks =
        futures::StreamExt::map(futures::stream::iter([vec![1u8; 6], vec![2u8; 6]]), |c| {
            Ok::<_, std::io::Error>(bytes::Bytes::from(c))
        });
    let mut req = app
        .client
        .patch(app.url(&location))
        .insert_header(("Tus-Resumable", "1.0.0"));
    for (k, v) in patch {
        req = req.insert_header((k, v));
    }
    let (status, _, body) = read_json(req.send_stream(chunks).await.unwrap()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(offset_of(&app, &location).await.1, Some(0));

    let (status, _, body) = app.tus_patch(&location, 0, &[7; 10], &[]).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(offset_of(&app, &location).await.1, Some(10));
}

async fn bad_creation_requests_get_truthful_errors(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[("TROUPE_MAX_UPLOAD_BYTES", "1000")]).await else {
        return;
    };
    let (status, _, body) = app.tus_create(1001, &[]).await;
    assert_eq!(status, 413, "{body}");
    let (status, _, body) = app.tus_request(Method::POST, "/files/", &[], vec![]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = app
        .tus_request(Method::POST, "/files/", &[("Upload-Length", "-1")], vec![])
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = app
        .tus_create(10, &[("Upload-Metadata", "filename not*base64")])
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");
    let (status, _, _) = offset_of(&app, "/files/00000000-0000-4000-8000-000000000000").await;
    assert_eq!(status, 404);
    // Nothing was created on disk.
    assert!(files_under(&app.dir.path().join("uploads")).is_empty());
}

/// The whole story: create → partial PATCH → interrupted PATCH → HEAD → restart → HEAD →
/// wrong offset → resume → complete, and the result is a normal upload with its sha256.
async fn an_interrupted_upload_resumes_across_a_restart(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let data = Noise::new(11).chunk((3 << 20) + 123);
    let metadata = format!(
        "filename {},filetype {}",
        base64::engine::general_purpose::STANDARD.encode("../resume.bin"),
        base64::engine::general_purpose::STANDARD.encode("application/x-resume")
    );
    let location = create(&app, data.len(), Some(&metadata)).await;

    let first = 1 << 20;
    let (status, h, body) = app.tus_patch(&location, 0, &data[..first], &[]).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(header(&h, "upload-offset"), first.to_string());

    // A PATCH whose client vanishes after 700 000 more bytes: those bytes are kept.
    let arrived = first + 700_000;
    let stream = start_patch(
        &app,
        &location,
        first,
        data.len() - first,
        &data[first..arrived],
    )
    .await;
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
    wait_for_offset(&app, &location, arrived).await;

    // Restart on the same database and directory: the offset is durable.
    let (db, dir) = app.stop().await;
    let app = start(db, dir, &[]).await;
    let (status, offset, h) = offset_of(&app, &location).await;
    assert_eq!(status, 200);
    assert_eq!(offset, Some(arrived));
    assert_eq!(header(&h, "upload-length"), data.len().to_string());
    assert_eq!(header(&h, "cache-control"), "no-store");
    assert_eq!(header(&h, "upload-metadata"), metadata);
    let id = location.trim_start_matches("/files/");
    let on_disk = std::fs::metadata(app.dir.path().join("uploads/tus").join(id))
        .unwrap()
        .len();
    assert!(on_disk >= arrived as u64);

    // A wrong offset: 409, nothing written.
    let (status, _, body) = app
        .tus_patch(&location, first, &data[first..arrived], &[])
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "offset_mismatch");
    assert_eq!(offset_of(&app, &location).await.1, Some(arrived));

    // Resume to the end.
    let (status, h, body) = patch_when_free(&app, &location, arrived, &data[arrived..]).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(header(&h, "upload-offset"), data.len().to_string());
    let (status, offset, _) = offset_of(&app, &location).await;
    assert_eq!((status, offset), (200, Some(data.len())));

    // A finished tus upload is an upload like any other.
    let (status, _, meta) = app.get_upload(id).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["sha256"], sha256_hex(&data));
    assert_eq!(meta["filename"], "resume.bin");
    assert_eq!(meta["content_type"], "application/x-resume");
    let (_, _, content) = app.get_content(id, None).await;
    assert!(content == data, "content differs");
    assert!(files_under(&app.dir.path().join("uploads/tus")).is_empty());
}

async fn a_checksum_mismatch_is_460_and_appends_nothing(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let data = Noise::new(5).chunk(300_000);
    let location = create(&app, data.len(), None).await;
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);

    let wrong = format!("sha1 {}", b64(&Sha1::digest(b"something else")));
    let (status, h, body) = app
        .tus_patch(
            &location,
            0,
            &data[..100_000],
            &[("Upload-Checksum", wrong.as_str())],
        )
        .await;
    assert_eq!(status, 460, "{body}");
    assert_eq!(body["error"]["code"], "checksum_mismatch");
    assert_eq!(header(&h, "tus-resumable"), "1.0.0");
    assert_eq!(offset_of(&app, &location).await.1, Some(0));

    let unknown = app
        .tus_patch(
            &location,
            0,
            &data[..10],
            &[("Upload-Checksum", "md5 AAAA")],
        )
        .await;
    assert_eq!(unknown.0, 400, "{}", unknown.2);

    // The right checksums, sha1 then sha256, are accepted.
    let sha1 = format!("sha1 {}", b64(&Sha1::digest(&data[..100_000])));
    let sha256 = format!("sha256 {}", b64(&Sha256::digest(&data[100_000..])));
    for (from, to, checksum) in [(0, 100_000, sha1), (100_000, data.len(), sha256)] {
        let (status, _, body) = app
            .tus_patch(
                &location,
                from,
                &data[from..to],
                &[("Upload-Checksum", checksum.as_str())],
            )
            .await;
        assert_eq!(status, 204, "{body}");
    }
    let id = location.trim_start_matches("/files/");
    let (_, _, meta) = app.get_upload(id).await;
    assert_eq!(meta["sha256"], sha256_hex(&data));
}

/// The offset the database records for the upload at `location` (read without a request, so
/// no PATCH is asked to stop).
async fn recorded_offset(app: &TestApp, location: &str) -> u64 {
    let id = location.trim_start_matches("/files/").parse().unwrap();
    app.services.db.upload(id).await.unwrap().upload_offset
}

/// Waits until the server has written `len` bytes of the upload's file.
async fn wait_for_file_len(app: &TestApp, location: &str, len: u64) {
    let id = location.trim_start_matches("/files/");
    let tus_file = app.dir.path().join("uploads/tus").join(id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&tus_file).map_or(0, |m| m.len()) < len {
        assert!(
            Instant::now() < deadline,
            "the PATCH never wrote {len} bytes"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a raw PATCH's connection answered (its status line onwards).
async fn response_of(stream: &mut tokio::net::TcpStream) -> String {
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut response))
        .await
        .expect("no answer")
        .unwrap();
    String::from_utf8_lossy(&response[..n]).into_owned()
}

/// A request for an upload that a running PATCH holds takes it over (tusd's lock release):
/// the holder stops, saves every byte it read and answers 400 `upload_interrupted`; the
/// newcomer goes on from the saved offset. Two PATCHes never interleave.
async fn a_request_takes_over_a_running_patch(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let data = Noise::new(21).chunk(3 << 20);
    let location = create(&app, data.len(), None).await;

    // The first PATCH sent a batch and a bit, and its client went silent (a dropped link).
    let sent = (1 << 20) + 12_345;
    let mut first = start_patch(&app, &location, 0, data.len(), &data[..sent]).await;
    wait_for_file_len(&app, &location, 1 << 20).await;
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        recorded_offset(&app, &location).await,
        0,
        "nothing recorded yet"
    );

    // A PATCH from a stale offset: the holder lets go, and the newcomer is told where the
    // upload is now (409, nothing of it written).
    let intruder = Noise::new(99).chunk(1000);
    let started = Instant::now();
    let (status, _, body) = app.tus_patch(&location, 0, &intruder, &[]).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "offset_mismatch");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the holder let go within the hand-over wait"
    );
    let answer = response_of(&mut first).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("upload_interrupted"), "{answer}");

    // Every byte the first PATCH sent is kept, and the upload resumes from there.
    let (status, offset, _) = offset_of(&app, &location).await;
    assert_eq!((status, offset), (200, Some(sent)));
    let (status, _, body) = app.tus_patch(&location, sent, &data[sent..], &[]).await;
    assert_eq!(status, 204, "{body}");
    let id = location.trim_start_matches("/files/");
    let (_, _, meta) = app.get_upload(id).await;
    assert_eq!(meta["sha256"], sha256_hex(&data));

    // Termination takes over a running PATCH too.
    let other = create(&app, data.len(), None).await;
    let _held = start_patch(&app, &other, 0, data.len(), &data[..1000]).await;
    wait_for_file_len(&app, &other, 0).await;
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    let (status, _, body) = app.tus_delete(&other).await;
    assert_eq!(status, 204, "{body}");
    let (status, _, _) = offset_of(&app, &other).await;
    assert_eq!(status, 404);
}

async fn expired_uploads_are_gone_and_their_bytes_removed(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[("TROUPE_TUS_EXPIRY_SECS", "1")]).await else {
        return;
    };
    let location = create(&app, 1000, None).await;
    let (status, _, _) = app.tus_patch(&location, 0, &[7u8; 100], &[]).await;
    assert_eq!(status, 204);
    let kept = create(&app, 5, None).await;
    let (status, _, _) = app.tus_patch(&kept, 0, b"12345", &[]).await;
    assert_eq!(status, 204, "a finished upload never expires");

    let id = location.trim_start_matches("/files/");
    let path = app.dir.path().join("uploads/tus").join(id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() {
        assert!(Instant::now() < deadline, "expired upload never removed");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _, _) = offset_of(&app, &location).await;
    assert!(status == 404 || status == 410, "{status}");
    let (status, _, body) = app.tus_patch(&location, 100, b"more", &[]).await;
    assert!(status == 404 || status == 410, "{status} {body}");
    let (status, _, _) = offset_of(&app, &kept).await;
    assert_eq!(status, 200);
}

async fn creation_with_upload_then_termination(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (status, h, body) = app
        .tus_request(
            Method::POST,
            "/files/",
            &[
                ("Upload-Length", "10"),
                ("Content-Type", "application/offset+octet-stream"),
            ],
            b"hello".to_vec(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(header(&h, "upload-offset"), "5");
    let location = header(&h, "location").to_owned();
    assert_eq!(offset_of(&app, &location).await.1, Some(5));

    let (status, _, _) = app.tus_delete(&location).await;
    assert_eq!(status, 204);
    let (status, _, _) = offset_of(&app, &location).await;
    assert_eq!(status, 404);
    assert!(files_under(&app.dir.path().join("uploads")).is_empty());

    // An empty upload is complete at once.
    let location = create(&app, 0, None).await;
    let id = location.trim_start_matches("/files/");
    let (status, _, meta) = app.get_upload(id).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["sha256"], sha256_hex(b""));
}

#[actix_web::test]
async fn a_post_with_x_http_method_override_is_that_method() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let location = create(&app, 10, None).await;
    let (status, h, body) = app
        .tus_request(
            Method::POST,
            &location,
            &[
                ("X-HTTP-Method-Override", "PATCH"),
                ("Upload-Offset", "0"),
                ("Content-Type", "application/offset+octet-stream"),
            ],
            b"hello".to_vec(),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(header(&h, "upload-offset"), "5");
    assert_eq!(offset_of(&app, &location).await.1, Some(5));

    let (status, _, body) = app
        .tus_request(
            Method::POST,
            &location,
            &[("X-HTTP-Method-Override", "PAT CH")],
            vec![],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");

    let (status, _, body) = app
        .tus_request(
            Method::POST,
            &location,
            &[("X-HTTP-Method-Override", "DELETE")],
            vec![],
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(offset_of(&app, &location).await.0, 404);
}

both_backends!(
    bad_creation => bad_creation_requests_get_truthful_errors,
    body_past_length => a_body_past_the_length_is_413_and_appends_nothing,
    resume_across_restart => an_interrupted_upload_resumes_across_a_restart,
    checksum => a_checksum_mismatch_is_460_and_appends_nothing,
    take_over => a_request_takes_over_a_running_patch,
    expiry => expired_uploads_are_gone_and_their_bytes_removed,
    creation_with_upload => creation_with_upload_then_termination,
);

/// tuspy, the Python tus client, unchanged: uploads half, then a second uploader resumes
/// from the server's offset (HEAD) with sha1 `Upload-Checksum` on every PATCH. Every request
/// carries `Authorization` when `TUS_AUTHORIZATION` says so (tuspy's own `headers` option).
const TUSPY_SCRIPT: &str = r#"
import os, sys
from tusclient import client
url, path, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
auth = os.environ.get("TUS_AUTHORIZATION")
c = client.TusClient(url, headers={"Authorization": auth} if auth else {})
first = c.uploader(file_path=path, chunk_size=chunk, upload_checksum=True,
                   metadata={"filename": "tuspy.bin", "filetype": "application/x-tuspy"})
first.upload(stop_at=chunk)
second = c.uploader(file_path=path, chunk_size=chunk, upload_checksum=True, url=first.url)
second.upload()
print(second.url)
"#;

/// tuspy uploads and resumes `access`'s way; with keys, the upload is the client key's and
/// another key gets 404 for it.
async fn tuspy_uploads_and_resumes(access: Access) {
    let Some(python) = tuspy_python() else {
        return;
    };
    let (app, data, file) = client_source(77, "tuspy-source.bin", access).await;
    let script = app.dir.path().join("tuspy_upload.py");
    std::fs::write(&script, TUSPY_SCRIPT).unwrap();
    let args = vec![
        script.to_string_lossy().into_owned(),
        app.url("/files/"),
        file.to_string_lossy().into_owned(),
        (2 << 20).to_string(),
    ];
    let stdout = run_client("tuspy", python, args, access).await;
    let id = stdout.trim().rsplit('/').next().unwrap().to_owned();
    let (status, _, meta) = app.get_upload(&id).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["sha256"], hex(&Sha256::digest(&data)));
    assert_eq!(meta["filename"], "tuspy.bin");
    assert_eq!(meta["size"], data.len());
    if access == Access::Keyed {
        let app = app.presenting(OTHER_KEY);
        let (status, _, json) = app.get_upload(&id).await;
        assert_eq!(
            status, 404,
            "another key sees the client key's upload: {json}"
        );
    }
}

#[actix_web::test]
async fn a_real_tus_client_uploads_and_resumes() {
    tuspy_uploads_and_resumes(Access::Open).await;
}

#[actix_web::test]
async fn a_real_tus_client_uploads_and_resumes_with_a_bearer_key() {
    tuspy_uploads_and_resumes(Access::Keyed).await;
}

/// A long PATCH records its offset every 64 MiB while it runs: the database has the
/// checkpoint with the PATCH's connection still open, so a crash from then on keeps those
/// bytes.
#[actix_web::test]
async fn a_long_patch_records_its_offset_while_it_runs() {
    let app = spawn_app_with(Backend::Sqlite, &[("TROUPE_MAX_UPLOAD_BYTES", "100000000")])
        .await
        .unwrap();
    let data = Noise::new(64).chunk(70 << 20);
    let location = create(&app, data.len(), None).await;
    let sent = 66 << 20;
    let stream = start_patch(&app, &location, 0, data.len(), &data[..sent]).await;
    // At the first batch boundary 64 MiB or more past the start; the next is 64 MiB later.
    let deadline = Instant::now() + Duration::from_secs(30);
    // Read from the database: a HEAD would ask the PATCH to stop.
    let checkpoint = loop {
        match recorded_offset(&app, &location).await as usize {
            at if at >= 64 << 20 => break at,
            at => assert!(Instant::now() < deadline, "offset stuck at {at}"),
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        checkpoint < sent,
        "recorded at {checkpoint}, with the PATCH still open"
    );
    let id = location.trim_start_matches("/files/");
    let on_disk = std::fs::read(app.dir.path().join("uploads/tus").join(id)).unwrap();
    assert!(
        on_disk[..checkpoint] == data[..checkpoint],
        "the checkpoint's bytes are on disk"
    );

    // The client goes away: everything that arrived is kept, and the upload resumes.
    drop(stream);
    wait_for_offset(&app, &location, sent).await;
    let (status, h, body) = patch_when_free(&app, &location, sent, &data[sent..]).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(header(&h, "upload-offset"), data.len().to_string());
    let (status, _, meta) = app.get_upload(id).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["sha256"], sha256_hex(&data));
}

/// A PATCH that fills the disk is 507 `insufficient_storage`; the upload keeps the bytes
/// that were written whole (its offset says how many, all on disk), and terminating it frees
/// the space.
#[actix_web::test]
async fn a_patch_that_fills_the_disk_is_507_and_keeps_what_it_wrote() {
    let Some(small) = app_on_small_disk().await else {
        return;
    };
    let (app, uploads) = (&small.app, &small.uploads);
    let data = Noise::new(507).chunk(8 << 20);
    let location = create(app, data.len(), None).await;
    let (status, _, body) = app.tus_patch(&location, 0, &data, &[]).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage");

    let (status, offset, _) = offset_of(app, &location).await;
    assert_eq!(status, 200);
    let offset = offset.unwrap();
    assert!(offset > 0 && offset < data.len(), "{offset}");
    let id = location.trim_start_matches("/files/");
    let on_disk = std::fs::read(uploads.join("tus").join(id)).unwrap();
    assert!(on_disk.len() >= offset);
    assert!(
        on_disk[..offset] == data[..offset],
        "the kept bytes are the sent ones"
    );

    let (status, _, body) = app.tus_delete(&location).await;
    assert_eq!(status, 204, "{body}");
    assert!(files_under(&uploads.join("tus")).is_empty());
}

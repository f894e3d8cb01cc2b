//! Clients that stall, vanish or crowd in, over raw sockets against the real server: bodies
//! that stop sending are cut off (408), uploads streaming at once are capped (503 before the
//! body is read), and every byte a PATCH had received before it was interrupted (client gone,
//! body timeout, another request taking the upload over) is on disk and reported by `HEAD`.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

use crate::both_backends;
use crate::helpers::{
    assert_no_files_left, content_type, framing, header, spawn_app_with, wait_until_read, Backend,
    Noise, TestApp,
};

/// A `POST /upload` declaring `declared` body bytes, of which `body` is sent.
async fn partial_upload(app: &TestApp, declared: usize, body: &[u8]) -> TcpStream {
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {{addr}}\r\nContent-Type: {}\r\n\
         Content-Length: {declared}\r\n\r\n",
        content_type()
    );
    app.send_partial(&head, body).await
}

/// A PATCH of `location` at `offset` declaring `declared` bytes, of which `body` is sent.
async fn partial_patch(
    app: &TestApp,
    location: &str,
    offset: usize,
    declared: usize,
    body: &[u8],
) -> TcpStream {
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {{addr}}\r\nTus-Resumable: 1.0.0\r\n\
         Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    app.send_partial(&head, body).await
}

/// The whole answer on `stream` (the server closes the connection after it).
async fn answer(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no answer within 30 s");
    String::from_utf8_lossy(&out).into_owned()
}

async fn new_upload(app: &TestApp, length: usize) -> String {
    let (status, h, body) = app.tus_create(length, &[]).await;
    assert_eq!(status, 201, "{body}");
    header(&h, "location").to_owned()
}

async fn offset(app: &TestApp, location: &str) -> usize {
    let (status, h, _) = app.tus_head(location).await;
    assert_eq!(status, 200);
    header(&h, "upload-offset").parse().unwrap()
}

fn tus_file(app: &TestApp, location: &str) -> Vec<u8> {
    let id = location.trim_start_matches("/files/");
    std::fs::read(app.dir.path().join("uploads/tus").join(id)).unwrap()
}

async fn bodies_that_stop_sending_are_cut_off(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[("TROUPE_BODY_TIMEOUT_MS", "300")]).await else {
        return;
    };
    // A form upload that stops mid-file: 408, nothing kept.
    let (head, _) = framing("stall.bin", "application/octet-stream");
    let mut sent = head.clone();
    sent.extend(Noise::new(1).chunk(100_000));
    let mut upload = partial_upload(&app, 10 << 20, &sent).await;
    let started = Instant::now();
    let reply = answer(&mut upload).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"request_timeout\""), "{reply}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_no_files_left(&app).await;
    let (status, _, page) = app.list_uploads("").await;
    assert_eq!(status, 200);
    assert_eq!(page["uploads"].as_array().unwrap().len(), 0, "{page}");

    // A JSON body that stops: 408 too, and no user.
    let head = "POST /users HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                Content-Length: 60\r\n\r\n";
    let mut create = app
        .send_partial(head, br#"{"name": "Stall", "email": "#)
        .await;
    let reply = answer(&mut create).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"request_timeout\""), "{reply}");
    let (_, _, users) = app.list_users("").await;
    assert_eq!(users["users"].as_array().unwrap().len(), 0, "{users}");

    // A PATCH that stops: 408, every byte it sent kept, and the lock released.
    let data = Noise::new(2).chunk(3 << 20);
    let location = new_upload(&app, data.len()).await;
    let sent = (1 << 20) + 777;
    let mut patch = partial_patch(&app, &location, 0, data.len(), &data[..sent]).await;
    let reply = answer(&mut patch).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert_eq!(offset(&app, &location).await, sent);
    assert!(tus_file(&app, &location)[..sent] == data[..sent]);
    let (status, _, body) = app.tus_patch(&location, sent, &data[sent..], &[]).await;
    assert_eq!(status, 204, "{body}");
}

async fn uploads_streaming_at_once_are_capped(backend: Backend) {
    let vars = [("TROUPE_MAX_ACTIVE_UPLOADS", "2")];
    let Some(app) = spawn_app_with(backend, &vars).await else {
        return;
    };
    let (head, _) = framing("held.bin", "application/octet-stream");
    let location = new_upload(&app, 1000).await;
    // Two bodies stream (silently): a form upload and a PATCH.
    let held_upload = partial_upload(&app, 1 << 20, &head).await;
    let held_patch = partial_patch(&app, &location, 0, 1000, b"abc").await;
    // Their handlers have admitted them once their files exist.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.services.uploads.active() < 2 {
        assert!(
            Instant::now() < deadline,
            "the two bodies were never admitted"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }

    // A third is refused before its body is read: the answer comes with none of it sent.
    for third in [
        partial_upload(&app, 1 << 20, b"").await,
        partial_patch(&app, &new_upload(&app, 10).await, 0, 10, b"").await,
    ] {
        let mut third = third;
        let reply = answer(&mut third).await;
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        assert!(
            reply.to_ascii_lowercase().contains("retry-after: 1"),
            "{reply}"
        );
        assert!(reply.contains("\"overloaded\""), "{reply}");
    }
    // Requests that carry no upload body are not held to the cap.
    assert_eq!(app.tus_head(&location).await.0, 200);

    // Once one goes away, uploads are taken again.
    drop(held_upload);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.services.uploads.active() > 1 {
        assert!(Instant::now() < deadline, "the place was never given back");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, body) = app.post_upload("after.txt", b"taken again").await;
    assert_eq!(status, 201, "{body}");
    drop(held_patch);
}

both_backends!(
    body_timeout => bodies_that_stop_sending_are_cut_off,
    active_uploads => uploads_streaming_at_once_are_capped,
);

/// How a PATCH is interrupted.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Its client closes the connection.
    ClientGone,
    /// Its client goes silent past the body timeout.
    Timeout,
    /// Its client goes silent and a `HEAD` from a new connection takes the upload over.
    TakenOver,
}

/// 100 PATCHes interrupted at random points, in the three ways an interruption comes: after
/// each, `HEAD` reports every byte that was sent, and the file holds exactly those bytes.
#[actix_web::test]
async fn no_byte_a_patch_received_is_lost_when_it_is_interrupted() {
    let vars = [("TROUPE_BODY_TIMEOUT_MS", "200")];
    let app = spawn_app_with(Backend::Sqlite, &vars).await.unwrap();
    let mut noise = Noise::new(100);
    let mut lost = Vec::new();
    for round in 0..100u64 {
        let cut = [Cut::ClientGone, Cut::Timeout, Cut::TakenOver][(round % 3) as usize];
        let len = 64 * 1024 + (noise.chunk(4).iter().map(|&b| b as usize).sum::<usize>() << 12);
        let data = noise.chunk(len);
        let location = new_upload(&app, len).await;
        // Anywhere from nothing to all but one byte, across batch boundaries.
        let sent = u64::from_le_bytes(noise.chunk(8).try_into().unwrap()) as usize % len;
        let mut patch = partial_patch(&app, &location, 0, len, &data[..sent]).await;
        // The PATCH has begun and the server has read every byte sent (they are received);
        // then the cut.
        let id = location.trim_start_matches("/files/").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !app.services.uploads.is_held(id).await {
            assert!(
                Instant::now() < deadline,
                "round {round}: the PATCH never began"
            );
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
        wait_until_read(&patch).await;
        match cut {
            Cut::ClientGone => drop(patch),
            Cut::Timeout => {
                let reply = answer(&mut patch).await;
                assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
            }
            Cut::TakenOver => {}
        }
        let asked = Instant::now();
        let at = offset(&app, &location).await;
        let waited = asked.elapsed();
        let on_disk = tus_file(&app, &location);
        if at != sent || on_disk.len() < at || on_disk[..at] != data[..at] {
            lost.push(format!(
                "round {round} ({cut:?}): sent {sent}, HEAD says {at} after {waited:?}, {} on \
                 disk, {} a second later",
                on_disk.len(),
                {
                    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
                    offset(&app, &location).await
                }
            ));
        }
    }
    assert!(lost.is_empty(), "bytes lost:\n{}", lost.join("\n"));
}

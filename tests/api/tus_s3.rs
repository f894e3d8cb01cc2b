//! tus on `s3://` storage against real S3 servers (moto on both databases, SeaweedFS on
//! SQLite, as `tests/api/s3.rs`): an upload is
//! the multipart upload of its object, its bytes past the last full 8 MiB part kept aside in
//! a tail object (`tus/{id}/{start}`) between PATCHes. What a client sees is what it sees
//! with files; the bucket, read through the S3 API, holds exactly what the offset says.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

use crate::helpers::{header, sha256_hex, start, Backend, Moto, Noise, S3Kind, S3Server, TestApp};
use crate::on_each_store;

const MIB: usize = 1 << 20;
const PART: usize = 8 * MIB;

async fn create(app: &TestApp, length: usize) -> String {
    let (status, h, body) = app.tus_create(length, &[]).await;
    assert_eq!(status, 201, "{body}");
    header(&h, "location").to_owned()
}

async fn offset(app: &TestApp, location: &str) -> usize {
    let (status, h, body) = app.tus_head(location).await;
    assert_eq!(status, 200, "{body}");
    header(&h, "upload-offset").parse().unwrap()
}

async fn patch(app: &TestApp, location: &str, at: usize, data: &[u8]) -> usize {
    let (status, h, body) = app.tus_patch(location, at, data, &[]).await;
    assert_eq!(status, 204, "PATCH at {at} of {} bytes: {body}", data.len());
    header(&h, "upload-offset").parse().unwrap()
}

fn id_of(location: &str) -> &str {
    location.trim_start_matches("/files/")
}

/// The tail objects of upload `id` in the bucket.
async fn tails(moto: &Moto, id: &str) -> Vec<String> {
    let prefix = Moto::key_of(&format!("tus/{id}/"));
    let mut tails: Vec<String> = moto
        .objects()
        .await
        .into_iter()
        .filter(|k| k.starts_with(&prefix))
        .map(|k| k[prefix.len()..].to_owned())
        .collect();
    tails.sort();
    tails
}

/// The upload is complete with `data`'s digest, and its content, read through troupe and
/// straight from the bucket, is `data`; the bucket holds nothing else (no tail, no
/// unfinished multipart upload).
async fn assert_complete(app: &TestApp, moto: &Moto, location: &str, data: &[u8]) {
    let id = id_of(location);
    let (status, _, row) = app.get_upload(id).await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["sha256"], sha256_hex(data), "{row}");
    assert_eq!(row["size"], data.len(), "{row}");
    let (status, _, content) = app.get_content(id, None).await;
    assert_eq!(status, 200);
    assert!(content == data, "the content read through troupe differs");
    let key = Moto::key_of(id);
    assert!(
        moto.object(&key).await.as_deref() == Some(data),
        "the object differs"
    );
    moto.assert_left_only(&[key]).await;
}

async fn patches_go_through_a_tail_and_parts_into_one_object(backend: Backend, kind: S3Kind) {
    let Some(moto) = S3Server::start_kind(kind).await else {
        return;
    };
    let Some(app) = moto.app(backend, &[]).await else {
        return;
    };
    let data = Noise::new(11).chunk(2 * PART + 4 * MIB + 12_345);
    let location = create(&app, data.len()).await;
    let id = id_of(&location).to_owned();
    assert!(
        moto.objects().await.is_empty(),
        "nothing is stored before a byte comes"
    );

    // Less than a part: only a tail, no multipart upload yet.
    let first = 3 * MIB;
    assert_eq!(patch(&app, &location, 0, &data[..first]).await, first);
    assert_eq!(tails(&moto, &id).await, vec!["0".to_owned()]);
    assert!(moto.unfinished_multipart_uploads().await.is_empty());
    assert_eq!(offset(&app, &location).await, first);

    // Past a part: the tail and the new bytes make part 0; the rest is the new tail.
    let second = first + 7 * MIB;
    assert_eq!(
        patch(&app, &location, first, &data[first..second]).await,
        second
    );
    assert_eq!(tails(&moto, &id).await, vec![PART.to_string()]);
    assert_eq!(
        moto.unfinished_multipart_uploads().await,
        vec![Moto::key_of(&id)]
    );

    // A tiny PATCH: the tail grows, in place.
    let third = second + 10;
    assert_eq!(
        patch(&app, &location, second, &data[second..third]).await,
        third
    );
    assert_eq!(tails(&moto, &id).await, vec![PART.to_string()]);

    // The rest: part 1, then the last part, completed into the object.
    assert_eq!(
        patch(&app, &location, third, &data[third..]).await,
        data.len()
    );
    assert_complete(&app, &moto, &location, &data).await;
}

async fn another_process_resumes_from_the_tail_and_digests_the_object(
    backend: Backend,
    kind: S3Kind,
) {
    let Some(moto) = S3Server::start_kind(kind).await else {
        return;
    };
    let Some(app) = moto.app(backend, &[]).await else {
        return;
    };
    let data = Noise::new(12).chunk(PART + 3 * MIB + 7);
    let location = create(&app, data.len()).await;
    let first = PART + MIB + 5;
    assert_eq!(patch(&app, &location, 0, &data[..first]).await, first);

    // A new process on the same database and bucket: what it knows of the upload is
    // only what they hold (not the first's digest of the bytes so far).
    let (db, dir) = app.stop().await;
    let vars = moto.vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = start(db, dir, &vars).await;
    assert_eq!(offset(&app, &location).await, first);
    assert_eq!(
        patch(&app, &location, first, &data[first..]).await,
        data.len()
    );
    assert_complete(&app, &moto, &location, &data).await;
}

async fn a_checksum_mismatch_past_a_part_keeps_nothing_and_the_retry_completes(
    backend: Backend,
    kind: S3Kind,
) {
    let Some(moto) = S3Server::start_kind(kind).await else {
        return;
    };
    let Some(app) = moto.app(backend, &[]).await else {
        return;
    };
    let data = Noise::new(13).chunk(PART + 5 * MIB);
    let location = create(&app, data.len()).await;
    let sent = PART + 2 * MIB;
    let wrong = format!("sha256 {}", base64_sha256(b"not these bytes"));
    let (status, _, body) = app
        .tus_patch(&location, 0, &data[..sent], &[("Upload-Checksum", &wrong)])
        .await;
    assert_eq!(status, 460, "{body}");
    assert_eq!(offset(&app, &location).await, 0);
    assert!(tails(&moto, id_of(&location)).await.is_empty());

    // Part 0 is sent again, with the right bytes, and only it counts.
    let right = format!("sha256 {}", base64_sha256(&data[..sent]));
    let (status, _, body) = app
        .tus_patch(&location, 0, &data[..sent], &[("Upload-Checksum", &right)])
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(offset(&app, &location).await, sent);
    assert_eq!(
        patch(&app, &location, sent, &data[sent..]).await,
        data.len()
    );
    assert_complete(&app, &moto, &location, &data).await;
}

fn base64_sha256(data: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(data))
}

async fn termination_and_expiry_leave_nothing_in_the_bucket(backend: Backend, kind: S3Kind) {
    let Some(moto) = S3Server::start_kind(kind).await else {
        return;
    };
    let expiry = [("TROUPE_TUS_EXPIRY_SECS", "2")];
    let Some(app) = moto.app(backend, &expiry).await else {
        return;
    };
    let data = Noise::new(14).chunk(PART + 2 * MIB);
    let sent = PART + MIB;
    let terminated = create(&app, data.len()).await;
    patch(&app, &terminated, 0, &data[..sent]).await;
    assert_eq!(moto.unfinished_multipart_uploads().await.len(), 1);
    let (status, _, body) = app.tus_delete(&terminated).await;
    assert_eq!(status, 204, "{body}");
    let (status, _, _) = app.tus_head(&terminated).await;
    assert_eq!(status, 404);
    moto.assert_left_only(&[]).await;

    // Expired: its multipart upload aborted and its tail removed by the sweep.
    let expired = create(&app, data.len()).await;
    patch(&app, &expired, 0, &data[..sent]).await;
    let small = create(&app, data.len()).await;
    patch(&app, &small, 0, &data[..10]).await;
    assert_eq!(moto.objects().await.len(), 2, "{:?}", moto.objects().await);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (expired_status, _, _) = app.tus_head(&expired).await;
        let (small_status, _, _) = app.tus_head(&small).await;
        if expired_status != 200 && small_status != 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the uploads never expired");
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    moto.assert_left_only(&[]).await;
}

/// The whole answer on `stream` (the server closes the connection after it).
async fn answer(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no answer within 30 s");
    String::from_utf8_lossy(&out).into_owned()
}

async fn a_patch_that_stalls_keeps_every_byte_it_sent(backend: Backend, kind: S3Kind) {
    let Some(moto) = S3Server::start_kind(kind).await else {
        return;
    };
    let timeout = [("TROUPE_BODY_TIMEOUT_MS", "1000")];
    let Some(app) = moto.app(backend, &timeout).await else {
        return;
    };
    let data = Noise::new(15).chunk(2 * PART);
    let location = create(&app, data.len()).await;
    // Past a part and into the next: part 0 recorded as it went, the rest a tail at the end.
    let sent = PART + 3 * MIB + 333;
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {{addr}}\r\nTus-Resumable: 1.0.0\r\n\
         Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        data.len()
    );
    let mut stalled = app.send_partial(&head, &data[..sent]).await;
    let reply = answer(&mut stalled).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert_eq!(offset(&app, &location).await, sent);
    assert_eq!(tails(&moto, id_of(&location)).await, vec![PART.to_string()]);
    assert_eq!(
        patch(&app, &location, sent, &data[sent..]).await,
        data.len()
    );
    assert_complete(&app, &moto, &location, &data).await;
}

async fn small_and_empty_uploads_are_single_objects(backend: Backend, kind: S3Kind) {
    let Some(moto) = S3Server::start_kind(kind).await else {
        return;
    };
    let Some(app) = moto.app(backend, &[]).await else {
        return;
    };
    let empty = create(&app, 0).await;
    assert_complete(&app, &moto, &empty, &[]).await;

    // Exactly one part: never a multipart upload, one PUT at the end.
    let data = Noise::new(16).chunk(PART);
    let location = create(&app, data.len()).await;
    patch(&app, &location, 0, &data[..PART - 1]).await;
    assert!(moto.unfinished_multipart_uploads().await.is_empty());
    assert_eq!(
        patch(&app, &location, PART - 1, &data[PART - 1..]).await,
        PART
    );
    let keys = [Moto::key_of(id_of(&empty)), Moto::key_of(id_of(&location))];
    moto.assert_left_only(&keys).await;
    assert!(moto.object(&keys[1]).await.as_deref() == Some(&data[..]));
}

async fn a_patch_ending_at_a_part_s_end_sends_it_as_a_part(backend: Backend, kind: S3Kind) {
    let Some(moto) = S3Server::start_kind(kind).await else {
        return;
    };
    let Some(app) = moto.app(backend, &[]).await else {
        return;
    };
    let data = Noise::new(17).chunk(PART + 4 * MIB);
    let location = create(&app, data.len()).await;
    // A tail is always shorter than a part: the offset alone says how many parts there are.
    assert_eq!(patch(&app, &location, 0, &data[..PART]).await, PART);
    assert!(tails(&moto, id_of(&location)).await.is_empty());
    assert_eq!(moto.unfinished_multipart_uploads().await.len(), 1);
    assert_eq!(
        patch(&app, &location, PART, &data[PART..]).await,
        data.len()
    );
    assert_complete(&app, &moto, &location, &data).await;
}

on_each_store! {
    tail_and_parts => patches_go_through_a_tail_and_parts_into_one_object,
    another_process => another_process_resumes_from_the_tail_and_digests_the_object,
    checksum_mismatch => a_checksum_mismatch_past_a_part_keeps_nothing_and_the_retry_completes,
    termination_and_expiry => termination_and_expiry_leave_nothing_in_the_bucket,
    stalled => a_patch_that_stalls_keeps_every_byte_it_sent,
    small_and_empty => small_and_empty_uploads_are_single_objects,
    at_a_part_s_end => a_patch_ending_at_a_part_s_end_sends_it_as_a_part,
}

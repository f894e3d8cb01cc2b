//! tus across replicas: real troupe processes on one PostgreSQL database sharing one upload
//! directory. One writer per upload (an advisory lock on each process's lock connection), the
//! hand-over from one process to another (`LISTEN`/`NOTIFY`), and what a replica's death or
//! the loss of its lock connection leaves behind.

use std::time::{Duration, Instant};

use crate::helpers::{patch_answer, sha256_hex, wait_until_read_blocking, LockReplicas, Noise};

const MIB: usize = 1 << 20;

/// The hand-over's wait (`HANDOVER_WAIT`), which a hand-over that works stays well inside.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);

/// The id in a `/files/{id}` location.
fn id_of(location: &str) -> &str {
    location.trim_start_matches("/files/")
}

#[actix_web::test]
async fn a_head_on_another_replica_takes_over_a_stalled_patch() {
    let Some(set) = LockReplicas::start(2).await else {
        return;
    };
    let (one, two) = (&set.replicas[0], &set.replicas[1]);
    let data = Noise::new(31).chunk(3 * MIB);
    let location = one.tus_create(data.len());

    // Replica 1 got a batch and a bit, then its client went silent (a dropped link).
    let sent = MIB + 12_345;
    let mut stalled = one.start_patch(&location, 0, data.len(), &data[..sent]);
    wait_until_read_blocking(&stalled);
    set.wait_for_tus_len(&location, MIB);
    assert_eq!(
        set.locks_held().await,
        1,
        "replica 1 holds the upload's lock"
    );
    assert_eq!(set.recorded_offset(&location).await, 0);

    // A HEAD on replica 2 asks replica 1 to let go, and answers every byte it had read.
    let started = Instant::now();
    assert_eq!(two.tus_offset(&location), Ok(sent));
    assert!(started.elapsed() < HANDOVER_WAIT, "{:?}", started.elapsed());
    let answer = patch_answer(&mut stalled);
    assert_eq!(answer.status, 400, "{:?}", answer.json());
    assert_eq!(answer.json()["error"]["code"], "upload_interrupted");
    assert_eq!(set.locks_held().await, 0, "the lock went with the PATCH");
    assert!(
        one.wait_for_line("another replica asked for it", Duration::from_secs(1))
            .is_some(),
        "replica 1 says why its PATCH stopped"
    );

    // Replica 2 completes it.
    let done = two.tus_patch(&location, sent, &data[sent..]);
    assert_eq!(done.status, 204, "{:?}", done.json());
    let meta = one.get_json(&format!("/uploads/{}", id_of(&location)));
    assert_eq!(meta["sha256"], sha256_hex(&data));

    // Termination on one replica takes over a PATCH running on another too.
    let other = one.tus_create(data.len());
    let mut held = one.start_patch(&other, 0, data.len(), &data[..1000]);
    wait_until_read_blocking(&held);
    set.wait_for_tus_len(&other, 0);
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let deleted = two.tus("DELETE", &other, &[], &[]);
    assert_eq!(deleted.status, 204, "{:?}", deleted.json());
    assert!(started.elapsed() < HANDOVER_WAIT, "{:?}", started.elapsed());
    assert_eq!(patch_answer(&mut held).status, 400);
    assert_eq!(one.tus_offset(&other), Err(404));
}

#[actix_web::test]
async fn two_replicas_never_write_one_upload_at_once() {
    let Some(set) = LockReplicas::start(2).await else {
        return;
    };
    let (one, two) = (&set.replicas[0], &set.replicas[1]);
    let len = 4 * MIB;
    let (ours, theirs) = (Noise::new(41).chunk(len), Noise::new(42).chunk(len));
    let location = one.tus_create(len);

    // A PATCH on replica 2 while replica 1 writes: replica 1 stops and keeps what it read;
    // replica 2 is told the upload has moved on (409) and writes nothing.
    let sent = MIB + 999;
    let mut stalled = one.start_patch(&location, 0, len, &ours[..sent]);
    wait_until_read_blocking(&stalled);
    set.wait_for_tus_len(&location, MIB);
    let late = two.tus_patch(&location, 0, &theirs[..1000]);
    assert_eq!(late.status, 409, "{:?}", late.json());
    assert_eq!(late.json()["error"]["code"], "offset_mismatch");
    assert_eq!(patch_answer(&mut stalled).status, 400);
    assert_eq!(two.tus_offset(&location), Ok(sent));
    assert!(
        set.tus_bytes(&location) == ours[..sent],
        "replica 1 kept what it read"
    );

    // Both at once from the same offset, with different bytes, several times: each range
    // the upload moves by comes whole from one writer.
    let mut offset = sent;
    for _ in 0..4 {
        let start = std::sync::Barrier::new(2);
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| {
                start.wait();
                one.tus_patch(&location, offset, &ours[offset..offset + MIB / 2])
            });
            let b = scope.spawn(|| {
                start.wait();
                two.tus_patch(&location, offset, &theirs[offset..offset + MIB / 2])
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        for answer in [&a, &b] {
            assert!(
                [204, 400, 409, 423].contains(&answer.status),
                "{} {:?}",
                answer.status,
                answer.json()
            );
        }
        let now = two.tus_offset(&location).unwrap();
        let bytes = set.tus_bytes(&location);
        assert_eq!(bytes.len(), now, "nothing past the recorded offset");
        let moved = &bytes[offset..now];
        assert!(
            moved == &ours[offset..now] || moved == &theirs[offset..now],
            "bytes {offset}..{now} mix two writers ({} and {})",
            a.status,
            b.status
        );
        offset = now;
    }

    // Whatever each round left, the upload completes with those bytes.
    let mut whole = set.tus_bytes(&location);
    whole.extend_from_slice(&ours[offset..]);
    let done = one.tus_patch(&location, offset, &ours[offset..]);
    assert_eq!(done.status, 204, "{:?}", done.json());
    let meta = two.get_json(&format!("/uploads/{}", id_of(&location)));
    assert_eq!(meta["sha256"], sha256_hex(&whole));
}

#[actix_web::test]
async fn a_replica_killed_mid_patch_leaves_its_upload_to_another() {
    let Some(mut set) = LockReplicas::start(2).await else {
        return;
    };
    let len = 4 * MIB;
    let data = Noise::new(51).chunk(len);
    let location = set.replicas[0].tus_create(len);
    // A first PATCH records an offset; the second is under way, written past it, when
    // replica 1 dies.
    let recorded = MIB + 4321;
    let first = set.replicas[0].tus_patch(&location, 0, &data[..recorded]);
    assert_eq!(first.status, 204, "{:?}", first.json());
    let sent = recorded + 2 * MIB;
    let stalled =
        set.replicas[0].start_patch(&location, recorded, len - recorded, &data[recorded..sent]);
    wait_until_read_blocking(&stalled);
    set.wait_for_tus_len(&location, recorded + MIB);
    assert_eq!(set.locks_held().await, 1);

    let mut killed = set.replicas.remove(0);
    killed.signal(libc::SIGKILL);
    assert!(killed.wait_exit(Duration::from_secs(5)).is_some());
    let died = Instant::now();
    let two = &set.replicas[0];

    // Its session ended with it, and its lock: replica 2 finds the upload free at once, at
    // the recorded offset, whose bytes are all on disk (more may follow: never recorded).
    assert_eq!(two.tus_offset(&location), Ok(recorded));
    assert_eq!(set.locks_held().await, 0);
    let on_disk = set.tus_bytes(&location);
    assert!(on_disk.len() > recorded, "{} bytes on disk", on_disk.len());
    assert!(
        on_disk[..recorded] == data[..recorded],
        "the recorded bytes are all there"
    );
    let done = two.tus_patch(&location, recorded, &data[recorded..]);
    assert_eq!(done.status, 204, "{:?}", done.json());
    assert!(
        died.elapsed() < Duration::from_secs(5),
        "{:?}",
        died.elapsed()
    );
    let meta = two.get_json(&format!("/uploads/{}", id_of(&location)));
    assert_eq!(meta["sha256"], sha256_hex(&data));
    drop(stalled);
}

#[actix_web::test]
async fn a_lost_lock_connection_stops_the_patches_and_comes_back() {
    let Some(set) = LockReplicas::start(1).await else {
        return;
    };
    let one = &set.replicas[0];
    let data = Noise::new(61).chunk(2 * MIB);
    let location = one.tus_create(data.len());
    let sent = MIB + 777;
    let mut stalled = one.start_patch(&location, 0, data.len(), &data[..sent]);
    wait_until_read_blocking(&stalled);
    set.wait_for_tus_len(&location, MIB);
    let before = set.lock_sessions().await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].1, 1, "the PATCH's lock");

    // Its lock is gone with the session: the PATCH stops at once and keeps its bytes.
    assert_eq!(set.terminate_lock_sessions().await, 1);
    let answer = patch_answer(&mut stalled);
    assert_eq!(answer.status, 400, "{:?}", answer.json());
    assert_eq!(answer.json()["error"]["code"], "upload_interrupted");
    assert_eq!(set.recorded_offset(&location).await, sent);
    assert!(one
        .wait_for_line("lock connection was lost", Duration::from_secs(1))
        .is_some());

    // It connects again; a PATCH meanwhile is 503 `database_unavailable`, then one succeeds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        let answer = one.tus_patch(&location, sent, &data[sent..]);
        if answer.status != 503 || Instant::now() > deadline {
            break answer;
        }
        assert_eq!(answer.json()["error"]["code"], "database_unavailable");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(done.status, 204, "{:?}", done.json());
    let meta = one.get_json(&format!("/uploads/{}", id_of(&location)));
    assert_eq!(meta["sha256"], sha256_hex(&data));
    let after = set.lock_sessions().await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].0, before[0].0, "a new session");
    set.wait_until_locks_held(0).await;
}

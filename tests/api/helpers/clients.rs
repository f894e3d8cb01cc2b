//! Real third-party tus clients (tuspy, tus-js-client) run as child processes against a
//! [`TestApp`].

use crate::helpers::{spawn_app_with, Backend, Noise, TestApp};

/// Whether the real-client tests must run (`TROUPE_REQUIRE_TUS_CLIENT=1`) instead of skipping.
pub fn tus_client_required() -> bool {
    std::env::var("TROUPE_REQUIRE_TUS_CLIENT").is_ok_and(|v| v == "1")
}

/// A server on SQLite and a 5 MB file for a real client to upload: the app, the bytes and
/// the file's path.
pub async fn client_source(seed: u64, name: &str) -> (TestApp, Vec<u8>, std::path::PathBuf) {
    // Browsers' clients (tus-js-client's script sends an Origin) need CORS on.
    let app = spawn_app_with(Backend::Sqlite, &[("TROUPE_CORS_ORIGINS", "*")])
        .await
        .unwrap();
    let data = Noise::new(seed).chunk(5_000_000);
    let file = app.dir.path().join(name);
    std::fs::write(&file, &data).unwrap();
    (app, data, file)
}

/// Runs a real client (`program` `args`) off the async workers; fails the test with its
/// output unless it succeeds, else answers its stdout.
pub async fn run_client(name: &str, program: String, args: Vec<String>) -> String {
    let out = actix_web::rt::task::spawn_blocking(move || {
        std::process::Command::new(program).args(args).output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

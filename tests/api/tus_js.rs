//! tus-js-client, the JavaScript tus client, unchanged under Node.js against `/files/`.
//! Uppy's tus plugin is a wrapper around tus-js-client (it resumes the same way, through
//! `findPreviousUploads` and `resumeFromPreviousUpload`), so this covers the protocol Uppy
//! speaks too; the browser's part of it, CORS, is checked on every answer by the script.
//!
//! The script is `tests/clients/tus-js/upload.mjs`; it loads tus-js-client from
//! `TROUPE_TUS_JS_DIR` (default: `tests/clients/tus-js`), a directory where `npm ci` ran.

use std::path::PathBuf;

use awc::http::Method;

use crate::helpers::{
    client_source, files_under, header, run_client, sha256_hex, tus_client_required, Access,
    OTHER_KEY,
};

const CLIENT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/tus-js");

/// Where tus-js-client is installed (`node_modules/` inside it).
fn modules_dir() -> PathBuf {
    std::env::var_os("TROUPE_TUS_JS_DIR").map_or_else(|| CLIENT_DIR.into(), PathBuf::from)
}

/// Whether `node` (18 or later, as tus-js-client 4 needs) can load tus-js-client from `dir`.
fn has_tus_js(dir: &PathBuf) -> bool {
    std::process::Command::new("node")
        .args([
            "-e",
            "if (+process.versions.node.split('.')[0] < 18) process.exit(3);\
             require.resolve('tus-js-client', { paths: [process.argv[1]] })",
        ])
        .arg(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Uploads 5 MB in 1 MiB PATCHes, stops after the first, resumes with a second `Upload` from
/// the server's offset; uploads 3 KiB with `overridePatchMethod`; terminates another upload.
/// The results are ordinary uploads.
#[actix_web::test]
async fn tus_js_client_uploads_resumes_and_terminates() {
    uploads_resumes_and_terminates(Access::Open).await;
}

/// The same with keys set and the client sending a bearer key on every request: the uploads
/// are that key's, and another key gets 404 for them.
#[actix_web::test]
async fn tus_js_client_uploads_resumes_and_terminates_with_a_bearer_key() {
    uploads_resumes_and_terminates(Access::Keyed).await;
}

async fn uploads_resumes_and_terminates(access: Access) {
    let modules = modules_dir();
    if !has_tus_js(&modules) {
        let install = format!(
            "looked in {}; run `npm ci` in {CLIENT_DIR} (Node.js 18 or later), or in a copy of \
             its package.json and package-lock.json that TROUPE_TUS_JS_DIR names",
            modules.display()
        );
        assert!(
            !tus_client_required(),
            "TROUPE_REQUIRE_TUS_CLIENT=1 but node cannot load tus-js-client: {install}"
        );
        crate::helpers::skip(
            "node or tus-js-client missing",
            format_args!("{install}; TROUPE_REQUIRE_TUS_CLIENT=1 makes this fail"),
        );
        return;
    }
    let (app, data, file) = client_source(78, "tus-js-source.bin", access).await;
    let args = vec![
        format!("{CLIENT_DIR}/upload.mjs"),
        app.url("/files/"),
        file.to_string_lossy().into_owned(),
        (1 << 20).to_string(),
        modules.to_string_lossy().into_owned(),
    ];
    let stdout = run_client("tus-js-client", "node".into(), args, access).await;
    let urls: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let url = urls["url"].as_str().unwrap();
    assert!(url.starts_with(&app.url("/files/")), "{url}");

    let id = url.rsplit('/').next().unwrap();
    let (status, _, meta) = app.get_upload(id).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["sha256"], sha256_hex(&data));
    assert_eq!(meta["filename"], "tus-js.bin");
    assert_eq!(meta["content_type"], "application/x-tus-js");
    assert_eq!(meta["size"], data.len());
    let (status, _, content) = app.get_content(id, None).await;
    assert_eq!(status, 200);
    assert!(content == data, "content differs");

    // The upload whose PATCHes went as POSTs with `X-HTTP-Method-Override`.
    let overridden = urls["overridden"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let (status, _, meta) = app.get_upload(overridden).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["sha256"], sha256_hex(&data[..3 * 1024]));

    // The terminated upload is gone, bytes and all.
    let terminated = urls["terminated"].as_str().unwrap();
    let res = app
        .client
        .request(Method::HEAD, terminated)
        .insert_header(("Tus-Resumable", "1.0.0"))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(res.status().as_u16(), 404 | 410),
        "{}",
        res.status()
    );
    assert_eq!(header(res.headers(), "tus-resumable"), "1.0.0");
    let terminated_id = terminated.rsplit('/').next().unwrap();
    let (status, _, _) = app.get_upload(terminated_id).await;
    assert_eq!(status, 404);
    assert!(files_under(&app.dir.path().join("uploads/tus")).is_empty());

    if access == Access::Keyed {
        let app = app.presenting(OTHER_KEY);
        for id in [id, overridden] {
            let (status, _, json) = app.get_upload(id).await;
            assert_eq!(
                status, 404,
                "another key sees the client key's upload: {json}"
            );
        }
    }
}

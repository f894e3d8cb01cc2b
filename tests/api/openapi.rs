//! The OpenAPI document (`/openapi.json`) and its UI (`/docs`): the served document is the
//! committed `docs/openapi.json`; every routed path and method is in it and everything in it
//! is routed (the routes read from the router itself, the methods from the server's
//! answers); each operation needs exactly the scope it documents; the Swagger UI is served
//! whole by troupe; and schemathesis, run against the real binary on both backends, open and
//! with a key, finds nothing the server does that the document does not say.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use actix_web::dev::Service as _;
use awc::http::Method;
use serde_json::Value;
use troupe::auth::{entry_line, Scope, Scopes};

use crate::both_backends;
use crate::helpers::{header, spawn_app_with, Backend, RunningBinary, Stub, TestApp};

/// The committed document.
fn committed_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

/// A key for tests, holding `scopes`, and its `TROUPE_API_KEYS` entry.
fn key(name: &str, scopes: &[Scope]) -> (String, String) {
    let key = format!("openapi-test-key-{name}-0123456789abcdef");
    let entry = entry_line(name, Scopes::of(scopes), &key);
    (key, entry)
}

async fn served_document(app: &TestApp) -> Value {
    let (status, headers, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type").starts_with("application/json"));
    doc
}

/// The committed document is the one a server with keys and the default limits serves;
/// `TROUPE_BLESS=1` rewrites it from the server.
#[actix_web::test]
async fn the_served_document_is_the_committed_one() {
    let (_, entry) = key("ci", &[Scope::Admin]);
    let app = spawn_app_with(Backend::Sqlite, &[("TROUPE_API_KEYS", entry.as_str())])
        .await
        .unwrap();
    let served = served_document(&app).await;
    assert_eq!(served["openapi"], "3.1.0");
    let pretty = serde_json::to_string_pretty(&served).unwrap() + "\n";
    let path = committed_path();
    if std::env::var("TROUPE_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &pretty).unwrap();
        eprintln!("TROUPE_BLESS=1: wrote {}", path.display());
        return;
    }
    let committed: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    if committed != served {
        let fresh = std::env::temp_dir().join("troupe-openapi.served.json");
        std::fs::write(&fresh, &pretty).unwrap();
        panic!(
            "docs/openapi.json differs from the served document (written to {}).\n\
             If the change is meant, regenerate it:\n    \
             TROUPE_BLESS=1 cargo test --test api openapi::the_served_document_is_the_committed_one\n\
             and commit it. diff: diff {} {}",
            fresh.display(),
            path.display(),
            fresh.display()
        );
    }
}

/// Every (method, path) the document lists.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// Every operation's security requirements, by (method, path).
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.to_uppercase(), path.clone(), op));
        }
    }
    ops
}

/// In open mode no operation asks for a key or answers 401 or 403; otherwise the document
/// is the same.
#[actix_web::test]
async fn in_open_mode_no_operation_asks_for_a_key() {
    let open = spawn_app_with(Backend::Sqlite, &[]).await.unwrap();
    let doc = served_document(&open).await;
    let (_, entry) = key("ci", &[Scope::Admin]);
    let keyed = spawn_app_with(Backend::Sqlite, &[("TROUPE_API_KEYS", entry.as_str())])
        .await
        .unwrap();
    let with_keys = served_document(&keyed).await;
    assert_eq!(documented(&doc), documented(&with_keys));
    let mut secured = 0;
    for ((method, path, op), (_, _, keyed_op)) in
        operations(&doc).into_iter().zip(operations(&with_keys))
    {
        assert!(
            op.get("security").is_none(),
            "{method} {path} asks for a key in open mode"
        );
        for status in ["401", "403"] {
            assert!(
                op["responses"].get(status).is_none(),
                "{method} {path} answers {status} in open mode"
            );
        }
        if keyed_op.get("security").is_some() {
            secured += 1;
            assert!(
                keyed_op["responses"].get("401").is_some(),
                "{method} {path}"
            );
            assert!(
                keyed_op["responses"].get("403").is_some(),
                "{method} {path}"
            );
        }
    }
    assert!(secured >= 20, "only {secured} operations ask for a key");
}

/// The leaf paths of the router's resource map, from its `Debug` form (actix-web has no other
/// way to list them): each `ResourceMap` node's patterns joined to its parents'.
fn leaf_patterns(map: &str) -> Vec<String> {
    struct Node {
        depth: usize,
        patterns: Option<Vec<String>>,
    }
    let chars: Vec<char> = map.chars().collect();
    let mut stack: Vec<Node> = Vec::new();
    let mut leaves = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let at = |i: usize, s: &str| chars[i..].iter().take(s.len()).copied().eq(s.chars());
    // The strings of `Single("a")` or `List(["a", "b"])` starting at `i`, and where they end.
    let strings = |mut i: usize| {
        let mut found = Vec::new();
        while chars[i] != ')' {
            if chars[i] == '"' {
                let mut s = String::new();
                i += 1;
                while chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    s.push(chars[i]);
                    i += 1;
                }
                found.push(s);
            }
            i += 1;
        }
        (found, i)
    };
    while i < chars.len() {
        if at(i, "ResourceMap {") {
            stack.push(Node {
                depth,
                patterns: None,
            });
            depth += 1;
            i += "ResourceMap {".len();
            continue;
        }
        if at(i, "patterns: ") {
            let (found, end) = strings(i);
            if let Some(node) = stack.last_mut().filter(|n| n.patterns.is_none()) {
                node.patterns = Some(found);
            }
            i = end;
            continue;
        }
        if at(i, "nodes: None") {
            let mut paths = vec![String::new()];
            for node in &stack {
                let patterns = node.patterns.clone().unwrap_or_default();
                paths = paths
                    .iter()
                    .flat_map(|p| patterns.iter().map(move |q| format!("{p}{q}")))
                    .collect();
            }
            leaves.extend(paths);
        }
        match chars[i] {
            '"' => {
                // Skip a string: its braces are not structure.
                i += 1;
                while chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if stack.last().is_some_and(|n| n.depth == depth) {
                    stack.pop();
                }
            }
            _ => {}
        }
        i += 1;
    }
    leaves
}

/// The router's resource map, as the app `routes::configure` builds has it.
async fn routed_patterns() -> Vec<String> {
    let seen: Arc<Mutex<String>> = Arc::default();
    let sink = seen.clone();
    let app = actix_web::test::init_service(
        actix_web::App::new()
            .configure(|cfg| troupe::routes::configure(cfg, None))
            .wrap_fn(move |req, srv| {
                *sink.lock().unwrap() = format!("{:?}", req.request().resource_map());
                srv.call(req)
            }),
    )
    .await;
    let req = actix_web::test::TestRequest::get()
        .uri("/ping")
        .to_request();
    let _ = actix_web::test::call_service(&app, req).await;
    let map = seen.lock().unwrap().clone();
    leaf_patterns(&map)
        .into_iter()
        // Test-only fault injection (`fault-injection` builds): not part of the API.
        .filter(|p| !p.starts_with("/_test/"))
        .collect()
}

/// `/docs/{file:.*}` → `/docs/{file}`.
fn openapi_path(pattern: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    let mut in_regex = false;
    for c in pattern.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                in_regex = false;
            }
            ':' if in_param => {
                in_regex = true;
                continue;
            }
            _ if in_regex => continue,
            _ => {}
        }
        out.push(c);
    }
    out
}

/// A request path for `path`: each parameter filled in.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1").replace("{file}", "x")
}

/// Every path the router holds and every method it serves there (any answer but 405) is in
/// the document, and every operation in the document is routed.
#[actix_web::test]
async fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let patterns = routed_patterns().await;
    assert!(
        patterns.len() >= 15,
        "the router's map was not read (actix-web's Debug form changed?): {patterns:?}"
    );
    let app = spawn_app_with(Backend::Sqlite, &[]).await.unwrap();
    let doc = served_document(&app).await;
    let mut routed = BTreeSet::new();
    let methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
    ];
    for pattern in &patterns {
        let path = openapi_path(pattern);
        for method in methods {
            let (status, headers, _) = app
                .send(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    &concrete(&path),
                    &[("Tus-Resumable", "1.0.0")],
                    Vec::new(),
                )
                .await;
            if status == 405 {
                assert!(
                    headers.contains_key("allow"),
                    "{method} {path}: 405 without Allow"
                );
            } else {
                routed.insert((method.to_owned(), path.clone()));
            }
        }
    }
    let documented = documented(&doc);
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routed but not in the OpenAPI document: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "in the OpenAPI document but not routed: {unrouted:?}"
    );
}

/// The scope an operation documents.
fn documented_scope(op: &Value) -> Option<Scope> {
    let scopes = op["security"][0]["bearer"].as_array()?;
    assert_eq!(scopes.len(), 1, "one scope per operation");
    Scope::parse(scopes[0].as_str()?)
}

/// With keys, a key holding an operation's documented scope gets past the key check and a key
/// holding every other scope (but `admin`) is refused 403; the public operations need none.
#[actix_web::test]
async fn each_operation_needs_the_scope_it_documents() {
    let entries: Vec<(Scope, String, String)> = Scope::ALL
        .iter()
        .filter(|&&s| s != Scope::Admin)
        .flat_map(|&scope| {
            let others: Vec<Scope> = Scope::ALL
                .iter()
                .copied()
                .filter(|&s| s != scope && s != Scope::Admin)
                .collect();
            let name = scope.as_str().replace(':', "-");
            let (only, only_entry) = key(&format!("only-{name}"), &[scope]);
            let (but, but_entry) = key(&format!("all-but-{name}"), &others);
            [(scope, only, only_entry), (scope, but, but_entry)]
        })
        .collect();
    let keys = entries
        .iter()
        .map(|(_, _, entry)| entry.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let app = spawn_app_with(Backend::Sqlite, &[("TROUPE_API_KEYS", keys.as_str())])
        .await
        .unwrap();
    let doc = served_document(&app).await;
    let mut checked = 0;
    for (method, path, op) in operations(&doc) {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let target = concrete(&path);
        let tus = ("Tus-Resumable", "1.0.0");
        let Some(scope) = documented_scope(op) else {
            let (status, _, _) = app.send(method.clone(), &target, &[tus], Vec::new()).await;
            assert!(
                status != 401 && status != 403,
                "{method} {path} documents no scope but answers {status} without a key"
            );
            continue;
        };
        for (holds, key) in entries
            .iter()
            .filter(|(s, _, _)| *s == scope)
            .map(|(_, key, _)| key)
            .enumerate()
            .map(|(i, key)| (i == 0, key))
        {
            let auth = format!("Bearer {key}");
            let (status, _, _) = app
                .send(
                    method.clone(),
                    &target,
                    &[tus, ("Authorization", auth.as_str())],
                    Vec::new(),
                )
                .await;
            if holds {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path}: a key with {scope} got {status}"
                );
            } else {
                assert_eq!(status, 403, "{method} {path}: a key without {scope}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} operations checked");
}

/// `/docs` is Swagger UI, every file of it from troupe (nothing from another host, not even
/// the validator badge), reading `/openapi.json`; both stay public when keys are set.
#[actix_web::test]
async fn the_swagger_ui_is_served_whole_by_troupe_and_public() {
    let (_, entry) = key("ci", &[Scope::UsersRead]);
    let app = spawn_app_with(Backend::Sqlite, &[("TROUPE_API_KEYS", entry.as_str())])
        .await
        .unwrap();
    // awc follows redirects unless told not to.
    let res = awc::Client::builder()
        .disable_redirects()
        .finish()
        .get(app.url("/docs"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 308);
    assert_eq!(header(res.headers(), "location"), "/docs/");
    let page = fetch_text(&app, "/docs/").await;
    assert!(page.contains("swagger-ui"), "{page}");
    let mut files = Vec::new();
    for attr in ["href=\"", "src=\""] {
        for part in page.split(attr).skip(1) {
            files.push(part.split('"').next().unwrap().to_owned());
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    for file in &files {
        assert!(!file.contains("//"), "the page loads {file} from elsewhere");
        let path = format!("/docs/{}", file.trim_start_matches("./"));
        fetch_text(&app, &path).await;
    }
    let init = fetch_text(&app, "/docs/swagger-initializer.js").await;
    assert!(init.contains("\"/openapi.json\""), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    assert!(
        !init.contains("http://") && !init.contains("https://"),
        "{init}"
    );
    let (status, _, _) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200, "/openapi.json is public");
    let (status, _, body) = app.get_json("/docs/no-such-file.js").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _, _) = app.get_json("/users").await;
    assert_eq!(status, 401, "the rest still needs a key");
}

/// GET `path`'s body as text; the test fails unless it answers 200.
async fn fetch_text(app: &TestApp, path: &str) -> String {
    let mut res = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "{path}");
    let body = res.body().limit(16 << 20).await.unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

/// Whether the schemathesis run must happen (`TROUPE_REQUIRE_SCHEMATHESIS=1`) instead of
/// skipping.
fn schemathesis_required() -> bool {
    std::env::var("TROUPE_REQUIRE_SCHEMATHESIS").is_ok_and(|v| v == "1")
}

/// `st` (`TROUPE_SCHEMATHESIS`) and `openapi-spec-validator` (`TROUPE_OPENAPI_SPEC_VALIDATOR`,
/// else beside `st`), when both run.
fn spec_tools() -> Option<(PathBuf, PathBuf)> {
    let st = PathBuf::from(std::env::var("TROUPE_SCHEMATHESIS").unwrap_or_else(|_| "st".into()));
    let validator = std::env::var("TROUPE_OPENAPI_SPEC_VALIDATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| st.with_file_name("openapi-spec-validator"));
    let runs = |tool: &Path| {
        Command::new(tool)
            .arg("--help")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    (runs(&st) && runs(&validator)).then_some((st, validator))
}

/// Runs `program` `args` off the async workers in `dir` with `env`; fails the test with its
/// output unless it succeeds.
async fn run_tool(
    name: &str,
    program: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    env: Vec<(String, String)>,
) {
    let out = actix_web::rt::task::spawn_blocking(move || {
        Command::new(program)
            .args(args)
            .current_dir(dir)
            .envs(env)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{name}: {}",
        stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
    );
}

/// The served document validates, and schemathesis' default checks, on every operation, find
/// nothing against the real binary: once open, once with keys and an `admin` key sent.
async fn schemathesis_finds_nothing(backend: Backend) {
    let Some((st, validator)) = spec_tools() else {
        assert!(
            !schemathesis_required(),
            "TROUPE_REQUIRE_SCHEMATHESIS=1 but schemathesis or openapi-spec-validator does not \
             run: set TROUPE_SCHEMATHESIS=/path/to/st (pip install 'schemathesis==4.32.5' \
             'openapi-spec-validator==0.9.0'; .ci/run makes the venv)"
        );
        eprintln!("skipping the schemathesis run: no `st` (set TROUPE_SCHEMATHESIS=/path/to/st)");
        return;
    };
    let stub = Stub::start();
    let upstreams = format!("a={},b={}", stub.url("tag=a"), stub.url("tag=b"));
    let (key, entry) = key("schemathesis", &[Scope::Admin]);
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    for keys in [false, true] {
        // A fresh database for each run (dropped with `db`).
        let Some((db, dir)) = crate::helpers::test_db(backend).await else {
            return;
        };
        let db_url = db.url();
        let uploads = dir.path().join(format!("uploads-{keys}"));
        let mut vars = vec![
            ("DATABASE_URL", db_url.clone()),
            ("TROUPE_UPSTREAMS", upstreams.clone()),
            ("TROUPE_UPLOAD_DIR", uploads.to_string_lossy().into_owned()),
            ("TROUPE_WORKERS", "2".to_owned()),
        ];
        if keys {
            vars.push(("TROUPE_API_KEYS", entry.clone()));
        }
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let server = RunningBinary::start(dir.path(), &vars);
        let work = dir.path().join(format!("st-{keys}"));
        std::fs::create_dir_all(&work).unwrap();
        let spec = work.join("openapi.json");
        let doc = awc::Client::default()
            .get(format!("{}/openapi.json", server.address))
            .send()
            .await
            .unwrap()
            .body()
            .limit(16 << 20)
            .await
            .unwrap();
        std::fs::write(&spec, &doc).unwrap();
        run_tool(
            "openapi-spec-validator",
            validator.clone(),
            vec![spec.to_string_lossy().into_owned()],
            work.clone(),
            Vec::new(),
        )
        .await;
        let examples =
            std::env::var("TROUPE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "50".into());
        let seed = std::env::var("TROUPE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
        let mut args = vec![
            "--config-file".to_owned(),
            suite
                .join("schemathesis.toml")
                .to_string_lossy()
                .into_owned(),
            "run".to_owned(),
            format!("{}/openapi.json", server.address),
            "--workers".to_owned(),
            "2".to_owned(),
            "--max-examples".to_owned(),
            examples,
            "--seed".to_owned(),
            seed,
            // A loaded machine (the whole suite at once) slows the debug binary down.
            "--request-timeout".to_owned(),
            "60".to_owned(),
            "--generation-database".to_owned(),
            "none".to_owned(),
            "--no-color".to_owned(),
        ];
        if keys {
            args.push("-H".to_owned());
            args.push(format!("Authorization: Bearer {key}"));
        }
        let env = vec![(
            "SCHEMATHESIS_HOOKS".to_owned(),
            suite.join("hooks.py").to_string_lossy().into_owned(),
        )];
        let label = format!(
            "schemathesis ({backend:?}, {})",
            if keys { "with a key" } else { "open" }
        );
        run_tool(&label, st.clone(), args, work, env).await;
        let panicked = server
            .lines()
            .into_iter()
            .filter(|l| l.contains("panic"))
            .count();
        assert_eq!(panicked, 0, "the server panicked: {:?}", server.lines());
        drop(server);
        drop(db);
    }
}

both_backends!(schemathesis_run => schemathesis_finds_nothing);

//! The command line, run as a process: `--help` lists every variable of `config::VARS` (and
//! the README's table holds the same ones), `--version`, `check-config`, `migrate`,
//! `healthcheck`, the warning for an unknown `TROUPE_*` variable, and a host name in
//! `TROUPE_BIND`.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::Output;
use std::time::Duration;

use troupe::config::VARS;

use crate::helpers::{test_db, troupe, Backend, RunningBinary, TestDb};

fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = troupe();
    cmd.current_dir(dir.path()).args(args);
    for (key, value) in vars {
        cmd.env(key, value);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn help_lists_every_variable_with_its_default_and_meaning() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success(), "{out:?}");
    let help = text(&out.stdout);
    for command in ["check-config", "migrate", "healthcheck", "hash-key"] {
        assert!(help.contains(command), "{command} not in:\n{help}");
    }
    for var in VARS {
        let head = format!("\n  {}  [default: {}]\n", var.name, var.default);
        let at = help
            .find(&head)
            .unwrap_or_else(|| panic!("{head:?} not in:\n{help}"));
        // The meaning follows, wrapped: the same words in the same order.
        let after = &help[at + head.len()..];
        let block: Vec<&str> = after
            .lines()
            .take_while(|line| line.starts_with("      "))
            .flat_map(str::split_whitespace)
            .collect();
        let words: Vec<&str> = var.meaning.split_whitespace().collect();
        assert_eq!(block, words, "{}", var.name);
        assert!(
            after.lines().all(|l| l.chars().count() <= 80),
            "{}",
            var.name
        );
    }
}

/// The README's configuration table: variable → default, backticks dropped.
fn readme_table() -> BTreeMap<String, String> {
    let readme = include_str!("../../README.md");
    let rows = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|section| section.split("\n| variable | default | meaning |\n").nth(1))
        .expect("a variable | default | meaning table under Configuration");
    let mut table = BTreeMap::new();
    for row in rows.lines().skip(1).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let name = cells[0].trim_start_matches("| ").replace('`', "");
        let default = cells[1].replace('`', "");
        assert!(
            table.insert(name.clone(), default).is_none(),
            "{name} twice"
        );
    }
    table
}

#[test]
fn the_readme_table_has_every_variable_and_the_same_defaults() {
    let readme = readme_table();
    let vars: BTreeMap<String, String> = VARS
        .iter()
        .map(|v| (v.name.to_owned(), v.default.to_owned()))
        .collect();
    let missing: Vec<&String> = vars.keys().filter(|k| !readme.contains_key(*k)).collect();
    let extra: Vec<&String> = readme.keys().filter(|k| !vars.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not in the README: {missing:?}; in the README only: {extra:?}"
    );
    for (name, default) in &vars {
        assert_eq!(&readme[name], default, "{name}'s default");
    }
}

#[test]
fn version_prints_the_crate_version() {
    let out = run(&["--version"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        format!("troupe {}\n", env!("CARGO_PKG_VERSION"))
    );
}

const DIGEST: &str = "5f1c2d4e5f60718293a4b5c6d7e8f90a3f1c2d4e5f60718293a4b5c6d7e8f901";

#[test]
fn check_config_prints_every_value_with_secrets_masked() {
    let keys = format!("ci:users:read:{DIGEST}");
    let out = run(
        &["check-config"],
        &[
            // Never connected to: check-config only validates.
            (
                "DATABASE_URL",
                "postgres://troupe:hunter2@127.0.0.1:1/troupe",
            ),
            ("TROUPE_API_KEYS", &keys),
            ("TROUPE_BIND", "0.0.0.0:9000"),
            ("TROUPE_UPSTREAMS", "a=http://127.0.0.1:9/a?token=t0ps3cr3t"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    for secret in ["hunter2", DIGEST, "t0ps3cr3t"] {
        assert!(!stdout.contains(secret), "{secret} shown in:\n{stdout}");
    }
    for line in [
        "DATABASE_URL=postgres://troupe:***@127.0.0.1:1/troupe",
        "TROUPE_BIND=0.0.0.0:9000",
        "TROUPE_API_KEYS=ci",
        "TROUPE_UPSTREAMS=a=http://127.0.0.1:9/a?token=***",
        "TROUPE_DB_POOL_SIZE=10",
        "TROUPE_AUTH=on",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line} not in:\n{stdout}"
        );
    }
    // One line per variable the configuration holds (all but the logger's two).
    assert_eq!(stdout.lines().count(), VARS.len() - 2, "{stdout}");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn check_config_refuses_a_bad_value_with_exit_2_and_one_line() {
    let out = run(&["check-config"], &[("TROUPE_WORKERS", "many")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("troupe: invalid configuration: TROUPE_WORKERS: "),
        "{stderr}"
    );
}

#[test]
fn check_config_shows_s3_storage_with_its_secret_masked() {
    let out = run(
        &["check-config"],
        &[
            ("TROUPE_STORAGE", "s3://troupe-bucket/up"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMIK7MDENGbPxRfiCY"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("wJalr"), "the secret shown in:\n{stdout}");
    for line in [
        "TROUPE_STORAGE=s3://troupe-bucket/up",
        "TROUPE_UPLOAD_DIR=none",
        "AWS_ACCESS_KEY_ID=AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY=***",
        "AWS_REGION=us-east-1",
        "AWS_ENDPOINT_URL=http://127.0.0.1:9000",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line} not in:\n{stdout}"
        );
    }
}

#[test]
fn storage_and_upload_dir_naming_two_places_stop_with_exit_2() {
    let out = run(
        &["check-config"],
        &[("TROUPE_STORAGE", "file://a"), ("TROUPE_UPLOAD_DIR", "b")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("troupe: invalid configuration: TROUPE_STORAGE: "),
        "{stderr}"
    );
}

/// The tables in `db`, sorted.
async fn tables(db: &TestDb) -> Vec<String> {
    match db {
        TestDb::Postgres(pg) => {
            let rows = pg
                .client()
                .await
                .query(
                    "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
                     ORDER BY tablename",
                    &[],
                )
                .await
                .unwrap();
            rows.iter().map(|row| row.get(0)).collect()
        }
        TestDb::Sqlite(path) => {
            use diesel::{Connection as _, RunQueryDsl as _};
            #[derive(diesel::QueryableByName)]
            struct Table {
                #[diesel(sql_type = diesel::sql_types::Text)]
                name: String,
            }
            let mut conn =
                diesel::sqlite::SqliteConnection::establish(&path.to_string_lossy()).unwrap();
            diesel::sql_query(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .load::<Table>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect()
        }
    }
}

async fn migrate_makes_the_tables_of_a_fresh_database_and_exits(backend: Backend) {
    let Some((db, _dir)) = test_db(backend).await else {
        return;
    };
    if let TestDb::Sqlite(path) = &db {
        assert!(!path.exists());
    }
    assert!(tables(&db).await.is_empty());
    let url = db.url();
    let folder = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let migrations = std::fs::read_dir(format!(
        "{}/migrations/{folder}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .count();
    let first = run(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert!(
        text(&first.stderr).contains(&format!("{migrations} migration(s) applied")),
        "{first:?}"
    );
    let made = tables(&db).await;
    for table in ["__diesel_schema_migrations", "uploads", "users"] {
        assert!(made.iter().any(|t| t == table), "{table} not in {made:?}");
    }
    // Nothing left to do the second time.
    let again = run(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert!(
        text(&again.stderr).contains("0 migration(s) applied"),
        "{again:?}"
    );
}

crate::both_backends!(migrate => migrate_makes_the_tables_of_a_fresh_database_and_exits);

#[test]
fn migrate_names_the_cause_when_the_database_is_unreachable() {
    let out = run(
        &["migrate"],
        &[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing"),
            ("RUST_LOG", "off"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("troupe: cannot migrate: "), "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
}

#[test]
fn healthcheck_is_0_against_a_ready_server_even_when_bound_to_every_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningBinary::start(dir.path(), &[]);
    let port = server.socket_addr().port();
    for bind in [format!("127.0.0.1:{port}"), format!("0.0.0.0:{port}")] {
        let out = run(&["healthcheck"], &[("TROUPE_BIND", &bind)]);
        assert_eq!(out.status.code(), Some(0), "{bind}: {out:?}");
        assert!(text(&out.stdout).contains("answered 200"), "{out:?}");
    }
    assert!(server
        .wait_for_line("GET /readyz 200 ", Duration::from_secs(10))
        .is_some());
}

/// A port nothing listens on (it was free a moment ago).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn healthcheck_is_1_with_nothing_listening() {
    let bind = format!("127.0.0.1:{}", free_port());
    let out = run(&["healthcheck"], &[("TROUPE_BIND", &bind)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("/readyz"), "{out:?}");
}

#[test]
fn healthcheck_is_1_when_readyz_is_not_200() {
    // Something that answers as a troupe that is not ready does (draining, or its
    // database down).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = listener.local_addr().unwrap().to_string();
    let answering = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        // The whole request head, however it arrives.
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "the request ended before its head did");
            request.extend_from_slice(&buf[..n]);
        }
        conn.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    let out = run(&["healthcheck"], &[("TROUPE_BIND", &bind)]);
    let request = answering.join().unwrap();
    assert!(request.starts_with("GET /readyz HTTP/1.1\r\n"), "{request}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("answered 503"), "{out:?}");
}

#[test]
fn an_unknown_troupe_variable_gets_one_warning_naming_the_closest_known_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningBinary::start(
        dir.path(),
        &[("TROUPE_WORKER", "1"), ("TROUPE_NOT_A_SETTING", "x")],
    );
    let warned: Vec<String> = server
        .lines()
        .into_iter()
        .filter(|l| l.contains("unknown variable"))
        .collect();
    assert_eq!(warned.len(), 2, "{warned:#?}");
    assert!(
        warned[0].contains("WARN")
            && warned[0].contains("TROUPE_NOT_A_SETTING is ignored (troupe --help"),
        "{warned:#?}"
    );
    assert!(
        warned[1].contains("TROUPE_WORKER is ignored: did you mean TROUPE_WORKERS?"),
        "{warned:#?}"
    );
    // Known variables, and the values, are never named.
    assert!(!warned.iter().any(|l| l.contains("TROUPE_BIND")));
}

#[test]
fn a_host_name_in_troupe_bind_serves_and_localhost_counts_as_loopback() {
    let dir = tempfile::tempdir().unwrap();
    // No keys: it starts only because localhost is loopback.
    let server = RunningBinary::start(dir.path(), &[("TROUPE_BIND", "localhost:0")]);
    let serving = server
        .wait_for_line("serving on", Duration::from_secs(1))
        .unwrap();
    assert!(serving.contains("serving on 127.0.0.1:"), "{serving}");
    let mut conn = TcpStream::connect(server.socket_addr()).unwrap();
    conn.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

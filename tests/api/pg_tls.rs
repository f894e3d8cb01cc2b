//! PostgreSQL over TLS, against a private cluster with `ssl=on` and a certificate made here
//! (a CA of the test's own, and a server certificate it signed for `localhost` only), whose
//! `pg_hba.conf` takes TCP connections only over TLS. The real binary is started with each
//! `sslmode`: the ones that can connect serve requests; the ones that must not stop it at
//! start with exit 1 and one line saying why.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{troupe, PrivateCluster, RunningBinary, ServerCert};

/// A CA, the server certificate it signed (for `localhost` only, not `127.0.0.1`), and a
/// second CA that signed nothing here.
struct Pki {
    ca_pem: String,
    server: ServerCert,
    other_ca_pem: String,
}

fn ca(name: &str) -> (rcgen::CertificateParams, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    (params, rcgen::KeyPair::generate().unwrap())
}

fn pki() -> Pki {
    let (ca_params, ca_key) = ca("troupe test CA");
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (other_params, other_key) = ca("a CA troupe should not trust");
    Pki {
        ca_pem,
        server: ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
        other_ca_pem: other_params.self_signed(&other_key).unwrap().pem(),
    }
}

/// A TLS-only cluster and, in `dir`, `ca.pem` (the right root) and `other.pem` (a wrong one).
fn tls_cluster(dir: &Path) -> Option<PrivateCluster> {
    let pki = pki();
    let cluster = PrivateCluster::start_tls_only(&pki.server)?;
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.join("other.pem"), &pki.other_ca_pem).unwrap();
    Some(cluster)
}

/// The cluster's URL with `host` for its host and `query` added.
fn url(cluster: &PrivateCluster, host: &str, query: &str) -> String {
    let url = cluster.url.replace("127.0.0.1", host);
    if query.is_empty() {
        url
    } else {
        format!("{url}?{query}")
    }
}

/// Creates a user through the binary at `address` and finds it in the list.
async fn serves_a_request(address: &str, email: &str) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut res = client
        .post(format!("{address}/users"))
        .send_json(&json!({"name": "T", "email": email}))
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(res.status(), 201, "{body}");
    let mut res = client
        .get(format!("{address}/users?limit=1000"))
        .send()
        .await
        .unwrap();
    let page: Value = res.json().await.unwrap();
    assert_eq!(res.status(), 200, "{page}");
    assert!(
        page["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["email"] == email),
        "{page}"
    );
}

/// Runs the binary in `dir` with `database_url` until it exits: it must not start, and if it
/// says it serves, it is stopped and the test fails there and then.
fn run_to_exit(dir: &Path, database_url: &str) -> Output {
    run_to_exit_with(dir, database_url, &[])
}

/// [`run_to_exit`] with libpq's variables: `PGSSLMODE` and `PGSSLROOTCERT` are unset unless
/// `pg_env` sets them.
fn run_to_exit_with(dir: &Path, database_url: &str, pg_env: &[(&str, &str)]) -> Output {
    let mut command = troupe();
    command.env_remove("PGSSLMODE").env_remove("PGSSLROOTCERT");
    command.envs(pg_env.iter().copied());
    let mut child = command
        .current_dir(dir)
        .env("DATABASE_URL", database_url)
        .env("TROUPE_BIND", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).split(b'\n') {
        let line = line.unwrap();
        stderr.extend_from_slice(&line);
        stderr.push(b'\n');
        if String::from_utf8_lossy(&line).contains("serving on") {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "troupe started with {database_url}:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
    }
    Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr,
    }
}

/// The binary exited 1, and said why in one line: `troupe: cannot start: database
/// (postgres): …` containing each of `needles`; that line is its last.
fn assert_refused_at_start(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cannot start"))
        .collect();
    assert_eq!(said.len(), 1, "{stderr}");
    let line = said[0];
    assert!(
        line.starts_with("troupe: cannot start: database (postgres): "),
        "{line}"
    );
    for needle in needles {
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
    }
    assert_eq!(stderr.lines().last(), Some(line), "{stderr}");
}

/// The binary exited 2 with one line, `troupe: invalid configuration: …`, containing each
/// of `needles`.
fn assert_invalid_configuration(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = stderr.trim_end();
    assert!(
        line.starts_with("troupe: invalid configuration: ") && !line.contains('\n'),
        "{stderr}"
    );
    for needle in needles {
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
    }
}

#[actix_web::test]
async fn troupe_connects_over_tls_with_require_verify_ca_verify_full_and_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = tls_cluster(dir.path()) else {
        return;
    };
    let ca = dir.path().join("ca.pem").display().to_string();
    for (name, database_url) in [
        // Encrypted, the certificate not checked (its root is nowhere in troupe).
        ("require", url(&cluster, "127.0.0.1", "sslmode=require")),
        // libpq's default: TLS, since this server offers it.
        ("default", url(&cluster, "127.0.0.1", "")),
        // The chain is checked, the name is not (the certificate names only localhost).
        (
            "verify-ca",
            url(
                &cluster,
                "127.0.0.1",
                &format!("sslmode=verify-ca&sslrootcert={ca}"),
            ),
        ),
        // The chain and the name.
        (
            "verify-full",
            url(
                &cluster,
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
        ),
    ] {
        let bin = RunningBinary::start(dir.path(), &[("DATABASE_URL", &database_url)]);
        let ready = bin
            .wait_for_line("database (postgres) ready", Duration::from_secs(1))
            .unwrap_or_else(|| panic!("{name}: no ready line in {:?}", bin.lines()));
        assert!(ready.contains("over TLS ("), "{name}: {ready}");
        serves_a_request(&bin.address, &format!("{name}@example.com")).await;
    }
}

#[actix_web::test]
async fn a_certificate_troupe_cannot_trust_or_a_plain_connection_stops_it_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = tls_cluster(dir.path()) else {
        return;
    };
    let (ca, other) = (
        dir.path().join("ca.pem").display().to_string(),
        dir.path().join("other.pem").display().to_string(),
    );

    // verify-full with a root that did not sign the server's certificate.
    let out = run_to_exit(
        dir.path(),
        &url(
            &cluster,
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={other}"),
        ),
    );
    assert_refused_at_start(
        &out,
        &[
            "TLS handshake",
            "UnknownIssuer",
            "sslmode=verify-full",
            &format!("trusting the certificates in {other}"),
        ],
    );

    // verify-full with the right root, but the certificate is not for 127.0.0.1.
    let out = run_to_exit(
        dir.path(),
        &url(
            &cluster,
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    );
    assert_refused_at_start(&out, &["TLS handshake", "not valid for name"]);

    // require with a root file checks the chain, as libpq's does.
    let out = run_to_exit(
        dir.path(),
        &url(
            &cluster,
            "localhost",
            &format!("sslmode=require&sslrootcert={other}"),
        ),
    );
    assert_refused_at_start(&out, &["UnknownIssuer", "sslmode=require (as verify-ca"]);

    // verify-full without sslrootcert trusts only the built-in public roots.
    let out = run_to_exit(
        dir.path(),
        &url(&cluster, "localhost", "sslmode=verify-full"),
    );
    assert_refused_at_start(&out, &["UnknownIssuer", "built-in Mozilla roots"]);

    // disable against a server that takes only TLS.
    let out = run_to_exit(dir.path(), &url(&cluster, "127.0.0.1", "sslmode=disable"));
    assert_refused_at_start(
        &out,
        &[
            "no encryption",
            "sslmode=disable: this server takes only TLS",
        ],
    );

    // The same two refusals with the settings in libpq's variables, not in the URL.
    let out = run_to_exit_with(
        dir.path(),
        &url(&cluster, "127.0.0.1", ""),
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &other)],
    );
    assert_refused_at_start(&out, &["UnknownIssuer", "sslmode=verify-full"]);
    let out = run_to_exit_with(
        dir.path(),
        &url(&cluster, "127.0.0.1", ""),
        &[("PGSSLMODE", "disable")],
    );
    assert_refused_at_start(&out, &["sslmode=disable: this server takes only TLS"]);

    // A mode libpq does not have, and a root file that is not there: configuration errors,
    // refused before any connection is tried.
    let out = run_to_exit(dir.path(), &url(&cluster, "127.0.0.1", "sslmode=yes"));
    assert_invalid_configuration(&out, &["DATABASE_URL: sslmode must be", "\"yes\""]);
    let out = run_to_exit_with(
        dir.path(),
        &url(&cluster, "127.0.0.1", ""),
        &[("PGSSLMODE", "yes")],
    );
    assert_invalid_configuration(&out, &["PGSSLMODE: must be", "\"yes\""]);
    let out = run_to_exit(
        dir.path(),
        &url(
            &cluster,
            "127.0.0.1",
            "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
        ),
    );
    assert_invalid_configuration(&out, &["sslrootcert: cannot read", "/nonexistent/ca.pem"]);
}

#[actix_web::test]
async fn prefer_connects_without_tls_when_the_handshake_fails_and_require_does_not() {
    let Some(cluster) = PrivateCluster::start_tls_unusable(&pki().server) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The default, prefer: the server says it has TLS, the handshake fails, plain works.
    let bin = RunningBinary::start(
        dir.path(),
        &[("DATABASE_URL", &url(&cluster, "127.0.0.1", ""))],
    );
    let ready = bin
        .wait_for_line("database (postgres) ready", Duration::from_secs(1))
        .unwrap();
    assert!(ready.contains("unencrypted"), "{ready}");
    assert!(
        bin.lines()
            .iter()
            .any(|l| l.contains("TLS failed") && l.contains("connecting without it")),
        "{:?}",
        bin.lines()
    );
    serves_a_request(&bin.address, "fallback@example.com").await;
    drop(bin);

    let out = run_to_exit(dir.path(), &url(&cluster, "127.0.0.1", "sslmode=require"));
    assert_refused_at_start(&out, &["TLS handshake", "sslmode=require"]);
}

#[actix_web::test]
async fn prefer_connects_without_tls_where_the_server_has_none_and_require_refuses_it() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bin = RunningBinary::start(
        dir.path(),
        &[(
            "DATABASE_URL",
            &url(&cluster, "127.0.0.1", "sslmode=prefer"),
        )],
    );
    let ready = bin
        .wait_for_line("database (postgres) ready", Duration::from_secs(1))
        .unwrap();
    assert!(ready.contains("unencrypted"), "{ready}");
    serves_a_request(&bin.address, "plain@example.com").await;
    drop(bin);

    let out = run_to_exit(dir.path(), &url(&cluster, "127.0.0.1", "sslmode=require"));
    assert_refused_at_start(&out, &["server does not support TLS"]);
}

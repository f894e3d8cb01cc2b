//! How troupe reaches PostgreSQL: `DATABASE_URL` read as libpq reads its TLS settings
//! (`sslmode`, `sslrootcert`), over rustls. The pool, its circuit's probe and the
//! migrations all connect through [`PgTarget`].
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and no `sslrootcert`: troupe
//! takes both out of the URL, hands the rest to tokio-postgres, and decides itself what the
//! server's certificate must prove.
//!
//! | `sslmode` | TLS | certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default, as in libpq) | when the server offers it, else plain | not checked |
//! | `require` | always | not checked, unless `sslrootcert` is given: then as `verify-ca` (libpq does the same) |
//! | `verify-ca` | always | signed by a trusted root |
//! | `verify-full` | always | signed by a trusted root, and issued for the host connected to |
//!
//! The trusted roots are the PEM file `sslrootcert` names, or, without it (or with
//! `sslrootcert=system`), the Mozilla roots troupe is built with.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::error_chain;

/// The stream a connection runs over: TLS, or the plain socket when `sslmode` allows it.
type PgStream = <MakeRustlsConnect as MakeTlsConnect<tokio_postgres::Socket>>::Stream;

/// libpq's `sslmode`, all five of the values troupe honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, its certificate unchecked; plain otherwise.
    Prefer,
    /// TLS always, its certificate unchecked.
    Require,
    /// TLS always; the certificate chains to a trusted root.
    VerifyCa,
    /// TLS always; the certificate chains to a trusted root and names the host.
    VerifyFull,
}

impl SslMode {
    /// The value as `DATABASE_URL` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether TLS may, must or must not be used.
    fn driver_mode(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Driver;
        match self {
            Self::Disable => Driver::Disable,
            Self::Prefer => Driver::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Driver::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "DATABASE_URL: sslmode must be disable, prefer, require, verify-ca or \
                     verify-full, got {other:?}"
                ))
            }
        })
    }
}

/// Where the roots that verify the server's certificate come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// The Mozilla roots built in (no `sslrootcert`, or `sslrootcert=system`).
    BuiltIn,
    /// The certificates in this PEM file.
    File(String),
}

/// A PostgreSQL server as `DATABASE_URL` names it, with the TLS it asks for.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    /// The mode as written (or the default).
    asked: SslMode,
    /// The mode in force: `require` with `sslrootcert` verifies as `verify-ca`.
    mode: SslMode,
    roots: Roots,
    tls: MakeRustlsConnect,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTarget")
            .field("asked", &self.asked)
            .field("mode", &self.mode)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Reads a `postgres://` URL: its `sslmode` and `sslrootcert`, then the rest as
    /// tokio-postgres does. As in libpq, a setting the URL leaves out is taken from
    /// `PGSSLMODE` / `PGSSLROOTCERT`, and `sslmode` defaults to `prefer`. The root file is
    /// read here, once. Fails with one line naming what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        Self::parse_with(url, |name| std::env::var(name).ok())
    }

    /// [`PgTarget::parse`], with the environment given (`PGSSLMODE`, `PGSSLROOTCERT`).
    pub fn parse_with(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = None;
        let mut root_file = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => mode = Some(percent_decode(value)?.parse::<SslMode>()?),
                "sslrootcert" => root_file = Some(percent_decode(value)?),
                _ => rest.push(pair),
            }
        }
        if mode.is_none() {
            if let Some(value) = env("PGSSLMODE").filter(|v| !v.is_empty()) {
                mode = Some(value.parse::<SslMode>().map_err(|_| {
                    format!(
                        "PGSSLMODE: must be disable, prefer, require, verify-ca or verify-full, \
                         got {value:?}"
                    )
                })?);
            }
        }
        if root_file.is_none() {
            root_file = env("PGSSLROOTCERT").filter(|v| !v.is_empty());
        }
        let url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|err| format!("DATABASE_URL: {}", error_chain(&err)))?;
        let asked = mode.unwrap_or(SslMode::Prefer);
        let roots = match root_file {
            None => Roots::BuiltIn,
            Some(path) if path == "system" => Roots::BuiltIn,
            Some(path) if path.is_empty() => {
                return Err("DATABASE_URL: sslrootcert is empty; name a PEM file".into())
            }
            Some(path) => Roots::File(path),
        };
        let mode = match (asked, &roots) {
            (SslMode::Require, Roots::File(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        };
        config.ssl_mode(mode.driver_mode());
        let tls = MakeRustlsConnect::new(client_config(mode, &roots)?);
        Ok(Self {
            config,
            asked,
            mode,
            roots,
            tls,
        })
    }

    /// The same server for a connection of its own that holds state (the upload locks):
    /// named `application_name` in `pg_stat_activity`, with TCP keepalive probing a silent
    /// server after 5 s, 3 times 2 s apart, and unacknowledged writes given up after 11 s, so
    /// that a vanished server is noticed in seconds, not the system's two hours.
    pub fn dedicated(&self, application_name: &str) -> Self {
        let mut target = self.clone();
        target
            .config
            .application_name(application_name)
            .keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(5))
            .keepalives_interval(std::time::Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(std::time::Duration::from_secs(11));
        target
    }

    /// The `sslmode` in force.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Connects, as `sslmode` says: with `prefer`, a server whose TLS handshake fails is
    /// asked again without TLS, as libpq does. The error is one line with the driver's
    /// cause chain and, for a TLS failure, what troupe asked of the certificate.
    pub async fn connect(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, PgStream>,
        ),
        String,
    > {
        match self.config.connect(self.tls.clone()).await {
            Ok(pair) => Ok(pair),
            Err(err) if self.mode == SslMode::Prefer && is_handshake(&err) => {
                log::warn!(
                    "database (postgres): TLS failed ({}); sslmode=prefer, connecting without it",
                    error_chain(&err)
                );
                let mut plain = self.config.clone();
                plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
                plain
                    .connect(self.tls.clone())
                    .await
                    .map_err(|err| self.explain(&err))
            }
            Err(err) => Err(self.explain(&err)),
        }
    }

    /// A diesel-async connection over [`PgTarget::connect`].
    pub async fn open(&self) -> Result<AsyncPgConnection, String> {
        let (client, connection) = self.connect().await?;
        AsyncPgConnection::try_from_client_and_connection(client, connection)
            .await
            .map_err(|err| err.to_string())
    }

    /// The cause chain, and what would help: the TLS settings for a failed handshake, the
    /// likely reason for a server refusing a plain connection.
    fn explain(&self, err: &tokio_postgres::Error) -> String {
        let chain = error_chain(err);
        if chain.contains("server does not support TLS") {
            return format!("{chain} (sslmode={} asks for TLS)", self.asked);
        }
        if is_handshake(err) {
            let mode = if self.asked == self.mode {
                format!("sslmode={}", self.asked)
            } else {
                format!(
                    "sslmode={} (as {}: sslrootcert is set)",
                    self.asked, self.mode
                )
            };
            let trust = match (&self.roots, self.mode) {
                (_, SslMode::Prefer | SslMode::Require | SslMode::Disable) => {
                    "the certificate is not checked".to_owned()
                }
                (Roots::BuiltIn, _) => {
                    "trusting the built-in Mozilla roots (set sslrootcert=PATH for a private CA)"
                        .to_owned()
                }
                (Roots::File(path), _) => format!("trusting the certificates in {path}"),
            };
            return format!("{chain} ({mode}, {trust})");
        }
        if self.mode == SslMode::Disable && chain.contains("no encryption") {
            return format!("{chain} (sslmode=disable: this server takes only TLS connections)");
        }
        chain
    }
}

/// Whether the connect failed in the TLS handshake (tokio-postgres says so in its top line).
fn is_handshake(err: &tokio_postgres::Error) -> bool {
    err.to_string()
        .starts_with("error performing TLS handshake")
}

/// The rustls client configuration for `mode`, its roots read from `roots`.
fn client_config(mode: SslMode, roots: &Roots) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => {
            Arc::new(Unchecked(provider.clone()))
        }
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(roots)?),
                provider.clone(),
            )
            .build()
            .map_err(|err| format!("DATABASE_URL: sslrootcert: {err}"))?;
            if mode == SslMode::VerifyCa {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS for PostgreSQL: {err}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What libpq 17 offers; PostgreSQL 17 checks it when a client sends it, older servers
    // ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

/// The trusted roots: the built-in Mozilla set, or every certificate of the PEM file.
fn root_store(roots: &Roots) -> Result<rustls::RootCertStore, String> {
    let path = match roots {
        Roots::BuiltIn => {
            return Ok(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        }
        Roots::File(path) => path,
    };
    let bad = |problem: String| format!("DATABASE_URL: sslrootcert: {problem}");
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read {path:?}: {e}")))?;
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("{path:?} is not valid PEM: {e}")))?;
        store
            .add(cert)
            .map_err(|e| bad(format!("a certificate in {path:?} is unusable: {e}")))?;
    }
    if store.is_empty() {
        return Err(bad(format!("no PEM certificate in {path:?}")));
    }
    Ok(store)
}

/// Decodes `%XX` escapes (a path in a URL); `+` stays itself, as in libpq.
fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = value
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("DATABASE_URL: bad %-escape in {value:?}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("DATABASE_URL: {value:?} is not UTF-8"))
}

/// `prefer` and `require`: any certificate is taken (the session is encrypted, not
/// authenticated), but the handshake's signatures are still checked against it.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the whole of webpki's check but the name (webpki checks the chain first,
/// so a name mismatch means the chain was good).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<PgTarget, String> {
        PgTarget::parse_with(url, |_| None)
    }

    #[test]
    fn pgsslmode_and_pgsslrootcert_fill_in_what_the_url_leaves_out() {
        let env =
            |mode: &'static str| move |name: &str| (name == "PGSSLMODE").then(|| mode.to_owned());
        let from_env = PgTarget::parse_with("postgres://u@h/db", env("disable")).unwrap();
        assert_eq!(from_env.mode(), SslMode::Disable);
        let url_wins =
            PgTarget::parse_with("postgres://u@h/db?sslmode=require", env("disable")).unwrap();
        assert_eq!(url_wins.mode(), SslMode::Require);
        let err = PgTarget::parse_with("postgres://u@h/db", env("off")).unwrap_err();
        assert!(err.starts_with("PGSSLMODE: must be"), "{err}");
        let empty_is_unset = PgTarget::parse_with("postgres://u@h/db", env("")).unwrap();
        assert_eq!(empty_is_unset.mode(), SslMode::Prefer);

        let missing = |name: &str| (name == "PGSSLROOTCERT").then(|| "/nonexistent.pem".to_owned());
        let err = PgTarget::parse_with("postgres://u@h/db?sslmode=verify-ca", missing).unwrap_err();
        assert!(err.contains("sslrootcert: cannot read"), "{err}");
    }

    #[test]
    fn sslmode_defaults_to_prefer_and_takes_libpq_s_five_values() {
        assert_eq!(parse("postgres://u@h/db").unwrap().mode(), SslMode::Prefer);
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let target = parse(&format!("postgres://u@h/db?sslmode={mode}")).unwrap();
            assert_eq!(target.mode().as_str(), mode);
        }
        let err = parse("postgres://u@h/db?sslmode=on").unwrap_err();
        assert!(err.starts_with("DATABASE_URL: sslmode must be"), "{err}");
        assert!(err.contains("\"on\""), "{err}");
    }

    #[test]
    fn the_rest_of_the_url_goes_to_the_driver_as_it_was() {
        let target =
            parse("postgres://u:p@h:6543/db?application_name=x&sslmode=require&connect_timeout=3")
                .unwrap();
        assert_eq!(target.config.get_application_name(), Some("x"));
        assert_eq!(target.config.get_ports(), &[6543]);
        assert_eq!(target.config.get_dbname(), Some("db"));
        assert_eq!(
            target.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        let err = parse("postgres://u@h/db?sslmode=require&colour=red").unwrap_err();
        assert!(err.contains("unknown option `colour`"), "{err}");
    }

    #[test]
    fn sslrootcert_is_read_at_once_and_makes_require_verify_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = parse(&format!(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert={}",
            missing.display()
        ))
        .unwrap_err();
        assert!(
            err.starts_with("DATABASE_URL: sslrootcert: cannot read"),
            "{err}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let err = parse(&format!(
            "postgres://u@h/db?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        ))
        .unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");

        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        // A path with a space, %-escaped as a URL has it.
        let file = dir.path().join("root ca.pem");
        std::fs::write(&file, ca.cert.pem()).unwrap();
        let escaped = file.display().to_string().replace(' ', "%20");
        let target = parse(&format!(
            "postgres://u@h/db?sslmode=require&sslrootcert={escaped}"
        ))
        .unwrap();
        assert_eq!(target.mode(), SslMode::VerifyCa);
        assert_eq!(target.roots, Roots::File(file.display().to_string()));
        let system = parse("postgres://u@h/db?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(system.roots, Roots::BuiltIn);
    }
}

//! Fan-out to upstream APIs: the sources, their breakers and statistics, the calls, and
//! the merged answers. `FetchActor` (in `actors/fetch.rs`) only owns an awc client and
//! runs [`call::gather`] or [`call::all_or_nothing`] with it.

pub mod breaker;
pub mod call;
pub mod merge;
pub mod stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::Uri;

use crate::config::{UpstreamConfig, UpstreamSource};
use crate::error::FieldError;
use crate::metrics::Metrics;
use breaker::{Breaker, BreakerState};
use stats::{SourceStats, StatsSnapshot};

/// A source's place in the configured list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceId(pub usize);

/// One configured source and its shared state.
#[derive(Debug)]
pub struct Source {
    /// The name clients choose it by.
    pub name: String,
    /// Where it is called (never shown to clients: its query may carry a key).
    pub uri: Uri,
    /// Its circuit breaker, shared by every worker.
    pub breaker: Breaker,
    /// Its call statistics, shared by every worker.
    pub stats: SourceStats,
}

/// The bounds every fan-out honours.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// One attempt at one source, connect to last byte.
    pub timeout: Duration,
    /// The whole fan-out of one request.
    pub deadline: Duration,
    /// The largest body taken from a source.
    pub max_bytes: usize,
}

/// Every configured source with its state, and the bounds: shared (`Arc`) by the
/// `FetchActor` of each worker and by `/readyz`.
#[derive(Debug)]
pub struct Upstreams {
    sources: Vec<Source>,
    /// The bounds of every call.
    pub limits: Limits,
    /// The TLS settings of `https` sources: the Mozilla roots plus `TROUPE_UPSTREAM_CA_FILE`.
    pub tls: Arc<rustls::ClientConfig>,
}

impl Upstreams {
    /// The sources of `config`, each with a closed breaker. The URLs were validated with
    /// the configuration; one that still does not parse is left out with an error log.
    /// Their statistics are for `/readyz` only: see [`Upstreams::measured`].
    pub fn new(config: &UpstreamConfig) -> Self {
        Self::with_stats(config, |_| SourceStats::default())
    }

    /// [`Upstreams::new`], each source's calls also exported through `metrics`.
    pub fn measured(config: &UpstreamConfig, metrics: &Metrics) -> Self {
        Self::with_stats(config, |name| SourceStats::new(metrics, name))
    }

    fn with_stats(config: &UpstreamConfig, stats: impl Fn(&str) -> SourceStats) -> Self {
        let sources = config
            .sources
            .iter()
            .filter_map(|UpstreamSource { name, url }| match url.parse::<Uri>() {
                Ok(uri) => Some(Source {
                    name: name.clone(),
                    uri,
                    breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
                    stats: stats(name),
                }),
                Err(_) => {
                    log::error!("upstream {name}: URL does not parse; source left out");
                    None
                }
            })
            .collect();
        Self {
            sources,
            limits: Limits {
                timeout: config.timeout,
                deadline: config.deadline,
                max_bytes: config.max_bytes,
            },
            tls: Arc::new(tls_config(&config.extra_roots)),
        }
    }

    /// The source with this id. Ids come from [`Upstreams::select`] on the same list.
    pub fn source(&self, id: SourceId) -> Option<&Source> {
        self.sources.get(id.0)
    }

    /// The name of a source, or `"?"` for an id from another list.
    pub fn name(&self, id: SourceId) -> &str {
        self.source(id).map_or("?", |s| s.name.as_str())
    }

    /// Every source, in the configured order.
    pub fn all(&self) -> Vec<SourceId> {
        (0..self.sources.len()).map(SourceId).collect()
    }

    /// The sources a request names in `?sources=a,b` (in its order), or all of them, in the
    /// configured order, when it names none. An unknown, repeated or empty name is a
    /// field error: troupe calls configured sources only.
    pub fn select(&self, requested: Option<&str>) -> Result<Vec<SourceId>, FieldError> {
        let Some(list) = requested else {
            return Ok(self.all());
        };
        let mut ids = Vec::new();
        for name in list.split(',').map(str::trim) {
            if name.is_empty() {
                return Err(FieldError::new(
                    "sources",
                    "must be a comma-separated list of source names",
                ));
            }
            let Some(at) = self.sources.iter().position(|s| s.name == name) else {
                let known: Vec<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
                // Names are public (clients choose by them); the URLs behind them are not.
                let shown: String = name.chars().take(64).collect();
                return Err(FieldError::new(
                    "sources",
                    format!(
                        "unknown source {shown:?}; configured: [{}]",
                        known.join(", ")
                    ),
                ));
            };
            if ids.contains(&SourceId(at)) {
                return Err(FieldError::new(
                    "sources",
                    format!("source {name:?} is listed twice"),
                ));
            }
            ids.push(SourceId(at));
        }
        Ok(ids)
    }

    /// Each source's breaker and statistics, for `/readyz`.
    pub fn status(&self) -> Vec<SourceStatus> {
        let now = Instant::now();
        self.sources
            .iter()
            .map(|s| {
                let (state, consecutive_failures) = s.breaker.state(now);
                SourceStatus {
                    name: s.name.clone(),
                    breaker: state,
                    consecutive_failures,
                    stats: s.stats.snapshot(),
                }
            })
            .collect()
    }
}

/// A rustls client configuration trusting the Mozilla roots and `extra_roots` (checked
/// when the configuration was read), offering HTTP/2 and HTTP/1.1 as awc's default does.
fn tls_config(extra_roots: &[rustls::pki_types::CertificateDer<'static>]) -> rustls::ClientConfig {
    crate::install_crypto_provider();
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra_roots {
        if let Err(err) = roots.add(cert.clone()) {
            log::error!("TROUPE_UPSTREAM_CA_FILE: a certificate is left out: {err}");
        }
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// One source as `/readyz` shows it.
#[derive(Debug, Clone)]
pub struct SourceStatus {
    /// The source's name.
    pub name: String,
    /// Its breaker's state.
    pub breaker: BreakerState,
    /// Failures in a row so far.
    pub consecutive_failures: u32,
    /// Its call statistics.
    pub stats: StatsSnapshot,
}

/// What went wrong with one source, by a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchErrorKind {
    /// No complete answer within the per-source timeout or the request's deadline.
    Timeout,
    /// It answered with a status other than 2xx (redirects included: they are not followed).
    Status,
    /// Its body is not valid JSON (or not UTF-8).
    InvalidJson,
    /// Its body is over `TROUPE_UPSTREAM_MAX_BYTES`.
    TooLarge,
    /// It could not be reached, or the connection failed before the whole answer came.
    Unreachable,
    /// Its circuit breaker is open: it was not called.
    CircuitOpen,
}

impl FetchErrorKind {
    /// The stable snake_case code clients match on.
    pub fn code(self) -> &'static str {
        match self {
            Self::Timeout => "upstream_timeout",
            Self::Status => "upstream_status",
            Self::InvalidJson => "upstream_invalid_json",
            Self::TooLarge => "upstream_too_large",
            Self::Unreachable => "upstream_unreachable",
            Self::CircuitOpen => "circuit_open",
        }
    }
}

/// One source's failure: a kind and a message fit for clients (no URL, no Debug output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    /// The stable code, as [`FetchErrorKind::code`].
    pub code: &'static str,
    /// What happened, for humans.
    pub message: String,
    kind: FetchErrorKind,
    /// Whether a second GET may cure it (connect errors, 5xx).
    retry: bool,
}

impl FetchError {
    /// An error of `kind` with a message for clients.
    pub fn new(kind: FetchErrorKind, message: impl Into<String>) -> Self {
        Self {
            code: kind.code(),
            message: message.into(),
            kind,
            retry: false,
        }
    }

    /// What kind of failure.
    pub fn kind(&self) -> FetchErrorKind {
        self.kind
    }
}

/// One request's fan-out: which sources, until when, and the id that ties the calls to it.
#[derive(Debug, Clone)]
pub struct FanOut {
    /// The sources, in the order of the answer.
    pub sources: Vec<SourceId>,
    /// When every call must have ended, retries included.
    pub deadline: Instant,
    /// The request's `x-request-id`: sent to every source and written in failure logs, so
    /// one id follows the request across services.
    pub request_id: String,
}

/// One source's outcome in a gather.
#[derive(Debug, Clone)]
pub struct SourceResult {
    /// The source.
    pub id: SourceId,
    /// Its JSON body, validated, as received; or why there is none.
    pub result: Result<bytes::Bytes, FetchError>,
}

/// The source whose failure ended an all-or-nothing fan-out.
#[derive(Debug, Clone)]
pub struct SourceFailure {
    /// The source.
    pub id: SourceId,
    /// What went wrong.
    pub error: FetchError,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::UpstreamSource;

    /// Sources named `names` on a closed port, with a key in their URLs (to check it never
    /// shows), and short bounds.
    pub(crate) fn upstreams(names: &[&str]) -> Upstreams {
        Upstreams::new(&UpstreamConfig {
            sources: names
                .iter()
                .map(|n| UpstreamSource {
                    name: n.to_string(),
                    url: format!("http://127.0.0.1:1/{n}?key=secret"),
                })
                .collect(),
            timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(2),
            max_bytes: 1024,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(1),
            extra_roots: Vec::new(),
        })
    }

    #[test]
    fn select_takes_all_in_configured_order_or_the_requested_ones_in_their_order() {
        let up = upstreams(&["a", "b", "c"]);
        assert_eq!(
            up.select(None).unwrap(),
            vec![SourceId(0), SourceId(1), SourceId(2)]
        );
        assert_eq!(
            up.select(Some("c, a")).unwrap(),
            vec![SourceId(2), SourceId(0)]
        );
    }

    #[test]
    fn select_refuses_unknown_repeated_and_empty_names_without_urls() {
        let up = upstreams(&["a", "b"]);
        for (query, expect) in [
            ("a,x", "unknown source \"x\""),
            ("a,a", "listed twice"),
            ("", "comma-separated"),
            ("a,", "comma-separated"),
        ] {
            let err = up.select(Some(query)).unwrap_err();
            assert_eq!(err.field, "sources");
            assert!(err.message.contains(expect), "{query}: {}", err.message);
            assert!(!err.message.contains("secret"));
        }
    }
}

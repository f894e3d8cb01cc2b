//! CORS (`TROUPE_CORS_ORIGINS`): which browser origins may call troupe, and the
//! `actix_cors::Cors` middleware that answers for it.
//!
//! The value is a comma list of exact origins (`https://app.example.com`,
//! `http://localhost:5173`), or `*` for any origin; unset or empty is no CORS at all (no
//! header added, the middleware not installed). Credentials (cookies, TLS client
//! certificates) are never allowed, with `*` or without: a browser client sends its key as
//! `Authorization: Bearer KEY`, which CORS lets through as an allowed request header, so
//! nothing needs `Access-Control-Allow-Credentials`, and leaving it out keeps a page on an
//! allowed origin from riding on anything ambient.
//!
//! The middleware must sit outside authentication and rate limiting: a preflight is answered
//! before either sees it, and a 401, 403 or 429 leaves with the CORS headers a browser needs to
//! read it (actix/actix-extras#127).

use std::net::{Ipv4Addr, Ipv6Addr};

use actix_cors::Cors;
use actix_web::http::Method;

use crate::config::ConfigError;

/// The variable the origins come from.
pub const CORS_ORIGINS_VAR: &str = "TROUPE_CORS_ORIGINS";

/// Response headers a browser script may read: tus's, the request id, `Retry-After`, the
/// fan-out's completeness marker, and what a download or a 401 needs.
pub const EXPOSE_HEADERS: [&str; 18] = [
    "location",
    "upload-offset",
    "upload-length",
    "upload-expires",
    "upload-metadata",
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "tus-checksum-algorithm",
    "x-request-id",
    "retry-after",
    "x-aggregate-complete",
    "www-authenticate",
    "content-disposition",
    "content-range",
    "accept-ranges",
    "etag",
];

/// Request headers a browser script may send (beyond the CORS-safelisted ones).
pub const ALLOW_HEADERS: [&str; 20] = [
    "authorization",
    "content-type",
    "tus-resumable",
    "upload-length",
    "upload-offset",
    "upload-metadata",
    "upload-checksum",
    "upload-defer-length",
    "upload-concat",
    "x-http-method-override",
    "x-request-id",
    "x-requested-with",
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "cache-control",
    "accept",
];

/// Methods a browser script may use.
pub const ALLOW_METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// How long a browser may cache a preflight answer (browsers cap it lower: Chromium at 2 h).
pub const MAX_AGE_SECS: usize = 86_400;

/// Which origins may call troupe from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsConfig {
    /// No CORS: no header is added and preflights are not answered (the default).
    #[default]
    Off,
    /// `*`: any origin, answered with `Access-Control-Allow-Origin: *`.
    AnyOrigin,
    /// These exact origins, each as a browser serialises it (lowercase scheme and host, no
    /// default port), in the order given.
    Origins(Vec<String>),
}

impl CorsConfig {
    /// Parses `TROUPE_CORS_ORIGINS`: `*`, or a comma list of `http(s)://HOST[:PORT]` origins
    /// (blanks around each ignored; HOST a DNS name, an IPv4 address or a `[v6]` address; no
    /// path, not even `/`, no query, no user). Origins are normalised as browsers send them
    /// (`HTTPS://App.Example.com:443` → `https://app.example.com`) and duplicates dropped.
    /// Empty or blank is [`CorsConfig::Off`].
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(Self::Off);
        }
        if raw == "*" {
            return Ok(Self::AnyOrigin);
        }
        let mut origins: Vec<String> = Vec::new();
        for (i, text) in raw.split(',').enumerate() {
            let origin = parse_origin(text.trim()).map_err(|problem| ConfigError {
                var: CORS_ORIGINS_VAR,
                problem: format!("entry {}: {problem}", i + 1),
            })?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(Self::Origins(origins))
    }

    /// Whether CORS is on (the middleware is to be installed).
    pub fn is_enabled(&self) -> bool {
        !matches!(self, Self::Off)
    }

    /// The middleware for this configuration, `None` when CORS is off: wrap it outside
    /// authentication and rate limiting. A preflight from an allowed origin is answered 200
    /// with the allowed methods and headers; from any other origin, or asking for a method or
    /// header not allowed, 400 without CORS headers. Other requests pass through, with the
    /// CORS headers added when their origin is allowed (actix-cors adds `Vary` and
    /// `Access-Control-Expose-Headers` to every answer; without `Access-Control-Allow-Origin`
    /// a browser reads nothing of them).
    pub fn cors(&self) -> Option<Cors> {
        let cors = Cors::default()
            .allowed_methods(ALLOW_METHODS)
            .allowed_headers(ALLOW_HEADERS)
            .expose_headers(EXPOSE_HEADERS)
            .max_age(MAX_AGE_SECS);
        match self {
            Self::Off => None,
            Self::AnyOrigin => Some(cors.allow_any_origin().send_wildcard()),
            Self::Origins(origins) => Some(
                origins
                    .iter()
                    .fold(cors, |cors, origin| cors.allowed_origin(origin)),
            ),
        }
    }
}

/// One origin, normalised, or what is wrong with it.
fn parse_origin(text: &str) -> Result<String, String> {
    let bad =
        |why: &str| format!("{text:?} is not an origin: {why} (expected scheme://host[:port])");
    if text == "*" {
        return Err("\"*\" must stand alone, not in a list".to_owned());
    }
    let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return Err(bad("the scheme must be http or https")),
    };
    if rest.contains(['/', '?', '#']) {
        return Err(bad(
            "an origin has no path, query or fragment, not even a trailing /",
        ));
    }
    if rest.contains('@') {
        return Err(bad("an origin has no user or password"));
    }
    let (host, port) = split_port(rest).ok_or_else(|| bad("a bad port"))?;
    let host = normal_host(host).ok_or_else(|| {
        bad("the host must be a DNS name (non-ASCII names in their xn-- form), an IPv4 address or [an IPv6 address]")
    })?;
    Ok(match port {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// `HOST` and its `:PORT`, if any (1 to 65535, plain digits).
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let host_end = if authority.starts_with('[') {
        authority.find(']')? + 1
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let (host, port) = authority.split_at(host_end);
    match port.strip_prefix(':') {
        None if port.is_empty() => Some((host, None)),
        None => None,
        Some(port) => {
            let plain = !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !port.starts_with('0');
            let valid = plain && port.parse::<u16>().is_ok_and(|p| p > 0);
            valid.then_some((host, Some(port)))
        }
    }
}

/// The host as a browser writes it in `Origin`: a lowercase DNS name, a dotted IPv4
/// address, or a bracketed IPv6 address in its RFC 5952 form.
fn normal_host(host: &str) -> Option<String> {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(|ip| format!("[{ip}]"));
    }
    let host = host.to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let last_is_number = labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if last_is_number {
        return host.parse::<Ipv4Addr>().ok().map(|ip| ip.to_string());
    }
    let dns = host.len() <= 253
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    dns.then_some(host)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{self, HeaderMap};
    use actix_web::http::StatusCode;
    use actix_web::test::{call_service, init_service, TestRequest};
    use actix_web::{web, App, HttpResponse};

    use super::*;
    use crate::error::AppError;

    fn origins(raw: &str) -> Vec<String> {
        match CorsConfig::parse(raw).unwrap() {
            CorsConfig::Origins(list) => list,
            other => panic!("{raw:?} gave {other:?}"),
        }
    }

    #[test]
    fn unset_is_off_and_a_lone_star_is_any_origin() {
        assert_eq!(CorsConfig::parse("").unwrap(), CorsConfig::Off);
        assert_eq!(CorsConfig::parse("  ").unwrap(), CorsConfig::Off);
        assert!(!CorsConfig::Off.is_enabled());
        assert!(CorsConfig::Off.cors().is_none());
        assert_eq!(CorsConfig::parse(" * ").unwrap(), CorsConfig::AnyOrigin);
        assert!(CorsConfig::AnyOrigin.is_enabled());
    }

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(
            origins(
                "https://app.example.com, HTTP://LocalHost:5173,https://App.Example.com:443,\
                 http://10.0.0.1:80,https://[2001:DB8:0::1]:8443,http://a-b.c9"
            ),
            [
                "https://app.example.com",
                "http://localhost:5173",
                "http://10.0.0.1",
                "https://[2001:db8::1]:8443",
                "http://a-b.c9",
            ]
        );
    }

    #[test]
    fn what_is_not_an_origin_is_refused_naming_the_entry() {
        for (raw, why) in [
            ("https://app.example.com/", "no path"),
            ("https://app.example.com/app", "no path"),
            ("https://app.example.com?x=1", "no path"),
            ("app.example.com", "no scheme"),
            ("ftp://app.example.com", "http or https"),
            ("null", "no scheme"),
            ("https://user@app.example.com", "no user"),
            ("https://app.example.com:0", "bad port"),
            ("https://app.example.com:65536", "bad port"),
            ("https://app.example.com:080", "bad port"),
            ("https://app.example.com:", "bad port"),
            ("https://", "the host must be"),
            ("https://bücher.example", "xn--"),
            ("https://-x.example", "the host must be"),
            ("https://a..b", "the host must be"),
            ("https://999.1.1.1", "the host must be"),
            ("https://[::1", "bad port"),
            ("https://[not-v6]", "the host must be"),
        ] {
            let err = CorsConfig::parse(&format!("https://ok.example,{raw}")).unwrap_err();
            assert_eq!(err.var, CORS_ORIGINS_VAR, "{raw:?}");
            assert!(err.problem.starts_with("entry 2: "), "{raw:?}: {err}");
            assert!(err.problem.contains(why), "{raw:?}: {err}");
        }
        let err = CorsConfig::parse("https://a.example,*").unwrap_err();
        assert_eq!(
            err.problem,
            "entry 2: \"*\" must stand alone, not in a list"
        );
    }

    const ALLOWED: &str = "https://app.example.com";

    async fn unauthorized() -> Result<HttpResponse, AppError> {
        Err(AppError::Unauthorized {
            invalid_token: false,
        })
    }

    /// What `req` gets from a tiny app wrapped in `config`'s middleware: `GET /users` answers
    /// 200 with a `Location`, `POST /users` fails with a 401, `OPTIONS /files/` answers 204.
    async fn call(config: &CorsConfig, req: TestRequest) -> (StatusCode, HeaderMap) {
        let app = init_service(
            App::new()
                .wrap(config.cors().unwrap())
                .route(
                    "/users",
                    web::get().to(|| async {
                        HttpResponse::Ok()
                            .insert_header((header::LOCATION, "/users/1"))
                            .finish()
                    }),
                )
                .route("/users", web::post().to(unauthorized))
                .route(
                    "/files/",
                    web::method(Method::OPTIONS)
                        .to(|| async { HttpResponse::NoContent().finish() }),
                ),
        )
        .await;
        let res = call_service(&app, req.to_request()).await;
        (res.status(), res.headers().clone())
    }

    fn preflight(path: &str, origin: &str, method: &str, headers: &str) -> TestRequest {
        TestRequest::default()
            .method(Method::OPTIONS)
            .uri(path)
            .insert_header((header::ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, method))
            .insert_header((header::ACCESS_CONTROL_REQUEST_HEADERS, headers))
    }

    fn get(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
        headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn listed(value: Option<&str>, name: &str) -> bool {
        value.is_some_and(|v| {
            v.split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(name))
        })
    }

    #[actix_web::test]
    async fn a_preflight_from_an_allowed_origin_gets_the_allowed_methods_and_headers() {
        let config = CorsConfig::parse(ALLOWED).unwrap();
        let req = preflight("/users", ALLOWED, "POST", "authorization, content-type");
        let (status, res) = call(&config, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            get(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(ALLOWED)
        );
        for method in ["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"] {
            assert!(
                listed(get(&res, header::ACCESS_CONTROL_ALLOW_METHODS), method),
                "{method}"
            );
        }
        assert!(listed(
            get(&res, header::ACCESS_CONTROL_ALLOW_HEADERS),
            "authorization"
        ));
        assert_eq!(get(&res, header::ACCESS_CONTROL_MAX_AGE), Some("86400"));
        assert_eq!(get(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        assert!(listed(get(&res, header::VARY), "origin"));
    }

    #[actix_web::test]
    async fn a_tus_preflight_is_answered_before_the_route() {
        let config = CorsConfig::parse(ALLOWED).unwrap();
        let req = preflight(
            "/files/",
            ALLOWED,
            "PATCH",
            "tus-resumable,upload-offset,upload-length,upload-metadata,upload-checksum,\
             upload-defer-length,upload-concat,content-type,x-http-method-override,\
             x-request-id,authorization",
        );
        let (status, res) = call(&config, req).await;
        assert_eq!(status, StatusCode::OK, "Cors answers, not the route's 204");
        assert_eq!(
            get(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(ALLOWED)
        );
        for name in [
            "tus-resumable",
            "upload-offset",
            "upload-checksum",
            "x-http-method-override",
        ] {
            assert!(
                listed(get(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), name),
                "{name}"
            );
        }
    }

    #[actix_web::test]
    async fn a_preflight_from_another_origin_gets_no_cors_headers() {
        let config = CorsConfig::parse(ALLOWED).unwrap();
        for origin in [
            "https://evil.example",
            "http://app.example.com",
            "https://app.example.com:8443",
            "null",
        ] {
            let (status, res) = call(
                &config,
                preflight("/users", origin, "POST", "authorization"),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{origin}");
            assert_eq!(
                get(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN),
                None,
                "{origin}"
            );
            assert_eq!(
                get(&res, header::ACCESS_CONTROL_ALLOW_METHODS),
                None,
                "{origin}"
            );
        }
    }

    #[actix_web::test]
    async fn a_preflight_for_a_header_not_allowed_is_refused() {
        let config = CorsConfig::parse(ALLOWED).unwrap();
        let (status, res) = call(
            &config,
            preflight("/users", ALLOWED, "POST", "x-secret-sauce"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(get(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), None);
        let (status, res) = call(&config, preflight("/users", ALLOWED, "PUT", "")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(get(&res, header::ACCESS_CONTROL_ALLOW_METHODS), None);
    }

    #[actix_web::test]
    async fn an_allowed_origin_reads_the_exposed_headers_of_an_answer() {
        let config = CorsConfig::parse(ALLOWED).unwrap();
        let req = TestRequest::get()
            .uri("/users")
            .insert_header((header::ORIGIN, ALLOWED));
        let (status, res) = call(&config, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            get(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(ALLOWED)
        );
        let exposed = get(&res, header::ACCESS_CONTROL_EXPOSE_HEADERS);
        for name in EXPOSE_HEADERS {
            assert!(listed(exposed, name), "{name} in {exposed:?}");
        }
    }

    #[actix_web::test]
    async fn an_error_answer_carries_the_cors_headers_too() {
        let config = CorsConfig::parse(ALLOWED).unwrap();
        let req = TestRequest::post()
            .uri("/users")
            .insert_header((header::ORIGIN, ALLOWED));
        let (status, res) = call(&config, req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            get(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(ALLOWED)
        );
        assert!(listed(
            get(&res, header::ACCESS_CONTROL_EXPOSE_HEADERS),
            "www-authenticate"
        ));
        assert!(res.contains_key(header::WWW_AUTHENTICATE));
    }

    #[actix_web::test]
    async fn another_origin_s_request_runs_but_gets_no_cors_headers() {
        let config = CorsConfig::parse(ALLOWED).unwrap();
        let req = TestRequest::get()
            .uri("/users")
            .insert_header((header::ORIGIN, "https://evil.example"));
        let (status, res) = call(&config, req).await;
        assert_eq!(status, StatusCode::OK);
        // actix-cors lists the exposed headers on every answer; without an allowed origin a
        // browser reads none of them.
        assert_eq!(get(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
        let req = TestRequest::get().uri("/users");
        let (status, res) = call(&config, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(get(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
    }

    #[actix_web::test]
    async fn star_answers_any_origin_with_star_and_never_with_credentials() {
        let config = CorsConfig::AnyOrigin;
        let req = preflight("/users", "https://anyone.example", "PATCH", "authorization");
        let (status, res) = call(&config, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(get(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(get(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        let req = TestRequest::get()
            .uri("/users")
            .insert_header((header::ORIGIN, "http://x.example"));
        let (status, res) = call(&config, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(get(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(get(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    }
}

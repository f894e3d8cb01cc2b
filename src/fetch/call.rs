//! Calling sources: one bounded GET per source (with at most one retry), and the two ways
//! of running several at once.
//!
//! awc's own timeout stops at the response head and it follows redirects and caps bodies
//! by default; here redirects are off, the whole call (connect, head, body) runs under one
//! timer, and the body is capped while it streams in.

use std::future::Future;
use std::time::{Duration, Instant};

use actix_web::http::header;

use crate::http::request_id::REQUEST_ID;
use awc::error::{ConnectError, PayloadError, SendRequestError};
use bytes::Bytes;
use futures::future::{join_all, try_join_all};

use super::{
    FanOut, FetchError, FetchErrorKind, Limits, Source, SourceFailure, SourceId, SourceResult,
    Upstreams,
};

/// Connections one client keeps open at most, across all sources. Requests are admitted
/// by the actor before they get here, so this only guards against a runaway.
const MAX_CONNECTIONS: usize = 1024;

/// The random pause before a retry, in milliseconds, so that retries from many requests
/// do not arrive at a recovering source all at once.
const RETRY_JITTER_MS: std::ops::RangeInclusive<u64> = 5..=50;

/// A retry is only worth starting with at least this much of the deadline left after its
/// pause.
const MIN_RETRY_WINDOW: Duration = Duration::from_millis(20);

/// An awc client for upstream calls: no redirects, no awc timeout (ours covers the body
/// too), TLS through rustls with the sources' roots. awc clients are `!Send`: build one on
/// each thread that calls.
pub fn build_client(upstreams: &Upstreams) -> awc::Client {
    let connector = awc::Connector::new()
        .rustls_0_23(upstreams.tls.clone())
        .timeout(upstreams.limits.timeout)
        .limit(MAX_CONNECTIONS);
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .disable_timeout()
        .finish()
}

/// Calls every source at once; each runs to its own end (success, failure, timeout or the
/// deadline). Results come in the order of the fan-out's sources.
pub async fn gather(
    client: &awc::Client,
    upstreams: &Upstreams,
    fan_out: &FanOut,
) -> Vec<SourceResult> {
    join_all(fan_out.sources.iter().map(|&id| async move {
        SourceResult {
            id,
            result: fetch(client, upstreams, id, fan_out).await,
        }
    }))
    .await
}

/// Calls every source at once; the first failure drops the calls still running (their
/// connections are closed, not awaited) and is returned. Bodies come in the order of the
/// fan-out's sources.
pub async fn all_or_nothing(
    client: &awc::Client,
    upstreams: &Upstreams,
    fan_out: &FanOut,
) -> Result<Vec<Bytes>, SourceFailure> {
    try_join_all(fan_out.sources.iter().map(|&id| async move {
        fetch(client, upstreams, id, fan_out)
            .await
            .map_err(|error| SourceFailure { id, error })
    }))
    .await
}

/// One source's validated JSON body, through its breaker, with at most one retry; its
/// statistics are updated unless the call is cancelled (dropped).
pub async fn fetch(
    client: &awc::Client,
    upstreams: &Upstreams,
    id: SourceId,
    fan_out: &FanOut,
) -> Result<Bytes, FetchError> {
    let deadline = fan_out.deadline;
    let Some(source) = upstreams.source(id) else {
        return Err(FetchError::new(
            FetchErrorKind::Unreachable,
            "no such source",
        ));
    };
    let started = Instant::now();
    let Some(permit) = source.breaker.admit(started) else {
        source.stats.record_circuit_open();
        return Err(FetchError::new(
            FetchErrorKind::CircuitOpen,
            "the source failed repeatedly; calls to it are paused for a cool-down",
        ));
    };
    let outcome = with_one_retry(deadline, || {
        bounded(
            &upstreams.limits,
            deadline,
            call(client, source, &upstreams.limits, &fan_out.request_id),
        )
    })
    .await;
    let now = Instant::now();
    match &outcome {
        Ok(_) => permit.succeeded(),
        Err(err) => {
            permit.failed(now);
            log::warn!(
                request_id = fan_out.request_id.as_str();
                "upstream {}: {}: {}",
                source.name,
                err.code,
                err.message,
            );
        }
    }
    source
        .stats
        .record(now - started, outcome.as_ref().err().map(|e| e.code));
    outcome
}

/// Runs `attempt`, and once more after a short random pause when it failed in a way a
/// second GET may cure (a connect error, a connection lost before the answer, a 5xx), if
/// the deadline leaves room.
async fn with_one_retry<Fut>(
    deadline: Instant,
    mut attempt: impl FnMut() -> Fut,
) -> Result<Bytes, FetchError>
where
    Fut: Future<Output = Result<Bytes, FetchError>>,
{
    let first = attempt().await;
    let Err(err) = &first else { return first };
    if !err.retry {
        return first;
    }
    let pause = Duration::from_millis(rand::random_range(RETRY_JITTER_MS));
    let left = deadline.saturating_duration_since(Instant::now());
    if left < pause + MIN_RETRY_WINDOW {
        return first;
    }
    actix_rt::time::sleep(pause).await;
    attempt().await
}

/// `call` under the per-source timeout or what is left of the deadline, whichever ends first.
async fn bounded(
    limits: &Limits,
    deadline: Instant,
    call: impl Future<Output = Result<Bytes, FetchError>>,
) -> Result<Bytes, FetchError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let by_deadline = left <= limits.timeout;
    let bound = if by_deadline { left } else { limits.timeout };
    actix_rt::time::timeout(bound, call)
        .await
        .unwrap_or_else(|_| {
            let message = if by_deadline {
                "no complete answer before the request's deadline".to_owned()
            } else {
                format!(
                    "no complete answer within {} ms",
                    limits.timeout.as_millis()
                )
            };
            Err(FetchError::new(FetchErrorKind::Timeout, message))
        })
}

/// One GET: a 2xx answer whose body, at most `max_bytes`, is valid UTF-8 JSON.
async fn call(
    client: &awc::Client,
    source: &Source,
    limits: &Limits,
    request_id: &str,
) -> Result<Bytes, FetchError> {
    let mut req = client
        .get(source.uri.clone())
        .insert_header((header::ACCEPT, "application/json"));
    if !request_id.is_empty() {
        req = req.insert_header((REQUEST_ID.clone(), request_id));
    }
    let mut res = req.send().await.map_err(send_error)?;
    let status = res.status();
    if !status.is_success() {
        // The unread body goes with the connection; a failing source gets no keep-alive.
        let mut err = FetchError::new(
            FetchErrorKind::Status,
            format!("the source answered {}", status.as_u16()),
        );
        err.retry = status.is_server_error();
        return Err(err);
    }
    // A body delimited by the source closing the connection is read to that close (troupe's
    // actix-http decoder fix, vendor/README.md), under the same cap and timer.
    let body = res
        .body()
        .limit(limits.max_bytes)
        .await
        .map_err(|e| payload_error(e, limits.max_bytes))?;
    check_json(&body)?;
    Ok(body)
}

/// Whether `body` is one JSON value in UTF-8 (what the merged answer can embed as is).
pub fn check_json(body: &[u8]) -> Result<(), FetchError> {
    let invalid = |why: String| FetchError::new(FetchErrorKind::InvalidJson, why);
    std::str::from_utf8(body).map_err(|_| invalid("the body is not UTF-8".into()))?;
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map(drop)
        .map_err(|e| invalid(format!("the body is not valid JSON: {e}")))
}

/// A client-fit description of a failed send; the full error goes to the log only.
fn send_error(err: SendRequestError) -> FetchError {
    let unreachable = |message: String| {
        let mut e = FetchError::new(FetchErrorKind::Unreachable, message);
        e.retry = true;
        e
    };
    log::debug!("upstream send failed: {err}");
    match err {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            FetchError::new(FetchErrorKind::Timeout, "connecting took too long")
        }
        // What rustls reports for a certificate it does not trust or a peer that is not TLS.
        SendRequestError::Connect(ConnectError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            // A certificate does not change between two tries: no retry.
            FetchError::new(FetchErrorKind::Unreachable, "the TLS handshake failed")
        }
        SendRequestError::Connect(ConnectError::Io(io)) => {
            unreachable(format!("could not connect: {}", io.kind()))
        }
        SendRequestError::Connect(ConnectError::Resolver(_) | ConnectError::NoRecords) => {
            unreachable("could not resolve the host".into())
        }
        // What awc reports when the peer closes the connection without answering.
        SendRequestError::Connect(ConnectError::Disconnected) => {
            unreachable("the connection closed before an answer came".into())
        }
        SendRequestError::Connect(ConnectError::SslIsNotSupported) => FetchError::new(
            FetchErrorKind::Unreachable,
            "https is not available in this build",
        ),
        SendRequestError::Connect(_) => unreachable("could not connect".into()),
        SendRequestError::Url(_) => {
            FetchError::new(FetchErrorKind::Unreachable, "the source's URL is unusable")
        }
        _ => unreachable("the connection failed before an answer came".into()),
    }
}

fn payload_error(err: PayloadError, max_bytes: usize) -> FetchError {
    match err {
        PayloadError::Overflow => FetchError::new(
            FetchErrorKind::TooLarge,
            format!("the body is over {max_bytes} bytes"),
        ),
        other => {
            log::debug!("upstream body failed: {other}");
            FetchError::new(
                FetchErrorKind::Unreachable,
                "the connection failed while the body was coming",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_json_takes_any_one_value_and_refuses_the_rest() {
        for ok in [&b"{\"a\":[1,2]}"[..], b" 42\n", b"\"x\"", b"null"] {
            check_json(ok).unwrap();
        }
        for bad in [&b""[..], b"{", b"{} {}", b"nope", b"\"\xff\""] {
            let err = check_json(bad).unwrap_err();
            assert_eq!(err.code, "upstream_invalid_json");
        }
    }
}

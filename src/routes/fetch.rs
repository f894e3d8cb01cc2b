//! `/aggregate` (gather) and `/parallel` (all or nothing): the handlers choose the sources
//! and shape the answer; the worker's `FetchActor` makes the calls.

use std::time::{Duration, Instant};

use actix::{Addr, Handler, Message};
use actix_web::http::header;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::actors::fetch::{cancellation, CallAllSources, Cancellation, FetchActor, GatherSources};
use crate::actors::supervise::ask;
use crate::actors::Actors;
use crate::error::AppError;
use crate::fetch::merge::{aggregate_body, error_json, results_body};
use crate::fetch::{FanOut, FetchErrorKind};
use crate::middleware::RequestId;

/// Set on every 200 from `/aggregate`: `false` when some sources failed (see `_errors`).
pub const COMPLETE_HEADER: &str = "x-aggregate-complete";

/// How much longer than the fan-out's own deadline a handler waits for the actor.
const ACTOR_MARGIN: Duration = Duration::from_millis(1000);

/// `?sources=a,b`: which configured sources to call (default: all).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesQuery {
    sources: Option<String>,
}

/// `GET /aggregate`: every source runs to its end; 200 `{name: json}` with
/// `x-aggregate-complete: false` and `_errors` when some failed; 502 (504 when all timed
/// out) when every one failed.
pub async fn aggregate(
    req: HttpRequest,
    actors: web::Data<Actors>,
    fetch: web::Data<Addr<FetchActor>>,
    query: web::Query<SourcesQuery>,
) -> Result<HttpResponse, AppError> {
    let results = send(&req, &actors, &fetch, &query, |fan_out, cancel| {
        GatherSources { fan_out, cancel }
    })
    .await?;
    let failures: Vec<_> = results
        .iter()
        .filter_map(|r| r.result.as_ref().err().map(|e| (r.id, e)))
        .collect();
    if !results.is_empty() && failures.len() == results.len() {
        let all_timed_out = failures
            .iter()
            .all(|(_, e)| e.kind() == FetchErrorKind::Timeout);
        let errors = failures
            .iter()
            .map(|(id, e)| (actors.upstreams.name(*id).to_owned(), error_json(e)))
            .collect();
        let message = "every source failed".to_owned();
        return Ok(upstream_failure(&req, all_timed_out, message, errors, None));
    }
    let complete = if failures.is_empty() { "true" } else { "false" };
    Ok(HttpResponse::Ok()
        .insert_header(header::ContentType::json())
        .insert_header((COMPLETE_HEADER, complete))
        .body(aggregate_body(&actors.upstreams, &results)))
}

/// `GET /parallel`: 200 `{"results": [json, ...]}` when every source answered; the first
/// failure cancels the other calls and answers 502 (504 for a timeout) naming the source.
pub async fn parallel(
    req: HttpRequest,
    actors: web::Data<Actors>,
    fetch: web::Data<Addr<FetchActor>>,
    query: web::Query<SourcesQuery>,
) -> Result<HttpResponse, AppError> {
    let answer = send(&req, &actors, &fetch, &query, |fan_out, cancel| {
        CallAllSources { fan_out, cancel }
    })
    .await?;
    match answer {
        Ok(bodies) => Ok(HttpResponse::Ok()
            .insert_header(header::ContentType::json())
            .body(results_body(&bodies))),
        Err(failure) => {
            let name = actors.upstreams.name(failure.id);
            let timed_out = failure.error.kind() == FetchErrorKind::Timeout;
            let message = format!("source {name:?} failed: {}", failure.error.message);
            let errors = [(name.to_owned(), error_json(&failure.error))]
                .into_iter()
                .collect();
            Ok(upstream_failure(
                &req,
                timed_out,
                message,
                errors,
                Some(name),
            ))
        }
    }
}

/// Sends the request's fan-out, in the message `make` builds, to this worker's
/// `FetchActor` and awaits the answer. The calls are cancelled when this future is dropped
/// (the client went away).
async fn send<M, T>(
    req: &HttpRequest,
    actors: &Actors,
    fetch: &Addr<FetchActor>,
    query: &SourcesQuery,
    make: impl FnOnce(FanOut, Cancellation) -> M,
) -> Result<T, AppError>
where
    FetchActor: Handler<M>,
    M: Message<Result = Result<T, AppError>> + Send + 'static,
    T: Send + 'static,
{
    let (fan_out, wait) = fan_out(req, actors, query)?;
    let (_cancel_on_drop, cancel) = cancellation();
    ask(fetch, make(fan_out, cancel), wait).await
}

/// The request's fan-out (its sources, deadline and id), and how long to wait for the
/// actor's answer.
fn fan_out(
    req: &HttpRequest,
    actors: &Actors,
    query: &SourcesQuery,
) -> Result<(FanOut, Duration), AppError> {
    let sources = actors
        .upstreams
        .select(query.sources.as_deref())
        .map_err(|field| AppError::Validation(vec![field]))?;
    let limit = actors.upstreams.limits.deadline;
    let fan_out = FanOut {
        sources,
        deadline: Instant::now() + limit,
        request_id: request_id(req),
    };
    Ok((fan_out, limit + ACTOR_MARGIN))
}

fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .and_then(|id| id.0.to_str().ok().map(str::to_owned))
        .unwrap_or_default()
}

/// API.md's error body (502 `upstream_error`, or 504 `upstream_timeout`) with each failed
/// source's own error under `sources`, and the one that ended a `/parallel` under `source`.
fn upstream_failure(
    req: &HttpRequest,
    timed_out: bool,
    message: String,
    sources: serde_json::Map<String, serde_json::Value>,
    source: Option<&str>,
) -> HttpResponse {
    let err = if timed_out {
        AppError::UpstreamTimeout(message)
    } else {
        AppError::Upstream(message)
    };
    let mut body = err.body(&request_id(req));
    if let Some(name) = source {
        body["error"]["source"] = name.into();
    }
    body["error"]["sources"] = serde_json::Value::Object(sources);
    HttpResponse::build(err.status())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

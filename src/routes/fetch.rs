//! `/aggregate` (gather) and `/parallel` (all or nothing): the handlers choose the sources
//! and shape the answer; the worker's `Fetch` handle makes the calls.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::actors::fetch::Fetch;
use crate::error::{AppError, ShapedError};
use crate::fetch::merge::{aggregate_body, error_json, results_body};
use crate::fetch::{FetchErrorKind, SourceId};
use crate::http::request_id::RequestId;
use crate::services::Services;

/// Set on every 200 from `/aggregate`: `false` when some sources failed (see `_errors`).
pub const COMPLETE_HEADER: &str = "x-aggregate-complete";

/// `?sources=a,b`: which configured sources to call (default: all); other parameters are
/// ignored.
#[derive(Debug, Deserialize)]
pub struct SourcesQuery {
    sources: Option<String>,
}

/// `GET /aggregate`: every source runs to its end; 200 `{name: json}` with
/// `x-aggregate-complete: false` and `_errors` when some failed; 502 (504 when all timed
/// out) when every one failed.
pub async fn aggregate(
    req: HttpRequest,
    services: web::Data<Services>,
    query: web::Query<SourcesQuery>,
) -> Result<HttpResponse, AppError> {
    let fetch = &services.fetch;
    let sources = select(fetch, &query)?;
    let results = fetch.gather(sources, RequestId::of(&req)).await?;
    let upstreams = fetch.upstreams();
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
            .map(|(id, e)| (upstreams.name(*id).to_owned(), error_json(e)))
            .collect();
        let message = "every source failed".to_owned();
        return Ok(upstream_failure(&req, all_timed_out, message, errors, None));
    }
    let complete = if failures.is_empty() { "true" } else { "false" };
    Ok(HttpResponse::Ok()
        .insert_header(header::ContentType::json())
        .insert_header((COMPLETE_HEADER, complete))
        .body(aggregate_body(upstreams, &results)))
}

/// `GET /parallel`: 200 `{"results": [json, ...]}` when every source answered; the first
/// failure cancels the other calls and answers 502 (504 for a timeout) naming the source.
pub async fn parallel(
    req: HttpRequest,
    services: web::Data<Services>,
    query: web::Query<SourcesQuery>,
) -> Result<HttpResponse, AppError> {
    let fetch = &services.fetch;
    let sources = select(fetch, &query)?;
    match fetch.all_or_nothing(sources, RequestId::of(&req)).await? {
        Ok(bodies) => Ok(HttpResponse::Ok()
            .insert_header(header::ContentType::json())
            .body(results_body(&bodies))),
        Err(failure) => {
            let name = fetch.upstreams().name(failure.id);
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

/// The sources `?sources=` names (all when absent); an unknown one is 422.
fn select(fetch: &Fetch, query: &SourcesQuery) -> Result<Vec<SourceId>, AppError> {
    fetch
        .upstreams()
        .select(query.sources.as_deref())
        .map_err(|field| AppError::Validation(vec![field]))
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
    let mut body = err.body(&RequestId::of(req));
    if let Some(name) = source {
        body["error"]["source"] = name.into();
    }
    body["error"]["sources"] = serde_json::Value::Object(sources);
    let mut res = HttpResponse::build(err.status())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body);
    ShapedError::attach(err, &mut res);
    res
}

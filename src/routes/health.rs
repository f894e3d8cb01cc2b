//! `/ping` (seed), `/healthz` (liveness) and `/readyz` (readiness).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::{AppError, ShapedError, RETRY_AFTER_SECS};
use crate::openapi::{Health, Pong, Readiness};
use crate::services::Services;

/// How long `/readyz` waits for each component.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// The seed's ping.
#[utoipa::path(
    get,
    path = "/ping",
    tag = "probes",
    operation_id = "ping",
    responses((status = 200, description = "Always", body = Pong))
)]
pub async fn ping() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"message":"pong"}"#)
}

/// Liveness: 200 while the process serves.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "probes",
    operation_id = "healthz",
    responses((status = 200, description = "The process serves", body = Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: 200 when the database and the upload storage answer and every actor is alive,
/// else 503; the body gives each component's state. While troupe shuts down, 503 `draining` at once.
/// Upstream sources are listed (breaker, latency) but never make it 503: readiness is about
/// this service, and an upstream's failures are answered per source.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready: the database and the upload storage answer, and every actor is alive", body = Readiness),
        (status = 503, description = "Not ready (a component is down), or `draining` once a shutdown has begun", body = Readiness),
    )
)]
pub async fn readyz(services: web::Data<Services>) -> HttpResponse {
    if services.lifecycle.is_shutting_down() {
        return draining();
    }
    let db_timeout = PROBE_TIMEOUT.min(services.db.timeout());
    let (db_actor, cpu_actor, fetch_actor, upload_actor, database, storage) = futures::join!(
        services.db.is_alive(PROBE_TIMEOUT),
        services.cpu.is_alive(PROBE_TIMEOUT),
        services.fetch.is_alive(PROBE_TIMEOUT),
        services.uploads.is_alive(PROBE_TIMEOUT),
        services.db.check(db_timeout),
        services.store.check(PROBE_TIMEOUT),
    );
    let state = |up: bool| if up { "up" } else { "down" };
    let database_state = match &database {
        Ok(()) => json!({"state": "up"}),
        Err(e) => json!({"state": "down", "code": e.code()}),
    };
    let backend = services.store.backend();
    let storage_state = match &storage {
        Ok(()) => json!({"state": "up", "backend": backend}),
        Err(e) => json!({"state": "down", "backend": backend, "code": e.code()}),
    };
    let ready =
        db_actor && cpu_actor && fetch_actor && upload_actor && database.is_ok() && storage.is_ok();
    let upstreams: serde_json::Map<_, _> = services
        .fetch
        .upstreams()
        .status()
        .into_iter()
        .map(|s| {
            let detail = json!({
                "breaker": s.breaker.as_str(),
                "consecutive_failures": s.consecutive_failures,
                "calls": s.stats.calls,
                "failures": s.stats.failures,
                "last_error": s.stats.last_error,
                "latency_ms": {"p50": s.stats.p50_ms, "p99": s.stats.p99_ms, "window": s.stats.window},
            });
            (s.name, detail)
        })
        .collect();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "components": {
            "database": database_state,
            "db_actor": {"state": state(db_actor)},
            "cpu_actor": {"state": state(cpu_actor), "threads": services.cpu.threads()},
            "fetch_actor": {"state": state(fetch_actor)},
            "upstreams": upstreams,
            "upload_actor": {"state": state(upload_actor)},
            "storage": storage_state,
        },
    });
    if ready {
        return HttpResponse::Ok().json(body);
    }
    let mut res = HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", RETRY_AFTER_SECS.to_string()))
        .json(body);
    let down: Vec<String> = [
        ("db_actor", db_actor),
        ("cpu_actor", cpu_actor),
        ("fetch_actor", fetch_actor),
        ("upload_actor", upload_actor),
    ]
    .into_iter()
    .filter(|(_, up)| !up)
    .map(|(name, _)| name.to_owned())
    .chain(
        database
            .as_ref()
            .err()
            .map(|e| format!("database ({})", e.cause())),
    )
    .chain(
        storage
            .as_ref()
            .err()
            .map(|e| format!("storage ({})", e.cause())),
    )
    .collect();
    let cause = format!("down: {}", down.join(", "));
    let err = if database.is_err() {
        AppError::database_unavailable("readiness", cause)
    } else if storage.is_err() {
        AppError::storage_unavailable("readiness", cause)
    } else {
        AppError::overloaded("readiness", cause)
    };
    ShapedError::attach(err, &mut res);
    res
}

/// `/readyz` once a shutdown has begun: 503 before any probe, so that a load balancer takes
/// this process out of rotation while it still serves. Not logged as a failure: the
/// shutdown logs itself.
fn draining() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", RETRY_AFTER_SECS.to_string()))
        .json(json!({"status": "draining", "code": "draining"}))
}

/// Test-only: makes an actor panic or block (`fault-injection` builds only).
#[cfg(feature = "fault-injection")]
pub async fn inject_fault(
    services: web::Data<Services>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, crate::error::AppError> {
    use crate::actors::supervise::Fault;
    use crate::error::AppError;
    let (actor, kind) = path.into_inner();
    if kind == "handler_panic" {
        panic!("injected panic in an HTTP handler");
    }
    let fault = Fault::named(&kind).ok_or_else(|| AppError::NotFound("no such fault".into()))?;
    match actor.as_str() {
        "db" => services.db.inject(fault).await?,
        "cpu" => services.cpu.inject(fault).await?,
        "upload" => services.uploads.inject(fault).await?,
        _ => return Err(AppError::NotFound("no such actor".into())),
    }
    Ok(HttpResponse::NoContent().finish())
}

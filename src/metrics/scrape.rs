//! `GET /metrics`: the states read now, then everything rendered in the Prometheus text
//! format.

use std::time::Duration;

use actix_web::{web, HttpResponse};

use super::*;
use crate::fetch::breaker::BreakerState;
use crate::services::Services;

/// How long a scrape waits for the database actor's pool figures; past it, the scrape is
/// answered with the figures of the last scrape that got them.
const POOL_WAIT: Duration = Duration::from_millis(500);

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric of this application, its states as they are now.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    operation_id = "metrics",
    security(("bearer" = ["metrics"])),
    responses(
        (status = 200, description = "Every metric of this process in the Prometheus text format \
            (version 0.0.4); `docs/API.md` lists them", content_type = "text/plain; version=0.0.4; charset=utf-8",
            body = String),
    )
)]
pub async fn scrape(services: web::Data<Services>) -> HttpResponse {
    let m = &services.metrics;
    m.gauge(HTTP_IN_FLIGHT, &[])
        .set(services.lifecycle.in_flight() as f64);
    m.gauge(UPLOADS_STREAMING, &[])
        .set(services.uploads.active() as f64);
    let cpu = &services.cpu;
    m.gauge(CPU_THREADS, &[]).set(cpu.threads() as f64);
    m.gauge(CPU_JOBS, &[]).set(cpu.jobs() as f64);
    m.gauge(CPU_WAITING, &[]).set(cpu.waiting() as f64);
    if let Ok(pool) = services.db.pool_stats(POOL_WAIT).await {
        m.gauge(DB_CONNECTIONS, &[]).set(pool.connections);
        m.gauge(DB_IDLE, &[]).set(pool.idle);
        m.gauge(DB_MAX, &[]).set(pool.max);
        m.gauge(DB_WAITING, &[]).set(pool.waiting as f64);
        m.counter(DB_WAITS, &[]).absolute(pool.waited);
        m.counter(DB_WAIT_TIMEOUTS, &[])
            .absolute(pool.wait_timeouts);
        m.counter(DB_OPENED, &[]).absolute(pool.opened);
    }
    for source in services.fetch.upstreams().status() {
        let name = source.name.as_str();
        for state in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            let on = if source.breaker == state { 1.0 } else { 0.0 };
            m.gauge(
                UPSTREAM_BREAKER,
                &[("source", name), ("state", state.as_str())],
            )
            .set(on);
        }
        m.gauge(UPSTREAM_FAILURES_IN_A_ROW, &[("source", name)])
            .set(source.consecutive_failures);
    }
    if let Some(bytes) = process::resident_bytes() {
        m.gauge(PROCESS_RSS, &[]).set(bytes as f64);
    }
    if let Some(fds) = process::open_fds() {
        m.gauge(PROCESS_FDS, &[]).set(fds as f64);
    }
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(m.render())
}

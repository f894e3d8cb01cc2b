//! `/openapi.json` (the API's OpenAPI 3.1 document, `crate::openapi`) and `/docs` (Swagger
//! UI, every file of it built into the binary: nothing is fetched from elsewhere, not even
//! the spec validator's badge). Both are public.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::error::AppError;
use crate::openapi::{Binary, ErrorBody, Served};
use crate::services::Services;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Whether keys are configured, for the document (set by `routes::configure`).
#[derive(Debug, Clone, Copy)]
pub struct KeysConfigured(pub bool);

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    operation_id = "openapi_json",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json(
    services: web::Data<Services>,
    keys: web::Data<KeysConfigured>,
) -> HttpResponse {
    let sources = services
        .fetch
        .upstreams()
        .status()
        .into_iter()
        .map(|s| s.name)
        .collect();
    let doc = crate::openapi::document(&Served {
        keys: keys.0,
        max_upload_bytes: services.limits.max_upload_bytes,
        sources,
    });
    HttpResponse::Ok().json(doc)
}

/// `GET /docs`: the UI lives at `/docs/` (its files are named relative to it).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    operation_id = "docs",
    responses((status = 308, description = "To `/docs/`, the Swagger UI",
        headers(("Location" = String, description = "`/docs/`"))))
)]
pub async fn docs_root() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

/// `GET /docs/{file}`: Swagger UI's files; `/docs/` is its page.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "docs",
    operation_id = "docs_file",
    params(("file" = String, Path, description = "A file of the UI (empty: its page, `index.html`)")),
    responses(
        (status = 200, description = "The file", content_type = "*/*", body = Binary),
        (status = 404, description = "`not_found`: no such file", body = ErrorBody),
    )
)]
pub async fn docs_file(file: web::Path<String>) -> Result<HttpResponse, AppError> {
    let config = Arc::new(
        utoipa_swagger_ui::Config::new([OPENAPI_PATH])
            // Its default asks validator.swagger.io about the document.
            .validator_url("none")
            .persist_authorization(true),
    );
    let found = utoipa_swagger_ui::serve(&file, config)
        .map_err(|e| AppError::internal("serving a Swagger UI file", e))?;
    let Some(found) = found else {
        return Err(AppError::NotFound("no such file".into()));
    };
    Ok(HttpResponse::Ok()
        .content_type(found.content_type)
        .body(found.bytes.into_owned()))
}

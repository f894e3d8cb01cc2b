//! Every route troupe serves, listed in one place, and the extractor settings they share.

pub mod fetch;
pub mod health;
pub mod tus;
pub mod uploads;
pub mod users;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::Method;
use actix_web::middleware::Compress;
use actix_web::{web, HttpRequest};

use crate::error::AppError;

/// Rows shown as a JSON array of their answers `A`, each built as it is written.
pub struct Each<'a, T, A>(&'a [T], std::marker::PhantomData<fn() -> A>);

impl<'a, T, A> Each<'a, T, A> {
    /// The answers to `rows`.
    pub fn new(rows: &'a [T]) -> Self {
        Self(rows, std::marker::PhantomData)
    }
}

impl<'a, T, A> serde::Serialize for Each<'a, T, A>
where
    A: From<&'a T> + serde::Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(A::from))
    }
}

/// Largest JSON body the JSON routes take.
pub const JSON_LIMIT_BYTES: usize = 64 * 1024;

/// Registers every route, the extractor error handlers and the JSON 404 for the rest.
/// Only the routes whose answers grow with the data (lists, fan-out) negotiate compression:
/// on every other route it would cost each request a content-type parse and a body wrapper
/// for nothing (`/ping`, small objects, file bytes that are streamed as they are).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(path_error))
        .route("/ping", web::get().to(health::ping))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(
            web::resource("/users")
                .wrap(Compress::default())
                .route(web::get().to(users::list))
                .route(web::post().to(users::create)),
        )
        .service(
            web::resource("/users/{id}")
                .route(web::get().to(users::get))
                .route(web::patch().to(users::update))
                .route(web::delete().to(users::delete)),
        )
        .service(
            web::resource("/aggregate")
                .wrap(Compress::default())
                .route(web::get().to(fetch::aggregate)),
        )
        .service(
            web::resource("/parallel")
                .wrap(Compress::default())
                .route(web::get().to(fetch::parallel)),
        )
        .route("/upload", web::post().to(uploads::create))
        .service(
            web::resource("/uploads")
                .wrap(Compress::default())
                .route(web::get().to(uploads::list)),
        )
        .service(
            web::resource("/uploads/{id}")
                .route(web::get().to(uploads::get))
                .route(web::delete().to(uploads::delete)),
        )
        .route("/uploads/{id}/content", web::get().to(uploads::content))
        .service(
            web::scope("/files")
                .wrap(actix_web::middleware::from_fn(tus::protocol))
                .route("", web::post().to(tus::create))
                .route("/", web::post().to(tus::create))
                .route("", web::method(Method::OPTIONS).to(tus::options))
                .route("/", web::method(Method::OPTIONS).to(tus::options))
                .service(
                    web::resource("/{id}")
                        .route(web::head().to(tus::head))
                        .route(web::patch().to(tus::patch))
                        .route(web::delete().to(tus::terminate))
                        .route(web::method(Method::OPTIONS).to(tus::options)),
                ),
        );
    #[cfg(feature = "fault-injection")]
    cfg.route(
        "/_test/fault/{actor}/{kind}",
        web::post().to(health::inject_fault),
    );
    cfg.default_service(web::to(not_found));
}

async fn not_found() -> Result<actix_web::HttpResponse, AppError> {
    Err(AppError::NotFound("no such route".into()))
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(JSON_LIMIT_BYTES)
        .error_handler(|err, _req: &HttpRequest| json_error(err).into())
}

/// Malformed JSON is 400; well-formed JSON of the wrong shape (missing or unknown field,
/// wrong type) is 422; an oversize body is 413; a non-JSON content type is 415.
fn json_error(err: JsonPayloadError) -> AppError {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            AppError::PayloadTooLarge(format!("the JSON body is over {JSON_LIMIT_BYTES} bytes"))
        }
        JsonPayloadError::ContentType => {
            AppError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => AppError::invalid("body", e.to_string()),
        JsonPayloadError::Deserialize(e) => AppError::BadRequest(format!("malformed JSON: {e}")),
        _ => AppError::BadRequest("the request body could not be read".into()),
    }
}

fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let QueryPayloadError::Deserialize(e) = err else {
        return AppError::BadRequest("malformed query string".into()).into();
    };
    AppError::BadRequest(format!("malformed query string: {e}")).into()
}

fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    let PathError::Deserialize(e) = err else {
        return AppError::BadRequest("malformed path".into()).into();
    };
    AppError::BadRequest(format!("malformed path: {e}")).into()
}

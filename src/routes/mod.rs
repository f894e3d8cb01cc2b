//! Every route troupe serves, listed in one place, and the extractor settings they share.

pub mod docs;
pub mod fetch;
pub mod health;
pub mod tus;
pub mod uploads;
pub mod users;

use actix_web::body::MessageBody;
use actix_web::dev::{fn_service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::Method;
use actix_web::middleware::Compress;
use actix_web::{guard, web, FromRequest, Handler, HttpRequest, Resource, Responder};

use crate::auth::Scope;
use crate::error::AppError;
use crate::http::auth::{Guard, Needs};

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

/// Registers every route, the extractor error handlers and the JSON 404 for the rest;
/// with `guard` (keys configured), each protected route behind the scope it needs
/// (`http::auth`): users `users:read` (GET, HEAD) and `users:write`; uploads `uploads:read`
/// and `uploads:write`; every tus request `uploads:write`; the fan-out `fetch`; `/metrics`
/// `metrics`.
/// Every path is one resource holding all its methods, so that a method it lacks gets
/// actix-web's 405 with `Allow` (rendered as the JSON error by the request context), and
/// every GET route answers HEAD too: the same handler runs, and the server sends its
/// status and headers without the body. A GET request matches its resource's first route,
/// so neither costs it anything.
/// Only the routes whose answers grow with the data (lists, fan-out) negotiate compression:
/// on every other route it would cost each request a content-type parse and a body wrapper
/// for nothing (`/ping`, small objects, file bytes that are streamed as they are).
pub fn configure(cfg: &mut web::ServiceConfig, guard: Option<&Guard>) {
    use Scope::{Fetch, Metrics, UploadsRead, UploadsWrite, UsersRead, UsersWrite};
    let users = Needs::split(UsersRead, UsersWrite);
    let uploads = Needs::split(UploadsRead, UploadsWrite);
    cfg.app_data(json_config())
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(path_error))
        // Public: no key asked for.
        .service(get_and_head("/ping", health::ping))
        .service(get_and_head("/healthz", health::healthz))
        .service(get_and_head("/readyz", health::readyz))
        .app_data(web::Data::new(docs::KeysConfigured(
            guard.is_some_and(Guard::has_keys),
        )));
    protect(
        cfg,
        guard,
        users,
        get_and_head("/users", users::list)
            .wrap(Compress::default())
            .route(web::post().to(users::create)),
    );
    protect(
        cfg,
        guard,
        users,
        get_and_head("/users/{id}", users::get)
            .route(web::patch().to(users::update))
            .route(web::delete().to(users::delete)),
    );
    protect(
        cfg,
        guard,
        Needs::all(Fetch),
        get_and_head("/aggregate", fetch::aggregate).wrap(Compress::default()),
    );
    protect(
        cfg,
        guard,
        Needs::all(Fetch),
        get_and_head("/parallel", fetch::parallel).wrap(Compress::default()),
    );
    protect(
        cfg,
        guard,
        uploads,
        web::resource("/upload").route(web::post().to(uploads::create)),
    );
    protect(
        cfg,
        guard,
        uploads,
        get_and_head("/uploads", uploads::list).wrap(Compress::default()),
    );
    protect(
        cfg,
        guard,
        uploads,
        get_and_head("/uploads/{id}", uploads::get).route(web::delete().to(uploads::delete)),
    );
    protect(
        cfg,
        guard,
        uploads,
        web::resource("/uploads/{id}/content").route(
            web::route()
                .guard(guard::Any(guard::Get()).or(guard::Head()))
                .service(fn_service(uploads::content)),
        ),
    );
    let files = web::scope("/files")
        .wrap(actix_web::middleware::from_fn(tus::protocol))
        .service(
            web::resource(["", "/"])
                .route(web::post().to(tus::create))
                .route(web::method(Method::OPTIONS).to(tus::options)),
        )
        .service(
            web::resource("/{id}")
                .route(web::head().to(tus::head))
                .route(web::patch().to(tus::patch))
                .route(web::delete().to(tus::terminate))
                .route(web::method(Method::OPTIONS).to(tus::options)),
        );
    // Every tus request, HEAD included, writes or may lead to writing.
    match guard {
        Some(keys) => cfg.service(files.wrap(keys.require(Needs::all(UploadsWrite)))),
        None => cfg.service(files),
    };
    protect(
        cfg,
        guard,
        Needs::all(Metrics),
        get_and_head("/metrics", crate::metrics::scrape).wrap(Compress::default()),
    );
    // The document and its UI, public, after the API: a request is matched against the
    // resources in the order they are registered, so these (`/docs/{file:.*}` is a regex)
    // cost the API's requests nothing.
    cfg.service(get_and_head(docs::OPENAPI_PATH, docs::openapi_json))
        .service(get_and_head("/docs", docs::docs_root))
        .service(get_and_head("/docs/{file:.*}", docs::docs_file));
    // Test builds only; with keys set, only `admin` may break an actor.
    #[cfg(feature = "fault-injection")]
    protect(
        cfg,
        guard,
        Needs::all(Scope::Admin),
        web::resource("/_test/fault/{actor}/{kind}").route(web::post().to(health::inject_fault)),
    );
    cfg.default_service(web::to(not_found));
}

/// Registers `resource`, behind `needs` when keys are configured; as it is in open mode, so
/// that there the check costs nothing.
fn protect<T, B>(
    cfg: &mut web::ServiceConfig,
    guard: Option<&Guard>,
    needs: Needs,
    resource: Resource<T>,
) where
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    match guard {
        Some(keys) => cfg.service(resource.wrap(keys.require(needs))),
        None => cfg.service(resource),
    };
}

/// A resource at `path` whose `handler` answers GET and HEAD.
fn get_and_head<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args> + Clone,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
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
        // A body that stalled past `TROUPE_BODY_TIMEOUT_MS` (408) or broke off (400).
        JsonPayloadError::Payload(e) => e.into(),
        _ => AppError::BadRequest("the request body could not be read".into()),
    }
}

/// Query parameters whose parse error names the parameter (`limit: invalid digit found in
/// string`): serde_urlencoded's own error does not say which one failed. Query structs take
/// no `deny_unknown_fields`: clients of the seed system send parameters troupe does not
/// know, and those are ignored.
pub mod param {
    use serde::de::{Deserialize, Deserializer, Error};

    /// `limit=N`.
    pub fn limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        integer("limit", d)
    }

    /// `after=ID` where ids are integers.
    pub fn after<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        integer("after", d)
    }

    fn integer<'de, D: Deserializer<'de>>(name: &str, d: D) -> Result<Option<i64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|raw| {
                raw.parse()
                    .map_err(|e| D::Error::custom(format_args!("{name}: {e}")))
            })
            .transpose()
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

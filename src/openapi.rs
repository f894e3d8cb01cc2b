//! The OpenAPI 3.1 document of troupe's API, served at `/openapi.json` (and read by the
//! Swagger UI at `/docs`).
//!
//! It is generated from the code: each handler carries a `#[utoipa::path]` annotation (its
//! path, parameters, body, answers and scope), each answer type derives `ToSchema`, and
//! [`ApiDoc`] lists the handlers. utoipa documents only; the handlers answer as they always
//! have (`AppError` stays the error type). What every operation shares is added here, once,
//! by [`document`]: the answers of the access check (401, 403, 429), the 500 every route can
//! give, `X-Request-Id` on every answer, `Retry-After` on every 503 and 429, the HEAD twin of
//! every GET route (the router gives each GET route a HEAD), and the tus routes' aliases.
//!
//! The document describes the server that serves it: with keys configured every protected
//! operation names its scope under the `bearer` scheme; in open mode no operation asks for a
//! key (troupe serves them all without one) and none answers 401 or 403. `Tus-Max-Size` and
//! the largest `Upload-Length` are the configured `TROUPE_MAX_UPLOAD_BYTES`.
//! `docs/openapi.json` is the document of a server with keys and the default limits.

use serde_json::{json, Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::error::CODES;
use crate::routes;

/// The security scheme's name in the document.
pub const BEARER: &str = "bearer";

/// Every operation troupe serves, and the schemas they share.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "troupe",
        description = "An HTTP microservice on actix actors: users, upstream fan-out, resumable \
            uploads (tus 1.0). Every answer carries `X-Request-Id` (the client's own when it \
            sent a sane one). Every error, from any layer, is `{\"error\": {\"code\", \"message\", \
            \"request_id\"}}` with a stable `code`. A method a path does not serve is 405 with \
            `Allow`; an unknown path is 404. Unknown JSON body fields are 422.",
        license(name = "MIT")
    ),
    paths(
        routes::health::ping,
        routes::health::healthz,
        routes::health::readyz,
        routes::users::list,
        routes::users::create,
        routes::users::get,
        routes::users::update,
        routes::users::delete,
        routes::fetch::aggregate,
        routes::fetch::parallel,
        routes::uploads::create,
        routes::uploads::list,
        routes::uploads::get,
        routes::uploads::content,
        routes::uploads::delete,
        routes::tus::options,
        routes::tus::create,
        routes::tus::head,
        routes::tus::patch,
        routes::tus::terminate,
        routes::docs::openapi_json,
        routes::docs::docs_root,
        routes::docs::docs_file,
        crate::metrics::scrape::scrape,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode, FieldErrorDoc, UpstreamErrorBody)),
    modifiers(&BearerScheme),
    tags(
        (name = "probes", description = "Liveness and readiness; no key needed"),
        (name = "users", description = "Users in the database"),
        (name = "fetch", description = "Fan-out to the configured upstream sources"),
        (name = "uploads", description = "Files uploaded with `POST /upload` or tus"),
        (name = "tus", description = "tus 1.0 resumable uploads: creation, creation-with-upload, termination, checksum, expiration"),
        (name = "docs", description = "This document and its Swagger UI; no key needed"),
        (name = "metrics", description = "Prometheus metrics of this process"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` scheme: `Authorization: Bearer KEY`, a key from `TROUPE_API_KEYS`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A key of `TROUPE_API_KEYS`; each operation names the scope it needs \
                         (`admin` holds every scope). No key or a wrong one: 401; a key \
                         without the scope: 403.",
                    ))
                    .build(),
            ),
        );
    }
}

/// What the document depends on in the server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Whether keys are configured (`TROUPE_API_KEYS`): operations then name their scopes.
    pub keys: bool,
    /// `TROUPE_MAX_UPLOAD_BYTES`: `Tus-Max-Size`, the largest `Upload-Length`.
    pub max_upload_bytes: u64,
    /// The names of the fan-out's sources (`TROUPE_UPSTREAMS`), what `?sources=` may list.
    pub sources: Vec<String>,
}

/// The document a server configured as `served` serves, as JSON.
pub fn document(served: &Served) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    if let Some(form) = doc.pointer_mut("/components/schemas/UploadForm") {
        // Other fields are read and dropped: at most 16 parts in all, each plain field up to
        // 64 KiB (else 413), named by text a part header can carry (no control character;
        // `"` and `\` would need quoting).
        form["additionalProperties"] =
            json!({ "description": "Read and dropped, as text; at most 64 KiB each (else 413)" });
        form["maxProperties"] = json!(routes::uploads::MAX_PARTS);
        form["propertyNames"] = json!({ "pattern": "^[^\\x00-\\x1f\\x7f\"\\\\]*$" });
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        add_tus_aliases(paths);
        add_head_twins(paths);
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in item.values_mut().filter_map(Value::as_object_mut) {
                complete_operation(op, served);
            }
        }
    }
    doc
}

/// What every operation shares, added to `op`.
fn complete_operation(op: &mut Map<String, Value>, served: &Served) {
    let protected = op.contains_key("security");
    if !served.keys {
        op.remove("security");
    }
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for param in params.iter_mut() {
            finish_parameter(param, served);
        }
    }
    let has_body = op.contains_key("requestBody");
    let head = op
        .get("operationId")
        .and_then(Value::as_str)
        .is_some_and(|id| id.starts_with("head_") || id == "tus_head");
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else { return };
    let mut shared = vec![(
        "500",
        "`internal`: a bug or a failing disk (the cause is in the log, never here)",
    )];
    if protected {
        shared.push((
            "429",
            "`rate_limited`: over `TROUPE_RATE_LIMIT`; retry after `Retry-After` seconds",
        ));
        if served.keys {
            shared.push(("401", "`unauthorized`: no key, or one that is not valid"));
            shared.push((
                "403",
                "`forbidden`: the key lacks the scope this operation needs (the message names it)",
            ));
        }
    }
    if has_body {
        shared.push((
            "408",
            "`request_timeout`: the body sent no byte for `TROUPE_BODY_TIMEOUT_MS`",
        ));
    }
    for (status, description) in shared {
        responses.entry(status).or_insert_with(|| {
            let mut res = json!({ "description": description });
            if !head {
                res["content"] = error_content();
            }
            res
        });
    }
    for (status, res) in responses.iter_mut() {
        if let Some(res) = res.as_object_mut() {
            finish_response(status, res);
        }
    }
}

/// The JSON error body of an error answer.
fn error_content() -> Value {
    json!({ "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } })
}

/// A parameter as the wire carries it: never `null` (a header or a query value is a string
/// or absent); a number in a header as the digits it is sent as (size headers up to the
/// configured maximum); `Upload-Metadata`'s keys unique; `sources` a list of the configured
/// names.
fn finish_parameter(param: &mut Value, served: &Served) {
    let name = param
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let in_header = param.get("in").and_then(Value::as_str) == Some("header");
    if name == "sources" {
        param["style"] = json!("form");
        param["explode"] = json!(false);
        let items = if served.sources.is_empty() {
            json!({ "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$",
                    "description": "No source is configured: any name is 422" })
        } else {
            json!({ "type": "string", "enum": served.sources })
        };
        param["schema"] =
            json!({ "type": "array", "items": items, "minItems": 1, "uniqueItems": true });
        return;
    }
    let Some(schema) = param.get_mut("schema").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            schema.insert("type".into(), only);
        }
    }
    if matches!(name.as_str(), "Upload-Length" | "Upload-Offset") {
        schema.insert("maximum".into(), json!(served.max_upload_bytes));
    }
    if in_header && schema.get("type").and_then(Value::as_str) == Some("integer") {
        let pattern = schema
            .get("maximum")
            .and_then(Value::as_u64)
            .map_or_else(|| "^[0-9]+$".to_owned(), digits_up_to);
        schema.clear();
        schema.insert("type".into(), json!("string"));
        schema.insert("pattern".into(), json!(pattern));
    }
    if name == "Upload-Metadata" {
        schema.insert("not".into(), json!({ "pattern": METADATA_REPEATED_KEY }));
    }
}

/// A pattern for the decimal numbers from 0 to `max` (leading zeros allowed up to `max`'s
/// number of digits).
pub fn digits_up_to(max: u64) -> String {
    let digits = max.to_string();
    let len = digits.len();
    let mut alternatives = Vec::new();
    if len > 1 {
        alternatives.push(format!("[0-9]{{1,{}}}", len - 1));
    }
    for (i, d) in digits.bytes().map(|b| b - b'0').enumerate() {
        if d == 0 {
            continue;
        }
        let lower = if d == 1 {
            "0".to_owned()
        } else {
            format!("[0-{}]", d - 1)
        };
        let rest = len - i - 1;
        let tail = if rest > 0 {
            format!("[0-9]{{{rest}}}")
        } else {
            String::new()
        };
        alternatives.push(format!("{}{lower}{tail}", &digits[..i]));
    }
    alternatives.push(digits);
    format!("^(?:{})$", alternatives.join("|"))
}

/// `X-Request-Id` on every answer; `Retry-After` on 503 and 429; `WWW-Authenticate` on 401.
fn finish_response(status: &str, res: &mut Map<String, Value>) {
    let headers = res
        .entry("headers")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(headers) = headers else { return };
    let header = |description: &str| json!({ "description": description, "required": true, "schema": { "type": "string" } });
    headers.insert(
        "X-Request-Id".into(),
        header("The request's id: the client's own when it sent a sane one"),
    );
    for header in headers.values_mut() {
        // A header is text: a number in one is its digits.
        if header.pointer("/schema/type").and_then(Value::as_str) == Some("integer") {
            header["schema"] = json!({ "type": "string", "pattern": "^[0-9]+$" });
        }
    }
    if status == "503" || status == "429" {
        headers.insert(
            "Retry-After".into(),
            json!({
                "description": "Seconds to wait before retrying",
                "required": true,
                "schema": { "type": "string", "pattern": "^[1-9][0-9]*$" }
            }),
        );
    }
    if status == "401" {
        headers.insert(
            "WWW-Authenticate".into(),
            header("`Bearer realm=\"troupe\"`, with `error=\"invalid_token\"` for a wrong key"),
        );
    }
}

/// Every GET route answers HEAD too (`routes::configure`): the same answers, without bodies.
fn add_head_twins(paths: &mut Map<String, Value>) {
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        let Some(get) = item.get("get").cloned() else {
            continue;
        };
        if item.contains_key("head") {
            continue;
        }
        let mut head = get;
        if let Some(id) = head.get("operationId").and_then(Value::as_str) {
            head["operationId"] = json!(format!("head_{id}"));
        }
        if let Some(summary) = head.get("summary").and_then(Value::as_str) {
            head["summary"] = json!(format!("{summary} (headers only)"));
        }
        if let Some(responses) = head.get_mut("responses").and_then(Value::as_object_mut) {
            for res in responses.values_mut().filter_map(Value::as_object_mut) {
                res.remove("content");
            }
        }
        item.insert("head".into(), head);
    }
}

/// `/files` is `/files/` too, and `/files/{id}` answers `OPTIONS` as `/files/` does.
fn add_tus_aliases(paths: &mut Map<String, Value>) {
    let Some(root) = paths.get("/files/").cloned() else {
        return;
    };
    let renamed = |op: &Value, suffix: &str| {
        let mut op = op.clone();
        if let Some(id) = op.get("operationId").and_then(Value::as_str) {
            op["operationId"] = json!(format!("{id}{suffix}"));
        }
        op
    };
    if let Some(options) = root.get("options") {
        let mut options = renamed(options, "_upload");
        options["parameters"] = json!([{
            "name": "id",
            "in": "path",
            "required": true,
            "description": "An upload's id (any value: the answer is the same)",
            "schema": { "type": "string" }
        }]);
        if let Some(item) = paths.get_mut("/files/{id}").and_then(Value::as_object_mut) {
            item.insert("options".into(), options);
        }
    }
    let mut bare = Map::new();
    for (method, op) in root.as_object().into_iter().flatten() {
        let mut op = renamed(op, "_bare");
        op["description"] = json!("The same as at `/files/` (the path with its slash).");
        bare.insert(method.clone(), op);
    }
    paths.insert("/files".into(), Value::Object(bare));
}

/// An `Upload-Metadata` value with a key twice (`a YQ==,a`): refused, so not in the schema.
const METADATA_REPEATED_KEY: &str =
    r"(?:^|,)[ \t]*([^ \t,]+)(?:[ \t][^,]*)?,(?:.*,)?[ \t]*\1(?:[ \t,]|$)";

/// Canonical base64 (padded, no stray bits), as troupe decodes it.
const BASE64: &str =
    r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?";

/// `Upload-Metadata`'s schema: `key base64`, or a key alone, comma-separated (keys unique;
/// [`document`] adds that), at most 4096 bytes.
pub fn upload_metadata_schema() -> impl Into<RefOr<Schema>> {
    let item = format!(r"[!-+\--~]+(?: {BASE64})?");
    let pattern = format!(r"^[ \t]*(?:{item})?[ \t]*(?:,[ \t]*(?:{item})?[ \t]*)*$");
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "`key base64value` pairs (or a key alone), comma-separated, keys unique; \
             `filename` (or `name`) and `filetype` (or `type`, `contentType`) are kept",
        ))
        .max_length(Some(crate::upload::tus::MAX_METADATA_BYTES))
        .pattern(Some(pattern))
}

/// `Upload-Checksum`'s schema: `sha1` or `sha256`, a space, the digest in base64.
pub fn upload_checksum_schema() -> impl Into<RefOr<Schema>> {
    // The digests' sizes: 20 bytes (28 characters) and 32 (44), canonical.
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "`sha1` or `sha256`, a space, the body's digest in base64: a body that does not \
             match is 460, nothing appended",
        ))
        .pattern(Some(
        r"^(?:sha1 [A-Za-z0-9+/]{26}[AEIMQUYcgkosw048]=|sha256 [A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=)$",
    ))
}

#[cfg(test)]
mod tests {
    use super::digits_up_to;

    #[test]
    fn digits_up_to_a_maximum() {
        assert_eq!(digits_up_to(0), "^(?:0)$");
        assert_eq!(digits_up_to(7), "^(?:[0-6]|7)$");
        assert_eq!(
            digits_up_to(205),
            "^(?:[0-9]{1,2}|[0-1][0-9]{2}|20[0-4]|205)$"
        );
        assert_eq!(digits_up_to(10), "^(?:[0-9]{1,1}|0[0-9]{1}|10)$");
    }
}

/// A body of raw bytes.
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl ToSchema for Binary {}

/// `POST /upload`'s form: one file field, `file`; other small fields are read and dropped
/// ([`document`] says which).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The file; its part's `filename` (or `filename*`) and `Content-Type` are kept.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Every error's body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// An error.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    code: ErrorCode,
    /// For humans; never a cause from inside the server.
    message: String,
    /// The request's id, as in `X-Request-Id`.
    request_id: String,
    /// With `validation_failed`: each invalid field.
    #[schema(nullable = false)]
    fields: Option<Vec<FieldErrorDoc>>,
}

/// One invalid field of a request.
#[derive(ToSchema)]
#[schema(as = FieldError)]
#[allow(dead_code)]
pub struct FieldErrorDoc {
    /// The field's name as the client sent it (`email`, `limit`, `body`, `file`, ...).
    field: String,
    /// What is wrong with it.
    message: String,
}

/// The stable code of an error: clients match on it.
pub struct ErrorCode;

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("The stable code of an error: clients match on it"))
            .enum_values(Some(CODES))
            .into()
    }
}

impl ToSchema for ErrorCode {}

/// A fan-out's error: [`ErrorBody`] with each failed source's own error.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UpstreamErrorBody {
    error: UpstreamErrorDetail,
}

/// A fan-out's error.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UpstreamErrorDetail {
    /// `upstream_error` or `upstream_timeout`.
    code: ErrorCode,
    message: String,
    request_id: String,
    /// `/parallel`: the source that ended the request.
    #[schema(nullable = false)]
    source: Option<String>,
    /// Each failed source's error (`code`, `message`, ...), by name.
    #[schema(value_type = Object)]
    sources: Map<String, Value>,
}

/// `/ping`'s answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Pong {
    /// `pong`.
    #[schema(pattern = "^pong$")]
    message: String,
}

/// `/healthz`'s answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `ok`.
    #[schema(pattern = "^ok$")]
    status: String,
}

/// `/readyz`'s answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Readiness {
    /// `ready`, `unavailable` or `draining`.
    #[schema(pattern = "^(?:ready|unavailable|draining)$")]
    status: String,
    /// Each component's state: `database`, `db_actor`, `cpu_actor`, `fetch_actor`,
    /// `upload_actor` (`{"state": "up"|"down"}`), `storage` (`{"state", "backend": "file"|"s3"}`)
    /// and `upstreams` (each source's breaker, calls, failures, last error and latency);
    /// absent while draining.
    #[schema(value_type = Option<Object>, nullable = false)]
    components: Option<Map<String, Value>>,
    /// `draining` while a shutdown drains.
    #[schema(nullable = false, pattern = "^draining$")]
    code: Option<String>,
}

/// `/aggregate`'s answer: each source's JSON under its name, and `_errors` (each failed
/// source's error by name) when some failed.
pub struct Aggregate;

impl PartialSchema for Aggregate {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Each source's JSON under its name; `_errors` holds each failed source's error",
            ))
            .into()
    }
}

impl ToSchema for Aggregate {}

/// `/parallel`'s answer.
pub struct Parallel;

impl PartialSchema for Parallel {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "results",
                utoipa::openapi::schema::ArrayBuilder::new()
                    .description(Some("Each source's JSON, in the order asked for")),
            )
            .required("results")
            .into()
    }
}

impl ToSchema for Parallel {}

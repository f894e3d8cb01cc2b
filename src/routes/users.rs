//! `/users`: handlers parse the request, ask the `Db` handle, and shape the answer.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Each;

use crate::db::page::{parse_limit, PageRequest};
use crate::db::users::{NewUser, User, UserChanges, UserPage};
use crate::error::{AppError, FieldError};
use crate::ids::UserId;
use crate::openapi::ErrorBody;
use crate::services::Services;
use crate::time::Rfc3339;

/// `GET /users` query (other parameters are ignored).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "super::param::limit")]
    limit: Option<i64>,
    /// Only users with an id above this one: the `next_after` of the page before.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    #[serde(default, deserialize_with = "super::param::after")]
    after: Option<i64>,
}

/// `POST /users` body; `PATCH /users/{id}` body (any of the fields). A field may be absent,
/// not `null` (422): a PATCH would otherwise take `null` for "unchanged".
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UserChanges, min_properties = 1)]
pub struct UserBody {
    /// The new name (trimmed; 1 to 200 characters, no control characters).
    #[serde(default, deserialize_with = "present")]
    #[schema(
        nullable = false,
        max_length = 200,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    name: Option<String>,
    /// The new email (unique regardless of case).
    #[serde(default, deserialize_with = "present")]
    #[schema(
        nullable = false,
        max_length = 254,
        pattern = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,32}(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,15}){0,2}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?){1,3}$"
    )]
    email: Option<String>,
}

/// A field that is there: a string, never `null`.
fn present<'de, D: serde::Deserializer<'de>>(field: D) -> Result<Option<String>, D::Error> {
    String::deserialize(field).map(Some)
}

/// `/users/{id}`'s id (documentation only: the handlers take `web::Path<i64>`).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct UserPath {
    /// The user's id.
    #[param(minimum = 1, maximum = 9223372036854775807_i64)]
    id: i64,
}

/// `POST /users` body (documentation only: the handler reads a [`UserBody`]).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewUser)]
#[allow(dead_code)]
struct NewUserBody {
    /// Trimmed; 1 to 200 characters, no control characters.
    #[schema(
        max_length = 200,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    name: String,
    /// Unique regardless of case.
    #[schema(
        max_length = 254,
        pattern = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,32}(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,15}){0,2}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?){1,3}$"
    )]
    email: String,
}

/// A user as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = User)]
struct UserAnswer<'a> {
    #[schema(value_type = i64, minimum = 1)]
    id: UserId,
    name: &'a str,
    email: &'a str,
    #[schema(value_type = String, format = DateTime)]
    created_at: Rfc3339,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Rfc3339,
}

impl<'a> From<&'a User> for UserAnswer<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            id: user.id,
            name: &user.name,
            email: &user.email,
            created_at: Rfc3339(user.created_at),
            updated_at: Rfc3339(user.updated_at),
        }
    }
}

/// A page of users as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = UserPage)]
struct PageAnswer<'a> {
    /// In id order.
    #[schema(value_type = Vec<UserAnswer>)]
    users: Each<'a, User, UserAnswer<'a>>,
    /// The `after` of the next page; `null` on the last one.
    #[schema(value_type = Option<i64>)]
    next_after: Option<UserId>,
}

impl<'a> From<&'a UserPage> for PageAnswer<'a> {
    fn from(page: &'a UserPage) -> Self {
        Self {
            users: Each::new(&page.users),
            next_after: page.next_after,
        }
    }
}

/// `GET /users?limit=N&after=ID`.
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    operation_id = "list_users",
    params(ListQuery),
    security(("bearer" = ["users:read"])),
    responses(
        (status = 200, description = "A page of users in id order", body = PageAnswer),
        (status = 400, description = "`bad_request`: a malformed query string", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `limit` outside 1..=1000 or a negative `after`", body = ErrorBody),
        (status = 503, description = "`overloaded` or `database_unavailable`", body = ErrorBody),
    )
)]
pub async fn list(
    services: web::Data<Services>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let mut fields = Vec::new();
    let limit = parse_limit(query.limit).map_err(|f| fields.push(f)).ok();
    let after = query.after.unwrap_or(0);
    if after < 0 {
        fields.push(FieldError::new("after", "must not be negative"));
    }
    let (Some(limit), true) = (limit, fields.is_empty()) else {
        return Err(AppError::Validation(fields));
    };
    let page = services
        .db
        .users(PageRequest {
            limit,
            after: UserId(after),
        })
        .await?;
    Ok(HttpResponse::Ok().json(PageAnswer::from(&page)))
}

/// `POST /users` → 201 with `Location`.
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    operation_id = "create_user",
    request_body(content = NewUserBody, content_type = "application/json"),
    security(("bearer" = ["users:write"])),
    responses(
        (status = 201, description = "The user, created", body = UserAnswer,
            headers(("Location" = String, description = "`/users/{id}`"))),
        (status = 400, description = "`bad_request`: malformed JSON", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body stalled", body = ErrorBody),
        (status = 409, description = "`conflict`: the email is taken (in any case)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/json`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a field is missing, unknown, of the wrong type or invalid (`fields` names each)", body = ErrorBody),
        (status = 503, description = "`overloaded` or `database_unavailable`", body = ErrorBody),
    )
)]
pub async fn create(
    services: web::Data<Services>,
    body: web::Json<UserBody>,
) -> Result<HttpResponse, AppError> {
    let UserBody { name, email } = body.into_inner();
    let user = services
        .db
        .create_user(NewUser::parse(name, email)?)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/users/{}", user.id)))
        .json(UserAnswer::from(&user)))
}

/// `GET /users/{id}`.
#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    operation_id = "get_user",
    params(UserPath),
    security(("bearer" = ["users:read"])),
    responses(
        (status = 200, description = "The user", body = UserAnswer),
        (status = 400, description = "`bad_request`: the id is not an integer", body = ErrorBody),
        (status = 404, description = "`not_found`: no user with this id", body = ErrorBody),
        (status = 503, description = "`overloaded` or `database_unavailable`", body = ErrorBody),
    )
)]
pub async fn get(
    services: web::Data<Services>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let user = services.db.user(UserId(id.into_inner())).await?;
    Ok(HttpResponse::Ok().json(UserAnswer::from(&user)))
}

/// `PATCH /users/{id}`.
#[utoipa::path(
    patch,
    path = "/users/{id}",
    tag = "users",
    operation_id = "update_user",
    params(UserPath),
    request_body(content = UserBody, content_type = "application/json"),
    security(("bearer" = ["users:write"])),
    responses(
        (status = 200, description = "The user, changed", body = UserAnswer),
        (status = 400, description = "`bad_request`: malformed JSON, or the id is not an integer", body = ErrorBody),
        (status = 404, description = "`not_found`: no user with this id", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body stalled", body = ErrorBody),
        (status = 409, description = "`conflict`: the email is taken (in any case)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 64 KiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/json`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: no field, an unknown field, a wrong type or an invalid value (`fields` names each)", body = ErrorBody),
        (status = 503, description = "`overloaded` or `database_unavailable`", body = ErrorBody),
    )
)]
pub async fn update(
    services: web::Data<Services>,
    id: web::Path<i64>,
    body: web::Json<UserBody>,
) -> Result<HttpResponse, AppError> {
    let UserBody { name, email } = body.into_inner();
    let changes = UserChanges::parse(name, email)?;
    let user = services
        .db
        .update_user(UserId(id.into_inner()), changes)
        .await?;
    Ok(HttpResponse::Ok().json(UserAnswer::from(&user)))
}

/// `DELETE /users/{id}` → 204.
#[utoipa::path(
    delete,
    path = "/users/{id}",
    tag = "users",
    operation_id = "delete_user",
    params(UserPath),
    security(("bearer" = ["users:write"])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`bad_request`: the id is not an integer", body = ErrorBody),
        (status = 404, description = "`not_found`: no user with this id", body = ErrorBody),
        (status = 503, description = "`overloaded` or `database_unavailable`", body = ErrorBody),
    )
)]
pub async fn delete(
    services: web::Data<Services>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    services.db.delete_user(UserId(id.into_inner())).await?;
    Ok(HttpResponse::NoContent().finish())
}

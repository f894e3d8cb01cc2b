//! The access check of every protected route: the route's [`Scope`] required of the
//! request's `Authorization: Bearer KEY` before its handler runs.
//!
//! [`Guard`] wraps each protected resource (`routes::configure`). Public routes (`/ping`,
//! `/healthz`, `/readyz`) are not wrapped, and in open mode (no keys) no route is: there the
//! check costs nothing at all. A request let through carries its key's [`Access`] in its
//! extensions: the access log names it (`key=NAME`), and the upload routes hold it to its
//! own uploads.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Method;
use actix_web::HttpMessage as _;
use futures::future::{ready, Either, Map, Ready};
use futures::FutureExt as _;

use crate::auth::{Access, ApiKeys, Scope};

/// The scopes one resource needs: `read` for GET and HEAD, `write` for every other method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The scope of GET and HEAD.
    pub read: Scope,
    /// The scope of every other method.
    pub write: Scope,
}

impl Needs {
    /// `read` for GET and HEAD, `write` for the rest.
    pub const fn split(read: Scope, write: Scope) -> Self {
        Self { read, write }
    }

    /// The same scope for every method.
    pub const fn all(scope: Scope) -> Self {
        Self {
            read: scope,
            write: scope,
        }
    }

    /// The scope a request with `method` needs.
    pub fn of(&self, method: &Method) -> Scope {
        if method == Method::GET || method == Method::HEAD {
            self.read
        } else {
            self.write
        }
    }
}

/// The configured keys, shared by every worker; `routes::configure` wraps each protected
/// resource in [`Guard::require`].
#[derive(Debug, Clone)]
pub struct Guard {
    keys: Arc<ApiKeys>,
}

impl Guard {
    /// A guard over `keys`; `None` when there are none (open mode: nothing is wrapped).
    pub fn new(keys: &ApiKeys) -> Option<Self> {
        (!keys.is_empty()).then(|| Self {
            keys: Arc::new(keys.clone()),
        })
    }

    /// The middleware that requires `needs` of every request to the resource it wraps.
    pub fn require(&self, needs: Needs) -> RequireScope {
        RequireScope {
            keys: Arc::clone(&self.keys),
            needs,
        }
    }
}

/// The middleware factory (`Resource::wrap`, `Scope::wrap`).
pub struct RequireScope {
    keys: Arc<ApiKeys>,
    needs: Needs,
}

impl<S, B> Transform<S, ServiceRequest> for RequireScope
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = RequireScopeService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequireScopeService {
            service,
            keys: Arc::clone(&self.keys),
            needs: self.needs,
        }))
    }
}

/// The middleware itself.
pub struct RequireScopeService<S> {
    service: S,
    keys: Arc<ApiKeys>,
    needs: Needs,
}

impl<S, B> Service<ServiceRequest> for RequireScopeService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    #[allow(clippy::type_complexity)]
    type Future = Either<
        Map<
            S::Future,
            fn(Result<ServiceResponse<B>, actix_web::Error>) -> Result<Self::Response, Self::Error>,
        >,
        Ready<Result<Self::Response, Self::Error>>,
    >;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let scope = self.needs.of(req.method());
        let auth = self.keys.authenticate(req.headers());
        match auth.require(scope) {
            Ok(access) => {
                req.extensions_mut().insert(access.clone());
                Either::Left(self.service.call(req).map(left))
            }
            Err(err) => {
                // A known key without the scope is still named in the access log.
                if let Some(access) = auth.access() {
                    req.extensions_mut().insert(access.clone());
                }
                // Rendered by the request context as the JSON error, with its request id.
                let res = req.error_response(err);
                Either::Right(ready(Ok(res.map_into_right_body())))
            }
        }
    }
}

/// A response of the resource, in the middleware's body type.
fn left<B>(
    res: Result<ServiceResponse<B>, actix_web::Error>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    res.map(ServiceResponse::map_into_left_body)
}

/// The key a request was let through (or turned away) as, if any: for the access log.
pub fn key_of(req: &actix_web::HttpRequest) -> Option<Arc<str>> {
    req.extensions().get::<Access>().map(Access::shared_name)
}

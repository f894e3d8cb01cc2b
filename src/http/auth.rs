//! The access check of every protected route: the rate limit (`TROUPE_RATE_LIMIT`) and the
//! route's [`Scope`] required of the request's `Authorization: Bearer KEY`, before its
//! handler runs.
//!
//! [`Guard`] wraps each protected resource (`routes::configure`). Public routes (`/ping`,
//! `/healthz`, `/readyz`) are not wrapped, and with neither keys nor a rate limit no route
//! is: there the check costs nothing at all. A request is counted against its key's name
//! when it sent a configured key, else against its address (the peer, or behind a trusted
//! proxy the client `X-Forwarded-For` names); over the limit it is answered 429 before its
//! key's scope is looked at. A request let through carries its key's [`Access`] in its
//! extensions: the access log names it (`key=NAME`), and the upload routes hold it to its
//! own uploads.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Method;
use actix_web::HttpMessage as _;
use futures::future::{ready, Either, Map, Ready};
use futures::FutureExt as _;

use super::client_ip::TrustedProxies;
use crate::auth::{Access, ApiKeys, Authentication, Scope};
use crate::error::AppError;
use crate::rate_limit::{Client, RateLimiter, RateSpec, DEFAULT_MAX_CLIENTS};

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

/// The rate limit and whose `X-Forwarded-For` to believe.
#[derive(Debug)]
struct Limits {
    limiter: Arc<RateLimiter>,
    proxies: TrustedProxies,
}

/// The configured keys and rate limit, shared by every worker (one limiter for the whole
/// process); `routes::configure` wraps each protected resource in [`Guard::require`].
#[derive(Debug, Clone)]
pub struct Guard {
    keys: Option<Arc<ApiKeys>>,
    limits: Option<Arc<Limits>>,
}

impl Guard {
    /// A guard over `keys` and the rate `rate`; `None` when there are no keys and no limit
    /// (nothing is wrapped).
    pub fn new(keys: &ApiKeys, rate: Option<RateSpec>, proxies: &TrustedProxies) -> Option<Self> {
        let keys = (!keys.is_empty()).then(|| Arc::new(keys.clone()));
        let limits = rate.map(|spec| {
            Arc::new(Limits {
                limiter: Arc::new(RateLimiter::new(spec, DEFAULT_MAX_CLIENTS)),
                proxies: proxies.clone(),
            })
        });
        (keys.is_some() || limits.is_some()).then_some(Self { keys, limits })
    }

    /// The rate limiter, when there is one (the server sweeps its idle clients).
    pub fn limiter(&self) -> Option<Arc<RateLimiter>> {
        self.limits.as_ref().map(|l| Arc::clone(&l.limiter))
    }

    /// The middleware that requires `needs` of every request to the resource it wraps.
    pub fn require(&self, needs: Needs) -> RequireScope {
        RequireScope {
            guard: self.clone(),
            needs,
        }
    }
}

/// The middleware factory (`Resource::wrap`, `Scope::wrap`).
pub struct RequireScope {
    guard: Guard,
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
            guard: self.guard.clone(),
            needs: self.needs,
        }))
    }
}

/// The middleware itself.
pub struct RequireScopeService<S> {
    service: S,
    guard: Guard,
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
        let auth = self
            .guard
            .keys
            .as_ref()
            .map(|keys| keys.authenticate(req.headers()));
        // A configured key is named in the access log, whatever the answer.
        if let Some(access) = auth.as_ref().and_then(Authentication::access) {
            super::middleware::admit_key(&req, access);
        }
        if let Some(limits) = &self.guard.limits {
            let client = match auth.as_ref().and_then(Authentication::access) {
                Some(access) => Client::key(access.shared_name()),
                None => {
                    let peer = req
                        .peer_addr()
                        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
                    Client::ip(limits.proxies.client_ip(peer, req.headers()))
                }
            };
            if let Err(limited) = limits.limiter.check(&client, Instant::now()) {
                return refuse(req, limited.into());
            }
        }
        if let Some(auth) = &auth {
            if let Err(err) = auth.require(self.needs.of(req.method())) {
                return refuse(req, err);
            }
        }
        Either::Left(self.service.call(req).map(left))
    }
}

/// The 401, 403 or 429 for `req`, rendered by the request context as the JSON error with its
/// request id.
#[allow(clippy::type_complexity)]
fn refuse<F, B>(
    req: ServiceRequest,
    err: AppError,
) -> Either<F, Ready<Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>> {
    Either::Right(ready(Ok(req.error_response(err).map_into_right_body())))
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

//! The HTTP figures: every request counted and timed by method, route pattern and status
//! (`http_requests_total`, `http_request_duration_seconds`), or counted as unanswered when
//! its client went away or the shutdown cut it (`http_requests_unanswered_total`).
//!
//! [`Track`] wraps the whole app, outside the request context, so it sees every answer as
//! the client gets it (errors rendered, panics caught). The route is the pattern the router
//! matched (`/users/{id}`), never the path, so that the series stay bounded; requests that
//! matched no route share the label `unmatched`, and methods outside the standard ones share
//! `other`. Each worker keeps its own map from labels to handles, so a request costs one
//! lookup in a map no other thread touches, one counter increment and one histogram sample.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{Method, StatusCode};
use futures::future::{ready, Ready};
use metrics::{Counter, Histogram};

use super::{Metrics, HTTP_DURATION, HTTP_REQUESTS, HTTP_UNANSWERED};

/// The `route` of a request that matched no route (or whose route is not known: a panic
/// that escaped its handler).
pub const UNMATCHED: &str = "unmatched";

/// The middleware factory (`App::wrap`), outermost.
pub struct Track {
    metrics: Metrics,
}

impl Track {
    /// Records into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Track
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = TrackService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(TrackService {
            service,
            series: Rc::new(Series::new(self.metrics.clone())),
        }))
    }
}

/// The middleware of one worker.
pub struct TrackService<S> {
    service: S,
    series: Rc<Series>,
}

impl<S, B> Service<ServiceRequest> for TrackService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Tracked<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let method = method_label(req.method());
        Tracked {
            fut: self.service.call(req),
            started: Instant::now(),
            method,
            series: Some(self.series.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being served: recorded when it is answered, or as unanswered when dropped
    /// before.
    pub struct Tracked<F> {
        #[pin]
        fut: F,
        started: Instant,
        method: &'static str,
        // Taken once recorded.
        series: Option<Rc<Series>>,
    }

    impl<F> PinnedDrop for Tracked<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(series) = this.series.take() {
                series.unanswered(this.method);
            }
        }
    }
}

impl<F, B> Future for Tracked<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(out) = this.fut.poll(cx) else {
            return Poll::Pending;
        };
        if let Some(series) = this.series.take() {
            let took = this.started.elapsed();
            match &out {
                Ok(res) => series.answered(
                    this.method,
                    res.request().match_pattern(),
                    res.status(),
                    took,
                ),
                Err(err) => series.answered(
                    this.method,
                    None,
                    err.as_response_error().status_code(),
                    took,
                ),
            }
        }
        Poll::Ready(out)
    }
}

/// The labels of an answered request: route, method, status.
type Labels = (String, &'static str, u16);

/// One worker's handles, by their labels.
struct Series {
    metrics: Metrics,
    answered: RefCell<HashMap<Labels, (Counter, Histogram)>>,
    /// By [`METHODS`]' order: registered up front, so that each shows from the start.
    unanswered: [Counter; METHODS.len()],
}

impl Series {
    fn new(metrics: Metrics) -> Self {
        let unanswered =
            METHODS.map(|method| metrics.counter(HTTP_UNANSWERED, &[("method", method)]));
        Self {
            metrics,
            answered: RefCell::default(),
            unanswered,
        }
    }

    fn answered(
        &self,
        method: &'static str,
        route: Option<String>,
        status: StatusCode,
        took: Duration,
    ) {
        let route = route.unwrap_or_else(|| UNMATCHED.to_owned());
        let mut answered = self.answered.borrow_mut();
        let (count, time) = answered
            .entry((route, method, status.as_u16()))
            .or_insert_with_key(|(route, method, status)| {
                let status = status.to_string();
                let labels = [
                    ("method", *method),
                    ("route", route.as_str()),
                    ("status", &status),
                ];
                (
                    self.metrics.counter(HTTP_REQUESTS, &labels),
                    self.metrics.histogram(HTTP_DURATION, &labels),
                )
            });
        count.increment(1);
        time.record(took.as_secs_f64());
    }

    fn unanswered(&self, method: &'static str) {
        if let Some(at) = METHODS.iter().position(|&m| m == method) {
            self.unanswered[at].increment(1);
        }
    }
}

/// Every `method` label: the standard methods, and `other` for the rest (a client picks the
/// method: it must not pick new series).
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// The `method` label of `method`.
fn method_label(method: &Method) -> &'static str {
    let name = method.as_str();
    METHODS[..METHODS.len() - 1]
        .iter()
        .find(|&&m| m == name)
        .copied()
        .unwrap_or("other")
}

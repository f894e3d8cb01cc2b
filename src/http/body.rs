//! [`Body`]: a request body held to `TROUPE_BODY_TIMEOUT_MS` ([`hold_to_deadline`], for every
//! request with a body). A client that stops sending
//! (a dropped mobile link keeps its socket open and sends nothing) is cut off once no byte
//! has come for that long while troupe waits for one; time spent not reading (troupe's own
//! backpressure) does not count.

use std::cell::Cell;
use std::future::Future as _;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use std::io;

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::rt::time::{sleep_until, Instant, Sleep};
use actix_web::HttpMessage as _;
use bytes::Bytes;
use futures::Stream;

use crate::error::AppError;

/// Holds `req`'s body, when it has one, to `timeout` between bytes (a body that stalls ends
/// with a [`PayloadError`] that [`AppError`] turns into 408 `request_timeout`), and counts
/// the bytes read from it: answers the count. Requests without a body (most GETs) are left
/// as they are, at no cost.
pub fn hold_to_deadline(req: &mut ServiceRequest, timeout: Duration) -> Option<Rc<Cell<u64>>> {
    if matches!(req.parts().1, Payload::None) {
        return None;
    }
    let body = Body::new(req.take_payload(), timeout);
    let seen = body.seen.clone();
    let body: BoxedPayloadStream = Box::pin(body);
    req.set_payload(Payload::from(body));
    Some(seen)
}

/// Whether `err` is a body that timed out ([`hold_to_deadline`]).
fn is_timeout(err: &PayloadError) -> bool {
    matches!(err, PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut)
}

impl From<PayloadError> for AppError {
    /// A body that stalled is 408; one whose connection broke (the client went away, a
    /// malformed chunk) is 400.
    fn from(err: PayloadError) -> Self {
        if is_timeout(&err) {
            AppError::RequestTimeout(format!("{err}; aborted"))
        } else {
            AppError::BadRequest(format!("the request body was interrupted: {err}"))
        }
    }
}

/// The boxed body actix-web's `Payload` takes.
type BoxedPayloadStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

/// `inner` with a deadline between bytes.
pub struct Body<S> {
    inner: S,
    timeout: Duration,
    /// When troupe began waiting for the next byte; `None` while bytes are coming.
    waiting_since: Option<Instant>,
    /// Armed on the first wait, re-armed lazily: a chunk costs a clock read, not a timer.
    timer: Option<Pin<Box<Sleep>>>,
    ended: bool,
    /// Bytes read so far (for the access log).
    seen: Rc<Cell<u64>>,
}

impl<S> Body<S> {
    /// `inner`, cut off after `timeout` without a byte.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            waiting_since: None,
            timer: None,
            ended: false,
            seen: Rc::default(),
        }
    }
}

impl<S> Stream for Body<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.waiting_since = None;
                this.seen.set(this.seen.get() + chunk.len() as u64);
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(Some(Err(err))) => {
                this.ended = true;
                return Poll::Ready(Some(Err(err)));
            }
            Poll::Ready(None) => {
                this.ended = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let since = *this.waiting_since.get_or_insert_with(Instant::now);
        let deadline = since + this.timeout;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        // The deadline only moves forward: the timer, armed for an earlier one, is moved on
        // only when it fires, not on every chunk.
        loop {
            ready!(timer.as_mut().poll(cx));
            if Instant::now() >= deadline {
                break;
            }
            timer.as_mut().reset(deadline);
        }
        this.ended = true;
        log::warn!(
            "a request body sent no byte for {} ms: aborted",
            this.timeout.as_millis()
        );
        let cause = format!(
            "no byte of the body arrived for {} ms",
            this.timeout.as_millis()
        );
        let err = io::Error::new(io::ErrorKind::TimedOut, cause);
        Poll::Ready(Some(Err(PayloadError::Io(err))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    #[actix_web::test]
    async fn a_body_that_stops_sending_times_out_and_one_that_sends_does_not() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, PayloadError>>();
        let mut body = Body::new(rx, Duration::from_millis(100));
        for _ in 0..3 {
            tx.unbounded_send(Ok(Bytes::from_static(b"x"))).unwrap();
            assert_eq!(body.next().await.unwrap().unwrap(), "x");
        }
        let started = std::time::Instant::now();
        let err = body.next().await.unwrap().unwrap_err();
        assert!(is_timeout(&err), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(body.next().await.is_none());
        assert!(matches!(AppError::from(err), AppError::RequestTimeout(_)));
    }

    #[actix_web::test]
    async fn time_not_spent_waiting_does_not_count() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, PayloadError>>();
        let mut body = Body::new(rx, Duration::from_millis(100));
        tx.unbounded_send(Ok(Bytes::from_static(b"a"))).unwrap();
        assert!(body.next().await.unwrap().is_ok());
        // Troupe busy elsewhere for longer than the timeout; the client sends meanwhile.
        actix_web::rt::time::sleep(Duration::from_millis(150)).await;
        tx.unbounded_send(Ok(Bytes::from_static(b"b"))).unwrap();
        assert_eq!(body.next().await.unwrap().unwrap(), "b");
        drop(tx);
        assert!(body.next().await.is_none());
    }
}

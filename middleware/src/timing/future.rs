use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderValue, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::handles::Handles;

pin_project! {
    /// The response future of [`super::Timing`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        method: &'static str,
        route: &'static str,
        start: Instant,
        in_flight: InFlight,
    }
}

/// Counts a request in flight from its start until its future completes or is dropped.
struct InFlight(Arc<Handles>);

impl InFlight {
    fn enter(handles: Arc<Handles>) -> Self {
        handles.in_flight().increment(1.0);
        InFlight(handles)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight().decrement(1.0);
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        inner: F,
        method: &'static str,
        route: &'static str,
        handles: Arc<Handles>,
    ) -> Self {
        Self {
            inner,
            method,
            route,
            start: Instant::now(),
            in_flight: InFlight::enter(handles),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let elapsed = this.start.elapsed();
        // An error reaches this layer only when it is placed inside the rescue layer.
        let status = result.as_ref().ok().map(Response::status);
        this.in_flight
            .0
            .record((*this.route, *this.method, status), elapsed);
        Poll::Ready(result.map(|mut response| {
            response
                .headers_mut()
                .insert(SERVER_TIMING, server_timing(elapsed));
            response
        }))
    }
}

const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// The status as a label: its code. Built once per series ([`super::handles::Handles`]).
pub(super) fn status_label(status: StatusCode) -> String {
    status.as_str().to_owned()
}

/// `app;dur=<milliseconds, 3 decimals>`, written with integer arithmetic (formatting the float
/// cost more than the rest of the layer together) into a buffer on the stack, then copied once
/// into the header value.
pub(super) fn server_timing(elapsed: Duration) -> HeaderValue {
    let micros = elapsed.as_micros();
    let (ms, frac) = (micros / 1000, micros % 1000);
    let mut digits = itoa::Buffer::new();
    let ms = digits.format(ms).as_bytes();
    // "app;dur=", at most 39 digits of a u128, '.', three more digits.
    let mut value = [0u8; 51];
    let mut len = 0;
    for part in [
        b"app;dur=".as_slice(),
        ms,
        &[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ],
    ] {
        value[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    HeaderValue::from_bytes(&value[..len]).expect("digits and ASCII letters")
}

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::{REQUESTS_IN_FLIGHT, REQUESTS_TOTAL, REQUEST_DURATION_SECONDS};

pin_project! {
    /// The response future of [`super::Timing`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        method: &'static str,
        route: &'static str,
        start: Instant,
        _in_flight: InFlight,
    }
}

/// Counts a request in flight from its start until its future completes or is dropped.
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        metrics::gauge!(REQUESTS_IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(REQUESTS_IN_FLIGHT).decrement(1.0);
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, method: &'static str, route: &'static str) -> Self {
        Self {
            inner,
            method,
            route,
            start: Instant::now(),
            _in_flight: InFlight::enter(),
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
        let status = match &result {
            Ok(response) => response.status().as_str().to_owned(),
            Err(_) => "error".to_owned(),
        };
        let (method, route) = (*this.method, *this.route);
        metrics::counter!(REQUESTS_TOTAL, "route" => route, "method" => method, "status" => status)
            .increment(1);
        metrics::histogram!(REQUEST_DURATION_SECONDS, "route" => route)
            .record(elapsed.as_secs_f64());
        Poll::Ready(result.map(|mut response| {
            let ms = elapsed.as_secs_f64() * 1000.0;
            // A formatted float is always a valid header value.
            if let Ok(value) = HeaderValue::try_from(format!("app;dur={ms:.3}")) {
                response.headers_mut().insert("server-timing", value);
            }
            response
        }))
    }
}

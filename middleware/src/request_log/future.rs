use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use http_body::Body;
use kalamdb_http::Principal;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tracing::Span;

pin_project! {
    /// The response future of [`super::RequestLog`]: polls the inner future inside the request's
    /// span and logs the outcome.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        start: Instant,
        slow: Duration,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, span: Span, slow: Duration) -> Self {
        Self {
            inner,
            span,
            start: Instant::now(),
            slow,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    E: std::fmt::Display,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        let elapsed = this.start.elapsed();
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let slow = elapsed >= *this.slow;
        // One macro call per level: tracing fixes an event's level where it is written.
        macro_rules! log {
            ($($field:tt)*) => {
                if slow {
                    tracing::warn!($($field)*, latency_ms, slow = true, "request");
                } else {
                    tracing::info!($($field)*, latency_ms, "request");
                }
            };
        }
        match &result {
            Ok(response) => {
                let bytes = response.body().size_hint().exact();
                let response_bytes = tracing::field::display(super::OrDash(bytes));
                // Set by the auth layer: a key's name or a user's id, never a credential.
                let principal = response.extensions().get::<Principal>();
                let principal = tracing::field::display(super::OrDash(principal));
                log!(
                    status = response.status().as_u16(),
                    response_bytes,
                    principal
                )
            }
            // Only when placed inside the rescue layer, which the server's stack does not do.
            Err(error) => log!(status = "error", error = %error),
        }
        Poll::Ready(result)
    }
}

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use kalamdb_http::BoxError;
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
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, span: Span) -> Self {
        Self {
            inner,
            span,
            start: Instant::now(),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result.map_err(Into::into),
        };
        let latency_ms = this.start.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(response) => {
                tracing::info!(status = response.status().as_u16(), latency_ms, "request")
            }
            Err(error) => {
                let api = crate::rescue::classify(error.as_ref());
                tracing::info!(
                    status = api.status().as_u16(),
                    error = api.code().as_str(),
                    latency_ms,
                    "request"
                );
            }
        }
        Poll::Ready(result)
    }
}

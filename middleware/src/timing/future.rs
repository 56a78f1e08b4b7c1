use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::{REQUESTS_TOTAL, REQUEST_DURATION_SECONDS};

pin_project! {
    /// The response future of [`super::Timing`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        method: &'static str,
        start: Instant,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, method: &'static str) -> Self {
        Self {
            inner,
            method,
            start: Instant::now(),
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
        let method = *this.method;
        metrics::counter!(REQUESTS_TOTAL, "method" => method, "status" => status.clone())
            .increment(1);
        metrics::histogram!(REQUEST_DURATION_SECONDS, "method" => method, "status" => status)
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

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Response};
use kalamdb_http::BoxError;
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
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx)).map_err(Into::into);
        let elapsed = this.start.elapsed();
        let status = match &result {
            Ok(response) => response.status(),
            Err(error) => crate::rescue::classify(error.as_ref()).status(),
        };
        let method = *this.method;
        let status_label = status.as_str().to_owned();
        metrics::counter!(REQUESTS_TOTAL, "method" => method, "status" => status_label.clone())
            .increment(1);
        metrics::histogram!(REQUEST_DURATION_SECONDS, "method" => method, "status" => status_label)
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

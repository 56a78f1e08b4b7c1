use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use kalamdb_http::{ClientAddr, RequestId};
use tower_service::Service;

use super::ResponseFuture;

/// Logs each request once its response head is ready; see the module docs.
#[derive(Debug, Clone)]
pub struct RequestLog<S> {
    pub(super) inner: S,
    pub(super) slow: Duration,
}

impl<S, B, ResBody> Service<Request<B>> for RequestLog<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let peer = request.extensions().get::<ClientAddr>().map(|addr| addr.0);
        let request_id = request.extensions().get::<RequestId>();
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id = %request_id.map_or("-", RequestId::as_str),
            peer = tracing::field::display(super::OrDash(peer)),
        );
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ResponseFuture::new(future, span, self.slow)
    }
}

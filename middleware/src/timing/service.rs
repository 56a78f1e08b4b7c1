use std::task::{Context, Poll};

use http::{Request, Response};
use kalamdb_http::BoxError;
use tower_service::Service;

use super::{method_label, ResponseFuture};

/// Times each request; see the module docs.
#[derive(Debug, Clone)]
pub struct Timing<S> {
    pub(super) inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for Timing<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = method_label(request.method());
        ResponseFuture::new(self.inner.call(request), method)
    }
}

use std::convert::Infallible;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::{Context, Poll};

use http::{Request, Response};
use kalamdb_http::{BoxError, ResponseBody};
use tower_service::Service;

use super::ResponseFuture;

/// Answers every error and panic of `inner` with the JSON error body; see the module docs.
#[derive(Debug, Clone)]
pub struct Rescue<S> {
    pub(super) inner: S,
}

impl<S, B> Service<Request<B>> for Rescue<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // An inner readiness error is answered on the next call instead of closing the connection.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => ResponseFuture::inner(future),
            Err(panic) => ResponseFuture::ready(super::panic_response(panic)),
        }
    }
}

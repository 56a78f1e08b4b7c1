use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::handles::Handles;
use super::{method_label, ResponseFuture, RouteOf};

/// Times each request; see the module docs.
#[derive(Debug, Clone)]
pub struct Timing<S> {
    pub(super) inner: S,
    pub(super) route_of: RouteOf,
    /// Shared by every clone: the server clones the stack for each connection.
    pub(super) handles: Arc<Handles>,
}

impl<S, B, ResBody> Service<Request<B>> for Timing<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = method_label(request.method());
        let route = (self.route_of)(request.uri().path());
        ResponseFuture::new(
            self.inner.call(request),
            method,
            route,
            Arc::clone(&self.handles),
        )
    }
}

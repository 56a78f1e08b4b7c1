use std::task::{Context, Poll};

use http::header::CONTENT_LENGTH;
use http::Request;
use kalamdb_http::{BodyTooLarge, BoxError};
use tower_service::Service;

use super::{LimitedBody, ResponseFuture};

/// Refuses requests whose body is over `limit` bytes; see the module docs.
#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    pub(super) inner: S,
    pub(super) limit: u64,
}

impl<S, B> Service<Request<B>> for BodyLimit<S>
where
    S: Service<Request<LimitedBody<B>>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.limit) {
            return ResponseFuture::refused(BodyTooLarge { limit: self.limit });
        }
        let request = request.map(|body| LimitedBody::new(body, self.limit));
        ResponseFuture::inner(self.inner.call(request))
    }
}

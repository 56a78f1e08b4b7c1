use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use kalamdb_http::RequestId;
use tower_service::Service;

use super::{is_acceptable, ResponseFuture, HEADER};

/// Gives each request an id; see the module docs.
#[derive(Debug, Clone)]
pub struct SetRequestId<S> {
    pub(super) inner: S,
    pub(super) trust_incoming: bool,
}

impl<S, B, ResBody> Service<Request<B>> for SetRequestId<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = match request.headers().get(&HEADER) {
            Some(value) if self.trust_incoming && is_acceptable(value) => value.clone(),
            _ => {
                // Formatted on the stack and copied once, not through `fmt` into a growing
                // `String` that the header value then wraps in a second allocation.
                let mut buffer = uuid::Uuid::encode_buffer();
                let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
                // A hyphenated UUID is always a valid header value.
                let value = HeaderValue::from_str(id).expect("a UUID is visible ASCII");
                request.headers_mut().insert(HEADER, value.clone());
                value
            }
        };
        request.extensions_mut().insert(RequestId(id.clone()));
        ResponseFuture {
            inner: self.inner.call(request),
            id: Some(id),
        }
    }
}

use std::sync::Arc;
use std::task::{Context, Poll};

use governor::clock::{Clock, DefaultClock};
use http::{Request, Response};
use kalamdb_http::{ApiError, BoxError, ClientAddr, ErrorCode, Principal};
use tower::util::Oneshot;
use tower::ServiceExt;
use tower_service::Service;

use super::limiter::Limiter;
use super::ResponseFuture;

/// Refuses requests over the rate; see the module docs.
pub struct RateLimit<S, C: Clock = DefaultClock> {
    pub(super) inner: S,
    pub(super) limiter: Arc<Limiter<C>>,
}

impl<S: Clone, C: Clock> Clone for RateLimit<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<S: std::fmt::Debug, C: Clock> std::fmt::Debug for RateLimit<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C, B, ResBody> Service<Request<B>> for RateLimit<S, C>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    C: Clock + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<Oneshot<S, Request<B>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Always ready: the inner service is asked only once a request is admitted (in call).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let peer = request.extensions().get::<ClientAddr>().map(|a| a.0.ip());
        let principal = request.extensions().get::<Principal>();
        match self.limiter.check(peer, principal) {
            Ok(()) => {
                // Take the service this one was cloned from and leave a fresh clone behind.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::inner(inner.oneshot(request))
            }
            Err(wait) => {
                metrics::counter!(super::RATE_LIMITED_TOTAL).increment(1);
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let error = ApiError::new(
                    ErrorCode::RateLimited,
                    "too many requests; retry after the number of seconds in Retry-After",
                )
                .with_retry_after(secs.max(1));
                ResponseFuture::refused(error)
            }
        }
    }
}

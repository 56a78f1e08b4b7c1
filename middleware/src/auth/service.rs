use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use kalamdb_http::{ApiError, BoxError};
use percent_encoding::percent_decode_str;
use tower_service::Service;

use super::layer::Shared;
use super::ResponseFuture;

/// Checks each request's credentials; see the module docs.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared>,
}

impl<S, B, ResBody> Service<Request<B>> for Auth<S>
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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        let metrics = path == "/metrics";
        if path == "/health" || (metrics && self.shared.public_metrics) {
            return ResponseFuture::inner(self.inner.call(request), None);
        }
        let principal = match credentials(&request, (self.shared.query_token)(path)) {
            Err(refusal) => Err(refusal),
            Ok(None) => Err(ApiError::unauthorized(
                "this request needs credentials: send Authorization: Bearer <API key or user \
                 token>",
            )),
            Ok(Some(token)) => self.shared.verifier.authenticate(&token),
        };
        let principal = match principal {
            Ok(principal) => principal,
            Err(refusal) => {
                metrics::counter!(super::REFUSED_TOTAL, "status" => "401").increment(1);
                return ResponseFuture::refused(refusal);
            }
        };
        if metrics && !principal.is_admin() {
            metrics::counter!(super::REFUSED_TOTAL, "status" => "403").increment(1);
            return ResponseFuture::refused(ApiError::forbidden(
                "/metrics needs an admin key (or auth.public_metrics = true)",
            ));
        }
        request.extensions_mut().insert(principal.clone());
        ResponseFuture::inner(self.inner.call(request), Some(principal))
    }
}

/// The request's token: the `Authorization: Bearer` header's, else (where `query` allows) the
/// `access_token` query parameter's. A malformed header is refused rather than ignored.
fn credentials<B>(request: &Request<B>, query: bool) -> Result<Option<String>, ApiError> {
    if let Some(value) = request.headers().get(AUTHORIZATION) {
        let malformed =
            || ApiError::unauthorized("the Authorization header must be Bearer <token>");
        let value = value.to_str().map_err(|_| malformed())?;
        let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(malformed());
        }
        return Ok(Some(token.to_owned()));
    }
    if !query {
        return Ok(None);
    }
    let found = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="));
    match found {
        None => Ok(None),
        Some(raw) => percent_decode_str(raw)
            .decode_utf8()
            .map(|token| Some(token.into_owned()))
            .map_err(|_| ApiError::unauthorized("access_token must be percent-encoded UTF-8")),
    }
}

//! Rescue: the outermost layer. It turns every error from the layers below, and every panic, into
//! the one JSON error body, so the stack's error type is [`std::convert::Infallible`].
//!
//! | error | response |
//! | --- | --- |
//! | [`ApiError`] | itself |
//! | [`BodyTooLarge`] | 413 `payload_too_large` |
//! | `tower::timeout::error::Elapsed` | 503 `timeout`, `Retry-After: 1` |
//! | `tower::load_shed::error::Overloaded` | 503 `overloaded`, `Retry-After: 1` |
//! | a panic, anything else | 500 `internal`, logged |
//!
//! ```
//! use http::{Request, Response};
//! use kalamdb_http::{full, ResponseBody};
//! use kalamdb_middleware::rescue::RescueLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let service = ServiceBuilder::new().layer(RescueLayer::new()).service_fn(
//!     |_: Request<()>| async { Err::<Response<ResponseBody>, _>("boom") },
//! );
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.status(), 500);
//! # });
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::RescueLayer;
pub use service::Rescue;

use kalamdb_http::{ApiError, BodyTooLarge, BoxError, ErrorCode};

/// What the client is told for `error`: the mapping of the table above.
///
/// Public so a layer of another crate can tell what status an error will become.
pub fn classify(error: &(dyn std::error::Error + 'static)) -> ApiError {
    if let Some(api) = error.downcast_ref::<ApiError>() {
        return api.clone();
    }
    if let Some(too_large) = error.downcast_ref::<BodyTooLarge>() {
        return ApiError::body_too_large(too_large.limit);
    }
    if error.is::<tower::timeout::error::Elapsed>() {
        return ApiError::new(
            ErrorCode::Timeout,
            "the request did not finish within the server's time limit; retry later",
        )
        .with_retry_after(1);
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        return ApiError::new(
            ErrorCode::Overloaded,
            "the server is handling as many requests as it allows; retry shortly",
        )
        .with_retry_after(1);
    }
    ApiError::internal()
}

fn error_response(error: BoxError) -> http::Response<kalamdb_http::ResponseBody> {
    let api = classify(error.as_ref());
    if api.code() == ErrorCode::Internal {
        tracing::error!(error = %error, "request failed with an unexpected error");
    }
    api.to_response()
}

fn panic_response(
    panic: Box<dyn std::any::Any + Send>,
) -> http::Response<kalamdb_http::ResponseBody> {
    let reason = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned());
    tracing::error!(panic = %reason, "request handler panicked");
    ApiError::internal().to_response()
}

#[cfg(test)]
mod tests;

//! [`ApiError`]: the one error body every part of the stack answers with.

use std::fmt;

use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Response, StatusCode};
use kalamdb_core::{StoreError, ValidationError};
use serde::Serialize;

use crate::body::{full, ResponseBody};

/// The machine-readable error codes of the HTTP contract, each with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: the body is not JSON.
    InvalidJson,
    /// 400: a field is missing, mistyped, unknown or out of range.
    ValidationFailed,
    /// 400: the request is not valid HTTP/1.1 (its request line or a header), answered by the
    /// connection before any layer sees the request.
    MalformedRequest,
    /// 414: the request's URI is over the connection's limit.
    UriTooLong,
    /// 431: the request's headers are over the connection's limit.
    HeadersTooLarge,
    /// 401: no credentials, or credentials the server does not accept; sent with
    /// `WWW-Authenticate: Bearer`.
    Unauthorized,
    /// 403: authenticated, but not allowed to do this.
    Forbidden,
    /// 404: unknown path or message id.
    NotFound,
    /// 405: known path, other method.
    MethodNotAllowed,
    /// 409: an idempotency key reused with another body.
    IdempotencyConflict,
    /// 409: what the request would create exists already (a conversation id).
    Conflict,
    /// 413: the body or the content is over its limit.
    PayloadTooLarge,
    /// 415: a POST without a JSON content type.
    UnsupportedMediaType,
    /// 429: the rate limit was hit.
    RateLimited,
    /// 503: load shed.
    Overloaded,
    /// 503: the request ran past its deadline.
    Timeout,
    /// 503: the store is unavailable.
    Unavailable,
    /// 500: a bug.
    Internal,
}

impl ErrorCode {
    /// The code as it appears in the `error` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::IdempotencyConflict => "idempotency_conflict",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status this code is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidJson | ErrorCode::ValidationFailed | ErrorCode::MalformedRequest => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::IdempotencyConflict | ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Overloaded | ErrorCode::Timeout | ErrorCode::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as the client sees it: a status, `{"error": code, "message": sentence}`, and the
/// headers the code calls for (`Allow`, `Retry-After`, `WWW-Authenticate`).
///
/// Endpoints turn it into a response with [`ApiError::to_response`]; layers return it (or a typed
/// error that converts into it) and the rescue layer renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    allow: Option<HeaderValue>,
    retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    message: &'a str,
}

impl ApiError {
    /// An error with `code` and a sentence a person can act on.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            allow: None,
            retry_after_secs: None,
        }
    }

    /// 400 `invalid_json`.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidJson, message)
    }

    /// 400 `validation_failed`; the message names the field and the rule.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    /// 401 `unauthorized`, with `WWW-Authenticate: Bearer`. The message says what is wrong with
    /// the credentials and never repeats them.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// 403 `forbidden`: the caller is known but may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 405 `method_not_allowed`, with `Allow` listing `allowed`.
    pub fn method_not_allowed(method: &Method, allowed: &[Method]) -> Self {
        let list = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut error = Self::new(
            ErrorCode::MethodNotAllowed,
            format!("{method} is not allowed on this path; use {list}"),
        );
        error.allow = HeaderValue::from_str(&list).ok();
        error
    }

    /// 413 `payload_too_large` for a request body over `limit` bytes.
    pub fn body_too_large(limit: u64) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is over the limit of {limit} bytes"),
        )
    }

    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with the header Content-Type: application/json",
        )
    }

    /// 503 `unavailable`: the store cannot serve the request now.
    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "storage is unavailable; retry later",
        )
        .with_retry_after(1)
    }

    /// 500 `internal`. The client learns nothing of the cause; the caller logs it.
    pub fn internal() -> Self {
        Self::new(
            ErrorCode::Internal,
            "the server hit an unexpected error; it has been logged",
        )
    }

    /// Adds `Retry-After: secs`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The JSON body alone, `{"error": code, "message": sentence}`, for a caller that writes
    /// the response itself.
    pub fn body_json(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody {
            error: self.code.as_str(),
            message: &self.message,
        })
        .unwrap_or_default()
    }

    /// The response: status, JSON body and headers.
    pub fn to_response(&self) -> Response<ResponseBody> {
        let mut response = Response::new(full(self.body_json()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(allow) = &self.allow {
            headers.insert(ALLOW, allow.clone());
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == ErrorCode::Unauthorized {
            // RFC 6750: the scheme the client should answer with.
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        let code = if e.too_large {
            ErrorCode::PayloadTooLarge
        } else {
            ErrorCode::ValidationFailed
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    /// Maps a store failure to what the client may know of it; internals are logged, not sent.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(reason) => {
                tracing::error!(%reason, "storage is unavailable");
                ApiError::unavailable()
            }
            StoreError::Closed => ApiError::unavailable(),
            StoreError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            StoreError::NotFound(message) => ApiError::not_found(message),
            StoreError::Invalid(v) => v.into(),
            StoreError::IdempotencyConflict(_) => ApiError::new(
                ErrorCode::IdempotencyConflict,
                "this Idempotency-Key was already used with a different request; \
                 send a new key with a new message",
            ),
            StoreError::Corrupt(_) | StoreError::Internal(_) => {
                tracing::error!(error = %e, "store failure");
                ApiError::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<ResponseBody>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn renders_the_one_error_body() {
        let response = ApiError::validation("limit must be at least 1").to_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            body_json(response).await,
            serde_json::json!({"error": "validation_failed", "message": "limit must be at least 1"})
        );
    }

    #[tokio::test]
    async fn method_not_allowed_sets_allow() {
        let response = ApiError::method_not_allowed(&Method::DELETE, &[Method::GET, Method::HEAD])
            .to_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
        assert_eq!(body_json(response).await["error"], "method_not_allowed");
    }

    #[tokio::test]
    async fn unauthorized_asks_for_a_bearer_token_and_forbidden_does_not() {
        let response = ApiError::unauthorized("the token has expired").to_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
        assert_eq!(body_json(response).await["error"], "unauthorized");
        let response = ApiError::forbidden("users cannot add members").to_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
        assert_eq!(body_json(response).await["error"], "forbidden");
    }

    #[test]
    fn store_failures_map_to_503_or_500_without_internals() {
        let e: ApiError = StoreError::Unavailable("No space left on device".into()).into();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(!e.message().contains("space"));
        assert_eq!(e.to_response().headers()[RETRY_AFTER], "1");

        let e: ApiError = StoreError::Corrupt("bad bytes at 0x1234".into()).into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message().contains("0x1234"));
    }

    #[test]
    fn oversized_fields_are_413() {
        let limits = kalamdb_core::Limits {
            max_message_size: 1,
            max_metadata_size: 10,
        };
        let message = kalamdb_core::NewMessage {
            conversation_id: "c".into(),
            from: "a".into(),
            content: "too long".into(),
            metadata: Default::default(),
        };
        let e: ApiError = message.validate(&limits).unwrap_err().into();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message().contains("limit of 1 bytes"));
    }
}

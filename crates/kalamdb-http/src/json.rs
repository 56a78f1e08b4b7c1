//! Reading JSON requests and writing JSON responses.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::error::Category;

use crate::body::{full, BodyTooLarge, BoxError, ResponseBody};
use crate::error::ApiError;

/// A 200-style response carrying `value` as JSON.
pub fn json_response<T: Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(bytes) => json_bytes_response(status, bytes),
        Err(e) => {
            tracing::error!(error = %e, "response did not serialize");
            ApiError::internal().to_response()
        }
    }
}

/// A response whose body is `json`, already encoded.
pub fn json_bytes_response(status: StatusCode, json: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(full(json));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Whether the headers declare a JSON body (`application/json`, any parameters, any case).
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Reads a JSON request body into `T`.
///
/// Errors: 415 without a JSON content type; 413 when the body runs past the body limit;
/// 400 `invalid_json` for malformed JSON; 400 `validation_failed` naming the field for a missing,
/// mistyped or unknown field.
pub async fn read_json<T, B>(headers: &HeaderMap, body: B) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: Body,
    B::Error: Into<BoxError>,
{
    if !is_json_content_type(headers) {
        return Err(ApiError::unsupported_media_type());
    }
    let bytes = body
        .collect()
        .await
        .map_err(|e| body_error(e.into()))?
        .to_bytes();
    parse_json(&bytes)
}

/// Parses `bytes` as one JSON object of type `T`, with the error mapping of [`read_json`].
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Tracking the path costs on every field, and only a failure needs it: parse without it
    // first, and parse again with it to word the error. The first parse takes the body as text,
    // checked as UTF-8 once in bulk rather than string by string as the slice reader does; a
    // body that is not UTF-8 is malformed JSON either way, so it goes straight to the wording.
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(ObjectOnly(value)) = serde_json::from_str(text) {
            return Ok(value);
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let ObjectOnly(value) = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        json_error(&path, e.into_inner())
    })?;
    deserializer.end().map_err(|e| json_error(".", e))?;
    Ok(value)
}

/// A `T` that must arrive as a JSON object.
///
/// serde's derived structs also accept an array of their fields in order, so
/// `["conv", "alice", "hi"]` would pass as a message; the contract speaks of objects only.
/// [`parse_json`] applies this to the whole body; request types wrap nested structs in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(ObjectOnly)
    }
}

fn json_error(path: &str, e: serde_json::Error) -> ApiError {
    match e.classify() {
        Category::Data => {
            if path == "." {
                ApiError::validation(format!("request body: {e}"))
            } else {
                ApiError::validation(format!("{path}: {e}"))
            }
        }
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::invalid_json(format!("the request body is not valid JSON: {e}"))
        }
    }
}

fn body_error(e: BoxError) -> ApiError {
    // The limit error may come straight from the limited body or wrapped by hyper.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = source {
        if let Some(too_large) = err.downcast_ref::<BodyTooLarge>() {
            return ApiError::body_too_large(too_large.limit);
        }
        source = err.source();
    }
    ApiError::invalid_json(format!("the request body could not be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use http_body_util::Full;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        name: String,
        count: u32,
    }

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        headers
    }

    async fn read(body: &str) -> Result<Req, ApiError> {
        read_json(&json_headers(), Full::new(Bytes::from(body.to_owned()))).await
    }

    #[tokio::test]
    async fn parses_a_valid_body() {
        let req = read(r#"{"name":"a","count":2}"#).await.unwrap();
        assert_eq!(req.count, 2);
    }

    #[tokio::test]
    async fn names_the_field_in_errors() {
        let e = read(r#"{"name":"a","count":"two"}"#).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::ValidationFailed);
        assert!(e.message().starts_with("count:"), "{}", e.message());

        let e = read(r#"{"name":"a"}"#).await.unwrap_err();
        assert!(
            e.message().contains("missing field `count`"),
            "{}",
            e.message()
        );

        let e = read(r#"{"name":"a","count":1,"Count":2}"#)
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::ValidationFailed);
        assert!(
            e.message().contains("unknown field `Count`"),
            "{}",
            e.message()
        );

        let e = read(r#"{"name":"a","count":-1}"#).await.unwrap_err();
        assert!(e.message().starts_with("count:"), "{}", e.message());
    }

    #[tokio::test]
    async fn only_an_object_is_accepted() {
        for body in [r#"["a", 1]"#, "\"a\"", "null", "5"] {
            let e = read(body).await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationFailed, "{body}");
            assert!(e.message().contains("JSON object"), "{}", e.message());
        }
    }

    #[tokio::test]
    async fn malformed_json_is_invalid_json() {
        for body in [
            "",
            "{",
            "not json",
            r#"{"name":"a","count":1} trailing"#,
            "\u{0}",
        ] {
            let e = read(body).await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidJson, "{body:?}: {e}");
        }
    }

    #[tokio::test]
    async fn requires_a_json_content_type() {
        let mut headers = HeaderMap::new();
        let e = read_json::<Req, _>(&headers, Full::new(Bytes::new()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnsupportedMediaType);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let e = read_json::<Req, _>(&headers, Full::new(Bytes::new()))
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    /// A body that fails the way the body-limit layer's body does once over its limit.
    struct OverLimitBody;

    impl Body for OverLimitBody {
        type Data = Bytes;
        type Error = BodyTooLarge;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BodyTooLarge>>> {
            std::task::Poll::Ready(Some(Err(BodyTooLarge { limit: 1 })))
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413() {
        let e = read_json::<Req, _>(&json_headers(), OverLimitBody)
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::PayloadTooLarge);
        assert!(e.message().contains("1 bytes"));
    }
}

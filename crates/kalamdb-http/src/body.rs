//! The body types the stack passes around.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// The error type layers and bodies box their failures into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body: one type, so the router and the layers need not be generic over it.
/// Boxed once per response; streaming endpoints put their stream in the same box.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A response body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A request body that ran past the body limit (`middleware.body_limit.max_bytes`).
///
/// The body-limit layer's body yields it as its error, and whoever reads the body turns it into a
/// 413 `payload_too_large`. It lives here, not in the middleware, so endpoints recognise it
/// without depending on the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body is over the limit of {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit in bytes.
    pub limit: u64,
}

/// The peer address of the connection a request arrived on, put in each request's extensions
/// by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// The request's id, put in its extensions by the request-id layer and echoed on the response
/// as `x-request-id`, so a client's report and the server's log line can be matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub http::HeaderValue);

impl RequestId {
    /// The id as text: it is always visible ASCII.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }
}

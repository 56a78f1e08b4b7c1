//! KalamDB's HTTP vocabulary, shared by the endpoints (`kalamdb-services`) and the layers
//! (`kalamdb-middleware`) so neither needs the other.
//!
//! # Layout
//!
//! - [`error`]: [`ApiError`] and [`ErrorCode`]: the one JSON error body,
//!   `{"error": "<code>", "message": "<sentence>"}`, with its status and headers.
//! - [`json`]: reading a JSON request ([`read_json`]: 415, 413, 400 `invalid_json`,
//!   400 `validation_failed` naming the field) and writing JSON responses.
//! - [`body`]: [`ResponseBody`], [`BoxError`], and the types that cross from the server and the
//!   layers to the endpoints: [`BodyTooLarge`] and [`ClientAddr`].
//! - [`principal`]: [`Principal`], who a request comes from, which the auth layer sets and the
//!   endpoints hold to the access rules.
//!
//! # Status codes
//!
//! Every code of the contract: 400, 401, 403, 404, 405, 409, 413, 415, 429, 500 and 503 (see [`ErrorCode`]).

pub mod body;
pub mod error;
pub mod json;
pub mod principal;

pub use body::{full, BodyTooLarge, BoxError, ClientAddr, RequestId, ResponseBody};
pub use error::{ApiError, ErrorCode};
pub use json::{
    is_json_content_type, json_bytes_response, json_response, parse_json, read_json, ObjectOnly,
};
pub use principal::Principal;

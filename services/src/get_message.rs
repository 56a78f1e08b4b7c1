//! `GET /api/v1/messages/{msg_id}`: reads one message.

use http::{Request, Response, StatusCode};
use kalamdb_core::{MessageId, StoreHandle};
use kalamdb_http::{json_bytes_response, ApiError, ResponseBody};

use crate::router::PathParams;

/// Answers the stored message whose id ends the path, or 404 `not_found`.
///
/// The id is the path's `{msg_id}`, in decimal; anything else is a 400 naming `msg_id`.
#[derive(Debug, Clone)]
pub struct GetMessage {
    store: StoreHandle,
}

impl GetMessage {
    /// An endpoint reading from `store`.
    pub fn new(store: StoreHandle) -> Self {
        Self { store }
    }

    async fn handle<B>(self, request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        let params = PathParams::of(&request)?;
        let text = params.require("msg_id")?;
        let id: MessageId = text
            .parse()
            .map_err(|e| ApiError::validation(format!("msg_id {e}; got {text:?}")))?;
        match self.store.get(id).await? {
            // The stored JSON is exactly the API's encoding: no decode and re-encode.
            Some(stored) => Ok(json_bytes_response(StatusCode::OK, stored.json)),
            None => Err(ApiError::not_found(format!("no message has id {id}"))),
        }
    }
}

endpoint_service!(GetMessage);

//! `GET /api/v1/messages/{msg_id}`: reads one message.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use kalamdb_core::{MessageId, StoreHandle};
use kalamdb_http::{json_bytes_response, ApiError, ResponseBody};
use tower_service::Service;

use crate::EndpointFuture;

/// Answers the stored message whose id ends the path, or 404 `not_found`.
///
/// The id is the last path segment, in decimal; anything else is a 400 naming `msg_id`.
#[derive(Debug, Clone)]
pub struct GetMessage {
    store: StoreHandle,
}

impl GetMessage {
    /// An endpoint reading from `store`.
    pub fn new(store: StoreHandle) -> Self {
        Self { store }
    }

    async fn handle(
        self,
        id: Result<MessageId, ApiError>,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let id = id?;
        match self.store.get(id).await? {
            // The stored JSON is exactly the API's encoding: no decode and re-encode.
            Some(stored) => Ok(json_bytes_response(StatusCode::OK, stored.json)),
            None => Err(ApiError::not_found(format!("no message has id {id}"))),
        }
    }
}

fn id_from_path(path: &str) -> Result<MessageId, ApiError> {
    let segment = path.rsplit('/').next().unwrap_or_default();
    segment
        .parse()
        .map_err(|e| ApiError::validation(format!("msg_id {e}; got {segment:?}")))
}

impl<B> Service<Request<B>> for GetMessage {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Parse before the future so the request (and its body type) need not be Send.
        let id = id_from_path(request.uri().path());
        crate::respond(self.clone().handle(id))
    }
}

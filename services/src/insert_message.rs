//! `POST /api/v1/messages`: stores one message.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use http_body::Body;
use kalamdb_core::{Limits, NewMessage, StoreHandle};
use kalamdb_http::{json_response, read_json, ApiError, BoxError, ResponseBody};
use tower_service::Service;

use crate::EndpointFuture;

/// Stores the message in the request body and answers `{msg_id, conversation_id, timestamp}`.
///
/// Rejections: 415 without a JSON content type, 400 for malformed JSON or an invalid field, 413
/// when the content or the metadata is over its limit, 503 when the store is unavailable.
#[derive(Debug, Clone)]
pub struct InsertMessage {
    store: StoreHandle,
    limits: Limits,
}

impl InsertMessage {
    /// An endpoint writing to `store` and holding messages to `limits`.
    pub fn new(store: StoreHandle, limits: Limits) -> Self {
        Self { store, limits }
    }

    async fn handle<B>(self, request: Request<B>) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let message: NewMessage = read_json(&parts.headers, body).await?;
        message.validate(&self.limits)?;
        let inserted = self.store.insert(message).await?;
        metrics::counter!(crate::metrics::MESSAGES_INSERTED_TOTAL).increment(1);
        Ok(json_response(StatusCode::OK, &inserted))
    }
}

impl<B> Service<Request<B>> for InsertMessage
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        crate::respond(self.clone().handle(request))
    }
}

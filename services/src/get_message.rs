//! `GET /api/v1/messages/{msg_id}`: reads one message.

use http::{Request, Response, StatusCode};
use kalamdb_core::{MessageId, StoreHandle};
use kalamdb_http::{json_bytes_response, ApiError, ResponseBody};

use crate::router::PathParams;

/// Answers the stored message whose id ends the path, or 404 `not_found`.
///
/// The id is the path's `{msg_id}`, in decimal; anything else is a 400 naming `msg_id`. A user
/// (auth on) gets the same 404 for a message of a conversation they are not a member of.
#[derive(Debug, Clone)]
pub struct GetMessage {
    store: StoreHandle,
}

impl GetMessage {
    /// An endpoint reading from `store`.
    pub fn new(store: StoreHandle) -> Self {
        Self { store }
    }

    async fn handle<B>(self, mut request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        let params = PathParams::take(&mut request)?;
        let text = params.require("msg_id")?;
        let id: MessageId = text
            .parse()
            .map_err(|e| ApiError::validation(format!("msg_id {e}; got {text:?}")))?;
        let found = match crate::access::user_of(&request) {
            Some(user) => self.store.get_as_member(id, user).await?,
            None => self.store.get(id).await?,
        };
        match found {
            // The stored JSON is exactly the API's encoding: no decode and re-encode.
            Some(stored) => Ok(json_bytes_response(StatusCode::OK, stored.json)),
            None => Err(ApiError::not_found(format!("no message has id {id}"))),
        }
    }
}

endpoint_service!(GetMessage);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{get, send, store};
    use kalamdb_core::NewMessage;

    #[tokio::test]
    async fn answers_the_stored_message_by_its_id() {
        let (handle, _, _) = store();
        let inserted = handle
            .insert(NewMessage {
                conversation_id: "c".into(),
                from: "a".into(),
                content: "hello".into(),
                metadata: Default::default(),
            })
            .await
            .unwrap();
        let service = GetMessage::new(handle);
        for path in [
            format!("/api/v1/messages/{}", inserted.msg_id),
            // Leading zeros, and digits percent-encoded, name the same id.
            format!("/api/v1/messages/000{}", inserted.msg_id),
            format!("/api/v1/messages/%3{}", &inserted.msg_id.to_string()),
        ] {
            let (status, json) = send(&service, get(&path)).await;
            assert_eq!(status, StatusCode::OK, "{path}: {json}");
            assert_eq!(json["msg_id"], inserted.msg_id.to_string());
            assert_eq!(json["content"], "hello");
        }
    }

    #[tokio::test]
    async fn an_unknown_id_is_a_404_and_a_malformed_one_a_400() {
        let (handle, _, _) = store();
        let service = GetMessage::new(handle);
        let (status, json) = send(&service, get("/api/v1/messages/42")).await;
        assert_eq!(
            (status, json["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        for bad in ["abc", "-1", "18446744073709551616", "%ZZ"] {
            let path = format!("/api/v1/messages/{bad}");
            let (status, json) = send(&service, get(&path)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                json["message"].as_str().unwrap().contains("msg_id"),
                "{json}"
            );
        }
    }
}

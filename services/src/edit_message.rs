//! `PATCH` and `DELETE /api/v1/messages/{msg_id}`: edit or delete one message
//! (`../shared/DESIGN.md` §6.2).

use http::{Request, Response, StatusCode};
use http_body::Body;
use kalamdb_core::{Limits, MessageId, MessagePatch, StoreError, StoreHandle};
use kalamdb_http::{json_bytes_response, read_json, ApiError, BoxError, ResponseBody};

use crate::router::PathParams;

/// The path's `{msg_id}`.
fn msg_id<B>(request: &mut Request<B>) -> Result<MessageId, ApiError> {
    let params = PathParams::take(request)?;
    let text = params.require("msg_id")?;
    text.parse()
        .map_err(|e| ApiError::validation(format!("msg_id {e}; got {text:?}")))
}

fn no_message(id: MessageId) -> ApiError {
    ApiError::not_found(format!("no message has id {id}"))
}

/// A user changes only their own messages, in conversations they are a member of: the same 404
/// as for no message at all when they are not, and 403 for someone else's message.
async fn require_author(
    store: &StoreHandle,
    id: MessageId,
    user: String,
    what: &str,
) -> Result<(), ApiError> {
    let Some(stored) = store.get_as_member(id, user.clone()).await? else {
        return Err(no_message(id));
    };
    let message = stored
        .decode()
        .map_err(|e| StoreError::Corrupt(format!("message {id} does not decode: {e}")))?;
    if message.from != user {
        return Err(ApiError::forbidden(format!(
            "a user token {what} only its own user's messages; message {id} is from another"
        )));
    }
    Ok(())
}

/// `PATCH /api/v1/messages/{msg_id}`: `{content?, metadata?}` (at least one, each held to the
/// limits of a new message; metadata is replaced whole) → 200 the message, with `edited_at`;
/// 404 when there is none. Its conversation's `updated_at` moves to now, and live streams get
/// `message_updated`. A user (auth on) edits only their own messages (403 otherwise).
#[derive(Debug, Clone)]
pub struct PatchMessage {
    store: StoreHandle,
    limits: Limits,
}

impl PatchMessage {
    /// An endpoint writing to `store`, holding edits to `limits`.
    pub fn new(store: StoreHandle, limits: Limits) -> Self {
        Self { store, limits }
    }

    async fn handle<B>(self, mut request: Request<B>) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let id = msg_id(&mut request)?;
        let user = crate::access::user_of(&request);
        let (parts, body) = request.into_parts();
        let patch: MessagePatch = read_json(&parts.headers, body).await?;
        patch.validate(&self.limits)?;
        if let Some(user) = user {
            require_author(&self.store, id, user, "edits").await?;
        }
        match self.store.update_message(id, patch).await? {
            Some(stored) => Ok(json_bytes_response(StatusCode::OK, stored.json)),
            None => Err(no_message(id)),
        }
    }
}

endpoint_service!(PatchMessage);

/// `DELETE /api/v1/messages/{msg_id}`: 204, or 404 when there is none. The message is gone from
/// every read at once and from the files within `storage.erase_within_secs`; its
/// conversation's count and last message follow, and live streams get `message_deleted`. A
/// user (auth on) deletes only their own messages (403 otherwise).
#[derive(Debug, Clone)]
pub struct DeleteMessage {
    store: StoreHandle,
}

impl DeleteMessage {
    /// An endpoint writing to `store`.
    pub fn new(store: StoreHandle) -> Self {
        Self { store }
    }

    async fn handle<B>(self, mut request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        let id = msg_id(&mut request)?;
        if let Some(user) = crate::access::user_of(&request) {
            require_author(&self.store, id, user, "deletes").await?;
        }
        match self.store.delete_message(id).await? {
            Some(_) => Ok(crate::conversations::no_content()),
            None => Err(no_message(id)),
        }
    }
}

endpoint_service!(DeleteMessage);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{send, store};
    use bytes::Bytes;
    use http_body_util::Full;
    use kalamdb_core::NewMessage;
    use serde_json::json;

    fn request(method: &str, uri: &str, body: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    }

    async fn stored(handle: &StoreHandle) -> MessageId {
        handle
            .insert(NewMessage {
                conversation_id: "c".into(),
                from: "alice".into(),
                content: "hello".into(),
                metadata: Default::default(),
            })
            .await
            .unwrap()
            .msg_id
    }

    #[tokio::test]
    async fn a_patch_answers_the_edited_message_and_bad_patches_change_nothing() {
        let (handle, _, _) = store();
        let id = stored(&handle).await;
        let service = PatchMessage::new(handle.clone(), Limits::default());
        let uri = format!("/api/v1/messages/{id}");
        for (body, field) in [
            ("{}", "content"),
            (r#"{"content":""}"#, "content"),
            (r#"{"content":null,"metadata":{}}"#, "content"),
            (r#"{"metadata":null}"#, "metadata"),
            (r#"{"metadata":[1]}"#, "metadata"),
            (r#"{"text":"x"}"#, "text"),
        ] {
            let (status, json) = send(&service, request("PATCH", &uri, body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
            assert!(json["message"].as_str().unwrap().contains(field), "{json}");
        }
        assert_eq!(
            handle
                .get(id)
                .await
                .unwrap()
                .unwrap()
                .decode()
                .unwrap()
                .content,
            "hello"
        );

        let (status, json) = send(
            &service,
            request("PATCH", &uri, r#"{"content":"hi","metadata":{"k":1}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["content"], "hi");
        assert_eq!(json["metadata"], json!({"k": 1}));
        assert!(json["edited_at"].as_u64().unwrap() >= json["timestamp"].as_u64().unwrap());

        let (status, _) = send(
            &service,
            request("PATCH", "/api/v1/messages/42", r#"{"content":"x"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_delete_answers_204_then_404() {
        let (handle, _, _) = store();
        let id = stored(&handle).await;
        let service = DeleteMessage::new(handle.clone());
        let uri = format!("/api/v1/messages/{id}");
        let (status, _) = send(&service, request("DELETE", &uri, "")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(handle.get(id).await.unwrap().is_none());
        let (status, json) = send(&service, request("DELETE", &uri, "")).await;
        assert_eq!(
            (status, &json["error"]),
            (StatusCode::NOT_FOUND, &json!("not_found"))
        );
        let (status, _) = send(&service, request("DELETE", "/api/v1/messages/x", "")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}

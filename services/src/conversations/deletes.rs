//! Deleting a conversation's messages: a trim, or the whole conversation
//! (`../shared/DESIGN.md` §6.2).

use http::{Request, Response, StatusCode};
use kalamdb_core::{MessageId, StoreHandle};
use kalamdb_http::{ApiError, ResponseBody};
use percent_encoding::percent_decode_str;

use super::{conversation_id, no_content, no_conversation};

/// A user deletes a conversation, or trims it, only when it is theirs alone: a member (404
/// otherwise, as for none at all) and its only member (403 otherwise: the others' history is
/// theirs too).
async fn require_sole_member(
    store: &StoreHandle,
    conversation_id: &str,
    user: String,
) -> Result<(), ApiError> {
    crate::access::require_member(store, conversation_id, user.clone()).await?;
    let members = store
        .members(conversation_id.to_owned())
        .await?
        .unwrap_or_default();
    if members != [user] {
        return Err(ApiError::forbidden(
            "a user token deletes only conversations it is the only member of; \
             leave the conversation instead, or ask a service to delete it",
        ));
    }
    Ok(())
}

/// `DELETE /api/v1/conversations/{conversation_id}/messages?before_msg_id=`: deletes every
/// message of the conversation older than `before_msg_id` (exclusive), or every message
/// without it → 200 `{"deleted": n}`; 404 when the conversation does not exist. The conversation
/// stays, its count and last message exact; live streams get `messages_deleted`.
#[derive(Debug, Clone)]
pub struct TrimConversation {
    store: StoreHandle,
}

impl TrimConversation {
    /// An endpoint writing to `store`.
    pub fn new(store: StoreHandle) -> Self {
        Self { store }
    }

    async fn handle<B>(self, mut request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        let (id, _) = conversation_id(&mut request)?;
        let before = parse_before(request.uri().query().unwrap_or_default())?;
        if let Some(user) = crate::access::user_of(&request) {
            require_sole_member(&self.store, &id, user).await?;
        }
        let before = before.unwrap_or(MessageId::from_u64(u64::MAX));
        match self.store.trim_conversation(id.clone(), before).await? {
            Some(deleted) => Ok(kalamdb_http::json_response(
                StatusCode::OK,
                &serde_json::json!({ "deleted": deleted }),
            )),
            None => Err(no_conversation(&id)),
        }
    }
}

/// The query string's `before_msg_id`, the only parameter.
fn parse_before(query: &str) -> Result<Option<MessageId>, ApiError> {
    let mut before = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode_str(name).decode_utf8_lossy();
        if name != "before_msg_id" {
            return Err(ApiError::validation(format!(
                "unknown query parameter {name:?}; the only parameter is before_msg_id"
            )));
        }
        if before.is_some() {
            return Err(ApiError::validation(
                "before_msg_id must be given at most once",
            ));
        }
        let value = percent_decode_str(value).decode_utf8_lossy();
        let id: MessageId = value
            .parse()
            .map_err(|e| ApiError::validation(format!("before_msg_id {e}; got {value:?}")))?;
        before = Some(id);
    }
    Ok(before)
}

endpoint_service!(TrimConversation);

/// `DELETE /api/v1/conversations/{conversation_id}`: deletes the conversation and everything of
/// it (messages, their index entries and idempotency records, members, listing entries, record)
/// → 204; 404 when it does not exist. Its live streams get `conversation_deleted` and end. A
/// later message to the same id starts a new conversation.
#[derive(Debug, Clone)]
pub struct DeleteConversation {
    store: StoreHandle,
}

impl DeleteConversation {
    /// An endpoint writing to `store`.
    pub fn new(store: StoreHandle) -> Self {
        Self { store }
    }

    async fn handle<B>(self, mut request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        let (id, _) = conversation_id(&mut request)?;
        if let Some(user) = crate::access::user_of(&request) {
            require_sole_member(&self.store, &id, user).await?;
        }
        if self.store.delete_conversation(id.clone()).await? {
            Ok(no_content())
        } else {
            Err(no_conversation(&id))
        }
    }
}

endpoint_service!(DeleteConversation);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{send, store};
    use bytes::Bytes;
    use http_body_util::Full;
    use kalamdb_core::NewMessage;
    use serde_json::json;

    fn delete(uri: &str) -> Request<Full<Bytes>> {
        Request::delete(uri).body(Full::new(Bytes::new())).unwrap()
    }

    async fn fill(handle: &StoreHandle, n: usize) -> Vec<MessageId> {
        let batch = (0..n)
            .map(|i| NewMessage {
                conversation_id: "c".into(),
                from: "alice".into(),
                content: format!("m{i}"),
                metadata: Default::default(),
            })
            .collect();
        let inserted = handle.insert_batch(batch).await.unwrap();
        inserted.into_iter().map(|i| i.msg_id).collect()
    }

    #[tokio::test]
    async fn a_trim_answers_how_many_went_and_refuses_bad_bounds() {
        let (handle, _, _) = store();
        let ids = fill(&handle, 5).await;
        let service = TrimConversation::new(handle.clone());
        let uri = format!("/api/v1/conversations/c/messages?before_msg_id={}", ids[2]);
        let (status, json) = send(&service, delete(&uri)).await;
        assert_eq!((status, json), (StatusCode::OK, json!({"deleted": 2})));
        let conversation = handle.conversation("c".into()).await.unwrap().unwrap();
        assert_eq!(conversation.message_count, 3);

        for bad in [
            "?before_msg_id=x",
            "?before=1",
            "?before_msg_id=1&before_msg_id=2",
        ] {
            let (status, json) = send(
                &service,
                delete(&format!("/api/v1/conversations/c/messages{bad}")),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {json}");
        }
        assert_eq!(
            handle
                .conversation("c".into())
                .await
                .unwrap()
                .unwrap()
                .message_count,
            3
        );
        // Without a bound: everything, the conversation stays.
        let (status, json) = send(&service, delete("/api/v1/conversations/c/messages")).await;
        assert_eq!((status, json), (StatusCode::OK, json!({"deleted": 3})));
        let (status, _) = send(&service, delete("/api/v1/conversations/none/messages")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn deleting_a_conversation_answers_204_then_404() {
        let (handle, _, _) = store();
        let ids = fill(&handle, 3).await;
        let service = DeleteConversation::new(handle.clone());
        let (status, _) = send(&service, delete("/api/v1/conversations/c")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(handle.get(ids[0]).await.unwrap().is_none());
        let (status, json) = send(&service, delete("/api/v1/conversations/c")).await;
        assert_eq!(
            (status, &json["error"]),
            (StatusCode::NOT_FOUND, &json!("not_found"))
        );
    }
}

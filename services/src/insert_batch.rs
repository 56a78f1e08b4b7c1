//! `POST /api/v1/messages/batch`: stores several messages, all or nothing.

use http::{Request, Response, StatusCode};
use http_body::Body;
use kalamdb_core::{Limits, NewMessage, StoreHandle};
use kalamdb_http::{json_bytes_response, read_json, ApiError, BoxError, ResponseBody};
use serde::Deserialize;

/// The default of `limits.max_batch_messages`.
pub const DEFAULT_MAX_BATCH_MESSAGES: usize = 1000;

/// Stores every message of `{"messages": [...]}` in one atomic write and answers
/// `{"messages": [{msg_id, conversation_id, timestamp}, ...]}` in input order, ids increasing.
///
/// Nothing is stored unless everything is: an invalid message is a 400 (413 when over a size
/// limit) naming its index (`messages[3].content must not be empty`). An empty batch and one over
/// `max_messages` are 400. A user's batch (auth on) is checked message by message like a single
/// message, and one refusal (403, 404) refuses it whole, naming the index.
#[derive(Debug, Clone)]
pub struct InsertBatch {
    store: StoreHandle,
    limits: Limits,
    max_messages: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    messages: Vec<NewMessage>,
}

impl InsertBatch {
    /// An endpoint writing to `store`, holding each message to `limits` and each batch to at
    /// most `max_messages` messages.
    pub fn new(store: StoreHandle, limits: Limits, max_messages: usize) -> Self {
        Self {
            store,
            limits,
            max_messages,
        }
    }

    async fn handle<B>(self, request: Request<B>) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let user = crate::access::user_of(&request);
        let (parts, body) = request.into_parts();
        let batch: BatchRequest = read_json(&parts.headers, body).await?;
        let count = batch.messages.len();
        if count == 0 {
            return Err(ApiError::validation(
                "messages must hold at least one message",
            ));
        }
        if count > self.max_messages {
            return Err(ApiError::validation(format!(
                "messages holds {count} messages, over the limit of {} \
                     (limits.max_batch_messages); split the batch",
                self.max_messages
            )));
        }
        for (index, message) in batch.messages.iter().enumerate() {
            message.validate(&self.limits).map_err(|e| {
                let api = ApiError::from(e.clone());
                ApiError::new(api.code(), format!("messages[{index}].{e}"))
            })?;
        }
        let inserted = match user {
            Some(user) => {
                for (index, message) in batch.messages.iter().enumerate() {
                    let field = format!("messages[{index}].from");
                    crate::access::require_own_from(&user, &field, &message.from)?;
                }
                self.store
                    .insert_as_member(user, batch.messages, None)
                    .await?
            }
            None => self.store.insert_batch(batch.messages).await?,
        };
        metrics::counter!(crate::metrics::MESSAGES_INSERTED_TOTAL).increment(count as u64);
        // `{"messages":[...]}`, each answer written by hand as `Inserted::write_json` does.
        let size = inserted
            .iter()
            .map(|i| i.approximate_json_len() + 1)
            .sum::<usize>();
        let mut json = Vec::with_capacity(16 + size);
        json.extend_from_slice(br#"{"messages":["#);
        for (i, answer) in inserted.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            answer.write_json(&mut json);
        }
        json.extend_from_slice(b"]}");
        Ok(json_bytes_response(StatusCode::OK, json))
    }
}

endpoint_service!(InsertBatch);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{post_json, send, store};
    use kalamdb_core::{MessageId, Store};

    fn batch(contents: &[&str]) -> String {
        let messages: Vec<_> = contents
            .iter()
            .map(|c| serde_json::json!({"conversation_id": "c", "from": "a", "content": c}))
            .collect();
        serde_json::json!({ "messages": messages }).to_string()
    }

    #[tokio::test]
    async fn stores_every_message_with_ids_in_input_order() {
        let (handle, mem, _) = store();
        let service = InsertBatch::new(handle, Limits::default(), 3);
        let request = post_json("/api/v1/messages/batch", &batch(&["1", "2", "3"]));
        let (status, json) = send(&service, request).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let ids: Vec<MessageId> = json["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["msg_id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let first: serde_json::Value =
            serde_json::from_slice(&mem.get(ids[0]).unwrap().unwrap().json).unwrap();
        assert_eq!(first["content"], "1");
    }

    #[tokio::test]
    async fn one_bad_message_refuses_the_batch_naming_its_index() {
        let (handle, mem, _) = store();
        let service = InsertBatch::new(handle, Limits::default(), 3);
        for (body, needle) in [
            (batch(&["ok", ""]), "messages[1].content"),
            (batch(&[]), "at least one"),
            (batch(&["1", "2", "3", "4"]), "limits.max_batch_messages"),
        ] {
            let (status, json) = send(&service, post_json("/api/v1/messages/batch", &body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(json["message"].as_str().unwrap().contains(needle), "{json}");
        }
        assert!(mem.is_empty(), "all or nothing");
    }
}

//! `POST /api/v1/query`: one page of a conversation's history, with a cursor for the next.

use std::io::Write;

use http::{Request, Response, StatusCode};
use http_body::Body;
use kalamdb_core::message::validate_name;
use kalamdb_core::{MessageId, Order, Page, Query, StoreHandle};
use kalamdb_http::{json_bytes_response, read_json, ApiError, BoxError, ResponseBody};
use serde::Deserialize;

/// The page sizes a query may ask for (`limits.default_query_limit`, `limits.max_query_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// The page size when the request names none.
    pub default_limit: usize,
    /// The largest page size a request may ask for.
    pub max_limit: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            default_limit: 50,
            max_limit: 1000,
        }
    }
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    conversation_id: String,
    #[serde(default)]
    since_msg_id: Option<MessageId>,
    #[serde(default)]
    before_msg_id: Option<MessageId>,
    #[serde(
        default,
        deserialize_with = "kalamdb_core::strict_json::optional_whole"
    )]
    limit: Option<u64>,
    #[serde(default)]
    order: Order,
}

/// Answers `{messages, count, has_more, next_cursor}` for one page of one conversation.
///
/// `since_msg_id` and `before_msg_id` are exclusive bounds (a decimal string or a number);
/// `limit` is 1 to the maximum; `order` is `asc` (default) or `desc`. `next_cursor` is the last
/// returned id when `has_more`, else null: pass it as `since_msg_id` (asc) or `before_msg_id`
/// (desc) for the next page. Every invalid field is a 400 naming it. A user (auth on) querying
/// a conversation they are not a member of gets 404, as for one that does not exist.
#[derive(Debug, Clone)]
pub struct QueryMessages {
    store: StoreHandle,
    limits: QueryLimits,
}

impl QueryMessages {
    /// An endpoint reading from `store`, with page sizes bounded by `limits`.
    pub fn new(store: StoreHandle, limits: QueryLimits) -> Self {
        Self { store, limits }
    }

    async fn handle<B>(self, request: Request<B>) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let user = crate::access::user_of(&request);
        let (parts, body) = request.into_parts();
        let request: QueryRequest = read_json(&parts.headers, body).await?;
        let query = self.to_query(request)?;
        let page = match user {
            // The check and the read are one trip to the reader.
            Some(user) => {
                let id = query.conversation_id.clone();
                self.store
                    .query_as_member(query, user)
                    .await?
                    .ok_or_else(|| crate::conversations::no_conversation(&id))?
            }
            None => self.store.query(query).await?,
        };
        Ok(json_bytes_response(StatusCode::OK, encode_page(&page)))
    }

    fn to_query(&self, request: QueryRequest) -> Result<Query, ApiError> {
        validate_name("conversation_id", &request.conversation_id)?;
        let max = self.limits.max_limit;
        let limit = match request.limit {
            None => self.limits.default_limit,
            Some(limit) if limit >= 1 && limit <= max as u64 => limit as usize,
            Some(limit) => {
                return Err(ApiError::validation(format!(
                    "limit must be between 1 and {max}, got {limit}"
                )))
            }
        };
        Ok(Query {
            conversation_id: request.conversation_id,
            since: request.since_msg_id,
            before: request.before_msg_id,
            limit,
            order: request.order,
        })
    }
}

/// Writes the page's JSON around the stored messages' own bytes: no message is decoded or
/// re-encoded on this, the hot read path.
fn encode_page(page: &Page) -> Vec<u8> {
    let size: usize = page.messages.iter().map(|m| m.json.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 96);
    out.extend_from_slice(b"{\"messages\":[");
    for (i, message) in page.messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&message.json);
    }
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "],\"count\":{},\"has_more\":{},\"next_cursor\":",
        page.messages.len(),
        page.has_more
    );
    match page.next_cursor() {
        Some(cursor) => {
            let _ = write!(out, "\"{cursor}\"}}");
        }
        None => out.extend_from_slice(b"null}"),
    }
    out
}

endpoint_service!(QueryMessages);

#[cfg(test)]
mod tests {
    use super::*;
    use kalamdb_core::StoredMessage;
    use serde_json::{json, Value};

    fn stored(id: u64) -> StoredMessage {
        StoredMessage {
            msg_id: MessageId::from_u64(id),
            json: json!({"msg_id": id.to_string(), "content": "x"})
                .to_string()
                .into_bytes(),
        }
    }

    #[test]
    fn encodes_a_page_as_valid_json() {
        let page = Page {
            messages: vec![stored(1), stored(2)],
            has_more: true,
        };
        let value: Value = serde_json::from_slice(&encode_page(&page)).unwrap();
        assert_eq!(value["count"], 2);
        assert_eq!(value["has_more"], true);
        assert_eq!(value["next_cursor"], "2");
        assert_eq!(value["messages"][1]["msg_id"], "2");

        let value: Value = serde_json::from_slice(&encode_page(&Page::default())).unwrap();
        assert_eq!(
            value,
            json!({"messages": [], "count": 0, "has_more": false, "next_cursor": null})
        );
    }
}
